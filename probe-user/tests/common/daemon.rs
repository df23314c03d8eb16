//! A real `probectl daemon` for the tests: started from the unit's own `ExecStart`
//! line (binary and config path swapped for the test's), with a fake systemd notify
//! socket, a private control socket and a jsonl sink in the test's directory.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{DEADLINE, probectl, test_dir};

pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub jsonl: PathBuf,
    pub stderr: PathBuf,
    pub policies: PathBuf,
    notify: UnixDatagram,
    /// Every notify datagram so far.
    pub notified: Vec<String>,
}

/// The value of a `Key=` line of the unit (the first one).
pub fn unit_setting(key: &str) -> String {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/probectl.service"
    ))
    .expect("read dist/probectl.service");
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}= line"))
        .to_owned()
}

/// The unit's ExecStart, split into words.
pub fn unit_exec_start() -> Vec<String> {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/probectl.service"
    ))
    .expect("read dist/probectl.service");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart line");
    line.split_whitespace().map(str::to_owned).collect()
}

impl Daemon {
    /// Starts a daemon whose config is `extra` (YAML lines) plus the test's socket,
    /// jsonl sink and policy directory; waits for READY=1.
    pub fn start(name: &str, extra: &str) -> Self {
        Self::start_wrapped(name, extra, &[])
    }

    /// `start`, with the unit's command line run by `wrapper` (a program and its
    /// arguments, e.g. setpriv limiting capabilities as the unit does).
    pub fn start_wrapped(name: &str, extra: &str, wrapper: &[String]) -> Self {
        Self::start_full(name, extra, "", wrapper)
    }

    /// `start_wrapped`, with `sinks` (YAML list items) after the test's jsonl sink.
    pub fn start_full(name: &str, extra: &str, sinks: &str, wrapper: &[String]) -> Self {
        let dir = test_dir(name);
        let socket = dir.join("probectl.sock");
        let jsonl = dir.join("events.jsonl");
        let stderr = dir.join("daemon.stderr");
        let policies = dir.join("policies");
        let _ = std::fs::remove_file(&jsonl);
        std::fs::create_dir_all(&policies).unwrap();
        let config = dir.join("config.yaml");
        // `extra` may name its own state directory.
        let state_dir = if extra.contains("state_dir:") {
            String::new()
        } else {
            format!("state_dir: {}\n", dir.display())
        };
        std::fs::write(
            &config,
            format!(
                "socket: {}\n{state_dir}policy_dirs: [{}]\nsinks:\n  - {{type: jsonl, path: {}, format: native}}\n{sinks}status_every: 1s\n{extra}",
                socket.display(),
                policies.display(),
                jsonl.display()
            ),
        )
        .unwrap();
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // The unit's command line, with this build's binary and the test's config.
        let words = unit_exec_start();
        assert!(
            words[0].ends_with("/probectl"),
            "ExecStart runs probectl: {words:?}"
        );
        let config_at = words
            .iter()
            .position(|w| w == "--config")
            .expect("ExecStart passes --config");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(probectl());
                c
            }
            None => Command::new(probectl()),
        };
        for (i, w) in words.iter().enumerate().skip(1) {
            if i == config_at + 1 {
                cmd.arg(&config);
            } else {
                cmd.arg(w);
            }
        }
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "400000")
            .env_remove("CI")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("start probectl daemon");
        let mut daemon = Daemon {
            child: Some(child),
            dir,
            socket,
            jsonl,
            stderr,
            policies,
            notify,
            notified: Vec::new(),
        };
        daemon.wait_notified("READY=1");
        daemon
    }

    /// Waits for a notify datagram containing `what`; returns it.
    pub fn wait_notified(&mut self, what: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        if let Some(m) = self.notified.iter().find(|m| m.contains(what)) {
            return m.clone();
        }
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.notified.push(m.clone());
                if m.contains(what) {
                    return m;
                }
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the daemon exited ({status}) before {what:?}; stderr:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
        }
        panic!(
            "no {what:?} from the daemon within {DEADLINE:?}; got {:?}; stderr:\n{}",
            self.notified,
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
    }

    /// A second handle on the notify socket, for a test that times the datagrams
    /// itself (the watchdog under load): what it reads, `wait_notified` does not see.
    pub fn notify_socket(&self) -> UnixDatagram {
        self.notify.try_clone().expect("clone the notify socket")
    }

    /// Sends `signal` without waiting.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Whether the daemon still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// One request line, one response.
    pub fn request(&self, line: &str) -> Value {
        let mut s = UnixStream::connect(&self.socket).expect("connect to the daemon");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        let mut answer = String::new();
        BufReader::new(&s).read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
    }

    pub fn status(&self) -> Value {
        let v = self.request(r#"{"v":1,"op":"status"}"#);
        assert_eq!(v["ok"], true, "{v}");
        v["status"].clone()
    }

    /// `probectl ARGS` as a client of this daemon.
    pub fn client(&self) -> Command {
        let mut cmd = Command::new(probectl());
        cmd.env("PROBECTL_SOCKET", &self.socket).env_remove("CI");
        cmd
    }

    /// The records the jsonl sink holds now.
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.jsonl).unwrap_or_default();
        // Only complete lines: the daemon may be writing the next one.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Waits until the jsonl sink holds a record satisfying `pred`.
    pub fn wait_record(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in {} within {DEADLINE:?}",
                self.jsonl.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` and waits for the exit; returns the exit code and stderr.
    pub fn stop(mut self, signal: nix::sys::signal::Signal) -> (i32, String) {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            self.notified
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        (
            status.code().unwrap_or(-1),
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }

    pub fn policy_dir(&self) -> &Path {
        &self.policies
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }
}

/// The counters in the daemon's last line: `events received=R handled=H
/// undecodable=U records_written=W`.
pub fn final_counts(stderr: &str) -> (u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("probectl daemon: stopped on"))
        .unwrap_or_else(|| panic!("no final line in the daemon's stderr:\n{stderr}"));
    let get = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    (
        get("received="),
        get("handled="),
        get("undecodable="),
        get("records_written="),
    )
}
