//! The connect cost of enforcement (`action: block`): a process that read the time
//! zone and a relay setting connects, allowlisted or not, next to no monitor, with
//! probectl enforcing but not watching it, watching it while enforcing, and watching
//! it in observe mode (would-block records). Same run, interleaved rounds, as ratios
//! to no monitor. Target (issue 15): unwatched connects within 2% of no monitor. The
//! floor column shows what any syscall tracepoint costs by itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};

/// (label, workload arguments)
const ROWS: &[(&str, &[&str])] = &[
    (
        "TCP connect+close (reset) after the reads, allowlisted (judged, allowed)",
        &["read-connect", "5000"],
    ),
    (
        "TCP connect after the reads, outside the allowlist (refused without a monitor, EPERM when enforcing)",
        &["read-refused", "20000"],
    ),
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Cond {
    None,
    /// No monitor, but one empty program on a syscall tracepoint the workload never
    /// enters (bpftrace): any syscall tracepoint puts every task on the kernel's slow
    /// syscall path, for every syscall. probectl's sensors need syscall tracepoints
    /// on every tier (on this kernel, with no kprobes, fentry or BPF-LSM, the file
    /// sensor has nothing else), so this is the floor under the unwatched columns.
    Floor,
    /// probectl running with the same categories and no block rule: what an
    /// unwatched connect costs without blocking, to tell the block rule's share.
    UnwatchedNoRule,
    Unwatched,
    Watched,
    Observed,
}

impl Cond {
    const ALL: [Cond; 6] = [
        Cond::None,
        Cond::Floor,
        Cond::UnwatchedNoRule,
        Cond::Unwatched,
        Cond::Watched,
        Cond::Observed,
    ];
    fn label(self) -> &'static str {
        match self {
            Cond::None => "no monitor",
            Cond::Floor => "floor: one empty syscall tracepoint, no monitor",
            Cond::UnwatchedNoRule => "probectl without block rules, not watched",
            Cond::Unwatched => "probectl enforcing, not watched",
            Cond::Watched => "probectl enforcing, watched",
            Cond::Observed => "probectl observing (would block), watched",
        }
    }
}

pub(crate) const POLICY: &str = "\
apiVersion: probectl.dev/v1alpha1
kind: Policy
metadata: {name: bench-block}
categories:
  - name: timezone
    env: [TZ]
    paths: [/etc/localtime]
  - name: api-relay
    env: [ANTHROPIC_BASE_URL]
rules:
  - name: block-after-fingerprint
    probed: {all_of: [timezone, api-relay]}
    then: [connect, udp_send]
    destination: {except: {cidr: [127.0.0.1/32]}}
    within: 5m
    action: block
";

pub struct BlockBench {
    policy: PathBuf,
    /// The same categories, no rule.
    no_rule: PathBuf,
    samples: BTreeMap<(usize, Cond), Vec<f64>>,
    unavailable: Option<String>,
    /// Why the floor column is empty (bpftrace missing).
    floor_unavailable: Option<String>,
    rounds_done: usize,
}

impl BlockBench {
    pub fn new(dir: &Path) -> Result<Self> {
        let policy = dir.join("block-policy.yaml");
        std::fs::write(&policy, POLICY)?;
        let no_rule = dir.join("block-policy-no-rule.yaml");
        let categories = POLICY.split("rules:").next().unwrap_or(POLICY);
        std::fs::write(&no_rule, categories)?;
        Ok(Self {
            policy,
            no_rule,
            samples: BTreeMap::new(),
            unavailable: None,
            floor_unavailable: None,
            rounds_done: 0,
        })
    }

    fn probectl(&self, probectl: &Path, enforce: bool) -> Command {
        self.probectl_with(probectl, enforce, &self.policy)
    }

    fn probectl_with(&self, probectl: &Path, enforce: bool, policy: &Path) -> Command {
        let mut cmd = Command::new(probectl);
        cmd.arg("run");
        if enforce {
            cmd.arg("--enforce");
        }
        cmd.arg("--policy")
            .arg(policy)
            .args(["--output", "/dev/null", "--"]);
        cmd
    }

    /// One interleaved round of every row under every condition.
    pub fn round(&mut self, probectl: &Path, workload: &Path) {
        if let Err(e) = self.try_round(probectl, workload) {
            self.unavailable = Some(format!("{e:#}"));
        }
    }

    /// The four groups of conditions, in an order rotated from round to round, so that
    /// none is always measured first or last (on this machine, what ran just before a
    /// run moved it by a few percent).
    fn try_round(&mut self, probectl: &Path, workload: &Path) -> Result<()> {
        let first = self.rounds_done % 4;
        self.rounds_done += 1;
        for k in 0..4 {
            match (first + k) % 4 {
                0 => self.direct(probectl, workload)?,
                1 => {
                    let policy = self.policy.clone();
                    self.unwatched(probectl, workload, &policy, Cond::Unwatched)?;
                }
                2 => {
                    let no_rule = self.no_rule.clone();
                    self.unwatched(probectl, workload, &no_rule, Cond::UnwatchedNoRule)?;
                }
                _ => self.floor(workload)?,
            }
        }
        Ok(())
    }

