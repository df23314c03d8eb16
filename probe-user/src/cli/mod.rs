//! Command-line interface (the binary edge: errors are anyhow here, typed below).

mod control;
mod daemon;
mod doctor;
mod policy_cmd;
mod run;
mod selftest;
mod spawn;
mod standalone;
mod via_daemon;
mod watch;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit codes of probectl itself (a `run` otherwise exits with its command's code).
pub mod exit {
    /// probectl could not do its job (no root, no BPF, bad policy, ...).
    pub const FAILURE: i32 = 125;
    /// The command was found but could not be executed.
    pub const CANNOT_EXECUTE: i32 = 126;
    /// The command was not found.
    pub const NOT_FOUND: i32 = 127;
    /// `policy check` found an invalid policy.
    pub const INVALID_POLICY: i32 = 1;
    /// `probectl watch`: a pid to watch does not exist (or exited before it was
    /// watched).
    pub const NO_SUCH_PROCESS: i32 = 3;
    /// `probectl diff`: a CLI behaves differently (docs/usage.md).
    pub const PROFILES_DIFFER: i32 = 1;
    /// `probectl diff`: a profile could not be read.
    pub const DIFF_ERROR: i32 = 2;
}

#[derive(Debug, Parser)]
#[command(
    name = "probectl",
    version,
    about = "Shows which command-line tool read the time zone, proxy or API-relay settings before it made network calls",
    after_help = "Examples:\n  sudo probectl run -- node cli.js\n  sudo probectl run --json -- curl https://example.com\n  sudo probectl watch --for 5m $(pgrep -f claude)\n  probectl policy check policies/default.yaml\n  probectl policy explain policies/default.yaml\n  sudo probectl doctor\n  sudo probectl run --profile v1.yaml -- cli; probectl diff v1.yaml v2.yaml\n\nExit codes: a run exits with its command's code; watch exits 0, or 3 when a pid does not exist; 125 probectl failed; 126 command not executable; 127 command not found; diff exits 0 (same behaviour), 1 (changed) or 2 (error)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command under watch and report what it probed before it connected.
    Run(RunArgs),
    /// Watch processes that already run, and all their descendants, until they exit,
    /// `--for` ends, or Ctrl-C; then print the report.
    Watch(WatchArgs),
    /// Work with policy files (and the daemon's policy).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run as the machine's monitor (what dist/probectl.service starts): watches
    /// the programs the policies select, serves the control socket, and writes
    /// records to the configured sinks. SIGHUP reloads, SIGTERM drains and stops.
    Daemon(daemon::DaemonArgs),
    /// Show the running daemon's sensors, event rates, drops, policy, watched
    /// trees, memory and sinks (through its control socket).
    Status {
        /// The daemon's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Probe the kernel and show which attach point each sensor uses, which better
    /// ones it passed over and why, and what is not covered. Exits 1 if a sensor
    /// family has nothing attached.
    Doctor {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Run `probectl selftest` instead.
        #[arg(long)]
        selftest: bool,
    },
    /// Prove on this machine that each sensor works: a child performs each sensor's
    /// real operations (open and readlink of a policy path, getenv through libc, a
    /// TCP connect and a UDP send to loopback, an exec) and probectl checks that each
    /// was seen, through the attach point in use. Exits 1 if one was not.
    Selftest(selftest::SelftestArgs),
    /// The self-test's child (internal).
    #[command(name = "__selftest-child", hide = true)]
    SelftestChild {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `probectl completions bash > /etc/bash_completion.d/probectl`.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `probectl manpage > /usr/local/share/man/man8/probectl.8`.
    Manpage,
    /// Compare two behaviour profiles (from `run --profile`): per CLI, matched by
    /// name, the categories, probes, destinations and rules added or gone, and a new
    /// version or fingerprint. Exits 0 when no CLI behaves differently (a new version
    /// alone is listed, not a change), 1 when one does, 2 when a profile cannot be
    /// read: a CI gate.
    Diff {
        #[arg(value_name = "OLD")]
        old: PathBuf,
        #[arg(value_name = "NEW")]
        new: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Write one JSON object per line to stdout instead of the readable report
    /// (stderr). The command's own stdout then goes to stderr, so that stdout carries
    /// only probectl's records and the command cannot forge any.
    #[arg(long)]
    pub json: bool,
    /// Policy file to use instead of the built-in default policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The readable report lists every probe and every connection with the probes
    /// before it and who made them (by default: a summary per CLI that fits a screen).
    #[arg(long)]
    pub details: bool,
    /// Write the run's behaviour profile (per CLI: categories, probes, destinations,
    /// rules) to FILE as YAML, for `probectl diff`.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Distinct probes (operation and target) kept in the run's timeline; probes of
    /// new targets past it are counted as lost (`timeline_overflow`).
    #[arg(long, value_name = "N", default_value_t = probe_user::correlate::MAX_DISTINCT_PROBES)]
    pub max_probes: usize,
    /// Block rules (`action: block`) refuse the connects and sends they match
    /// (EPERM); without it they write `would_block` records only.
    #[arg(long)]
    pub enforce: bool,
    /// A DNS server whose answers name addresses for block rules' host names
    /// (`ADDR`, `ADDR:PORT`; repeat for several); by default the `nameserver`s of
    /// /etc/resolv.conf. Answers from other servers are counted, not learned.
    #[arg(long = "trusted-resolver", value_name = "ADDR")]
    pub trusted_resolvers: Vec<probe_user::policy::dns_trust::Resolver>,
    /// Write records (readable or JSON) to FILE instead of stderr/stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// No colours in readable output (also: the NO_COLOR variable; colours are only
    /// ever used on a terminal).
    #[arg(long)]
    pub no_color: bool,
    /// Load probectl's own programs even when the daemon runs (by default a running
    /// daemon is used, unless --policy or --profile is given).
    #[arg(long)]
    pub standalone: bool,
    /// The command and its arguments. Started as the invoking user (SUDO_UID/SUDO_GID)
    /// when probectl runs under sudo.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// One JSON object per line on stdout instead of readable lines on stderr.
    #[arg(long)]
    pub json: bool,
    /// Policy file to use instead of the built-in default policy (SIGHUP reloads it).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The readable report lists every probe and every connection (see `run`).
    #[arg(long)]
    pub details: bool,
    /// Write records to FILE instead of stderr/stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// No colours in readable output (also: NO_COLOR).
    #[arg(long)]
    pub no_color: bool,
    /// Stop after this long (`30s`, `5m`) and print the report.
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Block rules (`action: block`) refuse the connects and sends of the watched
    /// trees they match (EPERM); without it they write `would_block` records only.
    #[arg(long)]
    pub enforce: bool,
    /// A DNS server whose answers name addresses for block rules' host names
    /// (`ADDR`, `ADDR:PORT`; repeat for several); by default the `nameserver`s of
    /// /etc/resolv.conf. Answers from other servers are counted, not learned.
    #[arg(long = "trusted-resolver", value_name = "ADDR")]
    pub trusted_resolvers: Vec<probe_user::policy::dns_trust::Resolver>,
    /// Distinct probes kept in the timeline.
    #[arg(long, value_name = "N", default_value_t = probe_user::correlate::MAX_DISTINCT_PROBES)]
    pub max_probes: usize,
    /// Load probectl's own programs even when the daemon runs (by default a running
    /// daemon is used, unless --policy is given).
    #[arg(long)]
    pub standalone: bool,
    /// Processes to watch, with every descendant they have now or later.
    #[arg(required = true, value_name = "PID")]
    pub pids: Vec<u32>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files; errors name file:line:column.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print what a policy makes probectl trace and flag, in words (the built-in
    /// default policy without FILE).
    Explain {
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Make the running daemon re-read its policy directories (root only). A policy
    /// that fails validation is refused and the one in force stays; exits 1 then.
    Reload,
    /// List the policy files the running daemon has in force.
    List,
}

/// Runs the parsed command and returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(run::run(args))
        }
        Command::Watch(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(watch::watch(args))
        }
        Command::Daemon(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(daemon::daemon(args))
        }
        Command::Status { json } => control::status(json),
        Command::Policy(PolicyCommand::Reload) => control::reload(),
        Command::Policy(PolicyCommand::List) => control::list(),
        Command::Policy(PolicyCommand::Check { files }) => Ok(policy_cmd::check(&files)),
        Command::Policy(PolicyCommand::Explain { file }) => {
            Ok(policy_cmd::explain(file.as_deref()))
        }
        Command::Doctor {
            json,
            selftest: true,
        } => selftest::selftest(&selftest::SelftestArgs::json_only(json)),
        Command::Doctor { json, .. } => doctor::doctor(json),
        Command::Selftest(args) => selftest::selftest(&args),
        Command::SelftestChild { args } => Ok(probe_user::selftest::child::main(&args)),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "probectl",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Manpage => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(0)
        }
        Command::Diff { old, new } => Ok(policy_cmd::diff(&old, &new)),
    }
}
