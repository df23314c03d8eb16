//! Root integration tests of evasions: each fixture does exactly one technique, and
//! the test's name says whether probectl catches it or names it in the report as a
//! blind spot of the sensor tier in use.

mod common;

use std::ffi::OsStr;
use std::os::fd::AsRawFd as _;
use std::process::Command;

use common::*;
use serde_json::Value;

fn fixture(stem: &str) -> std::path::PathBuf {
    build_c_fixture(stem)
}

/// The blind spots of a family's chosen tier, from the report.
fn blind_spots(run: &JsonRun, family: &str) -> Vec<String> {
    run.report()["sensors"]
        .as_array()
        .expect("sensors")
        .iter()
        .find(|s| s["family"] == family)
        .unwrap_or_else(|| panic!("no {family} sensor in the report"))["blind_spots"]
        .as_array()
        .expect("blind_spots")
        .iter()
        .map(|b| b.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The connect records to 127.0.0.1:`port`.
fn connects_to(run: &JsonRun, port: u16) -> Vec<Value> {
    run.of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == port && c["destination"]["address"] == "127.0.0.1")
        .cloned()
        .collect()
}

fn unconnected_tcp_socket() -> std::os::fd::OwnedFd {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("a TCP socket")
}

#[test]
fn unix_datagram_sendto_a_path_is_caught() {
    if !bpf_available("unix_datagram_sendto_a_path_is_caught") {
        return;
    }
    let dir = test_dir("evade-unix-dgram");
    let path = dir.join("dgram.sock");
    let _ = std::fs::remove_file(&path);
    let _server = std::os::unix::net::UnixDatagram::bind(&path).expect("bind a datagram socket");
    let run = probectl_json(
        &[
            fixture("evade_net").as_os_str(),
            OsStr::new("unix_dgram"),
            path.as_os_str(),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let conns = run.of_type("connect");
    let sent = conns
        .iter()
        .find(|c| c["destination"]["address"] == path.to_str().unwrap())
        .unwrap_or_else(|| {
            panic!(
                "no record of the datagram to {}: {conns:#?}",
                path.display()
            )
        });
    assert_eq!(sent["destination"]["family"], "unix");
    assert_eq!(sent["result"], "sent");
    assert_eq!(sent["seen_at"], "syscall");
}

#[test]
fn a_socket_received_over_scm_rights_then_connected_is_caught() {
    if !bpf_available("a_socket_received_over_scm_rights_then_connected_is_caught") {
        return;
    }
    let listener = Listener::start();
    let dir = test_dir("evade-scm-rights");
    let path = dir.join("pass.sock");
    let _ = std::fs::remove_file(&path);
    let passer = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    // The socket is made by this (unwatched) test process and handed over.
    let sender = std::thread::spawn(move || {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let (stream, _) = passer.accept().expect("accept the fixture");
        let sock = unconnected_tcp_socket();
        let fds = [sock.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"x")];
        sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("send the fd");
    });
    let port = listener.port.to_string();
    let run = probectl_json(
        &[
            fixture("evade_net").as_os_str(),
            OsStr::new("scm_rights"),
            path.as_os_str(),
            OsStr::new(&port),
        ],
        &[],
    );
    sender.join().expect("sender thread");
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let conns = connects_to(&run, listener.port);
    assert_eq!(conns.len(), 1, "{:#?}", run.of_type("connect"));
    assert_eq!(conns[0]["result"], "ok");
    assert_eq!(conns[0]["seen_at"], "syscall_and_cgroup_hook");
}

#[test]
fn a_socket_taken_with_pidfd_getfd_then_connected_is_caught() {
    if !bpf_available("a_socket_taken_with_pidfd_getfd_then_connected_is_caught") {
        return;
    }
    let listener = Listener::start();
    // A socket of this unwatched test process, taken by the watched fixture.
    let sock = unconnected_tcp_socket();
    let (pid, fd, port) = (
        std::process::id().to_string(),
        sock.as_raw_fd().to_string(),
        listener.port.to_string(),
    );
    let run = probectl_json(
        &[
            fixture("evade_net").as_os_str(),
            OsStr::new("pidfd_getfd"),
            OsStr::new(&pid),
            OsStr::new(&fd),
            OsStr::new(&port),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let conns = connects_to(&run, listener.port);
    assert_eq!(conns.len(), 1, "{:#?}", run.of_type("connect"));
    assert_eq!(conns[0]["result"], "ok");
    drop(sock);
}

#[test]
fn a_connect_injected_with_ptrace_into_a_watched_process_is_caught() {
    if !bpf_available("a_connect_injected_with_ptrace_into_a_watched_process_is_caught") {
        return;
    }
    let listener = Listener::start();
    let bin = fixture("evade_net");
    let mut run = StreamingRun::start(&[bin.as_os_str(), OsStr::new("tracee")], &[]);
    let exec = run.wait_for("the tracee's exec", |r| {
        r["type"] == "exec" && r["exe"].as_str().is_some_and(|e| e.contains("evade_net"))
    });
    let pid = exec["pid"].as_u64().expect("pid").to_string();
    // The exec is seen before the tracee has made its socket: wait until fd 100 is
    // there (with a deadline), or the injected connect gets EBADF.
    let socket = std::path::PathBuf::from(format!("/proc/{pid}/fd/100"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the tracee never made its socket"
        );
        std::thread::yield_now();
    }
    // The tracer is this test's child: not watched. The tracee makes the syscall.
    let out = Command::new(&bin)
        .args(["inject", &pid, "100", &listener.port.to_string()])
        .output()
        .expect("run the tracer");
    assert!(
        out.status.success(),
        "injection failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done = run.finish();
    assert_eq!(done.code, 0, "the tracee saw its socket connected");
    let conns = connects_to(&done, listener.port);
    assert_eq!(conns.len(), 1, "{:#?}", done.of_type("connect"));
    assert_eq!(conns[0]["pid"].as_u64().map(|p| p.to_string()), Some(pid));
    assert_eq!(conns[0]["result"], "ok");
    assert!(
        blind_spots(&done, "net")
            .iter()
            .any(|b| b.contains("injects into an unwatched")),
        "the opposite direction (a watched tracer, an unwatched tracee) is named"
    );
}

#[test]
fn getenv_bytes_restored_over_the_uprobe_is_named_as_a_blind_spot() {
    if !bpf_available("getenv_bytes_restored_over_the_uprobe_is_named_as_a_blind_spot") {
        return;
    }
    let run = probectl_json(
        &[
            fixture("evade_getenv").as_os_str(),
            OsStr::new("restore"),
            OsStr::new("TZ"),
            OsStr::new("ANTHROPIC_BASE_URL"),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().expect("pid");
    run.probe(pid, &["getenv"], "TZ");
    assert!(
        !run.of_type("probe")
            .iter()
            .any(|p| p["how"] == "getenv" && p["target"] == "ANTHROPIC_BASE_URL"),
        "the lookup after the restore is not seen: {:#?}",
        run.of_type("probe")
    );
    assert!(
        blind_spots(&run, "env")
            .iter()
            .any(|b| b.contains("original bytes")),
        "the report names the technique: {:#?}",
        blind_spots(&run, "env")
    );
}

/// A process (unwatched) whose environment the fixture reads.
struct Peer(std::process::Child);

impl Peer {
    fn start() -> Self {
        Self(
            Command::new("sleep")
                .arg("60")
                .env("PROBECTL_PEER_SECRET", "1")
                .spawn()
                .expect("start sleep"),
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn another_process_environment_read_with_process_vm_readv_is_caught() {
    if !bpf_available("another_process_environment_read_with_process_vm_readv_is_caught") {
        return;
    }
    let peer = Peer::start();
    let target = peer.0.id().to_string();
    let run = probectl_json(
        &[
            fixture("evade_getenv").as_os_str(),
            OsStr::new("vm_readv"),
            OsStr::new(&target),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().expect("pid");
    let probe = run.probe(pid, &["process_vm_readv"], &format!("pid:{target}"));
    assert_eq!(probe["categories"], serde_json::json!(["environment"]));
    assert_eq!(probe["result"], "issued");
}

#[test]
fn another_process_environment_read_through_proc_pid_mem_is_caught() {
    if !bpf_available("another_process_environment_read_through_proc_pid_mem_is_caught") {
        return;
    }
    let peer = Peer::start();
    let target = peer.0.id().to_string();
    let run = probectl_json(
        &[
            fixture("evade_getenv").as_os_str(),
            OsStr::new("proc_mem"),
            OsStr::new(&target),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().expect("pid");
    let probe = run.probe(pid, &["openat"], &format!("/proc/{target}/mem"));
    assert_eq!(probe["categories"], serde_json::json!(["environment"]));
    assert_eq!(probe["result"], "ok");
}

/// Builds `fixtures/own_getenv.c` with `flags` into the cargo tmp dir as `name`.
fn own_getenv(name: &str, flags: &[&str]) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/own_getenv.c");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    let status = Command::new("cc")
        .args(["-O1", "-Wall"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc runs");
    assert!(status.success(), "cc {flags:?} own_getenv.c");
    out
}

fn interposer_attach<'a>(run: &'a JsonRun, file: &std::path::Path) -> &'a Value {
    let shown = file.to_string_lossy().into_owned();
    run.of_type("sensor")
        .into_iter()
        .find(|s| {
            s["program"] == "getenv"
                && s["attach_point"]
                    .as_str()
                    .is_some_and(|a| a.contains(&shown) && a.contains("outside libc"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no getenv uprobe on {shown}, named as outside libc: {:#?}",
                run.of_type("sensor")
            )
        })
}

#[test]
fn a_getenv_defined_by_the_program_itself_is_caught() {
    if !bpf_available("a_getenv_defined_by_the_program_itself_is_caught") {
        return;
    }
    let program = own_getenv("own_getenv", &["-rdynamic", "-DMAIN"]);
    let run = probectl_json(&[program.as_os_str(), OsStr::new("TZ")], &[("TZ", "UTC")]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    assert_eq!(interposer_attach(&run, &program)["attached"], true);
    let probe = run.probe(pid, &["getenv"], "TZ");
    assert_eq!(probe["result"], "set", "{probe:#}");
}

#[test]
fn a_getenv_defined_by_an_ld_preload_library_is_caught() {
    if !bpf_available("a_getenv_defined_by_an_ld_preload_library_is_caught") {
        return;
    }
    let library = own_getenv("own_getenv.so", &["-shared", "-fPIC"]);
    let listener = Listener::start();
    let port = listener.port.to_string();
    let preload = library.to_string_lossy().into_owned();
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("probe"),
            OsStr::new(&port),
        ],
        &[("LD_PRELOAD", &preload)],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    assert_eq!(interposer_attach(&run, &library)["attached"], true);
    // The fixture's getenv("TZ") resolves to the library's.
    run.probe(pid, &["getenv"], "TZ");
}
