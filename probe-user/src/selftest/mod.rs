//! `probectl selftest` (also `probectl doctor --selftest`): a fast end-to-end proof
//! on the user's own machine that each sensor family sees what it should, through
//! the attach point the fallback chain chose.
//!
//! Self-contained, so that it runs in a minimal initramfs (busybox, only `lo`): it
//! makes its own policy path (a symlink in a private directory it creates), writes a
//! built-in policy naming it and one env name, compiles it with the normal policy
//! machinery, opens the real engine, starts its own loopback listeners, and runs a
//! child (`child`) that performs each operation once it is watched. The runner then
//! checks, record by record, that each operation was seen.

pub mod child;
mod render;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{self, Engine};
use crate::ops::Operation;
use crate::policy::rules::NetworkEvent;
use crate::policy::{self, PreparedPolicy};
use crate::records::{Body, Record};
use crate::sensors::{AttachStatus, Family};

pub use child::ChildPlan;
pub use render::render;

/// The env name the child looks up and carries into its exec.
pub const ENV_NAME: &str = "PROBECTL_SELFTEST";
/// The policy path's name inside the self-test's private directory.
const LINK_NAME: &str = "probe-link";

#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    #[error("cannot prepare the self-test's files in {dir}: {source}")]
    Workspace {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the self-test's built-in policy does not compile: {0}")]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("cannot open a loopback socket (is `lo` up?): {0}")]
    Loopback(#[source] std::io::Error),
    #[error("cannot start the self-test's child {exe}: {source}")]
    Child {
        exe: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start an event runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot add the child to the watched set: {0}")]
    Watch(#[from] crate::sensors::SensorError),
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The program to re-execute as the child (probectl's own binary).
    pub exe: PathBuf,
    /// Families whose programs are deliberately not attached, to show the self-test
    /// failing as it would with a sensor missing.
    pub without: Vec<Family>,
    /// How long to wait for the child and its events.
    pub timeout: Duration,
}

/// One operation the child performs, and whether the sensors saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub family: Family,
    /// What the child did, e.g. `open /tmp/probectl-selftest-x/probe-link`.
    pub operation: String,
    pub seen: bool,
    /// How it was seen (`openat`, `getenv`, `present_at_exec`, `syscall`,
    /// `cgroup_hook`, `exec`), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_as: Option<String>,
    /// The attach point the family's chain chose (`none` when nothing attached).
    pub tier: String,
}

/// The outcome, printed as a table or JSON.
#[derive(Debug, Clone, Serialize)]
pub struct SelftestReport {
    pub kernel: String,
    pub rows: Vec<Row>,
    /// Every row was seen.
    pub passed: bool,
    /// Milliseconds to load and attach every program (the engine's start).
    pub load_ms: u64,
    /// Programs that did not attach, with the reason.
    pub unattached: Vec<AttachStatus>,
    /// What went wrong in the child, if anything (its stderr, escaped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_errors: Option<String>,
}

/// The report, and the engine still loaded: dropping it detaches every program,
/// which takes seconds (an RCU grace period per attachment), so a caller about to
/// exit prints the report first and can hand the detaches off
/// (`sensors::teardown::close_in_background`) before dropping this.
pub struct Outcome {
    pub report: SelftestReport,
    // Field order is drop order: the engine before the runtime it registered with.
    _engine: Engine,
    _runtime: Option<tokio::runtime::Runtime>,
}

/// Runs the self-test. Root only (it loads the programs).
pub fn run(options: &Options) -> Result<Outcome, SelftestError> {
    let workspace = Workspace::create()?;
    let link = workspace.dir.join(LINK_NAME);
    let prepared = PreparedPolicy::new(policy::parse(&policy_text(&link), "selftest (built-in)")?);
    let tcp = TcpListener::bind("127.0.0.1:0").map_err(SelftestError::Loopback)?;
    let udp = UdpSocket::bind("127.0.0.1:0").map_err(SelftestError::Loopback)?;
    let plan = ChildPlan {
        path: link,
        env_name: ENV_NAME.to_owned(),
        tcp: tcp.local_addr().map_err(SelftestError::Loopback)?,
        udp: udp.local_addr().map_err(SelftestError::Loopback)?,
    };

    // The ring reader registers with a Tokio reactor; the runner only drains it, so a
    // runtime is entered, never driven.
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(_) => None,
        Err(_) => Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(SelftestError::Runtime)?,
        ),
    };
    let entered = runtime.as_ref().map(tokio::runtime::Runtime::enter);
    let started = Instant::now();
    let mut engine = Engine::open(
        prepared,
        &engine::Options {
            skip_families: options.without.clone(),
            ..engine::Options::default()
        },
    )?;
    let load_ms = started.elapsed().as_millis() as u64;

    let mut child = spawn_child(&options.exe, &plan)?;
    let records = watch_child(&mut engine, &mut child, options.timeout)?;
    let child_errors = child_stderr(&mut child);
    let rows = judge(&engine, &plan, child.id(), &records);
    let report = SelftestReport {
        kernel: kernel(),
        passed: rows.iter().all(|r| r.seen),
        rows,
        load_ms,
        unattached: engine.unattached().cloned().collect(),
        child_errors,
    };
    drop(entered);
    Ok(Outcome {
        report,
        _engine: engine,
        _runtime: runtime,
    })
}

/// The built-in policy: one category naming the self-test's link and env name.
fn policy_text(link: &Path) -> String {
    // JSON strings are YAML strings: the path is quoted whatever it holds.
    let path = serde_json::to_string(&link.to_string_lossy()).unwrap_or_default();
    format!(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: selftest\n  description: Built-in policy of probectl selftest.\ncategories:\n  - name: selftest\n    description: The self-test's own file and env name.\n    env:\n      - {ENV_NAME}\n    paths:\n      - {path}\n"
    )
}

/// Starts the child held at its gate (it reads one byte from stdin first).
fn spawn_child(exe: &Path, plan: &ChildPlan) -> Result<Child, SelftestError> {
    Command::new(exe)
        .arg(child::SUBCOMMAND)
        .args(plan.to_args())
        .env(ENV_NAME, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SelftestError::Child {
            exe: exe.display().to_string(),
            source,
        })
}

/// Watches the child, lets it go, and collects every record until it has exited
/// (or the timeout passed, when it is killed).
fn watch_child(
    engine: &mut Engine,
    child: &mut Child,
    timeout: Duration,
) -> Result<Vec<Record>, SelftestError> {
    let pid = child.id();
    if let Err(err) = engine.watch_command(pid) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err.into());
    }
    // The gate: one byte; closing stdin afterwards changes nothing for the child.
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        let _ = stdin.write_all(&[1]);
    }
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    loop {
        engine.drain();
        if engine.libc_scans_pending() {
            engine.scan_libcs();
        }
        records.extend(engine.take_records());
        match child.try_wait() {
            // Everything it did happened before its exit, so it is in the ring now.
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            // A bounded poll: the runner has nothing else to wait for.
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    engine.drain();
    records.extend(engine.take_records());
    Ok(records)
}

fn child_stderr(child: &mut Child) -> Option<String> {
    use std::io::Read as _;
    let mut text = Vec::new();
    // The child has exited: this read ends (bounded to 64 KiB all the same).
    let _ = child.stderr.take()?.take(64 * 1024).read_to_end(&mut text);
    (!text.is_empty()).then(|| crate::escape::escape_bytes(&text))
}

/// Each expected operation and the record that shows it, if any.
fn judge(engine: &Engine, plan: &ChildPlan, pid: u32, records: &[Record]) -> Vec<Row> {
    let tier = |family: Family| {
        engine
            .sensors
            .choices
            .iter()
            .find(|c| c.family == family)
            .map_or_else(|| "none".to_owned(), |c| c.chosen.clone())
    };
    let path = plan.path.to_string_lossy().into_owned();
    let probe = |op: Operation, target: &str| {
        records.iter().find_map(|r| match &r.body {
            Body::Probe(p) if p.how.operation() == op && p.target == target => {
                Some(p.how.name().to_owned())
            }
            _ => None,
        })
    };
    let net = |to: SocketAddr, datagram: bool| {
        records.iter().find_map(|r| match &r.body {
            Body::Connect(c)
                if c.destination.address == to.ip().to_string()
                    && c.destination.port == to.port()
                    && (c.event == NetworkEvent::UdpSend) == datagram =>
            {
                Some(
                    serde_json::to_value(c.seen_at)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "seen".to_owned()),
                )
            }
            _ => None,
        })
    };
    let exec = records.iter().find_map(|r| match &r.body {
        Body::Exec(e)
            if r.header.pid == Some(pid) && e.argv.iter().any(|a| a == child::AFTER_EXEC) =>
        {
            Some("exec".to_owned())
        }
        _ => None,
    });
    let row = |family, operation: String, seen_as: Option<String>| Row {
        family,
        operation,
        seen: seen_as.is_some(),
        seen_as,
        tier: tier(family),
    };
    vec![
        row(
            Family::Files,
            format!("open {path}"),
            probe(Operation::Open, &path),
        ),
        row(
            Family::Files,
            format!("readlink {path}"),
            probe(Operation::Readlink, &path),
        ),
        row(
            Family::Env,
            format!("getenv({ENV_NAME}) through libc"),
            probe(Operation::Getenv, ENV_NAME),
        ),
        row(
            Family::Env,
            format!("{ENV_NAME} in the environment at exec"),
            probe(Operation::PresentAtExec, ENV_NAME),
        ),
        row(
            Family::Net,
            format!("TCP connect to {}", plan.tcp),
            net(plan.tcp, false),
        ),
        row(
            Family::Net,
            format!("UDP send to {}", plan.udp),
            net(plan.udp, true),
        ),
        row(Family::Process, "exec".to_owned(), exec),
    ]
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy()
            )
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The self-test's private directory (0700, root's) with the policy path: a symlink
/// to a regular file, like /etc/localtime. Removed when dropped.
struct Workspace {
    dir: PathBuf,
}

