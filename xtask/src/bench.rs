//! `cargo xtask bench`: the cost of probectl next to no monitor and next to the tools a
//! user would reach for by hand (strace, bpftrace, auditd), all measured in the same
//! run, interleaved round by round, reported as median ratios to "no monitor". Each
//! workload times its own loop (xtask/bench/workload.c), so tool start-up is not
//! counted. Speed targets are reported here, never asserted in tests.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, say};
use crate::setup;
use crate::workspace::{root, target_dir};

const TAG: &str = "bench";

/// (name, workload arguments)
const WORKLOADS: &[(&str, &[&str])] = &[
    ("open+close /etc/localtime", &["open-policy", "200000"]),
    (
        "open+close /dev/null (no policy)",
        &["open-other", "200000"],
    ),
    ("write 64 B to /dev/null", &["write", "1000000"]),
    ("getenv(HTTPS_PROXY)", &["getenv", "1000000"]),
    ("TCP connect+close (reset), loopback", &["connect", "5000"]),
    ("fork+exec+wait /bin/true", &["forkexec", "300"]),
    ("30 x node -e 0", &["spawn", "30", "node", "-e", "0"]),
];

/// The rows of the `make -j2` build (`bench_build`), after the workloads': its wall
/// time, then its CPU time.
const MAKE: usize = WORKLOADS.len();
const MAKE_CPU: usize = MAKE + 1;
const MAKE_LABEL: &str = "make -j2, 40 C files (clean build)";
const MAKE_CPU_LABEL: &str = "the same build's CPU time (user+sys of its process tree)";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Condition {
    None,
    Unwatched,
    Watched,
    Strace,
    Bpftrace,
    Auditd,
}

impl Condition {
    fn label(self) -> &'static str {
        match self {
            Condition::None => "no monitor",
            Condition::Unwatched => "probectl, not watched",
            Condition::Watched => "probectl, watched",
            Condition::Strace => "strace -f",
            Condition::Bpftrace => "bpftrace",
            Condition::Auditd => "auditd rules",
        }
    }
}

struct Bench {
    workload: PathBuf,
    probectl: PathBuf,
    /// elapsed ns per (workload, condition), one per round.
    samples: BTreeMap<(usize, Condition), Vec<f64>>,
    /// probectl's own CPU seconds and peak RSS (KiB) per watched run.
    probectl_usage: Vec<(f64, i64)>,
    unavailable: BTreeMap<Condition, String>,
    /// The generated C project (`bench_build`).
    project: PathBuf,
    start_stop: crate::bench_start::StartStop,
    block: crate::bench_block::BlockBench,
}

/// A part of the benchmark that runs alone (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Connect cost under a block rule (`bench_block`).
    Block,
    /// Start and stop of `probectl run`, next to an earlier build when
    /// `PROBECTL_BENCH_BASELINE` names one (`bench_start`).
    Start,
    /// What each hook on the connect path costs an unwatched process, counted in
    /// instructions in a QEMU guest (`kernels/icount.rs`); `--rounds` is not used.
    Hooks,
}

pub fn run(rounds: u32, only: Option<Part>) -> Result<i32> {
    if !setup::is_root()? {
        bail!(
            "the benchmark loads eBPF programs and needs root: run `sudo -E env PATH=$PATH cargo xtask bench`"
        );
    }
    let tools = setup::run(true)?;
    setup::bench_tools()?;
    let dir = target_dir()?.join("bench");
    std::fs::create_dir_all(&dir)?;
    let (probectl, workload) = build_release_and_workload(TAG, &tools, &dir, "workload")?;
    crate::bench_settle::measuring(&probectl);
    let mut bench = Bench {
        workload,
        probectl,
        samples: BTreeMap::new(),
        probectl_usage: Vec::new(),
        unavailable: BTreeMap::new(),
        project: crate::bench_build::generate(&dir)?,
        start_stop: crate::bench_start::StartStop::default().with_baseline_from_env(),
        block: crate::bench_block::BlockBench::new(&dir)?,
    };
    if only == Some(Part::Hooks) {
        let table = crate::kernels::bench_hooks(&bench.probectl, &dir)?;
        println!("{table}");
        let out = dir.join("hooks.md");
        std::fs::write(&out, &table)?;
        say(TAG, format_args!("results written to {}", out.display()));
        return Ok(0);
    }
    if only == Some(Part::Block) {
        for round in 1..=rounds {
            say(TAG, format_args!("round {round}/{rounds} (block only)"));
            bench.block.round(&bench.probectl, &bench.workload);
        }
        let table = bench.block.table();
        println!("{table}");
        return Ok(0);
    }
    if only == Some(Part::Start) {
        for round in 1..=rounds {
            say(TAG, format_args!("round {round}/{rounds} (start only)"));
            bench.start_stop.round(&bench.probectl, &bench.workload);
        }
        println!("{}", bench.start_stop.table());
        return Ok(0);
    }
    for round in 1..=rounds {
        say(TAG, format_args!("round {round}/{rounds}"));
        bench.round()?;
    }
    let mut table = bench.table(rounds);
    table.push_str(&bench.start_stop.table());
    table.push_str(&bench.block.table());
    say(TAG, "sustained drain rate");
    table.push_str(&match bench.drain_rate() {
        Ok(line) => line,
        Err(e) => format!("\nSustained drain rate not measured: {e:#}\n"),
    });
    println!("{table}");
    let out = dir.join("results.md");
    std::fs::write(&out, &table)?;
    say(TAG, format_args!("results written to {}", out.display()));
    Ok(0)
}

