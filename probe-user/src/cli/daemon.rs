//! `probectl daemon`: the machine's monitor (see `probe_user::daemon::serve`).

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Configuration file (policy directories, sinks, memory bounds, socket). When
    /// absent at the default path, the defaults apply: the built-in policy, readable
    /// lines on stderr.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub async fn daemon(args: DaemonArgs) -> anyhow::Result<i32> {
    let stopped = probe_user::daemon::serve::serve(args.config.as_deref()).await?;
    eprintln!("probectl daemon: {stopped}");
    Ok(0)
}
