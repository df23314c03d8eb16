//! Root integration tests of the syslog sink against a real rsyslog (Debian's,
//! installed if missing), started on loopback with a config written here: every
//! record reaches it over UDP and over TCP exactly as the ECS sink wrote it, and a
//! TCP outage that ends while probectl retries loses nothing and reorders nothing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::rsyslog::{Rsyslog, documented_global, free_port};
use common::*;

#[test]
fn records_reach_a_real_rsyslog_over_udp_and_tcp_and_survive_a_tcp_outage() {
    if !bpf_available("records_reach_a_real_rsyslog_over_udp_and_tcp_and_survive_a_tcp_outage") {
        return;
    }
    let dir = test_dir("syslog-rsyslog");
    for f in ["udp.log", "tcp.log", "ecs.jsonl"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let (udp_port, tcp_port) = (free_port(), free_port());
    let mut rsyslog = Rsyslog::start(&dir, udp_port, tcp_port);
    let sinks = format!(
        "  - {{type: jsonl, path: {}, format: ecs}}\n  - {{type: syslog, address: \"127.0.0.1:{udp_port}\", transport: udp}}\n  - {{type: syslog, address: \"127.0.0.1:{tcp_port}\", transport: tcp}}\n",
        dir.join("ecs.jsonl").display()
    );
    let d = Daemon::start_full("syslog-daemon", "", &sinks, &[]);
    run_fixture(&d);
    let ecs_lines = |n: usize| -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = std::fs::read_to_string(dir.join("ecs.jsonl")).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "the ECS sink has {} of {n}",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let first = ecs_lines(4);
    let n = first.len();
    assert_eq!(
        rsyslog.wait_lines("udp.log", n),
        first,
        "UDP: exactly the ECS records, in order"
    );
    assert_eq!(
        rsyslog.wait_lines("tcp.log", n),
        first,
        "TCP: exactly the ECS records, in order"
    );

    // Outage: rsyslog stops, records are made, rsyslog comes back while the TCP sink
    // retries; every record arrives once, in order.
    rsyslog.stop();
    run_fixture(&d);
    let all = ecs_lines(n + 4);
    rsyslog.resume();
    let got = rsyslog.wait_lines("tcp.log", all.len());
    assert_eq!(got, all, "after the outage: all records, once, in order");
    let status = d.status();
    let tcp = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with("syslog:tcp"))
        .cloned()
        .unwrap();
    assert_eq!(
        (tcp["errors"].as_u64(), tcp["queue_full"].as_u64()),
        (Some(0), Some(0)),
        "{tcp}"
    );
}

