//! `cargo xtask kernels`: boots Debian's kernels (5.10 to the newest backports) in
//! QEMU with a release probectl in the initramfs, runs `probectl doctor --json` (and
//! the other [`guest::GUEST_COMMANDS`]) in each, and prints one row per boot. Each
//! kernel boots with its default command line and, unless `bpf` is already in its
//! default LSM list, once more with `lsm=<that list>,bpf`.
//!
//! TCG only: the /dev/kvm of the machines this runs on cannot boot distribution
//! kernels. A boot takes about a minute; one that crashes the emulator or times out
//! is retried once, and the table says so.

mod debian;
mod guest;
mod icount;
mod report;
mod tiers;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, say};
use crate::setup;

use debian::{Kernel, SUITES, Suite};
/// `cargo xtask bench --only hooks` (`icount.rs`): hook costs measured in a guest.
pub use icount::run as bench_hooks;
use report::Row;

const TAG: &str = "kernels";

/// The kernels `cargo xtask test` boots: the oldest (with its default command line
/// and with `lsm=...,bpf`), and one with BPF-LSM active by default.
pub const CI_KERNELS: &[&str] = &["5.10", "6.1"];

/// Options of `cargo xtask kernels`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Which kernels, by series (5.10, 6.1, 6.12, newest), suite (bullseye, ...)
    /// or version prefix (7.3); default all.
    #[arg(long, value_delimiter = ',')]
    pub kernels: Vec<String>,
    /// Default command line only (no `lsm=...,bpf` boot).
    #[arg(long)]
    pub quick: bool,
    /// Seconds before a boot is killed (and retried once).
    #[arg(long, default_value_t = 420)]
    pub timeout: u64,
    /// Debian mirror URL (default: the one the system's apt sources use).
    #[arg(long)]
    pub mirror: Option<String>,
    /// Update the package lists even if they are less than a day old.
    #[arg(long)]
    pub refresh: bool,
    /// Cache directory (default: <target>/kernels).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

impl Options {
    /// What `cargo xtask test` runs: [`CI_KERNELS`], both command lines.
    pub fn for_tests() -> Self {
        Options {
            kernels: CI_KERNELS.iter().map(|k| (*k).to_owned()).collect(),
            quick: false,
            timeout: 420,
            mirror: None,
            refresh: false,
            cache: None,
        }
    }
}

/// One boot to make.
struct Plan {
    kernel: Kernel,
    /// Added to the command line: `lsm=...` or nothing.
    lsm: Option<String>,
}

pub fn run(opts: &Options) -> Result<i32> {
    if !setup::is_root()? {
        bail!("cargo xtask kernels downloads with a private apt setup and needs root for it");
    }
    setup::kernel_tools()?;
    guest::check_qemu()?;
    let target = crate::workspace::target_dir()?;
    let cache = opts.cache.clone().unwrap_or_else(|| target.join("kernels"));
    std::fs::create_dir_all(&cache)?;
    let mirror = match &opts.mirror {
        Some(m) => m.clone(),
        None => debian::system_mirror()?,
    };
    let kernels = select(&cache, &mirror, opts)?;

    // The guest runs the release probectl: what users run, and much faster under TCG.
    let tools = setup::run(false)?;
    cmd::run_ok(
        TAG,
        tools.cargo().current_dir(cmd::root()).args([
            "build",
            "--release",
            "-p",
            "probe-user",
            "--bin",
            "probectl",
        ]),
    )?;
    let initramfs = cache.join("initramfs.cpio.gz");
    guest::build_initramfs(&target.join("release/probectl"), &cache, &initramfs)?;

    let mut plans = Vec::new();
    for kernel in kernels {
        let lsm = (!opts.quick).then(|| lsm_with_bpf(&kernel.default_lsm));
        plans.push(Plan {
            kernel: kernel.clone(),
            lsm: None,
        });
        match lsm {
            Some(Some(list)) => plans.push(Plan {
                kernel,
                lsm: Some(list),
            }),
            Some(None) => say(
                TAG,
                format_args!(
                    "{}: bpf is already in its default LSM list ({}); no lsm= boot",
                    kernel.release(),
                    kernel.default_lsm.join(",")
                ),
            ),
            None => {}
        }
    }
    let logs = cache.join("logs");
    std::fs::create_dir_all(&logs)?;
    let started = Instant::now();
    let mut rows = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        say(
            TAG,
            format_args!(
                "boot {} of {}: {} {} ({})",
                i + 1,
                plans.len(),
                plan.kernel.suite.name,
                plan.kernel.release(),
                plan.lsm.as_deref().unwrap_or("default command line")
            ),
        );
        let initramfs = tiers::kernel_initramfs(&initramfs, &plan.kernel, &cache)?;
        let row = boot_and_judge(plan, &initramfs, &logs, Duration::from_secs(opts.timeout))?;
        say(
            TAG,
            format_args!(
                "{} {}: {} in {} s",
                row.kernel,
                row.cmdline,
                if row.ok() { "ok" } else { "FAILED" },
                row.seconds
            ),
        );
        rows.push(row);
    }
    print!("{}", report::table(&rows));
    say(
        TAG,
        format_args!(
            "{} boots in {} s; console logs in {}",
            rows.len(),
            started.elapsed().as_secs(),
            logs.display()
        ),
    );
    Ok(if rows.iter().all(Row::ok) { 0 } else { 1 })
}

/// `list,bpf` for the `lsm=` boot, or `None` when bpf is already in the list.
fn lsm_with_bpf(default: &[String]) -> Option<String> {
    if default.iter().any(|m| m == "bpf") {
        return None;
    }
    let mut list = default.to_vec();
    list.push("bpf".to_owned());
    Some(list.join(","))
}

