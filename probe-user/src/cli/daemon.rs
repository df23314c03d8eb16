//! `probectl daemon`: the sensors loaded once for the whole machine. Programs the
//! policies select are watched wherever they start; clients of the control socket
//! add trees (`watch`, `run`) and read status. Records go to the configured sinks
//! and, filtered to their trees, to subscribers.
//!
//! Signals: SIGHUP reloads the policy directories (the old policy stays if the new
//! one is refused); SIGTERM and SIGINT drain: every event already in the ring is
//! handled and written before exit, and the last line says how many were received
//! and handled.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use probe_user::correlate::Correlator;
use probe_user::daemon::server::{self as control_server, Command, SharedStats};
use probe_user::daemon::{access, config::Config, notify::Notifier};
use probe_user::events::EventReader;
use probe_user::output::{Format, Printer, time::WallClock};
use probe_user::policy::{self, PolicySet};
use probe_user::process::ProcessTable;
use probe_user::sensors::Sensors;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::daemon_state::{DaemonState, open_sinks};
use super::session::{LIBC_SCAN_EVERY, Session};

/// How often trees that have exited are checked for eviction.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Configuration file (policy directories, sinks, memory bounds, socket). When
    /// absent at the default path, the defaults apply: the built-in policy, readable
    /// lines on stderr.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub async fn daemon(args: DaemonArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| probe_user::daemon::DEFAULT_CONFIG.into());
    let config = Config::load(&config_path, args.config.is_some())?;
    let mut notifier = Notifier::from_env();
    let PolicySet {
        compiled: mut policy,
        files,
        version,
    } = policy::load_dirs(&config.policy_dirs)?;
    let mut sensors = Sensors::load(&policy)?;
    for s in sensors.unattached() {
        tracing::warn!(
            "sensor {} did not attach ({}): {}",
            s.program,
            s.attach_point,
            s.error.as_deref().unwrap_or("?")
        );
    }
    let reader =
        EventReader::new(sensors.take_events()?).context("cannot poll the event ring buffer")?;
    let mut procs = ProcessTable::default();
    // Selected programs that already run are watched from now on.
    for pid in
        probe_user::process::pids_selected(&policy.kernel.select_comms, &policy.kernel.select_uids)
    {
        for pid in procs.seed_tree(pid) {
            if sensors.watch(pid).is_ok() {
                procs.mark_live([pid]);
            }
        }
    }
    let correlator = Correlator::new(&policy, WallClock::boot_now_ns())
        .with_file_index(sensors.file_index.clone())
        .with_timeline_capacity(config.memory.max_probes);
    let mut session = Session::new(
        sensors,
        reader,
        procs,
        correlator,
        Printer::new(Format::Json, Box::new(std::io::sink())),
        &policy,
    );
    session.held = Some(Vec::new());
    let host = std::sync::Arc::new(probe_user::ship::host::HostInfo::read());
    let sinks = open_sinks(&config.sinks, &host, &config.state_dir)?;
    let group_gid = access::group_gid(&config.group);
    if group_gid.is_none() {
        tracing::warn!(
            "group {:?} does not exist: only root can use the control socket",
            config.group
        );
    }
    let listener = control_server::bind(&config.socket, group_gid)?;
    let (commands_tx, mut commands) = mpsc::channel::<Command>(64);
    let socket_stats = SharedStats::default();
    tokio::spawn(control_server::accept_loop(
        listener,
        commands_tx,
        config.group.clone(),
        config.memory.subscriber_queue,
        socket_stats.clone(),
    ));
    let mut state = DaemonState::new(
        session,
        sinks,
        files,
        version,
        config.clone(),
        socket_stats,
        host,
    );

    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut libc_scan = tokio::time::interval(LIBC_SCAN_EVERY);
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
            read = state.session.read() => {
                read?;
                state.fan_out();
            }
            Some(command) = commands.recv() => state.handle(command, &mut policy),
            _ = libc_scan.tick(), if !state.session.libc_scans.is_empty() => {
                state.session.rescan_libcs();
                state.fan_out();
            }
            _ = expire.tick() => {
                // Subscriptions end (with their report) before their trees can expire.
                state.end_finished(&policy);
                state.expire();
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
                let _ = state.reload(&mut policy);
                notifier.notify(&format!("READY=1\nSTATUS={}", state.one_line_status()));
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    notifier.notify("STOPPING=1");
    // Everything the kernel published before now is handled and written.
    state.session.drain();
    state.fan_out();
    state.summarise_repeats(true);
    state.report_losses();
    state.flush();
    let reader = &state.session.reader;
    tracing::info!(
        "stopped on {why}: {} events received, {} handled, {} undecodable; {} records written",
        reader.received,
        state.session.events_handled,
        reader.decode_errors,
        state.records_written()
    );
    eprintln!(
        "probectl daemon: stopped on {why}: events received={} handled={} undecodable={} records_written={}",
        reader.received,
        state.session.events_handled,
        reader.decode_errors,
        state.records_written()
    );
    let _ = std::fs::remove_file(&config.socket);
    Ok(0)
}