/// A record longer than syslog's 8 KiB default (from a process whose command line is
/// 8 KB) reaches the rsyslog set up as docs/deploy.md documents whole, as one valid
/// JSON line, over UDP and over TCP.
#[test]
fn a_record_longer_than_8_kib_reaches_the_documented_rsyslog_whole() {
    if !bpf_available("a_record_longer_than_8_kib_reaches_the_documented_rsyslog_whole") {
        return;
    }
    let dir = test_dir("syslog-large");
    for f in ["udp.log", "tcp.log", "ecs.jsonl"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let (udp_port, tcp_port) = (free_port(), free_port());
    let rsyslog = Rsyslog::start(&dir, udp_port, tcp_port);
    let ecs = dir.join("ecs.jsonl");
    let sinks = format!(
        "  - {{type: jsonl, path: {}, format: ecs}}\n  - {{type: syslog, address: \"127.0.0.1:{udp_port}\", transport: udp}}\n  - {{type: syslog, address: \"127.0.0.1:{tcp_port}\", transport: tcp}}\n",
        ecs.display()
    );
    let d = Daemon::start_full("syslog-large-daemon", "", &sinks, &[]);
    // A shell with 40 arguments of 200 bytes, watched while it runs, so its records
    // carry the whole command line (from /proc); it opens /etc/timezone (a probe).
    let gate = fifo(&dir, "gate");
    let pad: Vec<String> = (0..40)
        .map(|i| format!("{i:03}{}", "x".repeat(197)))
        .collect();
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "read g < {}; read tz < /etc/timezone; true",
            gate.display()
        ))
        .arg("sh")
        .args(&pad)
        .spawn()
        .unwrap();
    let mut sub = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    {
        use std::io::{BufRead as _, Write as _};
        writeln!(
            sub,
            r#"{{"v":1,"op":"subscribe","pids":[{}],"format":"json"}}"#,
            shell.id()
        )
        .unwrap();
        sub.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut ack = String::new();
        std::io::BufReader::new(&sub).read_line(&mut ack).unwrap();
        assert!(ack.contains(r#""ok":true"#), "{ack}");
    }
    std::fs::write(&gate, b"x\n").unwrap();
    assert!(shell.wait().unwrap().success());
    let mut made = Vec::new();
    wait_until("an ECS record longer than 8 KiB", || {
        made = lines_of(&ecs);
        made.iter()
            .any(|l| l.len() > 8192 && l.contains("/etc/timezone"))
    });
    drop(sub);
    for file in ["udp.log", "tcp.log"] {
        let got = rsyslog.wait_lines(file, made.len());
        assert_eq!(
            got[..made.len()],
            made[..],
            "{file}: the ECS records, whole"
        );
        for line in &got {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{file}: not JSON ({e}): {} bytes", line.len()));
        }
    }
    let status = d.status();
    for prefix in ["syslog:udp", "syslog:tcp"] {
        let sink = tcp_sink_named(&status, prefix);
        assert_eq!(
            (sink["errors"].as_u64(), sink["too_large"].as_u64()),
            (Some(0), Some(0)),
            "{sink}"
        );
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn run_fixture(d: &Daemon) {
    let mut cmd = d.client();
    cmd.args([
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        "cat /etc/timezone >/dev/null; TZ=UTC date >/dev/null",
    ]);
    let out = json_run(cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tcp_sink(status: &serde_json::Value) -> serde_json::Value {
    status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with("syslog:tcp"))
        .cloned()
        .unwrap_or_else(|| panic!("{status:#}"))
}

#[test]
fn an_outage_spools_across_a_daemon_restart_and_a_full_spool_is_a_counted_loss() {
    if !bpf_available("an_outage_spools_across_a_daemon_restart_and_a_full_spool_is_a_counted_loss")
    {
        return;
    }
    let dir = test_dir("syslog-spool");
    for f in ["tcp.log", "udp.log", "ecs.jsonl", "ecs-small.jsonl"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let (udp_port, tcp_port) = (free_port(), free_port());
    let mut rsyslog = Rsyslog::start(&dir, udp_port, tcp_port);
    rsyslog.stop();

    // The outage: records go to the spool; the daemon is restarted before rsyslog is
    // back; the new daemon delivers them, once, in order.
    let ecs = dir.join("ecs.jsonl");
    let sinks = format!(
        "  - {{type: jsonl, path: {}, format: ecs}}\n  - {{type: syslog, address: \"127.0.0.1:{tcp_port}\", transport: tcp}}\n",
        ecs.display()
    );
    let first = Daemon::start_full("syslog-spool-daemon", "", &sinks, &[]);
    run_fixture(&first);
    wait_until("records in the spool", || {
        tcp_sink(&first.status())["spooled"].as_u64() >= Some(4)
    });
    let (code, stderr) = first.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, 0, "{stderr}");
    let made = lines_of(&ecs);
    assert!(made.len() >= 4, "{made:#?}");
    let second = Daemon::start_full("syslog-spool-daemon", "", &sinks, &[]);
    assert_eq!(
        tcp_sink(&second.status())["spooled"].as_u64(),
        Some(made.len() as u64),
        "the restarted daemon found the spool"
    );
    rsyslog.resume();
    assert_eq!(rsyslog.wait_lines("tcp.log", made.len()), made);
    wait_until("the spool drained", || {
        tcp_sink(&second.status())["spooled"] == 0
    });
    assert_eq!(
        rsyslog.wait_lines("tcp.log", made.len()).len(),
        made.len(),
        "each once"
    );
    drop(second);

    // A spool too small for the outage: what does not fit is counted, and the count
    // is a loss record; what fit arrives.
    rsyslog.stop();
    let _ = std::fs::remove_file(dir.join("tcp.log"));
    let small = dir.join("ecs-small.jsonl");
    let sinks = format!(
        "  - {{type: jsonl, path: {}, format: ecs}}\n  - {{type: syslog, address: \"127.0.0.1:{tcp_port}\", transport: tcp, spool_max_bytes: 3000}}\n",
        small.display()
    );
    let d = Daemon::start_full("syslog-small-spool", "", &sinks, &[]);
    run_fixture(&d);
    let loss = d.wait_record("a loss record for the full spool", |r| {
        r["type"] == "loss"
            && r["losses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["source"].as_str().unwrap().ends_with(":spool_full"))
    });
    rsyslog.resume();
    wait_until("the small spool drained", || {
        tcp_sink(&d.status())["spooled"] == 0
    });
    let status = tcp_sink(&d.status());
    let dropped = status["spool_full"].as_u64().unwrap();
    assert!(dropped >= 1, "{status}");
    let reported = loss["losses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"].as_str().unwrap().ends_with(":spool_full"))
        .unwrap()["total"]
        .as_u64()
        .unwrap();
    assert!(reported >= 1 && reported <= dropped, "{loss:#} vs {status}");
    let native = d.jsonl.clone();
    let (code, stderr) = d.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, 0, "{stderr}");
    // The last loss record (at the latest, the one written at shutdown) carries the
    // exact count.
    let last_total = lines_of(&native)
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "loss")
        .flat_map(|r| r["losses"].as_array().cloned().unwrap_or_default())
        .filter(|l| l["source"].as_str().unwrap().ends_with(":spool_full"))
        .map(|l| l["total"].as_u64().unwrap())
        .next_back()
        .expect("a loss record for the spool");
    assert_eq!(
        last_total, dropped,
        "the loss record's count is the spool's drops"
    );
    // Every record the ECS sink has either reached rsyslog or was counted as dropped.
    let written = lines_of(&small);
    let delivered = rsyslog.wait_lines("tcp.log", 1);
    assert_eq!(
        delivered.len() as u64 + dropped,
        written.len() as u64,
        "delivered {} + dropped {dropped} != made {}",
        delivered.len(),
        written.len()
    );
    for line in &delivered {
        assert!(
            written.contains(line),
            "delivered a record the ECS sink does not have: {line}"
        );
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the
/// openssl command.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=probectl test CA",
    ]);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN=probectl test {name}"),
        ]);
        std::fs::write(dir.join(format!("{name}.ext")), ext.replace("\\n", "\n")).unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

