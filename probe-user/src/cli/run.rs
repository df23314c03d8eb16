//! `probectl run -- CMD`: run a command under watch, stream what it and its
//! descendants probe and where they connect, print a report, and exit with the
//! command's exit code.
//!
//! The run lasts until the command *and every descendant* have exited, as with
//! `strace -f`: a CLI that double-forks a helper which phones home later is still
//! reported. Ctrl-C after the command exited stops waiting and prints the report.

use std::io;
use std::os::fd::AsFd as _;
use std::process::{Command, ExitStatus};

use anyhow::Context as _;
use probe_user::engine::{self, Engine, ReportScope};
use probe_user::output::{Format, Printer};
use probe_user::private_file::Access;
use probe_user::records::{Body, Record};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::standalone::{self, LIVENESS_CHECK, open_engine, output_for, print};
use super::via_daemon::{self, Subscription, sink_format, stream_until_end};
use super::{RunArgs, exit, spawn};

/// How long a run that writes a profile waits at its end for executable hashes.
const EXE_HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a report waits for package and executable lookups still under way.
pub(super) const LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    // A running daemon already has the programs loaded; `--policy` and `--profile`
    // need probectl's own.
    if args.policy.is_none()
        && args.profile.is_none()
        && let Some(stream) = via_daemon::connect_if_running(args.standalone).await?
    {
        return run_via_daemon(args, stream).await;
    }
    // The profile's file is opened (and checked) before anything runs, so a path
    // probectl refuses fails the run at once; it is emptied only when written.
    let mut profile_file = args
        .profile
        .as_deref()
        .map(|path| {
            probe_user::private_file::RecordFile::open(path, Access::ReadWrite)
                .with_context(|| format!("cannot write the profile to {}", path.display()))
        })
        .transpose()?;
    let mut engine = open_engine(
        args.policy.as_deref(),
        args.max_probes,
        args.enforce,
        &args.trusted_resolvers,
    )?;
    if args.profile.is_some() {
        // The profile keys a native CLI on its executable's sha256.
        engine.procs.hash_executables();
    }
    let result = run_standalone(&args, &mut engine, profile_file.as_mut()).await;
    // On every way out, a failed exec or an error included: the kernel's detaches
    // happen in a short-lived child, not before probectl exits.
    standalone::detach_off_the_exit_path();
    result
}

