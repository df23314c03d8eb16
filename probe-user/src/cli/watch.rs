//! `probectl watch PID...`: watch processes that already run, and all their
//! descendants (those that exist now, found in /proc, and those forked later, through
//! the kernel's inheritance), until they all exit, `--for` ends, or Ctrl-C.

use probe_user::engine::{self, ReportScope, SeedError};
use probe_user::output::{Format, Printer};
use probe_user::policy;
use probe_user::records::{Body, Record, WatchingRecord};
use tokio::signal::unix::{SignalKind, signal};

use super::standalone::{self, LIVENESS_CHECK, open_engine, output_for, print};
use super::via_daemon::{self, Subscription, sink_format, stream_until_end};
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
    if args.policy.is_none()
        && let Some(stream) = via_daemon::connect_if_running(args.standalone).await?
    {
        if args.enforce {
            eprintln!(
                "probectl: note: --enforce does not change the daemon's enforcement (`probectl status` shows it); --standalone --enforce, or --policy FILE --enforce, enforces this watch's own block rules"
            );
        }
        if !args.trusted_resolvers.is_empty() {
            eprintln!(
                "probectl: note: --trusted-resolver does not change the daemon's list (`trusted_resolvers` in its config)"
            );
        }
        return watch_via_daemon(&args, stream, duration).await;
    }
    let mut engine = open_engine(
        args.policy.as_deref(),
        args.max_probes,
        args.enforce,
        &args.trusted_resolvers,
    )?;
    let (format, out, color) = output_for(args.json, args.output.as_deref(), args.no_color)?;
    let mut printer = Printer::new(format, out)
        .with_color(color)
        .with_details(args.details);
    let watched = match engine.watch_trees(&args.pids) {
        Ok(w) => w,
        Err(err @ (SeedError::NoSuchProcess(_) | SeedError::Exited(_))) => {
            eprintln!("probectl: {err}");
            return Ok(exit::NO_SUCH_PROCESS);
        }
        Err(err) => return Err(err.into()),
    };
    printer.emit(&Record::now(Body::Watching(WatchingRecord {
        roots: args.pids.clone(),
        pids: watched,
        policy: engine.policy().name.clone(),
    })));
    // The env uprobes attached to the libcs the watched processes map.
    print(&mut engine, &mut printer);

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut libc_scan = tokio::time::interval(engine::LIBC_SCAN_EVERY);
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    // Polled only when --for was given.
    let deadline = tokio::time::sleep(duration.unwrap_or_default());
    tokio::pin!(deadline);
    let why = loop {
        tokio::select! {
            read = engine.next_batch() => read?,
            _ = libc_scan.tick(), if engine.libc_scans_pending() => engine.scan_libcs(),
            _ = liveness.tick() => {
                engine.drain();
                engine.procs.prune_dead();
                if engine.procs.live().next().is_none() {
                    break "every watched process exited";
                }
            }
            _ = &mut deadline, if duration.is_some() => break "the --for duration ended",
            _ = sigint.recv() => break "interrupted",
            _ = sigterm.recv() => break "terminated",
            _ = sighup.recv() => standalone::reload(&mut engine, args.policy.as_deref(), &mut printer),
        }
        print(&mut engine, &mut printer);
    };
    engine.drain();
    print(&mut engine, &mut printer);
    if format == Format::Human {
        eprintln!("probectl: stopped watching: {why}");
    }
    engine.procs.finish_lookups(super::run::LOOKUP_WAIT);
    let losses = standalone::losses(&engine, &printer);
    let report = engine.report(args.pids[0], 0, ReportScope::All, &losses);
    printer.emit(&Record::now(Body::Report(Box::new(report))));
    standalone::detach_off_the_exit_path();
    Ok(0)
}

/// `watch` through the daemon: it seeds and watches the trees, and streams their
/// records here until they have all exited (then the report comes), or until
/// `--for` ends or Ctrl-C, when this asks for the report.
async fn watch_via_daemon(
    args: &WatchArgs,
    stream: tokio::net::UnixStream,
    duration: Option<std::time::Duration>,
) -> anyhow::Result<i32> {
    let (format, mut out, color) = output_for(args.json, args.output.as_deref(), args.no_color)?;
    let mut sub = match Subscription::open(
        stream,
        args.pids.clone(),
        sink_format(args.json),
        color,
        args.details,
    )
    .await
    {
        Ok(sub) => sub,
        Err(err)
            if err.to_string().contains("no process")
                || err.to_string().contains("exited before") =>
        {
            eprintln!("probectl: {err}");
            return Ok(exit::NO_SUCH_PROCESS);
        }
        Err(err) => return Err(err),
    };
    if format == Format::Human {
        eprintln!(
            "probectl: using the daemon ({}; --standalone to load probectl's own programs): {} process(es) watched",
            probe_user::daemon::socket_path().display(),
            sub.watched.len(),
        );
    }
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let stop = Box::pin(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
            _ = tokio::time::sleep(duration.unwrap_or_default()), if duration.is_some() => {}
        }
    });
    let why = stream_until_end(&mut sub, &mut *out, stop).await?;
    if format == Format::Human {
        eprintln!("probectl: stopped watching: {why}");
    }
    Ok(0)
}
