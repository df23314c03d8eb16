//! The daemon's event loop: the sensors loaded once for the whole machine. Programs
//! the policies select are watched wherever they start; clients of the control
//! socket add trees (`watch`, `run`) and read status. Records go to the configured
//! sinks and, filtered to their trees, to subscribers.
//!
//! Each turn of the loop does one bounded piece of work (a batch of events, one
//! control request, one timer's duty), so `status`, SIGTERM, a reload and the
//! watchdog are answered within a few batches while a watched program bursts.
//!
//! Signals: SIGHUP reloads the policy directories (prepared off the loop; the old
//! policy stays if the new one is refused); SIGTERM and SIGINT drain: every event
//! already in the ring is handled and written before exit, and the last line says how
//! many were received and handled.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::config::{Config, ConfigError};
use super::notify::Notifier;
use super::server::{self, Command, SharedStats};
use super::state::{DaemonState, PolicyMeta, Prepared, now};
use super::{DEFAULT_CONFIG, access};
use crate::engine::{self, Engine, EngineError};
use crate::policy::{self, PolicyError};
use crate::ship::sinks::{Sink, SinkError};

/// How often trees that have exited are checked for eviction.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("control socket: {0}")]
    Socket(#[from] server::BindError),
    #[error("cannot handle signals: {0}")]
    Signals(#[source] std::io::Error),
}

/// How the daemon stopped, for its last line.
#[derive(Debug)]
pub struct Stopped {
    /// The signal that stopped it.
    pub why: &'static str,
    pub received: u64,
    pub handled: u64,
    pub undecodable: u64,
    pub records_written: u64,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped on {}: events received={} handled={} undecodable={} records_written={}",
            self.why, self.received, self.handled, self.undecodable, self.records_written
        )
    }
}

/// Runs the daemon until SIGTERM or SIGINT. `config`: the file given with
/// `--config`, else the default path (absent: the defaults).
pub async fn serve(config: Option<&Path>) -> Result<Stopped, DaemonError> {
    let started = Instant::now();
    let config = Config::load(
        config.unwrap_or(Path::new(DEFAULT_CONFIG)),
        config.is_some(),
    )?;
    let mut notifier = Notifier::from_env();
    let prepared = policy::prepare(&policy::PolicySource::Dirs(config.policy_dirs.clone()))?;
    let (files, version) = (prepared.files.clone(), prepared.version.clone());
    let options = engine::Options {
        max_probes: config.memory.max_probes,
        enforce: config.enforce,
        trusted_resolvers: config.trusted_resolvers.clone(),
        ..engine::Options::default()
    };
    let mut engine = Engine::open(prepared, &options)?;
    for s in engine.unattached() {
        tracing::warn!(
            "sensor {} did not attach ({}): {}",
            s.program,
            s.attach_point,
            s.error.as_deref().unwrap_or("?")
        );
    }
    // Selected programs that already run are watched from now on.
    for (pid, err) in engine.watch_selected_running(true) {
        tracing::warn!("cannot watch running selected process {pid}: {err}");
    }
    let host = std::sync::Arc::new(crate::ship::host::HostInfo::read());
    let sinks = config
        .sinks
        .iter()
        .map(|c| Sink::open(c, host.clone(), &config.state_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let group_gid = access::group_gid(&config.group);
    if group_gid.is_none() {
        tracing::warn!(
            "group {:?} does not exist: only root can use the control socket",
            config.group
        );
    }
    let listener = server::bind(&config.socket, group_gid)?;
    let (commands_tx, mut commands) = mpsc::channel::<Command>(64);
    let socket_stats = SharedStats::default();
    tokio::spawn(server::accept_loop(
        listener,
        commands_tx,
        config.group.clone(),
        config.memory.subscriber_queue,
        socket_stats.clone(),
    ));
    let policy = PolicyMeta {
        files,
        version,
        loaded_at: now(),
    };
    let mut state = DaemonState::new(engine, sinks, policy, config.clone(), socket_stats, host);
    let (prepared_tx, mut prepared) = mpsc::channel::<Prepared>(4);

    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut libc_scan = tokio::time::interval(engine::LIBC_SCAN_EVERY);
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let mut status_every = tokio::time::interval(config.status_every);
    let mut watchdog =
        tokio::time::interval(notifier.watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let ready = state.one_line_status();
    notifier.ready(&ready);
    tracing::info!(
        "ready in {} ms: {ready}; control socket {}",
        started.elapsed().as_millis(),
        config.socket.display()
    );
    let why = loop {
        tokio::select! {
            read = state.engine.next_batch() => {
                read?;
                state.fan_out();
            }
            Some(command) = commands.recv() => state.handle(command, &prepared_tx),
            Some(ready) = prepared.recv() => {
                let from_signal = ready.reply.is_none();
                let _ = state.apply(ready);
                if from_signal {
                    notifier.notify(&format!("READY=1\nSTATUS={}", state.one_line_status()));
                }
            }
            _ = libc_scan.tick(), if state.engine.libc_scans_pending() => {
                state.engine.scan_libcs();
                state.fan_out();
            }
            _ = expire.tick() => {
                // Subscriptions end (with their report) before their trees can expire.
                state.end_finished();
                state.engine.expire_trees(config.memory.tree_grace);
                state.summarise_repeats(false);
            }
            _ = status_every.tick() => {
                state.sample_rate();
                state.report_losses();
                notifier.status(&state.one_line_status());
            }
            _ = watchdog.tick(), if notifier.watchdog_every.is_some() => notifier.watchdog(),
            _ = sighup.recv() => {
                notifier.notify("RELOADING=1");
                state.start_reload(None, &prepared_tx);
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    notifier.notify("STOPPING=1");
    // Everything the kernel published before now is handled and written.
    state.engine.drain();
    state.fan_out();
    state.summarise_repeats(true);
    state.report_final_losses();
    state.flush();
    let reader = state.engine.reader();
    let stopped = Stopped {
        why,
        received: reader.received,
        handled: state.engine.events.handled,
        undecodable: reader.decode_errors,
        records_written: state.records_written(),
    };
    tracing::info!("{stopped}");
    let _ = std::fs::remove_file(&config.socket);
    Ok(stopped)
}
