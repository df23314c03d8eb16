//! The `probectl` binary: argument parsing, logging set-up, and error reporting.

mod cli;

use clap::Parser as _;

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROBECTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let cli = cli::Cli::parse();
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