/// The kernels the options ask for, downloaded and unpacked.
fn select(cache: &Path, mirror: &str, opts: &Options) -> Result<Vec<Kernel>> {
    let wanted = |s: &Suite| {
        opts.kernels.is_empty() || opts.kernels.iter().any(|k| k == s.name || k == s.series)
    };
    // A selector that names no suite or series is a version prefix ("7.3"): every
    // suite is resolved to find it.
    let by_version: Vec<&String> = opts
        .kernels
        .iter()
        .filter(|k| !SUITES.iter().any(|s| *k == s.name || *k == s.series))
        .collect();
    let mut kernels = Vec::new();
    for suite in SUITES {
        if !wanted(&suite) && by_version.is_empty() {
            continue;
        }
        let kernel = debian::fetch(cache, suite, mirror, opts.refresh)
            .with_context(|| format!("fetching the {} kernel", suite.name))?;
        if wanted(&suite)
            || by_version
                .iter()
                .any(|v| kernel.release().starts_with(v.as_str()))
        {
            say(
                TAG,
                format_args!(
                    "{}: {} {} (CONFIG_LSM={})",
                    suite.name,
                    kernel.package,
                    kernel.version,
                    kernel.default_lsm.join(",")
                ),
            );
            kernels.push(kernel);
        }
    }
    for v in by_version {
        if !kernels.iter().any(|k| k.release().starts_with(v.as_str())) {
            bail!(
                "no kernel matches {v:?}: choose from 5.10, 6.1, 6.12, newest, a suite name or a version prefix"
            );
        }
    }
    Ok(kernels)
}

/// Boots once, and once more if the emulator failed; judges the doctor's output.
fn boot_and_judge(plan: &Plan, initramfs: &Path, logs: &Path, timeout: Duration) -> Result<Row> {
    let mut append = "console=ttyS0 panic=-1 quiet loglevel=1".to_owned();
    if let Some(lsm) = &plan.lsm {
        append.push_str(&format!(" lsm={lsm}"));
    }
    let name = format!(
        "{}-{}",
        plan.kernel.release(),
        if plan.lsm.is_some() {
            "lsm-bpf"
        } else {
            "default"
        }
    );
    let mut row = Row {
        kernel: plan.kernel.release().to_owned(),
        cmdline: plan
            .lsm
            .as_ref()
            .map_or_else(|| "default".to_owned(), |_| "lsm=...,bpf".to_owned()),
        ..Row::default()
    };
    let mut attempts = 0;
    let boot = loop {
        attempts += 1;
        let log = logs.join(format!("{name}-{attempts}.log"));
        let boot = guest::boot(&plan.kernel.vmlinuz, initramfs, &append, timeout, &log)?;
        let done = boot.console.lines().any(|l| l.trim_end() == guest::DONE);
        if !done && boot.emulator_failed() && attempts < 2 {
            say(
                TAG,
                format_args!(
                    "{name}: {}; retrying once (console in {})",
                    guest::failure_reason(&boot),
                    log.display()
                ),
            );
            continue;
        }
        break boot;
    };
    row.attempts = attempts;
    row.seconds = boot.took.as_secs();
    row.selftest = guest::section(&boot.console, "selftest").map_or_else(
        || "-".to_owned(),
        |s| match s.rc.as_str() {
            "absent" => "absent".to_owned(),
            "0" => "ok".to_owned(),
            rc => format!("exit {rc}"),
        },
    );
    if row.selftest.starts_with("exit") {
        row.problems.push(format!("selftest {}", row.selftest));
    }
    match guest::section(&boot.console, "watch") {
        Some(watch) => report::judge_watch(&mut row, &watch.output, &watch.rc),
        None => row.watch = "-".to_owned(),
    }
    // `probectl run --json` sends the command's own output (the fixtures' marks) to
    // stderr, and the records to stdout: the judge reads both.
    let both = |name: &str| {
        let out = guest::section(&boot.console, name)?.output;
        let err = guest::section(&boot.console, &format!("{name}.stderr"))
            .map(|s| s.output)
            .unwrap_or_default();
        Some(out + &err)
    };
    let tier_tests = tiers::judge(both(tiers::SECTION).as_deref());
    row.tiers = tier_tests.cell();
    for skipped in &tier_tests.skipped {
        say(
            TAG,
            format_args!("  {name}: not run in the guest: {skipped}"),
        );
    }
    row.problems.extend(tier_tests.problems);
    match guest::section(&boot.console, "doctor") {
        Some(doctor) => {
            let lsm = guest::section(&boot.console, "lsm").map(|s| s.output);
            report::judge(&mut row, &doctor.output, &doctor.rc, lsm.as_deref());
            if !row.ok()
                && let Some(err) = guest::section(&boot.console, "doctor.stderr")
            {
                // The first lines say why (the log itself has them all).
                for line in err.output.lines().take(8) {
                    say(TAG, format_args!("  {name} stderr: {line}"));
                }
            }
        }
        None => row.problems.push(guest::failure_reason(&boot)),
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::lsm_with_bpf;

    #[test]
    fn lsm_boot_appends_bpf_once() {
        let list = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            lsm_with_bpf(&list("landlock,lockdown,yama,apparmor")).as_deref(),
            Some("landlock,lockdown,yama,apparmor,bpf")
        );
        assert_eq!(lsm_with_bpf(&list("lockdown,apparmor,bpf")), None);
    }
}
