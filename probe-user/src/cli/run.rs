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
use std::time::Duration;

use anyhow::Context as _;
use probe_user::correlate::{CliIdentity, Correlator, DropCount, Record, RunReport};
use probe_user::events::{Event, EventReader};
use probe_user::output::{Format, Printer, time::WallClock};
use probe_user::policy::{self, CompiledPolicy};
use probe_user::process::ProcessTable;
use probe_user::sensors::Sensors;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{RunArgs, exit, spawn};

/// How often the liveness of remaining descendants is re-checked against /proc while
/// waiting for them, in case an exit event was lost (losses are counted and reported).
const LIVENESS_CHECK: Duration = Duration::from_millis(250);
/// How often processes that just exec'd are checked for a newly mapped libc.
const LIBC_SCAN_EVERY: Duration = Duration::from_millis(20);
/// Scans (at `LIBC_SCAN_EVERY`, or per batch of events) before giving up on a process.
const LIBC_SCAN_LIMIT: u32 = 100;

/// Everything one run reads from and writes to.
struct Session {
    sensors: Sensors,
    reader: EventReader,
    procs: ProcessTable,
    correlator: Correlator,
    printer: Printer,
    batch: Vec<Event>,
    /// Processes that exec'd and whose libc is not seen yet, with the scans so far.
    libc_scans: std::collections::HashMap<u32, u32>,
    /// The policy's selectors that only userspace evaluates.
    selectors: probe_user::policy::select::UserSelectors,
}

impl Session {
    fn process_batch(&mut self) {
        let mut records = Vec::new();
        let batch = std::mem::take(&mut self.batch);
        for mut event in batch {
            let mut selected_by = None;
            if let Event::Exec(e) = &mut event
                && e.header.kind == probe_common::EVENT_EXEC_CANDIDATE
            {
                match self.select_candidate(e) {
                    Some(why) => selected_by = Some(why),
                    // Nobody's business: not watched, not reported.
                    None => continue,
                }
            }
            if let Event::Exec(e) = &event {
                // The dynamic loader maps the libc after the exec: scan until it has.
                self.libc_scans.insert(e.header.tgid, 0);
            }
            let first_new = records.len();
            self.correlator
                .handle_into(&event, &mut self.procs, &mut records);
            if let Some(why) = selected_by {
                for record in &mut records[first_new..] {
                    if let Record::Exec(exec) = record {
                        exec.selected_by = Some(why.clone());
                    }
                }
            }
        }
        self.scan_libcs(&mut records);
        for record in &records {
            self.printer.emit(record);
        }
        self.sensors.flush_kernel_logs();
    }

    /// SIGHUP: the `--policy` file again. A policy that fails validation (or the
    /// kernel update) is refused and the one in force stays; either way a
    /// `policy_reload` record says what happened.
    fn reload(&mut self, current: &mut CompiledPolicy, path: Option<&std::path::Path>) {
        let source = path.map_or_else(
            || policy::DEFAULT_POLICY_SOURCE.to_owned(),
            |p| p.display().to_string(),
        );
        let result = match path {
            None => Err("no --policy file: the built-in policy cannot change".to_owned()),
            Some(path) => policy::load_file(path)
                .map_err(|e| e.to_string())
                .and_then(|new| {
                    self.sensors
                        .reload_policy(current, &new)
                        .map(|()| new)
                        .map_err(|e| {
                            format!(
                                "updating the kernel maps failed (they may be partly updated): {e}"
                            )
                        })
                }),
        };
        let (ok, error) = match result {
            Ok(new) => {
                self.correlator
                    .set_policy(&new, self.sensors.file_index.clone());
                self.selectors = new.selectors.clone();
                *current = new;
                (true, None)
            }
            Err(err) => (false, Some(err)),
        };
        let record = Record::PolicyReload(probe_user::correlate::PolicyReloadRecord {
            time: WallClock::new().rfc3339(WallClock::boot_now_ns()),
            ok,
            policy: current.name.clone(),
            source,
            error,
        });
        self.printer.emit(&record);
    }

