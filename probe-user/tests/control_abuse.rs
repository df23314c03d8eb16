//! Root integration tests of the control socket under abuse by unprivileged users
//! (real users created here): a subscriber that streams without a newline, a user
//! who opens connections until the daemon runs out of file descriptors, a thousand
//! idle or slow connections, and a fake socket planted where root's client looks.
//! In every case the daemon stays up, root is still answered, and what was refused
//! or shed is counted.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, unit_setting};
use common::*;

const GROUP: &str = "pctl-test";
const MEMBER: &str = "pctl-member";
const OUTSIDER: &str = "pctl-outsider";
/// The system's interpreter, reachable by every user (root's PATH may name a
/// per-user one).
const PYTHON: &str = "/usr/bin/python3";

/// The group and its member, and an outsider (made once, idempotent across runs).
fn ensure_users() {
    users::ensure_user(MEMBER, &[GROUP]);
    users::ensure_user(OUTSIDER, &[]);
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap()
        .uid
        .as_raw()
}

/// `program` as `user`, with their groups.
fn as_user(user: &str, program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        program,
    ]);
    cmd
}

/// A helper process run as another user, stopped when dropped (also when the test
/// fails).
struct Holder {
    child: Child,
}

impl Holder {
    /// A python helper run as `user`: opens `n` connections to `socket` (each
    /// `slow_every`th sends half a request), prints `connected N` and holds them
    /// until its stdin closes.
    fn start(user: &str, socket: &Path, n: usize, slow_every: usize) -> Self {
        let script = r#"
import socket, sys
path, n, slow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if slow and i % slow == 0:
        try:
            s.send(b'{"v":1,')
        except OSError:
            pass
    held.append(s)
print("connected", len(held), flush=True)
sys.stdin.read()
"#;
        let mut child = as_user(user, PYTHON)
            .args(["-c", script])
            .arg(socket)
            .args([n.to_string(), slow_every.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the connection holder");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let reader =
            std::thread::spawn(move || BufReader::new(stdout).read_line(&mut line).map(|_| line));
        let deadline = Instant::now() + DEADLINE;
        while !reader.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the holder did not connect within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let line = reader.join().unwrap().unwrap();
        assert_eq!(line.trim(), format!("connected {n}"), "{line:?}");
        Self { child }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn status_field_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} for {pid}"))
}

/// One status request on a fresh connection, answered within `within` (connect,
/// send and read all count).
fn status_within(socket: &Path, within: Duration) -> serde_json::Value {
    let started = Instant::now();
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(within)).unwrap();
    s.set_write_timeout(Some(within)).unwrap();
    s.write_all(b"{\"v\":1,\"op\":\"status\"}\n").unwrap();
    let mut line = String::new();
    let read = BufReader::new(&s).read_line(&mut line);
    assert!(
        read.is_ok() && started.elapsed() <= within,
        "root's status was not answered within {within:?} ({read:?} after {:?})",
        started.elapsed()
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v["status"].clone()
}

#[test]
fn a_subscriber_streaming_100_mib_without_a_newline_is_closed_and_counted() {
    if !bpf_available("a_subscriber_streaming_100_mib_without_a_newline_is_closed_and_counted") {
        return;
    }
    let d = Daemon::start("control-flood-subscriber", "");
    let mut target = Command::new("sleep").arg("120").spawn().unwrap();
    let peak_before = status_field_kib(d.pid(), "VmHWM:");
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    writeln!(s, r#"{{"v":1,"op":"subscribe","pids":[{}]}}"#, target.id()).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut ack = String::new();
    reader.read_line(&mut ack).unwrap();
    assert!(ack.contains(r#""ok":true"#), "{ack}");

    // 100 MiB, no newline, as fast as the daemon takes it.
    const TOTAL: usize = 100 << 20;
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0;
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    while sent < TOTAL {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < TOTAL,
        "the daemon took all {sent} bytes of one line instead of closing the connection"
    );
    // Told why, then closed (records that were queued may come first).
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("longer than 16384 bytes"), "{rest}");

    let status = d.status();
    assert!(
        status["socket"]["bad_requests"].as_u64().unwrap() >= 1,
        "{:#}",
        status["socket"]
    );
    let peak_after = status_field_kib(d.pid(), "VmHWM:");
    assert!(
        peak_after < peak_before + 32 * 1024,
        "the daemon's peak RSS grew from {peak_before} to {peak_after} KiB"
    );
    // The daemon goes on: its tree ending ends the subscription as usual.
    let _ = target.kill();
    let _ = target.wait();
    let deadline = Instant::now() + DEADLINE;
    while d.status()["subscribers"] != 0 {
        assert!(Instant::now() < deadline, "the subscription never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn out_of_file_descriptors_the_daemon_sheds_idle_clients_and_root_still_gets_status() {
    if !bpf_available(
        "out_of_file_descriptors_the_daemon_sheds_idle_clients_and_root_still_gets_status",
    ) {
        return;
    }
    ensure_users();
    let d = Daemon::start("control-emfile", &format!("group: {GROUP}\n"));
    let pid = d.pid();
    // Room for 8 more descriptors, then EMFILE.
    let limit = open_fds(pid) + 8;
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {out:?}");

    // An unprivileged user opens 30 connections (fewer than a user may hold, more
    // than the daemon has descriptors for) and leaves them idle.
    let holder = Holder::start(MEMBER, &d.socket, 30, 0);
    // The daemon does not spin on the connections it cannot take: over two seconds
    // it uses a small fraction of one.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    assert!(
        used < hz / 2,
        "the daemon used {used} ticks of CPU in 2 s ({hz}/s) while out of descriptors"
    );

    // Root is answered, through the real client.
    let mut cmd = d.client();
    cmd.args(["status", "--json"]);
    let out = run_with_deadline(cmd);
    assert!(out.status.success(), "root's status: {out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let socket = &status["socket"];
    assert!(
        socket["accept_errors"].as_u64().unwrap() >= 1,
        "EMFILE was met: {socket:#}"
    );
    assert!(
        socket["shed_idle"].as_u64().unwrap() >= 1,
        "idle clients were shed: {socket:#}"
    );
    assert!(
        open_fds(pid) <= limit,
        "{} descriptors over a limit of {limit}",
        open_fds(pid)
    );
    drop(holder);
}

#[test]
fn root_status_answers_within_a_second_during_1000_client_connections() {
    if !bpf_available("root_status_answers_within_a_second_during_1000_client_connections") {
        return;
    }
    ensure_users();
    // The descriptor limit systemd gives a service that sets none.
    let wrapper: Vec<String> = ["prlimit", "--nofile=1024:1024", "--"]
        .map(str::to_owned)
        .to_vec();
    let d = Daemon::start_wrapped("control-thousand", &format!("group: {GROUP}\n"), &wrapper);
    // 1,000 connections of one user, idle or slow (every third sends half a request).
    let holder = Holder::start(MEMBER, &d.socket, 1000, 3);
    let status = status_within(&d.socket, Duration::from_secs(1));
    let socket = &status["socket"];
    let per_uid = probe_user::daemon::clients::MAX_CLIENTS_PER_UID as u64;
    assert!(
        socket["open"]["others"].as_u64().unwrap() <= per_uid,
        "one user holds at most {per_uid}: {socket:#}"
    );
    // Every connection the user opened was taken from the queue, and the extra
    // ones were refused and counted.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let socket = status_within(&d.socket, Duration::from_secs(1))["socket"].clone();
        let refused = socket["refused_busy"].as_u64().unwrap();
        let admitted = socket["connections"].as_u64().unwrap();
        if refused >= 1000 - per_uid {
            assert!(admitted >= per_uid, "{socket:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the extra connections were not refused: {socket:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the real client, while they are still held.
    let mut cmd = d.client();
    cmd.arg("status");
    let out = run_with_deadline(cmd);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Control socket:"), "{text}");
    drop(holder);
}

#[test]
fn the_unit_bounds_descriptors_and_memory() {
    let nofile: u64 = unit_setting("LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    // The programs and maps (about 200), 64 lazily attached libcs with four uprobes
    // each, every non-root client, and room for root's.
    let clients = probe_user::daemon::clients::MAX_NON_ROOT_CLIENTS as u64;
    assert!(
        nofile >= 200 + 64 * 4 * 2 + clients + 256,
        "LimitNOFILE={nofile}"
    );
    assert!(unit_setting("MemoryMax").ends_with('M'));
}

/// A fake daemon run by `OUTSIDER` at `socket`: it answers every line with success
/// and logs what it was sent to `log`. Stopped when dropped.
fn fake_daemon(socket: &Path, log: &Path) -> Holder {
    let script = r#"
import socket, sys
path, log = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(16)
print("listening", flush=True)
while True:
    c, _ = srv.accept()
    try:
        line = c.makefile("rb").readline()
        with open(log, "ab") as f:
            f.write(line)
        c.sendall(b'{"v":1,"ok":true,"policy":"fake","status":{},"subscribed":[1]}\n')
    except OSError:
        pass
    c.close()
"#;
    let mut child = as_user(OUTSIDER, PYTHON)
        .args(["-c", script])
        .arg(socket)
        .arg(log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    Holder { child }
}

#[test]
fn roots_client_refuses_a_control_socket_planted_by_another_user() {
    if !bpf_available("roots_client_refuses_a_control_socket_planted_by_another_user") {
        return;
    }
    ensure_users();
    // A directory of the outsider's, as /tmp would give them.
    let dir = PathBuf::from(format!("/tmp/probectl-fake-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let outsider = uid_of(OUTSIDER);
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(outsider)), None).unwrap();
    let socket = dir.join("probectl.sock");
    let log = dir.join("received");
    let fake = fake_daemon(&socket, &log);

    let client = |args: &[&str], socket: &Path| {
        let mut cmd = Command::new(probectl());
        cmd.env("PROBECTL_SOCKET", socket)
            .env_remove("CI")
            .env_remove("PROBECTL_SOCKET_OWNER")
            .args(args);
        run_with_deadline(cmd)
    };
    for args in [&["policy", "reload"][..], &["status"], &["policy", "list"]] {
        let out = client(args, &socket);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} trusted the fake: {out:?}");
        assert!(
            stderr.contains(&format!(
                "refusing the control socket {}: it belongs to uid {outsider}, not to root",
                socket.display()
            )),
            "{args:?}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("fake"),
            "{out:?}"
        );
    }
    // `run` does not fall back to running standalone, nor use the fake.
    let out = client(&["run", "--", "true"], &socket);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing the control socket"),
        "{out:?}"
    );
    // A link of the outsider's to it is not followed.
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&socket, &link).unwrap();
    let out = client(&["status"], &link);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a symbolic link"),
        "{out:?}"
    );
    // The file swapped for a root-owned one after the check (here: chowned): the
    // process behind it is still the outsider's, and that is checked too.
    nix::unistd::chown(&socket, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    let out = client(&["policy", "reload"], &socket);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "the process listening there runs as uid {outsider}, not as root"
        )),
        "{out:?}"
    );
    // Nothing was sent to the fake: no request, so no secrets and no argv.
    assert_eq!(
        std::fs::read(&log).unwrap_or_default(),
        b"",
        "the fake daemon was sent a request"
    );
    drop(fake);

    // The real daemon's socket still serves root.
    let d = Daemon::start("control-trust-real", "");
    let out = client(&["status", "--json"], &d.socket);
    assert!(out.status.success(), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