impl Workspace {
    fn create() -> Result<Self, SelftestError> {
        // A minimal initramfs may have no /tmp: the first writable candidate is used.
        let candidates = [
            std::env::temp_dir(),
            "/run".into(),
            "/dev/shm".into(),
            "/".into(),
        ];
        let mut last = std::io::Error::other("no candidate directory");
        for base in candidates {
            match nix::unistd::mkdtemp(&base.join("probectl-selftest-XXXXXX")) {
                Ok(dir) => {
                    let workspace = Workspace { dir };
                    let make = || -> std::io::Result<()> {
                        std::fs::write(workspace.dir.join("target"), b"probectl selftest\n")?;
                        std::os::unix::fs::symlink("target", workspace.dir.join(LINK_NAME))
                    };
                    return match make() {
                        Ok(()) => Ok(workspace),
                        Err(source) => Err(SelftestError::Workspace {
                            dir: workspace.dir.display().to_string(),
                            source,
                        }),
                    };
                }
                Err(errno) => last = errno.into(),
            }
        }
        Err(SelftestError::Workspace {
            dir: "any of $TMPDIR, /run, /dev/shm, /".to_owned(),
            source: last,
        })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_policy_names_the_link_and_the_env_name() {
        let link = Path::new("/tmp/probectl-selftest-ab: c/probe-link");
        let compiled = policy::parse(&policy_text(link), "selftest").expect("compiles");
        assert_eq!(compiled.name, "selftest");
        let text = format!("{:?}", compiled.classifier);
        assert!(text.contains("probe-link"), "{text}");
        assert!(text.contains(ENV_NAME), "{text}");
    }
}
