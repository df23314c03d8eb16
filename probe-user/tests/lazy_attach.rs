//! Root integration tests of the lazy getenv uprobes on libcs that watched processes
//! map, with files an unprivileged user controls: a libc under a path with a space,
//! a newline or an escape sequence is traced and its path escaped; a hundred fake
//! `libc.so*` files (real ELF objects with getenv, text files, an object without
//! getenv, one swapped for a FIFO after it was mapped) get at most the bounded number
//! of attachments, the rest counted, the daemon never blocks, and every attachment
//! is released when the process that mapped them exits.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::*;
use probe_user::escape::escape_bytes;

const OUTSIDER: &str = "pctl-outsider";
const PYTHON: &str = "/usr/bin/python3";

fn ensure_outsider() -> u32 {
    users::ensure_user(OUTSIDER, &[]).0
}

fn as_outsider(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={OUTSIDER}"),
        &format!("--regid={OUTSIDER}"),
        "--init-groups",
        program,
    ]);
    cmd
}

/// A mapping's path in this process, by file name.
fn own_mapping(name: &str) -> PathBuf {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("this test runs against glibc: no {name} mapped"))
        .into()
}

#[test]
fn a_libc_under_a_path_with_a_space_newline_or_escape_is_traced_and_its_path_escaped() {
    if !bpf_available(
        "a_libc_under_a_path_with_a_space_newline_or_escape_is_traced_and_its_path_escaped",
    ) {
        return;
    }
    let system_libc = own_mapping("libc.so.6");
    let loader = own_mapping("ld-linux-x86-64.so.2");
    let fixture = c_fixture();
    let listener = Listener::start();
    let port = listener.port.to_string();
    let base = PathBuf::from(format!("/tmp/probectl-paths-{}", std::process::id()));
    for dir_name in [&b"x y"[..], b"x\ny", b"e\x1b[31mred"] {
        let dir = base.join(OsStr::from_bytes(dir_name));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("libc.so.6");
        std::fs::copy(&system_libc, &copy).expect("copy libc");
        let gate = fifo(&test_dir("odd-paths"), "gate");
        // The dynamic loader run as a program loads the fixture with the copy.
        let mut run = StreamingRun::start(
            &[
                loader.as_os_str(),
                OsStr::new("--library-path"),
                dir.as_os_str(),
                fixture.as_os_str(),
                OsStr::new("gate-probe"),
                gate.as_os_str(),
                OsStr::new(&port),
            ],
            &[],
        );
        let exec = run.wait_for("the fixture's exec", |r| {
            r["type"] == "exec"
                && r["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "gate-probe"))
        });
        let pid = exec["pid"].as_u64().unwrap();
        let escaped = escape_bytes(copy.as_os_str().as_bytes());
        let raw = copy.to_string_lossy().into_owned();
        let sensor = run.wait_for("the attach to the copy", |r| {
            r["type"] == "sensor"
                && r["program"] == "getenv"
                && r["attach_point"]
                    .as_str()
                    .is_some_and(|a| a.contains(&escaped) || a.contains(&raw))
        });
        assert_eq!(sensor["attached"], true, "{sensor:#}");
        let shown = sensor["attach_point"].as_str().unwrap();
        assert!(
            !shown.chars().any(char::is_control) && shown.contains(&escaped),
            "the path reaches the output unescaped: {shown:?}"
        );
        std::fs::write(&gate, b"x").expect("release the fixture");
        let run = run.finish();
        assert_eq!(run.code, 0);
        run.probe(pid, &["getenv"], "TZ");
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// A libc copy loaded with dlmopen by a process that was already running and
/// scanned (in a new link-map namespace, so its getenv is not the one the program
/// started with) is found through the executable mapping the kernel reports, gets
/// the getenv uprobes, and the lookups made through it afterwards are reported.
#[test]
fn a_libc_loaded_with_dlmopen_after_exec_is_attached_and_its_getenv_seen() {
    if !bpf_available("a_libc_loaded_with_dlmopen_after_exec_is_attached_and_its_getenv_seen") {
        return;
    }
    let system_libc = own_mapping("libc.so.6");
    let dir = test_dir("dlmopen");
    let copy = dir.join("libc.so.6");
    std::fs::copy(&system_libc, &copy).expect("copy libc");
    let (gate1, gate2) = (fifo(&dir, "gate1"), fifo(&dir, "gate2"));
    let fixture = Reaped(
        Command::new(build_c_fixture("dlmopen_getenv"))
            .args([copy.as_os_str(), gate1.as_os_str(), gate2.as_os_str()])
            .arg("TZ")
            .env("TZ", "UTC")
            .spawn()
            .expect("start the fixture"),
    );
    let pid = fixture.0.id();
    // Watched while it runs: its maps are scanned once, before the copy exists in
    // them; only the dlmopen's mapping can lead to the copy.
    let mut watch = StreamingRun::start_probectl(&[
        OsStr::new("watch"),
        OsStr::new("--json"),
        OsStr::new(&pid.to_string()),
    ]);
    watch.wait_for("the watching record", |r| r["type"] == "watching");
    std::fs::write(&gate1, b"x").expect("let the fixture dlmopen");
    let raw = copy.to_string_lossy().into_owned();
    let sensor = watch.wait_for("the attach to the dlmopen'd copy", |r| {
        r["type"] == "sensor"
            && r["program"] == "getenv"
            && r["attach_point"].as_str().is_some_and(|a| a.contains(&raw))
    });
    assert_eq!(sensor["attached"], true, "{sensor:#}");
    std::fs::write(&gate2, b"x").expect("let the fixture call getenv");
    let mut fixture = fixture;
    assert!(fixture.0.wait().unwrap().success());
    let run = watch.finish();
    let probe = run.probe(pid as u64, &["getenv"], "TZ");
    assert_eq!(probe["categories"][0], "timezone", "{probe:#}");
    assert_eq!(probe["result"], "set", "{probe:#}");
}

/// Holds a child; kills it when dropped (also when the test fails).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn cc_shared(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(format!("{name}.so"));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc {name}");
    out
}

fn env_objects(d: &Daemon) -> serde_json::Value {
    d.status()["env_objects"].clone()
}

#[test]
fn fake_libcs_get_bounded_attachments_released_at_exit_and_a_fifo_does_not_block() {
    if !bpf_available(
        "fake_libcs_get_bounded_attachments_released_at_exit_and_a_fifo_does_not_block",
    ) {
        return;
    }
    let outsider = ensure_outsider();
    let work = test_dir("fake-libcs");
    let with_getenv = cc_shared(
        &work,
        "with_getenv",
        "char *getenv(const char *name) { (void)name; return 0; }\n",
    );
    let without = cc_shared(&work, "without", "int not_getenv(void) { return 1; }\n");
    // The outsider makes the fakes in a directory of their own under /tmp: 100
    // objects that define getenv, 3 text files, one object without getenv, and one
    // more with getenv that they will swap for a FIFO once it is mapped.
    let fakes = PathBuf::from(format!("/tmp/probectl-fakes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fakes);
    let script = format!(
        "set -e; mkdir -m 755 {f}; for i in $(seq 0 99); do cp {g} {f}/libc.so.fake$i; done; \
         for i in 1 2 3; do echo not an object >{f}/libc.so.text$i; done; \
         cp {w} {f}/libc.so.nogetenv; cp {g} {f}/libc.so.6",
        f = fakes.display(),
        g = with_getenv.display(),
        w = without.display()
    );
    let out = as_outsider("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "making the fakes: {out:?}");

    let d = Daemon::start("fake-libcs", "");
    let baseline = open_fds(d.pid());
    // Node binaries found at start carry their uprobe already (kept without users);
    // they yield their slots to the fakes and count as released.
    let at_start = env_objects(&d)["attached"].as_array().unwrap().len() as u64;
    // The outsider's process maps every one, then swaps libc.so.6 for a FIFO of that
    // name (the mapped file is kept by a hard link; its maps line reads "(deleted)").
    // Opened by that name, the FIFO would block the daemon's loop for good.
    let mapper = r#"
import mmap, os, sys
d = sys.argv[1]
held = []
for n in sorted(os.listdir(d)):
    fd = os.open(os.path.join(d, n), os.O_RDONLY)
    held.append(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
    os.close(fd)
swap = os.path.join(d, "libc.so.6")
os.link(swap, swap + ".kept")
os.unlink(swap)
os.mkfifo(swap, 0o600)
print("mapped", len(held), flush=True)
sys.stdin.read()
"#;
    let mut child = as_outsider(PYTHON)
        .args(["-c", mapper])
        .arg(&fakes)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "mapped 105", "{line:?}");
    let mut stdin = child.stdin.take().unwrap();
    let mapper_pid = child.id();
    let mapper = Reaped(child);
    assert_eq!(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(outsider))
            .unwrap()
            .map(|u| u.name),
        Some(OUTSIDER.to_owned())
    );

    // Root watches it through the daemon: the daemon attaches to what it maps.
    let mut cmd = d.client();
    cmd.args(["watch", "--json", &mapper_pid.to_string()]);
    let mut watch = StreamingRun::spawn(cmd);
    watch.wait_for("the watching record", |r| r["type"] == "watching");
    let started = Instant::now();
    let env = env_objects(&d);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the daemon took {:?} to answer",
        started.elapsed()
    );
    let limit = env["limit"].as_u64().unwrap();
    assert_eq!(limit, 64);
    assert_eq!(
        env["attached"].as_array().unwrap().len() as u64,
        limit,
        "{env:#}"
    );
    // 101 objects with getenv (the swapped one was mapped as one), 64 attached.
    assert_eq!(env["over_limit"], 101 - limit, "{env:#}");
    assert_eq!(env["not_elf"], 3, "{env:#}");
    assert_eq!(env["no_getenv"], 1, "{env:#}");
    assert_eq!(env["unreadable"], 0, "{env:#}");
    let during = open_fds(d.pid());
    eprintln!("daemon descriptors: {baseline} before, {during} with {limit} files attached");
    // getenv and its return probe per file (the fakes define no secure_getenv).
    let per_file = 2 * 2;
    assert!(
        during <= baseline + 64 * per_file + 16,
        "the daemon holds {during} descriptors (from {baseline})"
    );
    // The sink writes the attachments' records after the daemon has answered: wait
    // for them (with a deadline), then count exactly.
    let deadline = Instant::now() + DEADLINE;
    let sensors = loop {
        let sensors: Vec<serde_json::Value> = d
            .records()
            .into_iter()
            .filter(|r| r["type"] == "sensor")
            .collect();
        if sensors.len() as u64 >= 2 * limit || Instant::now() >= deadline {
            break sensors;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        sensors.len() as u64,
        2 * limit,
        "one record per attached uprobe"
    );

    // The mapper exits: every attachment goes, and so do the descriptors.
    stdin.write_all(b"").unwrap();
    drop(stdin);
    let report = watch.finish();
    let drops = report.report()["drops"].clone();
    assert!(
        drops
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "userspace:env_object_limit" && d["count"] == 101 - limit),
        "{drops:#}"
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let env = env_objects(&d);
        let fds = open_fds(d.pid());
        if env["attached"].as_array().unwrap().is_empty()
            && env["released"] == limit + at_start
            && fds <= baseline + 2
        {
            eprintln!("released: {fds} descriptors after {:?}", started.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not released: {env:#}; {fds} descriptors (from {baseline})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(mapper);
    let _ = std::fs::remove_dir_all(&fakes);
}
