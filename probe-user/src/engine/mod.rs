//! The core as a library: opened from a policy and options, fed events from the ring
//! buffer in bounded batches, returning records. It never prints; `run`, `watch` and
//! the daemon are thin users that hand its records to listeners (a printer, sinks,
//! subscribers).
//!
//! One event's path: the kernel publishes it in the ring buffer; `next_batch` takes at
//! most `Options::batch` of them (`events`, which decodes), selects exec candidates
//! (`select`), lets the correlator update the process table and turn the event into
//! records (`correlate`), and scans new processes for libcs to attach to (`sensors`).
//! The caller takes the records (`take_records`) and passes them to its listeners.
//! Reports are built from the same state (`report`), and every loss counter is read
//! through one type (`losses`).

mod libc_scans;
pub mod listener;
pub mod losses;
mod report;
mod watch;

use std::collections::BTreeMap;

use probe_common::BLOCK_RULE_DNS_PENDING;
use probe_common::decode::Event;

use crate::correlate::Correlator;
use crate::events::EventReader;
use crate::policy::select::UserSelectors;
use crate::policy::{CompiledPolicy, PreparedPolicy};
use crate::process::ProcessTable;
use crate::records::{Body, PolicyReloadRecord, Record};
use crate::sensors::{AttachStatus, SensorError, Sensors};

pub use report::ReportScope;
pub use watch::SeedError;

/// Events taken from the ring in one step. Small enough that one step stays well
/// under a millisecond or so of work, so the caller's other duties (control
/// requests, signals, the watchdog) wait at most a few steps.
pub const BATCH: usize = 256;
/// How often processes that just exec'd are checked for a newly mapped libc.
pub const LIBC_SCAN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Sensors(#[from] SensorError),
    #[error("cannot poll the event ring buffer: {0}")]
    Ring(#[source] std::io::Error),
}

/// How an engine is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Distinct probes kept over all trees (`--max-probes`, `memory.max_probes`).
    pub max_probes: usize,
    /// Sensor families whose programs are not attached (`selftest --without`).
    pub skip_families: Vec<crate::sensors::Family>,
    /// Block rules refuse the calls they match (`--enforce`, `enforce: true`);
    /// otherwise they are reported as `would_block`.
    pub enforce: bool,
    /// The DNS servers whose answers name addresses for block rules' host globs
    /// (`--trusted-resolver`, `trusted_resolvers`); `None`: /etc/resolv.conf's.
    pub trusted_resolvers: Option<Vec<crate::policy::dns_trust::Resolver>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_probes: crate::correlate::MAX_DISTINCT_PROBES,
            skip_families: Vec::new(),
            enforce: false,
            trusted_resolvers: None,
        }
    }
}

/// Events handled so far, in total and per kind.
#[derive(Debug, Default, Clone)]
pub struct EventCounts {
    /// Events taken through `next_batch`/`drain` (all of them; selection may skip one).
    pub handled: u64,
    /// The same, per kind of event (named as in the kernel's `ring_full_*` drops).
    pub by_kind: BTreeMap<&'static str, u64>,
}

pub struct Engine {
    pub sensors: Sensors,
    reader: EventReader,
    pub procs: ProcessTable,
    pub correlator: Correlator,
    policy: CompiledPolicy,
    /// The policy's selectors that only userspace evaluates.
    selectors: UserSelectors,
    /// Processes whose maps are scanned for a libc (after an exec, after an
    /// executable mapping).
    libc_scans: libc_scans::LibcScans,
    /// Decoded events of the current step.
    batch: Vec<Event>,
    /// Records made and not yet taken by the caller.
    records: Vec<Record>,
    /// The last step took a full batch: more is waiting, so the next one yields first.
    more_waiting: bool,
    pub events: EventCounts,
    /// Boot-time ns when the engine opened: records' offsets count from here.
    pub start_ns: u64,
    /// Block rules refuse the calls they match (`Options::enforce`).
    pub enforce: bool,
}

