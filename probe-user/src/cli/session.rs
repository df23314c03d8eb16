//! What `run` and `watch` share: the loaded sensors, the event loop's per-batch work
//! (selection of exec candidates, correlation, libc attaches, output), policy reload,
//! and the end-of-run report.

use std::time::Duration;

use anyhow::Context as _;
use probe_user::correlate::{CliIdentity, Correlator, DropCount, Record, RunReport};
use probe_user::events::{Event, EventReader};
use probe_user::output::{Format, Printer, time::WallClock};
use probe_user::policy::{self, CompiledPolicy};
use probe_user::process::ProcessTable;
use probe_user::sensors::Sensors;

/// How often the liveness of remaining descendants is re-checked against /proc while
/// waiting for them, in case an exit event was lost (losses are counted and reported).
pub(super) const LIVENESS_CHECK: Duration = Duration::from_millis(250);
/// How often processes that just exec'd are checked for a newly mapped libc.
pub(super) const LIBC_SCAN_EVERY: Duration = Duration::from_millis(20);
/// Scans (at `LIBC_SCAN_EVERY`, or per batch of events) before giving up on a process.
const LIBC_SCAN_LIMIT: u32 = 100;

/// What `open` sets up for `run` and `watch`.
pub(super) struct Opened {
    pub(super) policy: CompiledPolicy,
    pub(super) sensors: Sensors,
    pub(super) reader: EventReader,
    pub(super) format: Format,
    pub(super) printer: Printer,
}

/// Loads the policy (the file, or the built-in one), loads and attaches the sensors
/// (warning about any that did not attach), and opens the output.
pub(super) fn open(
    policy_path: Option<&std::path::Path>,
    json: bool,
    output: Option<&std::path::Path>,
    no_color: bool,
) -> anyhow::Result<Opened> {
    let policy = match policy_path {
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
    let (format, out, color) = output_for(json, output, no_color)?;
    Ok(Opened {
        policy,
        sensors,
        reader,
        format,
        printer: Printer::new(format, out).with_color(color),
    })
}

/// Where records go: `--output FILE`, else JSON on stdout or readable lines on
/// stderr; colours only for readable lines on a terminal.
pub(super) fn output_for(
    json: bool,
    output: Option<&std::path::Path>,
    no_color: bool,
) -> anyhow::Result<(Format, Box<dyn std::io::Write + Send>, bool)> {
    let format = if json { Format::Json } else { Format::Human };
    let out: Box<dyn std::io::Write + Send> = match (output, format) {
        (Some(path), _) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create the output file {}", path.display()))?,
        ),
        (None, Format::Json) => Box::new(std::io::stdout()),
        (None, Format::Human) => Box::new(std::io::stderr()),
    };
    let color =
        format == Format::Human && probe_user::output::use_color(no_color, output.is_some());
    Ok((format, out, color))
}

/// Everything one run reads from and writes to.
pub(super) struct Session {
    pub(super) sensors: Sensors,
    pub(super) reader: EventReader,
    pub(super) procs: ProcessTable,
    pub(super) correlator: Correlator,
    pub(super) printer: Printer,
    pub(super) batch: Vec<Event>,
    /// Processes that exec'd and whose libc is not seen yet, with the scans so far.
    pub(super) libc_scans: std::collections::HashMap<u32, u32>,
    /// The policy's selectors that only userspace evaluates.
    pub(super) selectors: probe_user::policy::select::UserSelectors,
    /// The daemon fans records out itself: when set, records are kept here instead
    /// of going to `printer`.
    pub(super) held: Option<Vec<Record>>,
    /// Events taken through `process_batch` (all of them; selection may skip one).
    pub(super) events_handled: u64,
    /// The same, per kind of event (named as in the kernel's `ring_full_*` drops).
    pub(super) events_by_kind: std::collections::BTreeMap<&'static str, u64>,
}

impl Session {
    pub(super) fn new(
        sensors: Sensors,
        reader: EventReader,
        procs: ProcessTable,
        correlator: Correlator,
        printer: Printer,
        policy: &CompiledPolicy,
    ) -> Self {
        Self {
            sensors,
            reader,
            procs,
            correlator,
            printer,
            batch: Vec::new(),
            libc_scans: std::collections::HashMap::new(),
            selectors: policy.selectors.clone(),
            held: None,
            events_handled: 0,
            events_by_kind: std::collections::BTreeMap::new(),
        }
    }

    /// Prints a record, or keeps it for the daemon (`held`).
    pub(super) fn emit(&mut self, record: Record) {
        match &mut self.held {
            Some(held) => held.push(record),
            None => self.printer.emit(&record),
        }
    }