/// `run` with probectl's own programs loaded in `engine`.
async fn run_standalone(
    args: &RunArgs,
    engine: &mut Engine,
    mut profile_file: Option<&mut probe_user::private_file::RecordFile>,
) -> anyhow::Result<i32> {
    let (format, out, color) = output_for(args.json, args.output.as_deref(), args.no_color)?;
    let mut printer = Printer::new(format, out)
        .with_color(color)
        .with_details(args.details);
    let (program, gate) = match start_gated(args, engine.sensors.original_memlock)? {
        Ok(started) => started,
        Err(code) => return Ok(code),
    };
    let root = gate.pid;
    if let Err(err) = engine.watch_command(root) {
        gate.abort();
        return Err(err).context("cannot add the command to the watched set");
    }
    engine.attach_before_exec(
        root,
        &args.command[0],
        std::env::var_os("LD_PRELOAD").as_deref(),
    );
    for (pid, err) in engine.watch_selected_running(false) {
        eprintln!("probectl: warning: cannot watch running selected process {pid}: {err}");
    }
    if format == Format::Human {
        eprintln!(
            "probectl: watching pid {root}: {} (policy {})",
            escape_argv(&args.command),
            engine.policy().name
        );
    }
    let spawner = gate.release().context("cannot start the command")?;
    let mut status_rx = wait_on_thread(spawner);

    // Ctrl-C and a hang-up reach the command through the terminal (it is in our
    // foreground process group), so probectl does not pass them on again, which many
    // CLIs would read as "force quit"; it stays to report. SIGTERM sent to probectl is
    // passed on.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut libc_scan = tokio::time::interval(engine::LIBC_SCAN_EVERY);
    let status = loop {
        tokio::select! {
            read = engine.next_batch() => {
                read?;
                print(engine, &mut printer);
            }
            _ = libc_scan.tick(), if engine.libc_scans_pending() => {
                engine.scan_libcs();
                print(engine, &mut printer);
            }
            status = &mut status_rx => break status.unwrap_or_else(|_| Err(io::Error::other("lost the command's exit status"))),
            _ = sigint.recv() => {}
            // A hang-up also reaches the command through the terminal; for probectl it
            // means: read the policy file again.
            _ = sighup.recv() => standalone::reload(engine, args.policy.as_deref(), &mut printer),
            _ = sigterm.recv() => forward(root, nix::sys::signal::Signal::SIGTERM),
        }
    };
    // Everything the command did happened before its exit, so it is in the ring now.
    engine.drain();
    print(engine, &mut printer);
    let exit_code = match status {
        Ok(status) => exit_code_of(status),
        Err(err) => return Ok(report_spawn_error(&program, &err)),
    };
    wait_for_descendants(
        engine,
        &mut printer,
        root,
        format,
        &mut sigint,
        &mut sigterm,
        &mut libc_scan,
    )
    .await?;

    // Lookups the worker still owes (late under load): bounded, a stalled file system
    // costs at most this once, and what does not come is counted.
    engine.procs.finish_lookups(LOOKUP_WAIT);
    if args.profile.is_some() {
        // Bounded: a hash still not done then (a huge file, a stalled file system)
        // is noted in the profile as not hashed.
        engine.procs.finish_exe_hashes(EXE_HASH_WAIT);
    }
    let losses = standalone::losses(engine, &printer);
    let report = engine.report(root, exit_code, ReportScope::All, &losses);
    if let (Some(path), Some(file)) = (&args.profile, profile_file.as_mut()) {
        let command = args
            .command
            .iter()
            .map(|a| probe_user::escape::escape_bytes(a.as_encoded_bytes()))
            .collect();
        let profile = probe_user::profile::from_report(&report, command);
        let text = serde_yaml::to_string(&profile).context("cannot encode the profile")?;
        file.truncate(0)
            .and_then(|()| file.append(text.as_bytes()))
            .with_context(|| format!("cannot write the profile to {}", path.display()))?;
    }
    printer.emit(&Record::now(Body::Report(Box::new(report))));
    Ok(exit_code)
}

/// Forks the command, held before its exec (see `spawn`): as the invoking user under
/// sudo, with stdout moved to stderr when stdout carries JSON records. The inner
/// `Err` is the exit code for a command that could not be started (already
/// reported).
fn start_gated(
    args: &RunArgs,
    memlock: Option<libc::rlimit>,
) -> anyhow::Result<Result<(String, spawn::Gate), i32>> {
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    if args.json && args.output.is_none() {
        // stdout carries the records; the command writes to stderr instead.
        cmd.stdout(std::process::Stdio::from(
            io::stderr().as_fd().try_clone_to_owned()?,
        ));
    }
    let creds = spawn::invoking_user();
    match &creds {
        Some(creds) => spawn::set_user_env(&mut cmd, creds),
        None if nix::unistd::geteuid().is_root() => {
            eprintln!("probectl: note: SUDO_UID is not set, so the command runs as root")
        }
        None => {}
    }
    let program = args.command[0].to_string_lossy().into_owned();
    Ok(match spawn::spawn_gated(cmd, creds, memlock) {
        Ok(gate) => Ok((program, gate)),
        Err(err) => Err(report_spawn_error(&program, &err)),
    })
}