    /// An exec the kernel sent because the policy has userspace selectors: watch the
    /// process if one matches (and turn the event into an ordinary exec), else `None`.
    fn select_candidate(&mut self, e: &mut probe_common::ExecEvent) -> Option<String> {
        let pid = e.header.tgid;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(e.filename_bytes()).into_owned());
        let argv: Vec<String> = e
            .argv_bytes()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let container = probe_user::process::identity::container_of(pid);
        let why = self.selectors.matching(&exe, &argv, container.as_deref())?;
        if let Err(err) = self.sensors.watch(pid) {
            tracing::warn!("cannot watch selected process {pid}: {err}");
            return None;
        }
        e.header.kind = probe_common::EVENT_EXEC;
        Some(why)
    }

    async fn read(&mut self) -> anyhow::Result<()> {
        self.reader
            .read_batch(&mut self.batch)
            .await
            .context("reading the event ring buffer")?;
        self.process_batch();
        Ok(())
    }

    /// Attaches the env uprobes to libcs that processes which just exec'd have mapped
    /// since, reporting each attach. A process that maps no libc after
    /// `LIBC_SCAN_LIMIT` scans (static, or gone) is dropped from the list.
    fn scan_libcs(&mut self, records: &mut Vec<Record>) {
        let pids: Vec<u32> = self.libc_scans.keys().copied().collect();
        for pid in pids {
            let (found, attached) = self.sensors.attach_env_for(pid);
            records.extend(attached.into_iter().map(Record::Sensor));
            let scans = self.libc_scans.entry(pid).or_default();
            *scans += 1;
            if found || *scans >= LIBC_SCAN_LIMIT {
                self.libc_scans.remove(&pid);
            }
        }
    }

    /// A timer-driven `scan_libcs`, for processes that map their libc while no event
    /// comes in.
    fn rescan_libcs(&mut self) {
        let mut records = Vec::new();
        self.scan_libcs(&mut records);
        for record in &records {
            self.printer.emit(record);
        }
    }

    /// Handles every event already in the ring without waiting.
    fn drain(&mut self) {
        self.reader.drain(&mut self.batch);
        self.process_batch();
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let mut policy = match &args.policy {
        Some(path) => policy::load_file(path)?,
        None => policy::load_default()?,
    };
    let mut sensors = Sensors::load(&policy)?;
    for s in sensors.unattached() {
        eprintln!(
            "probectl: warning: sensor {} did not attach ({}): {}; the report will be marked partial",
            s.program,
            s.attach_point,
            s.error.as_deref().unwrap_or("?")
        );
    }
    let reader =
        EventReader::new(sensors.take_events()?).context("cannot poll the event ring buffer")?;
    let format = if args.json {
        Format::Json
    } else {
        Format::Human
    };
    let out: Box<dyn io::Write + Send> = match (&args.output, format) {
        (Some(path), _) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create the output file {}", path.display()))?,
        ),
        (None, Format::Json) => Box::new(io::stdout()),
        (None, Format::Human) => Box::new(io::stderr()),
    };
    let printer = Printer::new(format, out);

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
    let gate = match spawn::spawn_gated(cmd, creds, sensors.original_memlock) {
        Ok(gate) => gate,
        Err(err) => return Ok(report_spawn_error(&program, &err)),
    };
    let root = gate.pid;
    if let Err(err) = sensors.watch(root) {
        gate.abort();
        return Err(err).context("cannot add the command to the watched set");
    }
    let mut procs = ProcessTable::default();
    procs.add_root(root, std::process::id());
    // Programs the policy selects (by name or uid) that were already running: watched from now on,
    // with their descendants and lineage from /proc (the kernel selects later execs).
    for pid in
        probe_user::process::pids_selected(&policy.kernel.select_comms, &policy.kernel.select_uids)
    {
        for pid in procs.seed_tree(pid) {
            if let Err(err) = sensors.watch(pid) {
                eprintln!("probectl: warning: cannot watch running selected process {pid}: {err}");
            }
        }
    }
    let correlator = Correlator::new(&policy, WallClock::boot_now_ns())
        .with_file_index(sensors.file_index.clone())
        .with_timeline_capacity(args.max_probes);
    if format == Format::Human {
        eprintln!(
            "probectl: watching pid {root}: {} (policy {})",
            escape_argv(&args.command),
            policy.name
        );
    }
    let spawner = gate.release().context("cannot start the command")?;
    let mut session = Session {
        sensors,
        reader,
        procs,
        correlator,
        printer,
        batch: Vec::new(),
        libc_scans: std::collections::HashMap::new(),
        selectors: policy.selectors.clone(),
    };

    // Wait for the child on a plain thread; the event loop below stays responsive.
    let (status_tx, mut status_rx) = tokio::sync::oneshot::channel::<io::Result<ExitStatus>>();
    std::thread::spawn(move || {
        let status = match spawner.join() {
            Ok(Ok(mut child)) => child.wait(),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(io::Error::other("the spawning thread panicked")),
        };
        let _ = status_tx.send(status);
    });

    // Ctrl-C and a hang-up reach the command through the terminal (it is in our
    // foreground process group), so probectl does not pass them on again, which many
    // CLIs would read as "force quit"; it stays to report. SIGTERM sent to probectl is
    // passed on.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut libc_scan = tokio::time::interval(LIBC_SCAN_EVERY);
    let status = loop {
        tokio::select! {
            read = session.read() => read?,
            _ = libc_scan.tick(), if !session.libc_scans.is_empty() => session.rescan_libcs(),
            status = &mut status_rx => break status.unwrap_or_else(|_| Err(io::Error::other("lost the command's exit status"))),
            _ = sigint.recv() => {}
            // A hang-up also reaches the command through the terminal; for probectl it
            // means: read the policy file again.
            _ = sighup.recv() => session.reload(&mut policy, args.policy.as_deref()),
            _ = sigterm.recv() => forward(root, nix::sys::signal::Signal::SIGTERM),
        }
    };
    // Everything the command did happened before its exit, so it is in the ring now.
    session.drain();
    let exit_code = match status {
        Ok(status) => exit_code_of(status),
        Err(err) => return Ok(report_spawn_error(&program, &err)),
    };
    wait_for_descendants(
        &mut session,
        root,
        format,
        &mut sigint,
        &mut sigterm,
        &mut libc_scan,
    )
    .await?;

    let report = build_report(&session, &policy, root, exit_code)?;
    if let Some(path) = &args.profile {
        let command = args
            .command
            .iter()
            .map(|a| probe_user::output::escape::escape_bytes(a.as_encoded_bytes()))
            .collect();
        let profile = probe_user::profile::from_report(&report, command);
        let text = serde_yaml::to_string(&profile).context("cannot encode the profile")?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the profile to {}", path.display()))?;
    }
    session.printer.emit(&Record::Report(report));
    Ok(exit_code)
}

