//! The `probectl` binary: argument parsing, logging set-up, and error reporting.

mod cli;

use clap::Parser as _;

fn main() {
    let cli = cli::Cli::parse();
    // The daemon says when it is ready and why it stops; the ad hoc commands only
    // warn. PROBECTL_LOG overrides either (e.g. `debug`).
    let default = if matches!(cli.command, cli::Command::Daemon(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROBECTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();

    let code = match cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("probectl: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            cli::exit::FAILURE
        }
    };
    std::process::exit(code);
}