/// Builds the release probectl and compiles xtask/bench/workload.c into `dir/name`;
/// returns both paths (`bench` and `soak` measure the same binaries).
pub fn build_release_and_workload(
    tag: &str,
    tools: &setup::Tools,
    dir: &std::path::Path,
    name: &str,
) -> Result<(PathBuf, PathBuf)> {
    cmd::run_ok(
        tag,
        tools
            .cargo()
            .current_dir(root())
            .args(["build", "--release", "-p", "probe-user"]),
    )?;
    let workload = dir.join(name);
    cmd::run_ok(
        tag,
        Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&workload)
            .arg(root().join("xtask/bench/workload.c")),
    )?;
    Ok((target_dir()?.join("release/probectl"), workload))
}

impl Bench {
    fn round(&mut self) -> Result<()> {
        self.start_stop.round(&self.probectl, &self.workload);
        self.block.round(&self.probectl, &self.workload);
        let t = crate::bench_build::build(&self.project)?;
        self.record(MAKE, Condition::None, t.wall_ns);
        self.record(MAKE_CPU, Condition::None, t.cpu_ns);
        for (i, (_, args)) in WORKLOADS.iter().enumerate() {
            let t = self.time_workload(&mut Command::new(&self.workload), args)?;
            self.record(i, Condition::None, t);
            let mut strace = Command::new("strace");
            strace
                .args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg("trace=open,openat,openat2,creat,readlink,readlinkat,newfstatat,statx,access,faccessat,connect,sendto,execve")
                .arg(&self.workload);
            match self.time_workload(&mut strace, args) {
                Ok(t) => self.record(i, Condition::Strace, t),
                Err(e) => {
                    self.unavailable.insert(Condition::Strace, format!("{e:#}"));
                }
            }
            // Watched: probectl runs the workload; records go nowhere, the loop's time
            // and probectl's own usage are kept.
            let mut watched = Command::new(&self.probectl);
            watched
                .args(["run", "--output", "/dev/null", "--"])
                .arg(&self.workload);
            let (t, usage) = self.time_with_usage(&mut watched, args)?;
            self.record(i, Condition::Watched, t);
            self.probectl_usage.push(usage);
        }
        self.with_background(Condition::Unwatched, |b| b.monitor_unwatched())?;
        self.with_background(Condition::Bpftrace, |b| b.start_bpftrace())?;
        self.with_background(Condition::Auditd, |b| b.start_audit())?;
        Ok(())
    }

    /// Starts a background tool, runs every workload outside it, stops it.
    fn with_background(
        &mut self,
        cond: Condition,
        start: impl FnOnce(&Self) -> Result<Option<Child>>,
    ) -> Result<()> {
        let child = match start(self) {
            Ok(child) => child,
            Err(e) => {
                self.unavailable.insert(cond, format!("{e:#}"));
                return Ok(());
            }
        };
        for (i, (_, args)) in WORKLOADS.iter().enumerate() {
            let t = self.time_workload(&mut Command::new(&self.workload), args)?;
            self.record(i, cond, t);
        }
        let t = crate::bench_build::build(&self.project)?;
        self.record(MAKE, cond, t.wall_ns);
        self.record(MAKE_CPU, cond, t.cpu_ns);
        if let Some(mut child) = child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        if cond == Condition::Auditd {
            let _ = Command::new("auditctl")
                .arg("-D")
                .stdout(Stdio::null())
                .status();
            let _ = Command::new("auditctl")
                .args(["-e", "0"])
                .stdout(Stdio::null())
                .status();
        }
        Ok(())
    }

