//! Shared helpers of the root integration tests: privilege checks that fail loudly
//! under CI, fixture builds, a real TCP listener, and running `probectl` with a deadline.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::ffi::OsStr;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub mod btf;
pub mod daemon;
pub mod resolver;
pub mod rsyslog;
pub mod schemas;
pub mod users;

/// How long any single probectl run may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// True when the eBPF tests can run. Under `CI=true` a missing capability is a test
/// failure, never a skip; on a developer machine without root the test says so
/// loudly and returns early.
pub fn bpf_available(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{test}: CI=true but not running as root; the eBPF integration tests must run here, not be skipped"
        );
    }
    eprintln!("NOT RUN {test}: needs root to load eBPF programs (run `sudo -E cargo xtask test`)");
    false
}

/// A fresh directory for one test's files under cargo's tmp dir (kept after the run
/// for inspection), named after the test and this test process.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A fresh directory with a short path, for tests' home directories: a `HOME` or
/// `XDG_CONFIG_HOME` value is used only below 63 bytes (what the exec scan captures),
/// and `test_dir` under a long checkout path would be longer than that.
pub fn short_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/probectl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    assert!(
        dir.as_os_str().len() < 48,
        "{} leaves too little room for a usable home",
        dir.display()
    );
    dir
}

/// A fresh FIFO `name` in `dir`: fixtures block on it until the test writes a byte.
pub fn fifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
    path
}

pub fn probectl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_probectl"))
}

/// `probectl` with the test runner's `CI` variable removed: the watched commands
/// inherit probectl's environment, and the default policy reports `CI` present at
/// exec (ci-detection), which would make results depend on where the tests run.
/// Also pointed at a socket that does not exist, so that a daemon running on the
/// machine is never used by accident: tests of the daemon set their own.
pub fn probectl_command() -> Command {
    let mut cmd = Command::new(probectl());
    cmd.env_remove("CI");
    cmd.env(
        "PROBECTL_SOCKET",
        "/nonexistent/probectl-tests/no-daemon.sock",
    );
    cmd
}

/// Compiles the C fixture once per test binary into the cargo tmp dir.
pub fn c_fixture() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_c_fixture("tz_probe")).clone()
}

/// `fixtures/net_probe.c`: the network sensor's kernel-copy and DNS shapes.
pub fn net_fixture() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_c_fixture("net_probe")).clone()
}

/// Compiles `tests/fixtures/STEM.c` with cc into the cargo tmp dir.
pub fn build_c_fixture(stem: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{stem}.c"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{stem}-{}", std::process::id()));
    let status = Command::new("cc")
        .args(["-O1", "-Wall", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run cc to build {}: {e} (install gcc)",
                src.display()
            )
        });
    assert!(status.success(), "cc failed to build {}", src.display());
    out
}

/// Builds `fixtures/musl_getenv.c` with musl-gcc (musl-tools; `cargo xtask test`
/// installs it), so its getenv runs in musl's libc.
pub fn musl_fixture() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/musl_getenv.c");
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("musl_getenv-{}", std::process::id()));
    let status = Command::new("musl-gcc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run musl-gcc: {e} (apt-get install musl-tools, or run `cargo xtask test`)"
            )
        });
    assert!(
        status.success(),
        "musl-gcc failed to build {}",
        src.display()
    );
    out
}

pub fn node_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node_probe.js")
}

/// A real listener on loopback that accepts and drains every connection.
pub struct Listener {
    pub port: u16,
}

impl Listener {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_on(addr: &str) -> Self {
        let listener = TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("bind a loopback listener on {addr}: {e}"));
        let port = listener.local_addr().expect("listener address").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink);
                });
            }
        });
        Self { port }
    }
}

/// Runs a command to completion, failing the test if it outlives `DEADLINE`.
pub fn run_with_deadline(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.expect("wait for probectl"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{cmd:?} did not finish within {DEADLINE:?}");
        }
    }
}

/// The result of `probectl run --json -- ARGS`.
pub struct JsonRun {
    pub code: i32,
    pub records: Vec<Value>,
    pub stderr: String,
}

impl JsonRun {
    pub fn of_type(&self, ty: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == ty).collect()
    }

    pub fn report(&self) -> &Value {
        let reports = self.of_type("report");
        assert_eq!(
            reports.len(),
            1,
            "expected one report record; stderr:\n{}",
            self.stderr
        );
        reports[0]
    }

    /// A probe record matching pid, how and target, or a panic that shows all probes.
    pub fn probe(&self, pid: u64, how: &[&str], target: &str) -> &Value {
        self.of_type("probe")
            .into_iter()
            .find(|p| {
                p["pid"] == pid && how.iter().any(|h| p["how"] == *h) && p["target"] == target
            })
            .unwrap_or_else(|| {
                panic!(
                    "no probe {how:?} {target} by pid {pid}; probes: {:#?}\nstderr:\n{}",
                    self.of_type("probe"),
                    self.stderr
                )
            })
    }
}

