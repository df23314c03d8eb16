//! Start and stop of `probectl run`: from starting probectl to the command's first
//! instruction (`workload stamp` prints its CLOCK_MONOTONIC time at once), and from
//! the report's arrival to probectl's exit; next to bpftrace attaching the same
//! tracepoints and uprobes (from its start to its BEGIN probe, which fires once
//! every probe is attached) and exiting on SIGINT.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Per round, in seconds.
#[derive(Default)]
pub struct StartStop {
    pub start_to_exec: Vec<f64>,
    pub report_to_exit: Vec<f64>,
    /// The same for an earlier build (`PROBECTL_BENCH_BASELINE=/path/to/probectl`),
    /// measured in the same rounds.
    pub baseline: Option<std::path::PathBuf>,
    pub baseline_start: Vec<f64>,
    pub baseline_stop: Vec<f64>,
    pub bpftrace_attach: Vec<f64>,
    pub bpftrace_exit: Vec<f64>,
    pub unavailable: Vec<String>,
}

fn monotonic_ns() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

impl StartStop {
    pub fn with_baseline_from_env(mut self) -> Self {
        self.baseline = std::env::var_os("PROBECTL_BENCH_BASELINE").map(Into::into);
        self
    }

    pub fn round(&mut self, probectl: &Path, workload: &Path) {
        if let Some(baseline) = &self.baseline {
            match probectl_once(baseline, workload) {
                Ok((start, stop)) => {
                    self.baseline_start.push(start);
                    self.baseline_stop.push(stop);
                }
                Err(e) => self.unavailable.push(format!("baseline run: {e:#}")),
            }
        }
        match probectl_once(probectl, workload) {
            Ok((start, stop)) => {
                self.start_to_exec.push(start);
                self.report_to_exit.push(stop);
            }
            Err(e) => self.unavailable.push(format!("probectl run: {e:#}")),
        }
        match bpftrace_once() {
            Ok((attach, exit)) => {
                self.bpftrace_attach.push(attach);
                self.bpftrace_exit.push(exit);
            }
            Err(e) => self.unavailable.push(format!("bpftrace: {e:#}")),
        }
    }

    pub fn table(&self) -> String {
        let cell = |v: &Vec<f64>| match super::bench::median(Some(v)) {
            Some(m) => format!("{:.3} s", m),
            None => "n/a".to_owned(),
        };
        let mut s = format!(
            "\nStart and stop, medians of {} rounds:\n\n| | start to watching | report (or Ctrl-C) to exit |\n|---|---|---|\n| `probectl run --standalone -- CMD` | {} (to CMD's first instruction) | {} |\n| bpftrace, the same tracepoints and uprobes | {} (to its BEGIN probe) | {} (SIGINT to exit) |\n",
            self.start_to_exec.len(),
            cell(&self.start_to_exec),
            cell(&self.report_to_exit),
            cell(&self.bpftrace_attach),
            cell(&self.bpftrace_exit),
        );
        if let Some(baseline) = &self.baseline {
            s.push_str(&format!(
                "| baseline `{}` | {} | {} |\n",
                baseline.display(),
                cell(&self.baseline_start),
                cell(&self.baseline_stop),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for why in &self.unavailable {
            if seen.insert(why) {
                s.push_str(&format!("\nnot measured: {why}\n"));
            }
        }
        s
    }
}

/// (start to exec, report to exit), in seconds.
fn probectl_once(probectl: &Path, workload: &Path) -> Result<(f64, f64)> {
    crate::bench_settle::settle();
    let started = monotonic_ns();
    let mut child = Command::new(probectl)
        .args(["run", "--standalone", "--json", "--"])
        .arg(workload)
        .arg("stamp")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // With --json the command's stdout goes to stderr.
    let mut stderr = child.stderr.take().context("stderr")?;
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut report_at = None;
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        if line?.contains("\"type\":\"report\"") {
            report_at = Some(monotonic_ns());
        }
    }
    let status = child.wait()?;
    let exited = monotonic_ns();
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("{status}: {errors}");
    }
    let report_at = report_at.context("no report record")?;
    let exec_at: i64 = errors
        .lines()
        .find_map(|l| l.strip_prefix("started_ns=")?.trim().parse().ok())
        .with_context(|| format!("the command printed no started_ns: {errors}"))?;
    Ok((
        (exec_at - started) as f64 / 1e9,
        (exited - report_at) as f64 / 1e9,
    ))
}

/// probectl's tracepoints (`probe-user/src/sensors/programs.rs`): process, files
/// (`FILE_SYSCALLS`), net. The cgroup sock_addr hooks have no bpftrace equivalent.
fn tracepoints() -> Vec<String> {
    let mut tps: Vec<String> = [
        "syscalls:sys_enter_execve",
        "syscalls:sys_enter_execveat",
        "sched:sched_process_exec",
        "task:task_newtask",
        "syscalls:sys_enter_exit_group",
        "sched:sched_process_exit",
        "syscalls:sys_enter_connect",
        "syscalls:sys_exit_connect",
        "sock:inet_sock_set_state",
    ]
    .map(str::to_owned)
    .to_vec();
    for s in [
        "open",
        "openat",
        "readlink",
        "readlinkat",
        "openat2",
        "creat",
        "newstat",
        "newlstat",
        "newfstatat",
        "statx",
        "access",
        "faccessat",
        "faccessat2",
        "sendto",
        "sendmsg",
        "sendmmsg",
        "recvfrom",
    ] {
        tps.push(format!("syscalls:sys_enter_{s}"));
        tps.push(format!("syscalls:sys_exit_{s}"));
    }
    tps
}

/// (start to attached, SIGINT to exit), in seconds.
fn bpftrace_once() -> Result<(f64, f64)> {
    crate::bench_settle::settle();
    let libc_path = "/lib/x86_64-linux-gnu/libc.so.6";
    let probes = tracepoints()
        .iter()
        .map(|t| format!("tracepoint:{t}"))
        .chain(["getenv", "secure_getenv"].iter().flat_map(|sym| {
            [
                format!("uprobe:{libc_path}:{sym}"),
                format!("uretprobe:{libc_path}:{sym}"),
            ]
        }))
        .collect::<Vec<_>>()
        .join(",\n");
    // A filter no process matches: only attaching and detaching are measured. bpftrace
    // 0.17 notices SIGINT only when its output wakes it, hence the 20 ms tick (its
    // lines are drained and dropped); the exit figure includes up to one tick.
    let script = format!(
        "BEGIN {{ printf(\"ready\\n\"); }}\ninterval:ms:20 {{ printf(\"tick\\n\"); }}\n{probes}\n/comm == \"no-such-process\"/ {{ @n = count(); }}\n"
    );
    let started = monotonic_ns();
    let mut child = Command::new("bpftrace")
        .args(["-e", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("bpftrace is not installed (apt-get install bpftrace)")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut ready = None;
    for line in lines.by_ref() {
        if line?.trim() == "ready" {
            ready = Some(monotonic_ns());
            break;
        }
    }
    let Some(ready) = ready else {
        let status = child.wait()?;
        bail!("bpftrace exited ({status}) before its BEGIN probe");
    };
    let stop = monotonic_ns();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::spawn(move || lines.for_each(drop));
    child.wait()?;
    let exited = monotonic_ns();
    Ok(((ready - started) as f64 / 1e9, (exited - stop) as f64 / 1e9))
}
