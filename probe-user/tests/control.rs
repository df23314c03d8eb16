//! Root integration tests of the daemon's control socket: who may use it (root, a
//! member of the daemon's group for their own processes, nobody else), checked with
//! real users created here; and clients that send garbage, too much, nothing, or
//! never read, while the daemon keeps serving the others.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::*;

const GROUP: &str = "pctl-test";
const MEMBER: &str = "pctl-member";
const OUTSIDER: &str = "pctl-outsider";

/// The group and its member, and an outsider (made once, idempotent across runs).
fn ensure_users() {
    users::ensure_user(MEMBER, &[GROUP]);
    users::ensure_user(OUTSIDER, &[]);
}

/// `CMD` as `user`, with their groups (setpriv, as a login would set them).
fn as_user(user: &str, program: &std::path::Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
    ])
    .arg(program);
    cmd
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap()
        .uid
        .as_raw()
}

#[test]
fn the_socket_serves_root_and_group_members_for_their_own_processes_only() {
    if !bpf_available("the_socket_serves_root_and_group_members_for_their_own_processes_only") {
        return;
    }
    ensure_users();
    let d = Daemon::start("control-access", &format!("group: {GROUP}\n"));
    let with_socket = |mut c: Command| {
        c.env("PROBECTL_SOCKET", &d.socket).env_remove("CI");
        c
    };

    // A member: status works.
    let out = with_socket(as_user(MEMBER, &probectl()))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "member status: {out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["events"]["received"].is_u64(), "{status:#}");

    // A member watches their own process through the daemon, without root.
    let mut own = as_user(MEMBER, std::path::Path::new("/bin/sh"))
        .args(["-c", "sleep 1; cat /etc/timezone >/dev/null; sleep 1"])
        .spawn()
        .unwrap();
    let out = with_socket(as_user(MEMBER, &probectl()))
        .args(["watch", "--json", &own.id().to_string()])
        .output()
        .unwrap();
    own.wait().unwrap();
    assert!(out.status.success(), "member watch: {out:?}");
    let records = String::from_utf8_lossy(&out.stdout);
    assert!(records.contains(r#""type":"watching""#), "{records}");
    assert!(
        records.contains(r#""target":"/etc/timezone""#),
        "the member's own process's probe: {records}"
    );
    assert!(records.contains(r#""type":"report""#), "{records}");

    // A member runs a command through the daemon, without root.
    let out = with_socket(as_user(MEMBER, &probectl()))
        .args(["run", "--json", "--", "cat", "/etc/timezone"])
        .output()
        .unwrap();
    assert!(out.status.success(), "member run: {out:?}");
    let records = String::from_utf8_lossy(&out.stdout);
    assert!(records.contains(r#""target":"/etc/timezone""#), "{records}");
    assert!(
        records.contains(&format!(r#""uid":{}"#, uid_of(MEMBER))),
        "{records}"
    );

    // ...but not root's processes, and cannot reload.
    let mut roots = Command::new("sleep").arg("30").spawn().unwrap();
    let out = with_socket(as_user(MEMBER, &probectl()))
        .args(["watch", "--json", &roots.id().to_string()])
        .output()
        .unwrap();
    let _ = roots.kill();
    let _ = roots.wait();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("does not belong to uid {}", uid_of(MEMBER))),
        "{err}"
    );
    let out = with_socket(as_user(MEMBER, &probectl()))
        .args(["policy", "reload"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only root may reload"),
        "{out:?}"
    );

    // An outsider: the socket's mode (0660, group pctl-test) keeps them out...
    let out = with_socket(as_user(OUTSIDER, &probectl()))
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Permission denied") && err.contains("hint:"),
        "{err}"
    );
    // ...and with the mode opened up, the daemon's own SO_PEERCRED check does.
    std::fs::set_permissions(
        &d.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = with_socket(as_user(OUTSIDER, &probectl()))
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "uid {} is not root and not in group \"{GROUP}\"",
            uid_of(OUTSIDER)
        )),
        "{err}"
    );
    // Root may do anything; the refusals were counted.
    let status = d.status();
    assert!(
        status["socket"]["refused"].as_u64().unwrap() >= 1,
        "{status:#}"
    );
}

fn connect(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn read_line(s: &UnixStream) -> String {
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn garbage_oversized_silent_and_unread_clients_do_not_stop_the_daemon() {
    if !bpf_available("garbage_oversized_silent_and_unread_clients_do_not_stop_the_daemon") {
        return;
    }
    let d = Daemon::start("control-bad-clients", "memory: {subscriber_queue: 8}\n");

    // Garbage gets an error, and the connection still serves the next request.
    let mut s = connect(&d);
    s.write_all(b"\x00\xffgarbage{\n").unwrap();
    let answer = read_line(&s);
    assert!(
        answer.contains(r#""ok":false"#) && answer.contains("not JSON"),
        "{answer}"
    );
    s.write_all(b"{\"v\":1,\"op\":\"status\"}\n").unwrap();
    assert!(read_line(&s).contains(r#""ok":true"#));
    // A wrong version is named.
    s.write_all(b"{\"v\":7,\"op\":\"status\"}\n").unwrap();
    assert!(read_line(&s).contains("version 7"));

    // Too long: refused and closed.
    let mut s = connect(&d);
    let _ = s.write_all(&vec![b'a'; 40 * 1024]);
    let answer = read_line(&s);
    assert!(answer.contains("longer than"), "{answer}");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap_or(0),
        0,
        "closed after the error"
    );

    // Silent: closed after the request timeout; others are served meanwhile.
    let silent = connect(&d);
    let started = Instant::now();
    assert!(d.request(r#"{"v":1,"op":"status"}"#)["ok"] == true);
    let answer = read_line(&silent);
    assert!(answer.contains("no complete request line"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );

    // A subscriber that never reads, to a busy tree: it is dropped (counted) and the
    // daemon keeps answering.
    let mut busy = Command::new("sh")
        .args(["-c", "while :; do cat /etc/timezone >/dev/null; done"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut stuck = connect(&d);
    writeln!(
        stuck,
        r#"{{"v":1,"op":"subscribe","pids":[{}]}}"#,
        busy.id()
    )
    .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let lagging = loop {
        let asked = Instant::now();
        let status = d.status();
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "status took {:?}",
            asked.elapsed()
        );
        let lagging = status["drops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["reason"] == "userspace:subscriber_lagging")
            .map(|x| x["count"].as_u64().unwrap())
            .unwrap();
        if lagging >= 1 {
            break lagging;
        }
        assert!(
            Instant::now() < deadline,
            "the stuck subscriber was never dropped: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = busy.kill();
    let _ = busy.wait();
    assert_eq!(lagging, 1);
    assert_eq!(d.status()["subscribers"], 0);
    // The loss is also a record in the sinks, for a SIEM to see.
    let loss = d.wait_record("a loss record", |r| r["type"] == "loss");
    let lagging_loss = loss["losses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == "userspace:subscriber_lagging")
        .unwrap_or_else(|| panic!("{loss:#}"));
    assert_eq!(
        (
            lagging_loss["count"].as_u64(),
            lagging_loss["total"].as_u64()
        ),
        (Some(1), Some(1))
    );
}
