//! `cargo xtask fuzz`: the cargo-fuzz targets in fuzz/, built with nightly and ASan,
//! seeded with the bundled policies. `cargo xtask test` runs a bounded smoke run.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::cmd::root;
use crate::cmd::{self, say};

const TAG: &str = "fuzz";
/// The fuzz targets (fuzz/fuzz_targets/*.rs).
const TARGETS: &[&str] = &["policy_parse"];

/// Installs cargo-fuzz if it is missing (about 30 seconds).
fn ensure_cargo_fuzz() -> Result<()> {
    let present = cmd::probe_stdout(Command::new("cargo").args(["fuzz", "--version"]));
    match present {
        Some(version) => say(
            TAG,
            format_args!("cargo-fuzz: installed ({})", version.trim()),
        ),
        None => {
            say(
                TAG,
                "cargo-fuzz: missing; installing it (about 30 seconds)...",
            );
            cmd::run_ok(
                TAG,
                cmd::cargo().args(["install", "cargo-fuzz", "--locked"]),
            )
            .context("could not install cargo-fuzz from crates.io")?;
        }
    }
    Ok(())
}

/// Runs every target for `seconds` each. Returns the exit code: non-zero when a target
/// crashed (the input is saved under fuzz/artifacts/).
pub fn run(seconds: u32) -> Result<i32> {
    ensure_cargo_fuzz()?;
    for target in TARGETS {
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        // The bundled policies are the seeds: valid inputs the mutations start from.
        for entry in std::fs::read_dir(root().join("policies"))? {
            let path = entry?.path();
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, corpus.join(name))?;
            }
        }
        say(TAG, format_args!("{target}: {seconds} s"));
        let mut fuzz = Command::new("cargo");
        fuzz.current_dir(root())
            // Nightly for -Zsanitizer; the rustup proxy picks it from this variable.
            .env("RUSTUP_TOOLCHAIN", "nightly")
            .env_remove("CARGO")
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=4096",
            ]);
        let status = cmd::run(TAG, &mut fuzz)?;
        if !status.success() {
            say(
                TAG,
                format_args!(
                    "{target} FAILED: see the crashing input under fuzz/artifacts/{target}/"
                ),
            );
            return Ok(cmd::exit_code(status));
        }
    }
    say(TAG, "no crashes");
    Ok(0)
}
