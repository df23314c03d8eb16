//! `probectl watch PID...`: watch processes that already run, and all their
//! descendants (those that exist now, found in /proc, and those forked later, through
//! the kernel's inheritance), until they all exit, `--for` ends, or Ctrl-C.

use anyhow::Context as _;
use probe_user::correlate::{Correlator, Record, WatchingRecord};
use probe_user::output::{Format, time::WallClock};
use probe_user::policy;
use probe_user::process::ProcessTable;
use tokio::signal::unix::{SignalKind, signal};

use super::session::{LIBC_SCAN_EVERY, LIVENESS_CHECK, Opened, Session, build_report, open};
use super::{WatchArgs, exit};

pub async fn watch(args: WatchArgs) -> anyhow::Result<i32> {
    // A wrong pid is the most likely mistake: say so before loading anything.
    if let Some(pid) = args
        .pids
        .iter()
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        eprintln!(
            "probectl: no process {pid}\n  hint: check the pid (`pgrep -a NAME`); to start a command under watch instead, use `probectl run -- CMD`"
        );
        return Ok(exit::NO_SUCH_PROCESS);
    }
    let duration = args
        .duration
        .as_deref()
        .map(policy::rules::parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--for: {e} (durations look like 30s, 5m or 1h)"))?;
    let Opened {
        mut policy,
        mut sensors,
        reader,
        format,
        printer,
    } = open(
        args.policy.as_deref(),
        args.json,
        args.output.as_deref(),
        args.no_color,
    )?;

    let mut procs = ProcessTable::default();
    let mut watched = Vec::new();
    for &root in &args.pids {
        let tree = procs.seed_tree(root);
        if tree.is_empty() {
            eprintln!("probectl: process {root} exited before it could be watched");
            return Ok(exit::NO_SUCH_PROCESS);
        }
        for &pid in &tree {
            sensors
                .watch(pid)
                .with_context(|| format!("cannot add pid {pid} to the watched set"))?;
        }
        watched.extend(tree);
    }
    // Children forked between the /proc scan and the watch were not inherited: a
    // second scan, now that every parent is watched in the kernel, finds them.
    for &root in &args.pids {
        for pid in procs.seed_tree(root) {
            if !watched.contains(&pid) {
                let _ = sensors.watch(pid);
                watched.push(pid);
            }
        }
    }
    procs.mark_live(watched.iter().copied());
    let correlator = Correlator::new(&policy, WallClock::boot_now_ns())
        .with_file_index(sensors.file_index.clone())
        .with_timeline_capacity(args.max_probes);
    let mut session = Session::new(sensors, reader, procs, correlator, printer, &policy);
    session.printer.emit(&Record::Watching(WatchingRecord {
        time: WallClock::new().rfc3339(WallClock::boot_now_ns()),
        roots: args.pids.clone(),
        pids: watched.clone(),
        policy: policy.name.clone(),
    }));
    // Processes that run already have their libc mapped: attach to it now.
    for &pid in &watched {
        let (_, attached) = session.sensors.attach_env_for(pid);
        for status in attached {
            session.printer.emit(&Record::Sensor(status));
        }
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut libc_scan = tokio::time::interval(LIBC_SCAN_EVERY);
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    // Polled only when --for was given.
    let deadline = tokio::time::sleep(duration.unwrap_or_default());
    tokio::pin!(deadline);
    let why = loop {
        tokio::select! {
            read = session.read() => read?,
            _ = libc_scan.tick(), if !session.libc_scans.is_empty() => session.rescan_libcs(),
            _ = liveness.tick() => {
                session.drain();
                session.procs.prune_dead();
                if session.procs.live().next().is_none() {
                    break "every watched process exited";
                }
            }
            _ = &mut deadline, if duration.is_some() => break "the --for duration ended",
            _ = sigint.recv() => break "interrupted",
            _ = sigterm.recv() => break "terminated",
            _ = sighup.recv() => session.reload(&mut policy, args.policy.as_deref()),
        }
    };
    session.drain();
    if format == Format::Human {
        eprintln!("probectl: stopped watching: {why}");
    }
    let report = build_report(&session, &policy, args.pids[0], 0)?;
    session.printer.emit(&Record::Report(report));
    Ok(0)
}
