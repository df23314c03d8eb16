//! Workspace automation, run as `cargo xtask <command>` (alias in .cargo/config.toml):
//! one place that knows the prerequisites of the eBPF build and how to build, demo and
//! test probectl. Errors are anyhow here at the edge; each prints as one `error:` line
//! and exits 1, while `demo` and `test` pass on their child's exit code.

mod bench;
mod bench_block;
mod bench_build;
mod bench_settle;
mod bench_start;
mod cmd;
mod demo;
mod fuzz;
mod install;
mod kernels;
mod setup;
mod soak;
mod workspace;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    bin_name = "cargo xtask",
    about = "Set up, build, demo and test probectl",
    after_help = "Every command runs `setup` first; it only installs what is missing."
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Check the prerequisites (LLVM 22 dev packages, nightly with rust-src,
    /// bpf-linker) and install the missing ones.
    Setup {
        /// Also the tools only the tests need (Node.js, gcc, musl-gcc, systemd-analyze,
        /// setpriv, useradd, rsyslog and its TLS driver), without building anything.
        #[arg(long)]
        tests: bool,
    },
    /// Build probectl and probe-demo (debug).
    Build,
    /// Build, then run probe-demo under `probectl run` against a local listener (needs
    /// root).
    Demo,
    /// Run the workspace tests one at a time; the eBPF integration tests need root.
    #[command(
        after_help = "Examples:\n  cargo xtask test\n  cargo xtask test -- sensors\n  cargo xtask test -- sensors -- --nocapture"
    )]
    Test {
        /// Test name filters for `cargo test`; arguments after a further `--` go to
        /// the test binaries.
        #[arg(last = true, value_name = "FILTER")]
        args: Vec<String>,
    },
    /// Measure probectl's overhead next to no monitor, strace, bpftrace and auditd,
    /// interleaved in one run (needs root; results in target/bench/results.md).
    Bench {
        /// Interleaved rounds; medians are taken over them.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Only this part (same rounds, same baseline, a few minutes instead of the
        /// whole run).
        #[arg(long, value_enum)]
        only: Option<bench::Part>,
    },
    /// Fuzz the policy parser and validator (cargo-fuzz with nightly and ASan; installs
    /// cargo-fuzz when missing). `test` runs a 20-second smoke run of it.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Run the release daemon under mixed load (watched bursts, unwatched noise,
    /// reloads, clients) for N minutes, sampling RSS, fds and loop latency (needs
    /// root; not part of `test`; results in target/soak/results.md).
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Build the release binary and install it with the systemd unit, the default
    /// config and policy (kept if present), the man page and bash completions
    /// (needs root, or --destdir).
    Install {
        /// Install under this directory instead of / (packaging, tests).
        #[arg(long, value_name = "DIR")]
        destdir: Option<std::path::PathBuf>,
    },
    /// Boot Debian's kernels (5.10, 6.1, 6.12, newest backports) in QEMU and run
    /// `probectl doctor` in each, with the default command line and with
    /// `lsm=...,bpf` (needs root; downloads into target/kernels).
    #[command(
        after_help = "Examples:\n  cargo xtask kernels\n  cargo xtask kernels --kernels 5.10,6.1 --quick"
    )]
    Kernels(kernels::Options),
    /// Remove what `install` put in place; the config and policies stay unless --purge.
    Uninstall {
        #[arg(long, value_name = "DIR")]
        destdir: Option<std::path::PathBuf>,
        /// Also remove /etc/probectl.
        #[arg(long)]
        purge: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    match dispatch(cli.task) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("[xtask] error: {err:#}");
            std::process::exit(1);
        }
    }
}

/// Runs one task and returns the exit code for the process.
fn dispatch(task: Task) -> Result<i32> {
    match task {
        Task::Setup { tests } => setup::run(tests).map(|_| 0),
        Task::Build => {
            let tools = setup::run(false)?;
            workspace::build(&tools)?;
            Ok(0)
        }
        Task::Demo => demo::run(),
        Task::Test { args } => workspace::test(&args),
        Task::Bench { rounds, only } => bench::run(rounds, only),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Soak { minutes } => soak::run(minutes),
        Task::Kernels(opts) => kernels::run(&opts),
        Task::Install { destdir } => install::install(destdir.as_deref()),
        Task::Uninstall { destdir, purge } => install::uninstall(destdir.as_deref(), purge),
    }
}