    pub(super) fn process_batch(&mut self) {
        let mut records = Vec::new();
        let batch = std::mem::take(&mut self.batch);
        self.events_handled += batch.len() as u64;
        for mut event in batch {
            *self.events_by_kind.entry(event_kind(&event)).or_default() += 1;
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
            match &event {
                // The dynamic loader maps the libc after the exec: scan until it has.
                Event::Exec(e) => {
                    self.libc_scans.insert(e.header.tgid, 0);
                }
                // Lazily attached libcs are held while a watched process maps them.
                Event::Fork(f) => self.sensors.env_users_forked(f.parent_tgid, f.child_tgid),
                Event::Exit(e) => {
                    self.libc_scans.remove(&e.header.tgid);
                    self.sensors.env_users_exited(e.header.tgid);
                }
                _ => {}
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
        for record in records {
            self.emit(record);
        }
        self.sensors.flush_kernel_logs();
    }

    /// SIGHUP: the `--policy` file again. A policy that fails validation (or the
    /// kernel update) is refused and the one in force stays; either way a
    /// `policy_reload` record says what happened.
    pub(super) fn reload(&mut self, current: &mut CompiledPolicy, path: Option<&std::path::Path>) {
        let source = path.map_or_else(
            || policy::DEFAULT_POLICY_SOURCE.to_owned(),
            |p| p.display().to_string(),
        );
        let loaded = match path {
            None => Err("no --policy file: the built-in policy cannot change".to_owned()),
            Some(path) => policy::load_file(path).map_err(|e| e.to_string()),
        };
        let _ = self.apply_policy(current, source, loaded);
    }

    /// Puts a loaded policy in force (kernel maps first, make-before-break), or keeps
    /// `current` when loading or the kernel update failed. Either way a
    /// `policy_reload` record says what happened; the error is also returned.
    pub(super) fn apply_policy(
        &mut self,
        current: &mut CompiledPolicy,
        source: String,
        loaded: Result<CompiledPolicy, String>,
    ) -> Result<(), String> {
        let result = loaded.and_then(|new| {
            self.sensors
                .reload_policy(current, &new)
                .map(|()| new)
                .map_err(|e| {
                    format!("updating the kernel maps failed (they may be partly updated): {e}")
                })
        });
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
            error: error.clone(),
        });
        self.emit(record);
        error.map_or(Ok(()), Err)
    }

    /// An exec the kernel sent because the policy has userspace selectors: watch the
    /// process if one matches (and turn the event into an ordinary exec), else `None`.
    pub(super) fn select_candidate(&mut self, e: &mut probe_common::ExecEvent) -> Option<String> {
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

    pub(super) async fn read(&mut self) -> anyhow::Result<()> {
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
    pub(super) fn scan_libcs(&mut self, records: &mut Vec<Record>) {
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
    pub(super) fn rescan_libcs(&mut self) {
        let mut records = Vec::new();
        self.scan_libcs(&mut records);
        for record in records {
            self.emit(record);
        }
    }

    /// Handles every event already in the ring without waiting.
    pub(super) fn drain(&mut self) {
        self.reader.drain(&mut self.batch);
        self.process_batch();
    }
}

/// An event's kind, as the kernel's drop counters name it (`ring_full_<kind>`).
fn event_kind(event: &Event) -> &'static str {
    match event {
        Event::Exec(_) => "exec",
        Event::Fork(_) => "fork",
        Event::Exit(_) => "exit",
        Event::File(_) => "file",
        Event::Env(_) => "env",
        Event::EnvAtExec(_) => "env_at_exec",
        Event::Connect(_) => "connect",
        Event::ConnectUnix(_) => "connect_unix",
        Event::ConnectOutcome(_) => "connect_outcome",
        Event::UdpSend(_) => "udp",
        Event::DnsAnswer(_) => "dns_answer",
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SeedError {
    #[error("no process {0}")]
    NoSuchProcess(u32),
    #[error("process {0} exited before it could be watched")]
    Exited(u32),
    #[error("cannot add pid {0} to the watched set: {1}")]
    Watch(u32, probe_user::sensors::SensorError),
}

/// Watches running trees: each root and every descendant it has now (from /proc),
/// in the kernel, with lineage in `procs`. Children forked between the /proc scan
/// and the watch were not inherited, so a second scan, once every parent is
/// watched, finds them. Returns every pid watched, roots first.
pub(super) fn seed_and_watch(
    sensors: &mut Sensors,
    procs: &mut ProcessTable,
    roots: &[u32],
) -> Result<Vec<u32>, SeedError> {
    if let Some(&pid) = roots
        .iter()
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        return Err(SeedError::NoSuchProcess(pid));
    }
    let mut watched = Vec::new();
    for &root in roots {
        let tree = procs.seed_tree(root);
        if tree.is_empty() {
            return Err(SeedError::Exited(root));
        }
        for &pid in &tree {
            sensors.watch(pid).map_err(|e| SeedError::Watch(pid, e))?;
        }
        watched.extend(tree);
    }
    for &root in roots {
        for pid in procs.seed_tree(root) {
            if !watched.contains(&pid) {
                let _ = sensors.watch(pid);
                watched.push(pid);
            }
        }
    }
    Ok(watched)
}

/// The report of the whole session (`run`, `watch`), or with `only_tree`, of that
/// process tree (a daemon subscriber's); losses and sensors are the session's.
pub(super) fn build_report(
    session: &Session,
    policy: &CompiledPolicy,
    root: u32,
    exit_code: i32,
    only_tree: bool,
) -> anyhow::Result<RunReport> {
    let tree = only_tree.then(|| session.procs.tree_of(root));
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
            session.correlator.timelines.overflow,
        ),
        ("userspace:output_write_error", session.printer.write_errors),
        ("kernel:exec_argv_lost", session.correlator.argv_lost),
        (
            "userspace:relative_path_unresolved",
            session.correlator.unresolved_paths,
        ),
    ]
    .into_iter()
    .chain(session.sensors.env_object_drops())
    {
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
    .chain(session.sensors.env_object_filtered())
    .filter(|(_, n)| *n > 0)
    .map(|(reason, count)| DropCount {
        reason: reason.to_owned(),
        count,
    })
    .collect();
    Ok(RunReport {
        policy: policy.name.clone(),
        cli: CliIdentity::of(&session.procs, root),
        probes: session.correlator.summarize(tree),
        rules: session
            .correlator
            .rule_summaries(tree.map(|t| (t, &session.procs))),
        clis: session.correlator.cli_summaries(&session.procs, tree),
        connections: match tree {
            Some(t) => session
                .correlator
                .connections_of(t, &session.procs)
                .cloned()
                .collect(),
            None => session.correlator.connections.iter().cloned().collect(),
        },
        timeline: session.correlator.timeline_usage(),
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
