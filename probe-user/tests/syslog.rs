//! Root integration tests of the syslog sink against a real rsyslog (Debian's,
//! installed if missing), started on loopback with a config written here: every
//! record reaches it over UDP and over TCP exactly as the ECS sink wrote it, and a
//! TCP outage that ends while probectl retries loses nothing and reorders nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// rsyslogd in the foreground: UDP and TCP inputs on loopback, each to its own
/// file with only the message part.
struct Rsyslog {
    child: Option<Child>,
    conf: PathBuf,
    dir: PathBuf,
    tcp_port: u16,
}

impl Rsyslog {
    fn ensure_installed() {
        if Path::new("/usr/sbin/rsyslogd").exists()
            && Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists()
        {
            return;
        }
        let out = Command::new("apt-get")
            .args(["install", "-y", "rsyslog", "rsyslog-gnutls"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("run apt-get");
        assert!(out.status.success(), "cannot install rsyslog: {out:?}");
    }

    fn start(dir: &Path, udp_port: u16, tcp_port: u16) -> Self {
        Self::start_with(
            dir,
            tcp_port,
            &format!(
                r#"global(workDirectory="{d}" maxMessageSize="256k")
module(load="imudp")
module(load="imtcp")
template(name="msgonly" type="string" string="%msg%\n")
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="msgonly") }}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="msgonly") }}
input(type="imudp" address="127.0.0.1" port="{udp_port}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}" ruleset="tcp")
"#,
                d = dir.display()
            ),
        )
    }

    /// rsyslogd with `text` as its config; ready once `tcp_port` accepts.
    fn start_with(dir: &Path, tcp_port: u16, text: &str) -> Self {
        Self::ensure_installed();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(&conf, text).unwrap();
        let mut r = Self {
            child: None,
            conf,
            dir: dir.to_owned(),
            tcp_port,
        };
        r.resume();
        r
    }

    /// Starts rsyslogd (again) and waits until its TCP input accepts connections.
    fn resume(&mut self) {
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.tcp_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen on {}",
                self.tcp_port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// The messages rsyslog wrote for one input, once there are at least `n`.
    fn wait_lines(&self, file: &str, n: usize) -> Vec<String> {
        let path = self.dir.join(file);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(|l| l.trim_start().to_owned()).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} has {} of {n} messages",
                path.display(),
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

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
    let _rsyslog = Rsyslog::start_with(
        &dir,
        port,
        &format!(
            r#"global(workDirectory="{d}" maxMessageSize="256k"
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