impl Engine {
    /// Loads and attaches the sensors for `policy` (prepared with `policy::prepare`)
    /// and opens the ring buffer. Sensors that did not attach are in
    /// `sensors.unattached()`, for the caller to announce.
    pub fn open(prepared: PreparedPolicy, options: &Options) -> Result<Self, EngineError> {
        let mut sensors = Sensors::load_without(&prepared, &options.skip_families)?;
        sensors.set_enforce(options.enforce)?;
        sensors.set_trusted_resolvers(options.trusted_resolvers.clone());
        let policy = prepared.policy;
        let reader = EventReader::new(sensors.take_events()?).map_err(EngineError::Ring)?;
        let start_ns = crate::time::boot_now_ns();
        let correlator = Correlator::new(&policy, start_ns)
            .with_file_index(sensors.file_index.clone())
            .with_timeline_capacity(options.max_probes);
        Ok(Self {
            sensors,
            reader,
            procs: ProcessTable::default(),
            correlator,
            selectors: policy.selectors.clone(),
            policy,
            libc_scans: libc_scans::LibcScans::default(),
            batch: Vec::new(),
            records: Vec::new(),
            more_waiting: false,
            events: EventCounts::default(),
            start_ns,
            enforce: options.enforce,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    pub fn reader(&self) -> &EventReader {
        &self.reader
    }

    /// The records made since the last call, in order.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    /// Adds a record of the caller's (a `watching` line, say) to the stream, in order.
    pub fn push_record(&mut self, record: Record) {
        self.records.push(record);
    }

    /// Waits until the kernel has published events, then handles at most `BATCH` of
    /// them; the records wait in `take_records`. Cancel-safe: nothing is taken from the
    /// ring before the wait ends, and the step itself does not wait. After a full
    /// batch the next call yields to the runtime first, so a burst cannot starve the
    /// caller's other work or the runtime's other tasks.
    pub async fn next_batch(&mut self) -> Result<(), EngineError> {
        if self.more_waiting {
            tokio::task::yield_now().await;
        }
        self.reader
            .read_batch(&mut self.batch, BATCH)
            .await
            .map_err(EngineError::Ring)?;
        self.more_waiting = self.batch.len() >= BATCH;
        self.process_batch();
        Ok(())
    }

    /// Handles every event already in the ring without waiting (at shutdown, before
    /// a report): batch by batch, but all of them.
    pub fn drain(&mut self) {
        loop {
            self.reader.drain(&mut self.batch, BATCH);
            let full = self.batch.len() >= BATCH;
            self.process_batch();
            if !full {
                break;
            }
        }
    }

    fn process_batch(&mut self) {
        // Package answers that came after their wait: later records name the package.
        self.procs.apply_lookups();
        let batch = std::mem::take(&mut self.batch);
        self.events.handled += batch.len() as u64;
        for mut event in batch {
            *self.events.by_kind.entry(event.kind_name()).or_default() += 1;
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
                Event::Exec(e) => {
                    // The dynamic loader maps the libc after the exec: scan until it has.
                    self.libc_scans.exec(e.header.tgid);
                    if selected_by.is_some() || e.flags & probe_common::EXEC_SELECTED != 0 {
                        self.procs.mark_selected(e.header.tgid);
                    }
                }
                // Lazily attached libcs are held while a watched process maps them.
                Event::Fork(f) => self.sensors.env_users_forked(f.parent_tgid, f.child_tgid),
                // dlopen, dlmopen, a libc copy: scan until the file is listed.
                Event::ExecMapped(m) => {
                    let (major, minor) = ((m.dev >> 20) as u32, (m.dev & 0xf_ffff) as u32);
                    let key = if m.ino == 0 {
                        (0, 0)
                    } else {
                        (libc::makedev(major, minor), m.ino)
                    };
                    self.libc_scans.mapped(m.header.tgid, key);
                }
                Event::Exit(e) => {
                    self.libc_scans.exited(e.header.tgid);
                    self.sensors.env_users_exited(e.header.tgid);
                }
                _ => {}
            }
            let first_new = self.records.len();
            self.correlator
                .handle_into(&event, &mut self.procs, &mut self.records);
            // At once, not at the end of the batch: the connect that follows an
            // answer is judged by the kernel as soon as the program makes it.
            for answer in self.correlator.take_answers() {
                self.sensors
                    .learn_block_addrs(&answer.name, &answer.addrs, answer.server);
            }
            // Then, every answer (learned, untrusted or undecodable alike) is done:
            // `dns_pending: block` rules stop holding its tree's unknown addresses.
            if let Event::DnsAnswer(e) = &event
                && self
                    .policy
                    .block
                    .rules
                    .iter()
                    .any(|r| r.flags & BLOCK_RULE_DNS_PENDING != 0)
            {
                self.sensors
                    .dns_answer_handled(e.header.tgid, e.header.ktime_ns);
            }
            // Reads only userspace decided count for later calls.
            for feed in self.correlator.take_late_feeds() {
                self.sensors
                    .feed_block_late(feed.pid, feed.slots, feed.ktime_ns);
            }
            if let Some(why) = selected_by {
                for record in &mut self.records[first_new..] {
                    if let Body::Exec(exec) = &mut record.body {
                        exec.selected_by = Some(why.clone());
                    }
                }
            }
        }
        self.scan_libcs();
        self.sensors.flush_kernel_logs();
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
        let container = crate::process::identity::container_of(pid);
        let why = self.selectors.matching(&exe, &argv, container.as_deref())?;
        if let Err(err) = self.sensors.watch(pid) {
            tracing::warn!("cannot watch selected process {pid}: {err}");
            return None;
        }
        e.header.kind = probe_common::EVENT_EXEC;
        Some(why)
    }

    /// Whether some process that exec'd has not mapped its libc yet (the caller then
    /// calls `scan_libcs` on a `LIBC_SCAN_EVERY` timer).
    pub fn libc_scans_pending(&self) -> bool {
        self.libc_scans.pending()
    }

    /// Attaches the env uprobes to libcs that processes which just exec'd, or just
    /// mapped a file executable, have mapped since, reporting each attach. Each wait
    /// is bounded (`libc_scans`).
    pub fn scan_libcs(&mut self) {
        let (sensors, records) = (&mut self.sensors, &mut self.records);
        self.libc_scans.run(|pid, wanted| {
            let (scanned, attached) = sensors.attach_env_for(pid, wanted);
            records.extend(attached.into_iter().map(|s| Record::now(Body::Sensor(s))));
            scanned
        });
    }

    /// Puts a prepared policy (`policy::prepare`, run off the loop) in force: only
    /// kernel map writes, no file is read. Keeps the current one when preparing or the
    /// kernel update failed; a refused policy leaves the kernel maps exactly as they
    /// were. Either way a `policy_reload` record says what happened; the error is also
    /// returned.
    pub fn apply_policy(
        &mut self,
        source: String,
        loaded: Result<PreparedPolicy, String>,
    ) -> Result<(), String> {
        let result = loaded.and_then(|new| {
            self.sensors
                .apply_policy(&new)
                .map(|()| new)
                .map_err(|e| e.to_string())
        });
        let error = match result {
            Ok(new) => {
                self.correlator
                    .set_policy(&new.policy, std::sync::Arc::clone(&new.file_index));
                self.selectors = new.policy.selectors.clone();
                self.policy = new.policy;
                None
            }
            Err(err) => Some(err),
        };
        self.records
            .push(Record::now(Body::PolicyReload(PolicyReloadRecord {
                ok: error.is_none(),
                policy: self.policy.name.clone(),
                source,
                error: error.clone(),
            })));
        error.map_or(Ok(()), Err)
    }

    /// Sensors that did not attach, for the caller to announce at start.
    pub fn unattached(&self) -> impl Iterator<Item = &AttachStatus> {
        self.sensors.unattached()
    }

    /// Lets go of trees that exited more than `grace` ago (a long-running watcher).
    pub fn expire_trees(&mut self, grace: std::time::Duration) {
        self.correlator.expire_trees(
            crate::time::boot_now_ns(),
            grace.as_nanos() as u64,
            &mut self.procs,
        );
    }
}
