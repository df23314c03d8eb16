//! A real rsyslogd (Debian's, installed if missing) on loopback, with a config written
//! by the test around the global settings docs/deploy.md documents.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::DEADLINE;

/// The `global(maxMessageSize=...)` line of the rsyslog set-up in docs/deploy.md: every
/// test's rsyslog uses it, so the documented size is the one tested.
pub fn documented_global() -> String {
    let deploy = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/deploy.md"))
        .expect("read docs/deploy.md");
    deploy
        .lines()
        .find(|l| l.starts_with("global(") && l.contains("maxMessageSize"))
        .map(|l| l.split('#').next().unwrap_or(l).trim().to_owned())
        .expect("docs/deploy.md documents rsyslog's global(maxMessageSize=...)")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// rsyslogd in the foreground: UDP and TCP inputs on loopback, each to its own
/// file with only the message part.
pub struct Rsyslog {
    child: Option<Child>,
    conf: PathBuf,
    dir: PathBuf,
    tcp_port: u16,
}

impl Rsyslog {
    pub fn ensure_installed() {
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

    pub fn start(dir: &Path, udp_port: u16, tcp_port: u16) -> Self {
        Self::start_with(
            dir,
            tcp_port,
            &format!(
                r#"{documented}
global(workDirectory="{d}")
module(load="imudp")
module(load="imtcp")
template(name="msgonly" type="string" string="%msg%\n")
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="msgonly") }}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="msgonly") }}
input(type="imudp" address="127.0.0.1" port="{udp_port}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}" ruleset="tcp")
"#,
                d = dir.display(),
                documented = documented_global(),
            ),
        )
    }

    /// rsyslogd with `text` as its config; ready once `tcp_port` accepts.
    pub fn start_with(dir: &Path, tcp_port: u16, text: &str) -> Self {
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
    pub fn resume(&mut self) {
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

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// The messages rsyslog wrote for one input, once there are at least `n`.
    pub fn wait_lines(&self, file: &str, n: usize) -> Vec<String> {
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
