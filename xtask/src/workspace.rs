//! The cargo invocations on the workspace itself: `build`, `test`, and finding the
//! target directory the demo runs binaries from.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};

pub use crate::cmd::root;
use crate::cmd::{self, say};
use crate::setup::{self, Tools};

/// Builds probectl and probe-demo (debug). probe-user's build.rs builds the eBPF object
/// with nightly and bpf-linker, which is why setup must have run.
pub fn build(tools: &Tools) -> Result<()> {
    cmd::run_ok(
        "build",
        tools
            .cargo()
            .current_dir(root())
            .args(["build", "-p", "probe-user", "-p", "probe-demo"]),
    )
}

/// `cargo xtask test [-- FILTERS [-- TEST-BINARY-ARGS]]`: runs the workspace tests
/// serially (the eBPF tests share the kernel's probes) and returns cargo's exit code.
/// Seconds of fuzzing per target in `cargo xtask test`.
const FUZZ_SMOKE_SECONDS: u32 = 20;

pub fn test(args: &[String]) -> Result<i32> {
    const TAG: &str = "test";
    let root_user = setup::is_root()?;
    // CI must never go green because the tests that matter skipped themselves.
    let ci = std::env::var("CI").is_ok_and(|ci| ci.eq_ignore_ascii_case("true"));
    if ci && !root_user {
        bail!("CI=true requires root: the eBPF integration tests must run, not skip");
    }
    let tools = setup::run(true)?;
    if root_user {
        say(TAG, "running as root: the eBPF integration tests will run");
    } else {
        let banner = "*".repeat(72);
        say(TAG, &banner);
        say(
            TAG,
            "NOT ROOT: the eBPF integration tests will be SKIPPED (loading eBPF",
        );
        say(TAG, "programs needs root). To run them:");
        say(TAG, "    sudo -E env PATH=$PATH cargo xtask test");
        say(TAG, &banner);
    }
    // Arguments up to a second `--` are cargo test filters; any after it go to the
    // test binaries, next to --test-threads=1.
    let (filters, binary_args) = match args.iter().position(|arg| arg == "--") {
        Some(split) => (&args[..split], &args[split + 1..]),
        None => (args, &[][..]),
    };
    let mut cargo = tools.cargo();
    cargo
        .current_dir(root())
        .args([
            "test",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--no-fail-fast",
        ])
        .args(filters)
        .args(["--", "--test-threads=1"])
        .args(binary_args);
    let (status, totals) = run_counting(TAG, &mut cargo)?;
    // The whole suite also runs a bounded fuzz smoke of the policy parser; a filtered
    // run is someone iterating on a few tests and skips it.
    let fuzz = if filters.is_empty() {
        let code = crate::fuzz::run(FUZZ_SMOKE_SECONDS)?;
        Some(code)
    } else {
        None
    };
    // And boots the oldest kernel and one with BPF-LSM active in QEMU (about two
    // minutes after the release build); it needs root, like the eBPF tests.
    let kernels = if filters.is_empty() && root_user {
        let started = std::time::Instant::now();
        let code = crate::kernels::run(&crate::kernels::Options::for_tests())?;
        say(
            TAG,
            format_args!("kernels: {} s", started.elapsed().as_secs()),
        );
        Some(code)
    } else {
        None
    };
    // cargo's last "test result" line belongs to whichever binary ran last (often a
    // doc-test run of 0 tests), so close with the totals over every binary.
    println!(
        "summary: {} passed, {} failed{}{}",
        totals.passed,
        totals.failed,
        match fuzz {
            Some(0) => format!("; fuzz smoke ({FUZZ_SMOKE_SECONDS} s): no crashes"),
            Some(_) => "; fuzz smoke: CRASHED (see fuzz/artifacts/)".to_owned(),
            None => String::new(),
        },
        match kernels {
            Some(0) => format!("; kernels {}: ok", crate::kernels::CI_KERNELS.join(", ")),
            Some(_) => "; kernels: FAILED (see the table above)".to_owned(),
            None => String::new(),
        }
    );
    let code = cmd::exit_code(status);
    Ok(match (fuzz, kernels) {
        (Some(fuzz_code), _) if code == 0 && fuzz_code != 0 => fuzz_code,
        (_, Some(kernels_code)) if code == 0 => kernels_code,
        _ => code,
    })
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
}

/// Runs `cargo test`, echoing its stdout line by line while adding up the
/// `test result:` lines.
fn run_counting(
    tag: &str,
    cargo: &mut std::process::Command,
) -> Result<(std::process::ExitStatus, Totals)> {
    use std::io::BufRead as _;
    say(tag, format_args!("$ {}", cmd::display(cargo)));
    let mut child = cargo
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        add_result_line(&line, &mut totals);
    }
    Ok((child.wait().context("waiting for cargo test")?, totals))
}

/// Adds `test result: ok. 8 passed; 1 failed; ...` to the totals.
fn add_result_line(line: &str, totals: &mut Totals) {
    let Some(rest) = line.strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(count)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        match label {
            "passed" => totals.passed += count,
            "failed" => totals.failed += count,
            _ => {}
        }
    }
}

/// The target directory as cargo sees it (CARGO_TARGET_DIR, build.target-dir, or
/// <workspace>/target), from `cargo metadata`.
pub fn target_dir() -> Result<PathBuf> {
    let out = cmd::cargo()
        .current_dir(root())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("could not run `cargo metadata`")?;
    if !out.status.success() {
        bail!("`cargo metadata` failed ({})", out.status);
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("`cargo metadata` printed invalid JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` output has no \"target_directory\"")
}

#[cfg(test)]
mod tests {
    use super::{Totals, add_result_line};

    #[test]
    fn adds_up_test_result_lines() {
        let mut t = Totals::default();
        add_result_line(
            "test result: ok. 8 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            &mut t,
        );
        add_result_line(
            "test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 7.33s",
            &mut t,
        );
        add_result_line("test foo ... ok", &mut t);
        assert_eq!(
            t,
            Totals {
                passed: 12,
                failed: 1
            }
        );
    }
}
