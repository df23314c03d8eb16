//! Root tests of the daemon against what a watched program or an unprivileged user
//! can do to it: a burst that must not stall its loop (the watchdog, `status`, a
//! reload and SIGTERM are answered within a second), hostile files next to a script,
//! a huge command line, a working directory deeper than PATH_MAX, and a watch of the
//! whole machine that must end when the subscription does.

mod common;

use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::*;
use nix::sys::signal::Signal;

/// What the loop must answer within, however hard a watched program bursts.
const RESPONSIVE: Duration = Duration::from_secs(1);

/// Notify datagrams with their arrival times, read on a thread of their own.
#[derive(Clone, Default)]
struct NotifyLog(Arc<Mutex<Vec<(Instant, String)>>>);

impl NotifyLog {
    fn start(socket: UnixDatagram) -> Self {
        let log = NotifyLog::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => sink.0.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        });
        log
    }

    /// When the first datagram containing `what` came at or after `since`.
    fn first_after(&self, since: Instant, what: &str) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(t, m)| *t >= since && m.contains(what))
            .map(|(t, _)| *t)
    }

    fn wait_after(&self, since: Instant, what: &str) -> Instant {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(t) = self.first_after(since, what) {
                return t;
            }
            assert!(Instant::now() < deadline, "no {what:?} from the daemon");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The longest time between two watchdog pings in `from..to`.
    fn longest_watchdog_gap(&self, from: Instant, to: Instant) -> Duration {
        let pings: Vec<Instant> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, m)| m.contains("WATCHDOG=1") && *t >= from && *t <= to)
            .map(|(t, _)| *t)
            .collect();
        assert!(
            pings.len() >= 2,
            "watchdog pings during the burst: {pings:?}"
        );
        pings
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