/// Keeps watching until every descendant of the command has exited, or until the
/// user interrupts.
async fn wait_for_descendants(
    session: &mut Session,
    root: u32,
    format: Format,
    sigint: &mut Signal,
    sigterm: &mut Signal,
    libc_scan: &mut tokio::time::Interval,
) -> anyhow::Result<()> {
    let remaining = |s: &Session| s.procs.live().filter(|&p| p != root).collect::<Vec<_>>();
    let left = remaining(session);
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
    while !remaining(session).is_empty() {
        tokio::select! {
            read = session.read() => read?,
            _ = libc_scan.tick(), if !session.libc_scans.is_empty() => session.rescan_libcs(),
            _ = liveness.tick() => {
                // Events of a process that just exited are already in the ring.
                session.drain();
                session.procs.prune_dead();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    session.drain();
    Ok(())
}

fn build_report(
    session: &Session,
    policy: &CompiledPolicy,
    root: u32,
    exit_code: i32,
) -> anyhow::Result<RunReport> {
    let mut drops: Vec<DropCount> = session
        .sensors
        .drops()?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, count)| DropCount {
            reason: format!("kernel:{reason}"),
            count,
        })
        .collect();
    for (reason, count) in [
        ("userspace:decode_error", session.reader.decode_errors),
        (
            "userspace:timeline_overflow",
            session.correlator.probes.overflow,
        ),
        ("userspace:output_write_error", session.printer.write_errors),
        ("kernel:exec_argv_lost", session.correlator.argv_lost),
        (
            "userspace:relative_path_unresolved",
            session.correlator.unresolved_paths,
        ),
    ] {
        if count > 0 {
            drops.push(DropCount {
                reason: reason.to_owned(),
                count,
            });
        }
    }
    let filtered = [
        ("env_name_case_mismatch", session.correlator.case_mismatches),
        ("path_unclassified", session.correlator.unclassified_paths),
        (
            "operation_not_counted",
            session.correlator.operation_not_counted,
        ),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(reason, count)| DropCount {
        reason: reason.to_owned(),
        count,
    })
    .collect();
    Ok(RunReport {
        policy: policy.name.clone(),
        cli: CliIdentity::of(&session.procs, root),
        probes: session.correlator.summarize(),
        rules: session.correlator.rule_summaries(),
        clis: session.correlator.cli_summaries(&session.procs),
        connections: session.correlator.connections.iter().cloned().collect(),
        timeline: probe_user::correlate::TimelineUsage {
            max_distinct_probes: session.correlator.probes.capacity,
            distinct_probes: session.correlator.probes.distinct(),
            probes_not_kept: session.correlator.probes.overflow,
            max_connections: probe_user::correlate::MAX_KEPT_CONNECTIONS,
            connections_not_kept: session.correlator.connections_not_kept,
        },
        sensors: session.sensors.choices.clone(),
        partial: session.sensors.unattached().next().is_some(),
        unattached_sensors: session.sensors.unattached().cloned().collect(),
        drops,
        truncated: session
            .correlator
            .truncated
            .iter()
            .map(|(reason, count)| DropCount {
                reason: (*reason).to_owned(),
                count: *count,
            })
            .chain(
                (session.correlator.connections_not_kept > 0).then(|| DropCount {
                    // Streamed when they happened; only the report's list is cut.
                    reason: "report_connections".to_owned(),
                    count: session.correlator.connections_not_kept,
                }),
            )
            .collect(),
        filtered,
        coverage_notes: session.sensors.coverage_notes(),
        exit_code,
    })
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
    let program = probe_user::output::escape::escape_bytes(program.as_bytes());
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
        .map(|a| probe_user::output::escape::escape_bytes(a.as_encoded_bytes()))
        .collect::<Vec<_>>()
        .join(" ")
}
