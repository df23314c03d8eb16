//! Root integration tests of `probectl daemon`, started from the unit's ExecStart
//! line with a fake systemd notify socket: READY=1 after the sensors attach, watchdog
//! pings, reloads (a bad policy is refused and the old one stays), and a SIGTERM
//! under load that loses nothing already received.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::process::Stdio;

use common::daemon::{Daemon, final_counts};
use common::*;
use nix::sys::signal::Signal;

const CUSTOM: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: custom}\ncategories:\n  - {name: timezone, env: [TZ], paths: [/etc/timezone, /etc/localtime]}\n";
const BAD: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: bad}\ncategories:\n  - {name: timezone, evn: [TZ]}\n";

#[test]
fn a_daemon_from_the_unit_notifies_reloads_and_drains_on_sigterm() {
    if !bpf_available("a_daemon_from_the_unit_notifies_reloads_and_drains_on_sigterm") {
        return;
    }
    let mut d = Daemon::start("daemon-unit", "");
    let ready = d.wait_notified("READY=1");
    assert!(
        ready.contains("STATUS=") && ready.contains("sensors attached"),
        "{ready}"
    );
    d.wait_notified("WATCHDOG=1");
    let status = d.status();
    assert_eq!(status["unattached"], serde_json::json!([]), "{status:#}");
    assert_eq!(status["sensors"].as_array().unwrap().len(), 4, "{status:#}");
    assert_eq!(
        status["policy"]["name"], "default",
        "no policy file: the built-in one"
    );

    // A bad policy file: SIGHUP refuses it, and the built-in policy stays.
    std::fs::write(d.policy_dir().join("bad.yaml"), BAD).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), Signal::SIGHUP).unwrap();
    let refused = d.wait_record("a refused reload", |r| r["type"] == "policy_reload");
    assert_eq!(refused["ok"], false, "{refused}");
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("bad.yaml:5:") && error.contains("evn"),
        "{error}"
    );
    assert_eq!(d.status()["policy"]["name"], "default");
    // The same through the socket: exit code 1 and the reason.
    let out = d.client().args(["policy", "reload"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the old one stays"),
        "{out:?}"
    );

    // Fixed: the reload goes through.
    std::fs::remove_file(d.policy_dir().join("bad.yaml")).unwrap();
    std::fs::write(d.policy_dir().join("custom.yaml"), CUSTOM).unwrap();
    let out = d.client().args(["policy", "reload"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.status()["policy"]["name"], "custom");
    let list = d.client().args(["policy", "list"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("custom.yaml"),
        "{list:?}"
    );

    // Load: a watched shell runs `cat /etc/timezone` in a loop; SIGTERM comes while
    // it runs.
    let dir = d.dir.clone();
    let gate = fifo(&dir, "gate");
    let mut shell = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "cat {} >/dev/null; i=0; while [ $i -lt 100000 ]; do cat /etc/timezone >/dev/null; i=$((i+1)); done",
                gate.display()
            ),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut sub = UnixStream::connect(&d.socket).unwrap();
    writeln!(
        sub,
        r#"{{"v":1,"op":"subscribe","pids":[{}],"format":"json"}}"#,
        shell.id()
    )
    .unwrap();
    let mut lines = BufReader::new(sub.try_clone().unwrap()).lines();
    let ack = lines.next().unwrap().unwrap();
    assert!(ack.contains(r#""ok":true"#), "{ack}");
    // The subscriber reads on its own thread, as a client would.
    std::thread::spawn(move || for _ in lines {});
    std::fs::write(&gate, b"x").unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    while d.records().iter().filter(|r| r["type"] == "probe").count() < 200 {
        assert!(std::time::Instant::now() < deadline, "no load in the sink");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        shell.try_wait().unwrap().is_none(),
        "the load still runs at SIGTERM"
    );
    let jsonl = d.jsonl.clone();
    let (code, stderr) = d.stop(Signal::SIGTERM);
    let _ = shell.kill();
    let _ = shell.wait();
    assert_eq!(code, 0, "{stderr}");
    let (received, handled, undecodable, written) = final_counts(&stderr);
    assert!(received > 200, "{stderr}");
    assert_eq!(
        received,
        handled + undecodable,
        "every received event was handled: {stderr}"
    );
    assert_eq!(undecodable, 0, "{stderr}");
    let lines = std::fs::read_to_string(&jsonl).unwrap().lines().count() as u64;
    assert_eq!(
        lines, written,
        "every record counted as written is in the sink"
    );
}

#[test]
fn the_unit_verifies_and_its_hardening_score_is_the_documented_one() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        panic!("systemd-analyze is missing: install systemd (cargo xtask setup does)");
    };
    assert!(out.status.success());
    let dir = test_dir("unit-verify");
    let unit = dir.join("probectl.service");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/probectl.service"
    ))
    .unwrap()
    .replace("/usr/local/bin/probectl", &probectl().display().to_string());
    std::fs::write(&unit, text).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {verify:?}"
    );
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let score = text
        .lines()
        .find_map(|l| l.split("exposure level for probectl.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no exposure score: {security:?}"));
    let deploy =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/deploy.md")).unwrap();
    assert!(
        deploy.contains(&format!("exposure level {score}")),
        "docs/deploy.md must record the current score ({score})"
    );
}