pub fn probectl_json(args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> JsonRun {
    let mut cmd = probectl_command();
    cmd.arg("run").arg("--json").arg("--").args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    json_run(cmd)
}

/// `probectl run --json --policy POLICY -- ARGS`.
pub fn probectl_json_with_policy(policy: &Path, args: &[&std::ffi::OsStr]) -> JsonRun {
    probectl_json_with(&[OsStr::new("--policy"), policy.as_os_str()], args)
}

/// `probectl run --json OPTIONS -- ARGS`.
pub fn probectl_json_with(options: &[&std::ffi::OsStr], args: &[&std::ffi::OsStr]) -> JsonRun {
    let mut cmd = probectl_command();
    cmd.arg("run")
        .arg("--json")
        .args(options)
        .arg("--")
        .args(args);
    json_run(cmd)
}

pub fn json_run(cmd: Command) -> JsonRun {
    let out = run_with_deadline(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The watched command shares stdout; records are the lines that parse as objects
    // with a `type`.
    let records = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("type").is_some())
        .collect();
    JsonRun {
        code: out.status.code().unwrap_or(-1),
        records,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Names of the probes listed before a connection, as (category, how, target).
pub fn probes_before(conn: &Value) -> Vec<(String, String, String)> {
    conn["probes_before"]
        .as_array()
        .expect("probes_before is an array")
        .iter()
        .map(|p| {
            (
                p["category"].as_str().unwrap().to_owned(),
                p["how"].as_str().unwrap().to_owned(),
                p["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A `probectl run --json` whose records are read while it runs, so a test can wait
/// for one (say, the exec of its fixture) before it lets the fixture go on.
pub struct StreamingRun {
    child: std::process::Child,
    records: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl StreamingRun {
    pub fn start(args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> Self {
        Self::start_with_policy(None, args, envs)
    }

    pub fn start_with_policy(
        policy: Option<&Path>,
        args: &[&std::ffi::OsStr],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut cmd = probectl_command();
        cmd.arg("run").arg("--json");
        if let Some(policy) = policy {
            cmd.arg("--policy").arg(policy);
        }
        cmd.arg("--").args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self::spawn(cmd)
    }

    /// `probectl ARGS` (a subcommand and its options, with `--json`).
    pub fn start_probectl(args: &[&std::ffi::OsStr]) -> Self {
        let mut cmd = probectl_command();
        cmd.args(args);
        Self::spawn(cmd)
    }

    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start probectl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Self {
            child,
            records: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `DEADLINE`) for a record that satisfies `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|r| pred(r)) {
            return found.clone();
        }
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.records.recv_timeout(left) {
                Ok(r) => {
                    self.seen.push(r.clone());
                    if pred(&r) {
                        return r;
                    }
                }
                Err(_) => panic!(
                    "no {what} within {DEADLINE:?}; records so far: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for probectl to exit and returns everything it printed.
    /// (Dropping a `StreamingRun` without finishing it stops probectl, which passes the
    /// SIGTERM on to its command.)
    /// Sends a signal to probectl itself.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("signal probectl");
    }

    pub fn finish(mut self) -> JsonRun {
        let report = self.wait_for("report", |r| r["type"] == "report");
        let _ = report;
        let status = self.child.wait().expect("wait for probectl");
        self.seen.extend(self.records.try_iter());
        JsonRun {
            code: status.code().unwrap_or(-1),
            records: std::mem::take(&mut self.seen),
            stderr: String::new(),
        }
    }
}

impl Drop for StreamingRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
        }
    }
}

/// The default policy with `select.comms` naming the C fixture.
pub fn selecting_policy(dir: &std::path::Path) -> std::path::PathBuf {
    let name = c_fixture()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let comm: String = name.chars().take(15).collect();
    policy_selecting(dir, &format!("  comms: [{comm:?}]"))
}

/// The default policy with `select` (YAML lines under `select:`) added.
pub fn policy_selecting(dir: &std::path::Path, select: &str) -> std::path::PathBuf {
    let policy = dir.join("policy.yaml");
    let default = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/default.yaml"
    ))
    .unwrap();
    std::fs::write(
        &policy,
        default.replace(
            "categories:\n",
            &format!("select:\n{select}\n\ncategories:\n"),
        ),
    )
    .unwrap();
    policy
}

/// The three pids `tz_probe fork|daemon` writes to its pid file: root, child and
/// grandchild.
pub fn fork_pids(pidfile: &Path) -> [u64; 3] {
    let pids: Vec<u64> = std::fs::read_to_string(pidfile)
        .expect("fixture wrote its pid file")
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    pids.try_into()
        .unwrap_or_else(|pids| panic!("pid file: {pids:?}"))
}

/// The default policy with `rules` (YAML list items, indented two spaces) appended to
/// its `rules:` list, written as `dir/policy.yaml`.
pub fn default_policy_plus(dir: &Path, rules: &str) -> PathBuf {
    let default = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/default.yaml"
    ))
    .expect("read the default policy");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, format!("{default}\n{rules}")).expect("write the policy");
    policy
}