#[test]
fn records_reach_a_real_rsyslog_over_tls_with_a_client_certificate() {
    if !bpf_available("records_reach_a_real_rsyslog_over_tls_with_a_client_certificate") {
        return;
    }
    let dir = test_dir("syslog-tls");
    for f in ["tls.log", "ecs.jsonl"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    make_certificates(&dir);
    let port = free_port();
    let d = dir.display();
    let documented = documented_global();
    let _rsyslog = Rsyslog::start_with(
        &dir,
        port,
        &format!(
            r#"{documented}
global(workDirectory="{d}"
       DefaultNetstreamDriverCAFile="{d}/ca.pem"
       DefaultNetstreamDriverCertFile="{d}/server.pem"
       DefaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid")
template(name="msgonly" type="string" string="%msg%\n")
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="msgonly") }}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="tls")
"#
        ),
    );
    let sinks = format!(
        "  - {{type: jsonl, path: {d}/ecs.jsonl, format: ecs}}\n  - {{type: syslog, address: \"127.0.0.1:{port}\", transport: tls, ca_file: {d}/ca.pem, cert_file: {d}/client.pem, key_file: {d}/client.key}}\n"
    );
    let daemon = Daemon::start_full("syslog-tls-daemon", "", &sinks, &[]);
    run_fixture(&daemon);
    let made = {
        let mut lines = Vec::new();
        wait_until("the ECS sink's records", || {
            lines = lines_of(&dir.join("ecs.jsonl"));
            lines.len() >= 4
        });
        lines
    };
    let rsyslog_lines = _rsyslog.wait_lines("tls.log", made.len());
    assert_eq!(
        rsyslog_lines, made,
        "over TLS: exactly the ECS records, in order"
    );
    let sink = tcp_sink_named(&daemon.status(), "syslog:tls");
    assert_eq!(
        (sink["errors"].as_u64(), sink["spooled"].as_u64()),
        (Some(0), Some(0)),
        "{sink}"
    );
}

fn tcp_sink_named(status: &serde_json::Value, prefix: &str) -> serde_json::Value {
    status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with(prefix))
        .cloned()
        .unwrap_or_else(|| panic!("{status:#}"))
}