    /// probectl watching something else (a sleeping command), so the workload runs
    /// with every program attached but outside the watched set.
    fn monitor_unwatched(&self) -> Result<Option<Child>> {
        let mut child = Command::new(&self.probectl)
            .args(["run", "--output", "/dev/null", "--", "sleep", "100000"])
            .stderr(Stdio::piped())
            .spawn()?;
        wait_for_line(&mut child, "watching pid")?;
        Ok(Some(child))
    }

    fn start_bpftrace(&self) -> Result<Option<Child>> {
        // What a user would write by hand for the same probes, filtered by program name.
        let script = "tracepoint:syscalls:sys_enter_openat,tracepoint:syscalls:sys_enter_open,\
             tracepoint:syscalls:sys_enter_readlink,tracepoint:syscalls:sys_enter_connect,\
             tracepoint:syscalls:sys_enter_execve /comm == \"workload\" || comm == \"node\"/ \
             { printf(\"%d %s\\n\", pid, probe); } \
             uprobe:/lib/x86_64-linux-gnu/libc.so.6:getenv /comm == \"workload\" || comm == \"node\"/ \
             { printf(\"%d getenv %s\\n\", pid, str(arg0)); }";
        let mut child = Command::new("bpftrace")
            // Its output is drained (and dropped) by us: with -o, the "Attaching"
            // line we wait for would go to the file too.
            .args(["-e", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("bpftrace is not installed (apt-get install bpftrace)")?;
        wait_for_line_stdout(&mut child, "Attaching")?;
        Ok(Some(child))
    }

    fn start_audit(&self) -> Result<Option<Child>> {
        let ok = |c: &mut Command| {
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !ok(Command::new("auditctl").arg("-s")) {
            bail!("auditctl cannot talk to the kernel's audit subsystem");
        }
        // auditd itself, when not running, consumes the records as a user's set-up would.
        let _ = ok(&mut Command::new("auditd"));
        let exe = self.workload.to_str().context("workload path")?;
        for rule in [vec![
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            "open,openat,readlink,connect,execve",
            "-F",
            &format!("exe={exe}"),
        ]] {
            if !ok(Command::new("auditctl").args(&rule)) {
                bail!("auditctl refused the rule {rule:?}");
            }
        }
        if !ok(Command::new("auditctl").args(["-e", "1"])) {
            bail!("auditctl -e 1 failed");
        }
        Ok(None)
    }

    /// How many events per second the userspace side takes in, and whether it loses
    /// any: a watched loop of getenv(HTTPS_PROXY) emits one event per call, as fast as
    /// the kernel side allows; the report's probe count and drops say what arrived.
    fn drain_rate(&self) -> Result<String> {
        const CALLS: u64 = 1_000_000;
        let records = target_dir()?.join("bench/drain.jsonl");
        let mut cmd = Command::new(&self.probectl);
        cmd.args(["run", "--json", "--output"])
            .arg(&records)
            .arg("--")
            .arg(&self.workload);
        let elapsed_ns = self.time_workload(&mut cmd, &["getenv", &CALLS.to_string()])?;
        let text = std::fs::read_to_string(&records)?;
        let report: serde_json::Value = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["type"] == "report")
            .context("no report record")?;
        let delivered: u64 = report["probes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["probes"].as_array().into_iter().flatten())
            .filter(|p| p["target"] == "HTTPS_PROXY")
            .filter_map(|p| p["count"].as_u64())
            .sum();
        let dropped: u64 = report["drops"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["count"].as_u64())
            .sum();
        let secs = elapsed_ns / 1e9;
        Ok(format!(
            "\nSustained drain: a watched loop made {CALLS} getenv(HTTPS_PROXY) calls in {:.0} ms; probectl received {delivered} of their events and counted {dropped} as dropped: {:.0} events/s {}.\n",
            elapsed_ns / 1e6,
            delivered as f64 / secs,
            if dropped == 0 && delivered >= CALLS {
                "with zero drops"
            } else {
                "(with losses: the kernel side produced faster than userspace drained)"
            }
        ))
    }

    fn record(&mut self, workload: usize, cond: Condition, ns: f64) {
        self.samples.entry((workload, cond)).or_default().push(ns);
    }

    fn time_workload(&self, cmd: &mut Command, args: &[&str]) -> Result<f64> {
        crate::bench_settle::settle();
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()?;
        parse_elapsed(&out.stdout)
            .with_context(|| format!("{cmd:?} printed no elapsed_ns ({})", out.status))
    }

    /// Like `time_workload`, plus the CPU seconds and peak RSS of the process itself
    /// (probectl), from wait4.
    fn time_with_usage(&self, cmd: &mut Command, args: &[&str]) -> Result<(f64, (f64, i64))> {
        crate::bench_settle::settle();
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdout = Vec::new();
        std::io::Read::read_to_end(child.stdout.as_mut().context("stdout")?, &mut stdout)?;
        let mut status = 0;
        // SAFETY: rusage is plain old data; wait4 fills it for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let pid = child.id() as i32;
        if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
            bail!("wait4 failed for {cmd:?}");
        }
        let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let elapsed =
            parse_elapsed(&stdout).with_context(|| format!("{cmd:?} printed no elapsed_ns"))?;
        Ok((
            elapsed,
            (cpu(usage.ru_utime) + cpu(usage.ru_stime), usage.ru_maxrss),
        ))
    }

    fn table(&self, rounds: u32) -> String {
        use std::fmt::Write as _;
        let conds = [
            Condition::None,
            Condition::Unwatched,
            Condition::Watched,
            Condition::Strace,
            Condition::Bpftrace,
            Condition::Auditd,
        ];
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Median of {rounds} interleaved rounds; each cell: ratio to \"no monitor\" (median ms of the loop).\n"
        );
        let _ = writeln!(s, "| workload | {} |", conds.map(|c| c.label()).join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(conds.len()));
        let names = WORKLOADS
            .iter()
            .map(|(name, _)| *name)
            .chain([MAKE_LABEL, MAKE_CPU_LABEL]);
        for (i, name) in names.enumerate() {
            let base = median(self.samples.get(&(i, Condition::None)));
            let cells: Vec<String> = conds
                .iter()
                .map(|c| match (median(self.samples.get(&(i, *c))), base) {
                    (Some(m), Some(b)) => format!("{:.2}x ({:.1} ms)", m / b, m / 1e6),
                    _ => "n/a".to_owned(),
                })
                .collect();
            let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
        }
        if !self.probectl_usage.is_empty() {
            let cpu = median(Some(&self.probectl_usage.iter().map(|u| u.0).collect()));
            let rss = self.probectl_usage.iter().map(|u| u.1).max().unwrap_or(0);
            let _ = writeln!(
                s,
                "\nprobectl itself, per watched run (load, attach, drain, report, teardown): median CPU {:.2} s, peak RSS {} MiB.",
                cpu.unwrap_or(0.0),
                rss / 1024
            );
        }
        for (c, why) in &self.unavailable {
            let _ = writeln!(s, "\n{} not measured: {why}", c.label());
        }
        s
    }
}

pub(crate) fn median(samples: Option<&Vec<f64>>) -> Option<f64> {
    let mut v = samples?.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

pub(crate) fn parse_elapsed(stdout: &[u8]) -> Option<f64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_ns=")?.trim().parse().ok())
}

pub(crate) fn wait_for_line(child: &mut Child, needle: &str) -> Result<()> {
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line?.contains(needle) {
            // Keep draining so the tool never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(());
        }
    }
    bail!("the monitor exited before printing {needle:?}")
}

pub(crate) fn wait_for_line_stdout(child: &mut Child, needle: &str) -> Result<()> {
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line?.contains(needle) {
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(());
        }
    }
    bail!("bpftrace exited before printing {needle:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_elapsed_lines() {
        assert_eq!(median(Some(&vec![3.0, 1.0, 2.0])), Some(2.0));
        assert_eq!(median(Some(&vec![])), None);
        assert_eq!(parse_elapsed(b"noise\nelapsed_ns=1234\n"), Some(1234.0));
    }

    #[test]
    fn the_workload_source_is_where_xtask_builds_it_from() {
        assert!(root().join("xtask/bench/workload.c").exists());
    }
}