    /// No monitor, and probectl watching the workload (enforcing, then observing).
    fn direct(&mut self, probectl: &Path, workload: &Path) -> Result<()> {
        for (i, (_, args)) in ROWS.iter().enumerate() {
            let t = time(Command::new(workload).args(*args))?;
            self.record(i, Cond::None, t);
            let mut watched = self.probectl(probectl, true);
            let t = time(watched.arg(workload).args(*args))?;
            self.record(i, Cond::Watched, t);
            let mut observed = self.probectl(probectl, false);
            let t = time(observed.arg(workload).args(*args))?;
            self.record(i, Cond::Observed, t);
        }
        Ok(())
    }

    /// The rows under one empty bpftrace program on `sys_enter_sync`. Without
    /// bpftrace the column says why, and the other columns stand.
    fn floor(&mut self, workload: &Path) -> Result<()> {
        if self.floor_unavailable.is_some() {
            return Ok(());
        }
        let spawned = Command::new("bpftrace")
            .args(["-e", "tracepoint:syscalls:sys_enter_sync { @n = count(); }"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                self.floor_unavailable = Some(format!(
                    "bpftrace could not be started ({e}); the bench installs it with apt"
                ));
                return Ok(());
            }
        };
        let result = (|| {
            crate::bench::wait_for_line_stdout(&mut child, "Attaching")?;
            for (i, (_, args)) in ROWS.iter().enumerate() {
                let t = time(Command::new(workload).args(*args))?;
                self.record(i, Cond::Floor, t);
            }
            Ok(())
        })();
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
        result
    }

    /// The rows, not watched, while probectl runs `policy` (enforcing) on a sleep.
    fn unwatched(
        &mut self,
        probectl: &Path,
        workload: &Path,
        policy: &Path,
        cond: Cond,
    ) -> Result<()> {
        let mut background = self.probectl_with(probectl, true, policy);
        let mut child = background
            .args(["sleep", "100000"])
            .stderr(Stdio::piped())
            .spawn()?;
        let result = (|| {
            crate::bench::wait_for_line(&mut child, "watching pid")?;
            for (i, (_, args)) in ROWS.iter().enumerate() {
                let t = time(Command::new(workload).args(*args))?;
                self.record(i, cond, t);
            }
            Ok(())
        })();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        result
    }

    fn record(&mut self, row: usize, cond: Cond, ns: f64) {
        self.samples.entry((row, cond)).or_default().push(ns);
    }

    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::from("\nConnect cost under a block rule (`action: block`):\n\n");
        if let Some(why) = &self.unavailable {
            let _ = writeln!(s, "not measured: {why}");
            return s;
        }
        let _ = writeln!(
            s,
            "| workload | {} |",
            Cond::ALL.map(|c| c.label()).join(" | ")
        );
        let _ = writeln!(s, "|---|{}", "---|".repeat(Cond::ALL.len()));
        // The median, and the fastest run: interference here only ever adds time, and
        // the medians of one run were seen 16% apart for two conditions that cannot
        // differ in that direction (the floor below no monitor).
        for (stat, pick) in [
            (
                "median",
                crate::bench::median as fn(Option<&Vec<f64>>) -> Option<f64>,
            ),
            ("fastest", fastest),
        ] {
            for (i, (name, _)) in ROWS.iter().enumerate() {
                let base = pick(self.samples.get(&(i, Cond::None)));
                let cells: Vec<String> = Cond::ALL
                    .iter()
                    .map(|c| match (pick(self.samples.get(&(i, *c))), base) {
                        (Some(m), Some(b)) => format!("{:.2}x ({:.1} ms)", m / b, m / 1e6),
                        _ => "n/a".to_owned(),
                    })
                    .collect();
                let _ = writeln!(s, "| {name}: {stat} | {} |", cells.join(" | "));
            }
        }
        if let Some(why) = &self.floor_unavailable {
            let _ = writeln!(s, "\nfloor column not measured: {why}");
        }
        s
    }
}

/// The fastest of the samples.
fn fastest(samples: Option<&Vec<f64>>) -> Option<f64> {
    samples?.iter().copied().reduce(f64::min)
}

/// The loop time the workload printed.
fn time(cmd: &mut Command) -> Result<f64> {
    crate::bench_settle::settle();
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output()?;
    crate::bench::parse_elapsed(&out.stdout)
        .with_context(|| format!("{cmd:?} printed no elapsed_ns ({})", out.status))
}