/// `run` through the daemon: the command starts held, the daemon watches it, then
/// it runs; the daemon's rendering of its records (and, once it and every
/// descendant have exited, the report) is copied to this run's output.
async fn run_via_daemon(args: RunArgs, stream: tokio::net::UnixStream) -> anyhow::Result<i32> {
    let (format, mut out, color) = output_for(args.json, args.output.as_deref(), args.no_color)?;
    let (program, gate) = match start_gated(&args, None)? {
        Ok(started) => started,
        Err(code) => return Ok(code),
    };
    let root = gate.pid;
    let mut sub = match Subscription::open(
        stream,
        vec![root],
        sink_format(args.json),
        color,
        args.details,
    )
    .await
    {
        Ok(sub) => sub,
        Err(err) => {
            gate.abort();
            return Err(err.context("cannot watch the command through the daemon"));
        }
    };
    if format == Format::Human {
        // The daemon's `watching` record follows, naming the pid.
        eprintln!(
            "probectl: using the daemon ({}; --standalone to load probectl's own programs)",
            probe_user::daemon::socket_path().display()
        );
    }
    if args.enforce {
        // Enforcement is the daemon's (`enforce:` in its config), for every tree.
        eprintln!(
            "probectl: note: --enforce does not change the daemon's enforcement (`probectl status` shows it); --standalone --enforce, or --policy FILE --enforce, enforces this run's own block rules"
        );
    }
    if !args.trusted_resolvers.is_empty() {
        eprintln!(
            "probectl: note: --trusted-resolver does not change the daemon's list (`trusted_resolvers` in its config)"
        );
    }
    let spawner = gate.release().context("cannot start the command")?;
    let status_rx = wait_on_thread(spawner);
    // The daemon ends the stream once the command and its descendants have exited.
    // Ctrl-C reaches the command through the terminal; a second one, or SIGTERM,
    // asks for the report now.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let stop = Box::pin(async move {
        tokio::select! {
            _ = async { sigint.recv().await; sigint.recv().await } => {}
            _ = sigterm.recv() => forward(root, nix::sys::signal::Signal::SIGTERM),
        }
    });
    stream_until_end(&mut sub, &mut *out, stop).await?;
    let status = status_rx
        .await
        .unwrap_or_else(|_| Err(io::Error::other("lost the command's exit status")));
    match status {
        Ok(status) => Ok(exit_code_of(status)),
        Err(err) => Ok(report_spawn_error(&program, &err)),
    }
}

/// Waits for the released command on a plain thread, so the event loop stays
/// responsive; the status arrives on the returned channel.
fn wait_on_thread(
    spawner: std::thread::JoinHandle<io::Result<std::process::Child>>,
) -> tokio::sync::oneshot::Receiver<io::Result<ExitStatus>> {
    let (status_tx, status_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let status = match spawner.join() {
            Ok(Ok(mut child)) => child.wait(),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(io::Error::other("the spawning thread panicked")),
        };
        let _ = status_tx.send(status);
    });
    status_rx
}

/// Keeps watching until every descendant of the command has exited, or until the
/// user interrupts.
async fn wait_for_descendants(
    engine: &mut Engine,
    printer: &mut Printer,
    root: u32,
    format: Format,
    sigint: &mut Signal,
    sigterm: &mut Signal,
    libc_scan: &mut tokio::time::Interval,
) -> anyhow::Result<()> {
    let remaining = |e: &Engine| e.procs.live().filter(|&p| p != root).collect::<Vec<_>>();
    let left = remaining(engine);
    if left.is_empty() {
        return Ok(());
    }
    if format == Format::Human {
        eprintln!(
            "probectl: pid {root} exited; still watching {} descendant(s) ({}); Ctrl-C stops and reports",
            left.len(),
            left.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    while !remaining(engine).is_empty() {
        tokio::select! {
            read = engine.next_batch() => read?,
            _ = libc_scan.tick(), if engine.libc_scans_pending() => engine.scan_libcs(),
            _ = liveness.tick() => {
                // Events of a process that just exited are already in the ring.
                engine.drain();
                engine.procs.prune_dead();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        print(engine, printer);
    }
    engine.drain();
    print(engine, printer);
    Ok(())
}

fn forward(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn exit_code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn report_spawn_error(program: &str, err: &io::Error) -> i32 {
    let program = probe_user::escape::escape_bytes(program.as_bytes());
    match err.kind() {
        io::ErrorKind::NotFound => {
            eprintln!(
                "probectl: command not found: {program}\n  hint: check the name and PATH (under sudo, PATH is sudo's secure_path)"
            );
            exit::NOT_FOUND
        }
        io::ErrorKind::PermissionDenied => {
            eprintln!(
                "probectl: cannot execute {program}: {err}\n  hint: check the file's execute permission for the invoking user"
            );
            exit::CANNOT_EXECUTE
        }
        _ => {
            eprintln!("probectl: cannot start {program}: {err}");
            exit::CANNOT_EXECUTE
        }
    }
}

fn escape_argv(argv: &[std::ffi::OsString]) -> String {
    argv.iter()
        .map(|a| probe_user::escape::escape_bytes(a.as_encoded_bytes()))
        .collect::<Vec<_>>()
        .join(" ")
}