/// A loopback port nobody listens on: a connect there is refused at once.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn counter(status: &serde_json::Value, kind: &str, field: &str) -> u64 {
    status["events"]["by_kind"]
        .as_array()
        .and_then(|kinds| kinds.iter().find(|k| k["kind"] == kind))
        .and_then(|k| k[field].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_burst_of_600_files_and_50000_connects_leaves_the_daemon_responsive() {
    if !bpf_available("a_burst_of_600_files_and_50000_connects_leaves_the_daemon_responsive") {
        return;
    }
    const CONNECTS: u64 = 50_000;
    let d = Daemon::start("burst", "");
    let policy = selecting_policy(&d.dir);
    std::fs::copy(&policy, d.policy_dir().join("burst.yaml")).unwrap();
    let out = d.client().args(["policy", "reload"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = NotifyLog::start(d.notify_socket());

    let began = Instant::now();
    let mut flood = Command::new(c_fixture())
        .args(["flood", "600", &CONNECTS.to_string()])
        .arg(closed_port().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut worst_status = Duration::ZERO;
    let mut reload_sent = None;
    let deadline = Instant::now() + DEADLINE;
    let mut flood_done = false;
    let caught_up = loop {
        let asked = Instant::now();
        let status = d.status();
        worst_status = worst_status.max(asked.elapsed());
        // A reload in the middle of the burst.
        if reload_sent.is_none() && began.elapsed() > Duration::from_millis(300) {
            d.signal(Signal::SIGHUP);
            reload_sent = Some(Instant::now());
        }
        flood_done = flood_done || flood.try_wait().unwrap().is_some();
        let connects = counter(&status, "connect", "received")
            + counter(&status, "connect", "dropped_ring_full");
        if flood_done
            && connects >= CONNECTS
            && status["events"]["received"] == status["events"]["handled"]
        {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not catch up with the burst: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = flood.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("files=600 connects={CONNECTS}"),
        "the fixture did the whole burst"
    );
    let reload_sent = reload_sent.expect("the reload was sent during the burst");
    let reloaded = log.wait_after(reload_sent, "READY=1");
    let status = d.status();

    // Every connect the fixture made was received or counted as dropped: no more,
    // no less.
    assert_eq!(
        counter(&status, "connect", "received") + counter(&status, "connect", "dropped_ring_full"),
        CONNECTS,
        "received + dropped = generated: {:#}",
        status["events"]
    );
    let term = Instant::now();
    let (code, stderr) = d.stop(Signal::SIGTERM);
    assert_eq!(code, 0, "{stderr}");
    let stopping = log.wait_after(term, "STOPPING=1");

    let gap = log.longest_watchdog_gap(began, caught_up);
    eprintln!(
        "burst: status worst {worst_status:?}, watchdog gap {gap:?}, reload {:?}, SIGTERM {:?}, caught up after {:?}",
        reloaded - reload_sent,
        stopping - term,
        caught_up - began
    );
    assert!(
        worst_status < RESPONSIVE,
        "status took {worst_status:?} during the burst"
    );
    assert!(
        gap < RESPONSIVE,
        "{gap:?} between watchdog pings during the burst"
    );
    assert!(
        reloaded - reload_sent < RESPONSIVE,
        "a reload during the burst took {:?}",
        reloaded - reload_sent
    );
    assert!(
        stopping - term < RESPONSIVE,
        "SIGTERM was answered after {:?}",
        stopping - term
    );
}

/// An unprivileged user for the hostile files.
fn hostile_user() -> (u32, u32) {
    users::ensure_user("pctl-hostile", &[])
}

/// `cmd` as the hostile user.
fn as_hostile(uid: u32, gid: u32) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
    ]);
    cmd
}

#[test]
fn hostile_package_json_files_do_not_stall_or_exhaust_the_daemon() {
    if !bpf_available("hostile_package_json_files_do_not_stall_or_exhaust_the_daemon") {
        return;
    }
    let (uid, gid) = hostile_user();
    let d = Daemon::start("hostile-pkg", "");
    let listener = Listener::start();
    // The user's own directory, world-readable so the fixture can be run from it.
    let base = std::env::temp_dir().join(format!("probectl-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    nix::unistd::chown(&base, Some(uid.into()), Some(gid.into())).unwrap();
    let fixture = base.join("tz_probe");
    std::fs::copy(c_fixture(), &fixture).unwrap();
    // What the user plants, as the user: a FIFO (a blocking open or read), a symlink
    // to /dev/zero (an endless read), a 64 MiB file.
    let plant = format!(
        "set -e; cd {base}; \
         mkdir fifo zero big; \
         mkfifo fifo/package.json; \
         ln -s /dev/zero zero/package.json; \
         head -c 67108864 /dev/zero > big/package.json; \
         for d in fifo zero big; do printf 'exec {fixture} probe {port}\\n' > $d/cli.sh; done",
        base = base.display(),
        fixture = fixture.display(),
        port = listener.port
    );
    let out = as_hostile(uid, gid)
        .args(["sh", "-c", &plant])
        .output()
        .unwrap();
    assert!(out.status.success(), "planting: {out:?}");
    for kind in ["fifo", "zero", "big"] {
        // `sh DIR/cli.sh` is an interpreter running a script: its package is looked
        // up next to the script.
        let script = base.join(kind).join("cli.sh");
        let mut cmd = d.client();
        cmd.args(["run", "--json", "--", "setpriv"])
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "sh",
            ])
            .arg(&script);
        let run = json_run(cmd);
        assert_eq!(run.code, 0, "{kind}: {}", run.stderr);
        // setpriv asks nscd over a unix socket; the fixture's connect is the TCP one.
        let conn: Vec<_> = run
            .of_type("connect")
            .into_iter()
            .filter(|c| c["destination"]["family"] == "ipv4")
            .collect();
        assert_eq!(
            conn.len(),
            1,
            "{kind}: the fixture's connect: {:#?}",
            run.records
        );
        assert!(
            conn[0]["cli"].get("package").is_none(),
            "{kind}: no package from a hostile file: {:#}",
            conn[0]["cli"]
        );
        let status = d.status();
        assert!(
            status["memory"]["rss_bytes"].as_u64().unwrap() < 256 << 20,
            "{kind}: {:#}",
            status["memory"]
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_huge_command_line_is_kept_once_and_bounded() {
    if !bpf_available("a_huge_command_line_is_kept_once_and_bounded") {
        return;
    }
    const CONNECTS: u64 = 10_000;
    let d = Daemon::start("huge-argv", "");
    let gate = fifo(&d.dir, "gate");
    // 12 arguments of 128 KiB: a 1.5 MiB command line, read from /proc when the
    // daemon is asked to watch the process.
    let big = "x".repeat(128 * 1024 - 1);
    let mut target = Command::new(c_fixture())
        .args(["gate-flood", gate.to_str().unwrap(), &CONNECTS.to_string()])
        .arg(closed_port().to_string())
        .args(std::iter::repeat_n(&big, 12))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = target.id();
    // A subscriber that reads nothing: it may be dropped as lagging (counted); the
    // daemon's own sink is what this test reads.
    let mut watch = d.client();
    let mut watch = watch
        .args(["watch", "--json", "--for", "120s"])
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while d.status()["subscribers"] != 1 {
        assert!(Instant::now() < deadline, "the watch did not subscribe");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&gate)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    target.wait().unwrap();
    let status = loop {
        let status = d.status();
        let seen = counter(&status, "connect", "received")
            + counter(&status, "connect", "dropped_ring_full");
        if seen >= CONNECTS && status["events"]["received"] == status["events"]["handled"] {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not catch up: {:#}",
            status["events"]
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = watch.kill();
    let _ = watch.wait();
    let rss = status["memory"]["rss_bytes"].as_u64().unwrap();
    assert!(
        rss < 256 << 20,
        "daemon RSS {rss} after {CONNECTS} connects"
    );
    // One connect record of the process, from the sink (read line by line: the
    // file is large).
    let file = std::fs::File::open(&d.jsonl).unwrap();
    let needle = format!("\"pid\":{pid},");
    let conn: serde_json::Value = std::io::BufRead::lines(std::io::BufReader::new(file))
        .map_while(Result::ok)
        .filter(|l| l.contains("\"type\":\"connect\"") && l.contains(&needle))
        .find_map(|l| serde_json::from_str(&l).ok())
        .expect("a connect record of the process in the sink");
    let cli = &conn["cli"];
    let argv_bytes: usize = cli["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().len())
        .sum();
    assert!(argv_bytes <= 16 * 1024, "argv kept: {argv_bytes} bytes");
    assert_eq!(cli["argv_incomplete"], true, "the cut is said: {cli:#}");
}

#[test]
fn a_working_directory_deeper_than_path_max_is_reported_not_dropped() {
    if !bpf_available("a_working_directory_deeper_than_path_max_is_reported_not_dropped") {
        return;
    }
    let listener = Listener::start();
    let dir = test_dir("deep-cwd");
    let gate = fifo(&dir, "gate");
    // 25 levels of 201 bytes: over 5,000 bytes below the test directory. Each step is
    // a relative chdir (a shell's `cd` builds the whole path and fails past
    // PATH_MAX); then the fixture runs there, and waits on the gate, so it is alive
    // when its exec is handled.
    let script = format!(
        r#"chdir "{dir}" or die; $s = "d" x 200; for (1..25) {{ mkdir $s; chdir $s or die "chdir: $!" }} exec @ARGV or die"#,
        dir = dir.display()
    );
    let port = listener.port.to_string();
    let mut run = StreamingRun::start(
        &[
            "perl".as_ref(),
            "-e".as_ref(),
            script.as_ref(),
            c_fixture().as_os_str(),
            "gate-probe".as_ref(),
            gate.as_os_str(),
            port.as_ref(),
        ],
        &[],
    );
    run.wait_for("the fixture's exec", |r| {
        r["type"] == "exec" && r["argv"][1] == "gate-probe"
    });
    std::fs::OpenOptions::new()
        .write(true)
        .open(&gate)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let run = run.finish();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let conn = run.of_type("connect");
    assert_eq!(conn.len(), 1, "{:#?}", run.records);
    let cli = &conn[0]["cli"];
    assert!(cli.get("cwd").is_none(), "{cli:#}");
    assert_eq!(cli["cwd_error"], "ENAMETOOLONG", "{cli:#}");
    let _ = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&dir)
        .status();
}

#[test]
fn a_watch_of_pid_1_through_the_daemon_ends_with_its_subscription() {
    if !bpf_available("a_watch_of_pid_1_through_the_daemon_ends_with_its_subscription") {
        return;
    }
    let d = Daemon::start("unwatch", "");
    let listener = Listener::start();
    let before = d.status()["trees"]["watched_processes"].as_u64().unwrap();
    let out = d
        .client()
        .args(["watch", "--json", "--for", "1s", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + DEADLINE;
    while d.status()["trees"]["watched_processes"].as_u64().unwrap() > before {
        assert!(
            Instant::now() < deadline,
            "the machine stays watched: {:#}",
            d.status()["trees"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A process started now (a descendant of pid 1, like every process) is not
    // watched: a run after it, which is, shows the ring got that far.
    let outsider = Command::new(c_fixture())
        .args(["probe", &listener.port.to_string()])
        .output()
        .unwrap();
    assert!(outsider.status.success());
    let mut marker = d.client();
    marker
        .args(["run", "--json", "--"])
        .arg(c_fixture())
        .args(["exit", "0"]);
    let marker = json_run(marker);
    assert_eq!(marker.code, 0, "{}", marker.stderr);
    let marker_pid = marker.report()["cli"]["pid"].clone();
    d.wait_record("the marker's exec", |r| {
        r["type"] == "exec" && r["pid"] == marker_pid
    });
    let probes_by_others = d
        .records()
        .into_iter()
        .filter(|r| r["type"] == "connect" && r["destination"]["port"] == listener.port)
        .count();
    assert_eq!(
        probes_by_others, 0,
        "a process outside any watch was reported"
    );
}
