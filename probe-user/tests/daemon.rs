//! Root integration tests of `probectl daemon`, started from the unit's ExecStart
//! line with a fake systemd notify socket: READY=1 after the sensors attach, watchdog
//! pings, reloads (a bad policy is refused and the old one stays), and a SIGTERM
//! under load that loses nothing already received.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::process::Stdio;

use common::daemon::{Daemon, final_counts, unit_setting};
use common::rsyslog::{Rsyslog, free_port};
use common::*;
use nix::sys::signal::Signal;

const CUSTOM: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: custom}\ncategories:\n  - {name: timezone, env: [TZ], paths: [/etc/timezone, /etc/localtime]}\n";
const BAD: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: bad}\ncategories:\n  - {name: timezone, evn: [TZ]}\n";

#[test]
fn a_daemon_from_the_unit_notifies_reloads_and_drains_on_sigterm() {
    if !bpf_available("a_daemon_from_the_unit_notifies_reloads_and_drains_on_sigterm") {
        return;
    }
    // Every probe of the load is counted below: no summarising of repeats.
    let mut d = Daemon::start("daemon-unit", "repeats: {keep: 0}\n");
    let ready = d.wait_notified("READY=1");
    assert!(
        ready.contains("STATUS=") && ready.contains("sensors attached"),
        "{ready}"
    );
    d.wait_notified("WATCHDOG=1");
    let status = d.status();
    assert_eq!(status["unattached"], serde_json::json!([]), "{status:#}");
    // One choice per family: process, files, env, net, host.
    assert_eq!(status["sensors"].as_array().unwrap().len(), 5, "{status:#}");
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

/// The unit's capability bounding set and NoNewPrivileges, and its network (a
/// namespace of its own if it says PrivateNetwork=yes), applied with setpriv (and
/// unshare) as systemd would: every sensor still attaches, a watched process's probes
/// and connect are still seen, and the documented syslog sink (TCP to the local
/// rsyslog) delivers. (systemd does not run on the test machine, so IPAddressDeny/
/// IPAddressAllow, RestrictAddressFamilies and the file-system sandboxing are checked
/// as settings and by `systemd-analyze` only.)
#[test]
fn the_units_sandbox_still_lets_every_sensor_work_and_the_syslog_sink_deliver() {
    if !bpf_available("the_units_sandbox_still_lets_every_sensor_work_and_the_syslog_sink_deliver")
    {
        return;
    }
    let caps: Vec<String> = unit_setting("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(caps.len() >= 4, "{caps:?}");
    assert_eq!(unit_setting("NoNewPrivileges"), "yes");
    // Only this host may be reached, over the address families a syslog sink uses.
    assert_eq!(unit_setting("IPAddressDeny"), "any");
    assert!(
        unit_setting("IPAddressAllow")
            .split_whitespace()
            .any(|a| a == "localhost" || a.starts_with("127.")),
        "IPAddressAllow lets the sink reach the local rsyslog"
    );
    let families = unit_setting("RestrictAddressFamilies");
    for family in ["AF_INET", "AF_INET6"] {
        assert!(
            families.split_whitespace().any(|f| f == family),
            "RestrictAddressFamilies has {family}: {families}"
        );
    }
    let mut wrapper: Vec<String> = Vec::new();
    if unit_setting("PrivateNetwork") == "yes" {
        wrapper.extend(["unshare", "--net", "--"].map(String::from));
    }
    wrapper.extend(
        [
            "setpriv",
            &format!("--bounding-set=-all,{}", caps.join(",")),
            "--inh-caps=-all",
            "--no-new-privs",
            "--",
        ]
        .map(String::from),
    );
    let dir = test_dir("daemon-unit-syslog");
    let _ = std::fs::remove_file(dir.join("tcp.log"));
    let (udp_port, tcp_port) = (free_port(), free_port());
    let rsyslog = Rsyslog::start(&dir, udp_port, tcp_port);
    // The sink of docs/deploy.md's fleet set-up, on the test's port.
    let sinks = format!(
        "  - {{type: syslog, address: \"127.0.0.1:{tcp_port}\", transport: tcp, format: ecs}}\n"
    );
    let d = Daemon::start_full("daemon-unit-caps", "", &sinks, &wrapper);
    // The wrappers exec, so the pid is the daemon's once it runs (READY came from it).
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let bounding = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    const CAP_KILL: u32 = 5;
    const CAP_BPF: u32 = 39;
    assert_eq!(
        bounding & (1 << CAP_KILL),
        0,
        "CAP_KILL is outside the unit's set: {bounding:x}"
    );
    assert_ne!(
        bounding & (1 << CAP_BPF),
        0,
        "CAP_BPF is in it: {bounding:x}"
    );
    // Exactly the unit's set, less what this machine withholds from the tests
    // themselves (here: CAP_SYS_RESOURCE).
    let bit = |name: &str| -> u32 {
        match name {
            "+chown" => 0,
            "+dac_read_search" => 2,
            "+net_admin" => 12,
            "+sys_ptrace" => 19,
            "+sys_admin" => 21,
            "+sys_resource" => 24,
            "+perfmon" => 38,
            "+bpf" => 39,
            other => panic!("add {other} to this test's table of capability numbers"),
        }
    };
    let unit_mask: u64 = caps.iter().map(|c| 1u64 << bit(c)).sum();
    let ours = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(bounding, unit_mask & ours, "{bounding:x} {caps:?}");
    let status = d.status();
    assert_eq!(status["unattached"], serde_json::json!([]), "{status:#}");

    let listener = Listener::start();
    let gate = fifo(&d.dir, "gate");
    let mut shell = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "cat {} >/dev/null; {} probe {}",
                gate.display(),
                c_fixture().display(),
                listener.port
            ),
        ])
        .spawn()
        .unwrap();
    let ack = d.request(&format!(
        r#"{{"v":1,"op":"subscribe","pids":[{}],"format":"json"}}"#,
        shell.id()
    ));
    assert_eq!(ack["ok"], true, "{ack}");
    std::fs::write(&gate, b"x").unwrap();
    assert!(shell.wait().unwrap().success());
    d.wait_record("the fixture's TZ lookup", |r| {
        r["type"] == "probe" && r["target"] == "TZ" && r["how"] == "getenv"
    });
    let conn = d.wait_record("the fixture's connect", |r| r["type"] == "connect");
    assert_eq!(conn["destination"]["port"], listener.port, "{conn}");
    // The same connection reached rsyslog through the syslog sink.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let delivered = rsyslog.wait_lines("tcp.log", 1);
        if delivered
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|r| r["event"]["id"] == conn["id"])
        {
            break;
        }
        let status = d.status();
        assert!(
            std::time::Instant::now() < deadline,
            "the connect record did not reach rsyslog; sinks: {:#}",
            status["sinks"]
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
