//! The daemon's state between events: the session, the sinks, the subscribers, and
//! the answers to control requests.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use probe_user::correlate::{Record, WatchingRecord};
use probe_user::daemon::config::{Config, SinkConfig, SinkFormat};
use probe_user::daemon::protocol;
use probe_user::daemon::server::{Command, SharedStats};
use probe_user::output::{Format, Printer, time::WallClock};
use probe_user::policy::{self, CompiledPolicy, PolicyFile};
use probe_user::process::ProcessTable;
use probe_user::ship::sinks::Sink;
use probe_user::ship::{self, Envelope, host::HostInfo, ids::IdGen};
use serde_json::json;
use tokio::sync::mpsc;

use super::session::{Session, build_report, seed_and_watch};

/// Opens every configured sink (each with its own queue and thread).
pub(super) fn open_sinks(
    configs: &[SinkConfig],
    host: &Arc<HostInfo>,
    state_dir: &std::path::Path,
) -> anyhow::Result<Vec<Sink>> {
    configs
        .iter()
        .map(|c| Sink::open(c, host.clone(), state_dir).map_err(anyhow::Error::from))
        .collect()
}

fn format_of(f: SinkFormat) -> Format {
    match f {
        SinkFormat::Human => Format::Human,
        SinkFormat::Json => Format::Json,
    }
}

/// Bytes a subscriber's printer wrote, sent on as one protocol line per record.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Subscriber {
    id: u64,
    roots: Vec<u32>,
    /// Records' offsets count from here: the moment it subscribed.
    base_ms: f64,
    uid_only: Option<u32>,
    printer: Printer,
    buf: SharedBuf,
    out: mpsc::Sender<String>,
}

impl Subscriber {
    fn wants(&self, record: &Record, procs: &ProcessTable) -> bool {
        let Some(pid) = record.pid() else {
            return matches!(record, Record::PolicyReload(_));
        };
        if let Some(uid) = self.uid_only
            && procs.get(pid).and_then(|p| p.uid).is_some_and(|u| u != uid)
        {
            return false;
        }
        procs.descends_from(pid, &self.roots)
    }

    /// Renders and queues one record; false when the subscriber must go (gone, or
    /// so far behind that its queue is full).
    fn send(&mut self, record: &Record) -> bool {
        self.printer.emit(&record.shifted(self.base_ms));
        let text = match self.buf.0.lock() {
            Ok(mut b) => String::from_utf8_lossy(&std::mem::take(&mut *b)).into_owned(),
            Err(_) => return false,
        };
        self.out.try_send(protocol::out_line(&text)).is_ok()
    }
}

pub(super) struct DaemonState {
    pub(super) session: Session,
    sinks: Vec<Sink>,
    subscribers: Vec<Subscriber>,
    files: Vec<PolicyFile>,
    policy_version: String,
    config: Config,
    policy_loaded_at: String,
    started: Instant,
    socket_stats: SharedStats,
    /// Subscribers disconnected because their queue was full.
    lagging_dropped: u64,
    next_id: u64,
    rate: (Instant, u64, f64),
    host: Arc<HostInfo>,
    ids: IdGen,
    /// Identical repeated records, summarised before the sinks.
    repeats: ship::repeats::Repeats,
    /// Loss counters as of the last `loss` record, by source.
    reported_losses: std::collections::BTreeMap<String, u64>,
    /// Per kind: (count at the last sample, events per second since the one before).
    kind_rates: std::collections::BTreeMap<&'static str, (u64, f64)>,
}

impl DaemonState {
    pub(super) fn new(
        session: Session,
        sinks: Vec<Sink>,
        files: Vec<PolicyFile>,
        policy_version: String,
        config: Config,
        socket_stats: SharedStats,
        host: Arc<HostInfo>,
    ) -> Self {
        let sequence_file = config.state_dir.join("sequence");
        let repeats = ship::repeats::Repeats::new(config.repeats.keep, config.repeats.window);
        if let Err(err) = std::fs::create_dir_all(&config.state_dir) {
            tracing::warn!(
                "cannot create the state directory {}: {err}; the sequence restarts at 1 on each start",
                config.state_dir.display()
            );
        }
        Self {
            session,
            sinks,
            subscribers: Vec::new(),
            files,
            policy_version,
            config,
            policy_loaded_at: now(),
            started: Instant::now(),
            socket_stats,
            lagging_dropped: 0,
            next_id: 1,
            rate: (Instant::now(), 0, 0.0),
            host,
            ids: IdGen::new(Some(&sequence_file)),
            kind_rates: std::collections::BTreeMap::new(),
            reported_losses: std::collections::BTreeMap::new(),
            repeats,
        }
    }

    /// Writes the records the session produced to every sink and to the
    /// subscribers whose trees they concern.
    pub(super) fn fan_out(&mut self) {
        let Some(held) = self.session.held.as_mut() else {
            return;
        };
        let records = std::mem::take(held);
        let needs_process = self.sinks.iter().any(Sink::needs_process);
        let now_ns = WallClock::boot_now_ns();
        for record in records {
            let procs = &self.session.procs;
            let tree = record.pid().map_or(0, |pid| procs.tree_of(pid));
            let time = ship::record_time(&record).to_owned();
            if !self.repeats.admit(tree, &record, &time, now_ns) {
                // Held back from the sinks (counted for a `repeated` record), not from
                // subscribers.
                self.send_to_subscribers(&record);
                continue;
            }
            let envelope = Arc::new(Envelope {
                id: self.ids.next_id(),
                seq: self.ids.next_seq(),
                time_ms: ship::rfc3339_ms(ship::record_time(&record)).unwrap_or(0),
                process: record
                    .pid()
                    .filter(|_| needs_process)
                    .map(|pid| probe_user::correlate::CliIdentity::of(procs, pid)),
                record,
            });
            for sink in &mut self.sinks {
                sink.send(&envelope);
            }
            self.send_to_subscribers(&envelope.record);
        }
    }

    /// Waits until every sink has written what it was given.
    pub(super) fn flush(&mut self) {
        for sink in &mut self.sinks {
            sink.finish();
        }
    }

    pub(super) fn records_written(&self) -> u64 {
        self.sinks.iter().map(|s| s.status().written).sum()
    }

    pub(super) fn handle(&mut self, command: Command, policy: &mut CompiledPolicy) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(self.status(policy));
            }
            Command::PolicyList { reply } => {
                let _ = reply.send(json!({
                    "name": policy.name,
                    "version": self.policy_version,
                    "loaded_at": self.policy_loaded_at,
                    "files": self.files,
                }));
            }
            Command::Reload { reply } => {
                let _ = reply.send(self.reload(policy));
            }
            Command::Finish { id } => self.finish(id, "finish requested", policy),
            Command::Subscribe {
                pids,
                uid_only,
                format,
                color,
                out,
                reply,
            } => {
                let s = &mut self.session;
                let watched = match seed_and_watch(&mut s.sensors, &mut s.procs, &pids) {
                    Ok(w) => w,
                    Err(err) => {
                        let _ = reply.send(Err(err.to_string()));
                        return;
                    }
                };
                s.procs.mark_live(watched.iter().copied());
                for &pid in &watched {
                    let (_, attached) = s.sensors.attach_env_for(pid);
                    for status in attached {
                        s.emit(Record::Sensor(status));
                    }
                }
                let buf = SharedBuf::default();
                let id = self.next_id;
                self.next_id += 1;
                let mut sub = Subscriber {
                    id,
                    base_ms: s.correlator.offset_now_ms(),
                    roots: pids.clone(),
                    uid_only,
                    printer: Printer::new(format_of(format), Box::new(buf.clone()))
                        .with_color(color),
                    buf,
                    out,
                };
                let _ = reply.send(Ok((id, watched.clone())));
                sub.send(&Record::Watching(WatchingRecord {
                    time: now(),
                    roots: pids,
                    pids: watched,
                    policy: policy.name.clone(),
                }));
                self.subscribers.push(sub);
                self.fan_out();
            }
        }
    }

    /// Records of the subscribers' trees, rendered for each; a subscriber whose queue
    /// is full is dropped (counted).
    fn send_to_subscribers(&mut self, record: &Record) {
        let procs = &self.session.procs;
        let mut lagging = 0;
        self.subscribers.retain_mut(|s| {
            if !s.wants(record, procs) {
                return !s.out.is_closed();
            }
            let kept = s.send(record);
            if !kept && !s.out.is_closed() {
                lagging += 1;
            }
            kept
        });
        self.lagging_dropped += lagging;
    }

    /// `repeated` records for the windows that ended (`all`: every open one, at
    /// shutdown, so no count is left unsaid).
    pub(super) fn summarise_repeats(&mut self, all: bool) {
        let at = if all {
            u64::MAX
        } else {
            WallClock::boot_now_ns()
        };
        let due = self.repeats.due(at, &now());
        if due.is_empty() {
            return;
        }
        for r in due {
            self.session.emit(Record::Repeated(r));
        }
        self.fan_out();
    }

    /// Ends subscription `id`: every event already in the ring is handled first, then
    /// the report of its trees and an end line go out, and its queue is dropped.
    pub(super) fn finish(&mut self, id: u64, reason: &str, policy: &CompiledPolicy) {
        self.session.drain();
        self.fan_out();
        let Some(i) = self.subscribers.iter().position(|s| s.id == id) else {
            return;
        };
        let mut sub = self.subscribers.swap_remove(i);
        let root = sub.roots[0];
        let exit_code = self
            .session
            .procs
            .get(root)
            .and_then(|p| p.exit_code)
            .unwrap_or(0);
        match build_report(&self.session, policy, root, exit_code, true) {
            Ok(report) => {
                sub.send(&Record::Report(report));
            }
            Err(err) => tracing::warn!("cannot build the report of subscription {id}: {err}"),
        }
        let _ = sub.out.try_send(protocol::end_line(reason));
    }

    /// Ends the subscriptions whose processes have all exited (on a timer; exits
    /// whose event was lost are found through /proc).
    pub(super) fn end_finished(&mut self, policy: &CompiledPolicy) {
        if self.subscribers.is_empty() {
            return;
        }
        self.session.procs.prune_dead();
        let procs = &self.session.procs;
        let done: Vec<u64> = self
            .subscribers
            .iter()
            .filter(|s| !procs.live().any(|p| procs.descends_from(p, &s.roots)))
            .map(|s| s.id)
            .collect();
        for id in done {
            self.finish(id, "every watched process exited", policy);
        }
    }

    /// Re-reads the policy directories; the old policy stays if the new one fails.
    pub(super) fn reload(&mut self, policy: &mut CompiledPolicy) -> Result<String, String> {
        let loaded = policy::load_dirs(&self.config.policy_dirs).map_err(|e| e.to_string());
        let (compiled, files) = match loaded {
            Ok(set) => (Ok(set.compiled), Some((set.files, set.version))),
            Err(e) => (Err(e), None),
        };
        let source = self
            .config
            .policy_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let result = self.session.apply_policy(policy, source, compiled);
        if result.is_ok()
            && let Some((files, version)) = files
        {
            self.files = files;
            self.policy_version = version;
            self.policy_loaded_at = now();
        }
        self.fan_out();
        result.map(|()| policy.name.clone())
    }

    /// Lets go of trees that exited more than the grace period ago.
    pub(super) fn expire(&mut self) {
        let grace = self.config.memory.tree_grace.as_nanos() as u64;
        let s = &mut self.session;
        s.correlator
            .expire_trees(WallClock::boot_now_ns(), grace, &mut s.procs);
    }

    pub(super) fn sample_rate(&mut self) {
        let (at, count, _) = self.rate;
        let received = self.session.reader.received;
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        self.rate = (Instant::now(), received, (received - count) as f64 / secs);
        for (kind, &n) in &self.session.events_by_kind {
            let entry = self.kind_rates.entry(kind).or_default();
            *entry = (n, (n - entry.0) as f64 / secs);
        }
    }

    /// Every loss counter now, by source.
    fn loss_totals(&self) -> std::collections::BTreeMap<String, u64> {
        let s = &self.session;
        let mut totals: std::collections::BTreeMap<String, u64> = s
            .sensors
            .drops()
            .unwrap_or_default()
            .into_iter()
            .map(|(reason, n)| (format!("kernel:{reason}"), n))
            .collect();
        totals.insert("userspace:decode_error".into(), s.reader.decode_errors);
        totals.insert(
            "userspace:timeline_overflow".into(),
            s.correlator.timelines.overflow,
        );
        totals.insert("userspace:subscriber_lagging".into(), self.lagging_dropped);
        for sink in &self.sinks {
            let st = sink.status();
            totals.insert(format!("sink:{}:queue_full", st.name), st.queue_full);
            totals.insert(format!("sink:{}:errors", st.name), st.errors);
            totals.insert(format!("sink:{}:spool_full", st.name), st.spool_full);
        }
        totals
    }

    /// A `loss` record, to every sink, when any loss counter grew since the last one:
    /// losses are data a SIEM can alert on, not only a line in `status`.
    pub(super) fn report_losses(&mut self) {
        let totals = self.loss_totals();
        let losses: Vec<probe_user::correlate::LossCount> = totals
            .iter()
            .filter_map(|(source, &total)| {
                let before = self.reported_losses.get(source).copied().unwrap_or(0);
                (total > before).then(|| probe_user::correlate::LossCount {
                    source: source.clone(),
                    count: total - before,
                    total,
                })
            })
            .collect();
        self.reported_losses = totals;
        if losses.is_empty() {
            return;
        }
        self.session
            .emit(Record::Loss(probe_user::correlate::LossRecord {
                time: now(),
                losses,
            }));
        self.fan_out();
    }

    /// For systemd's STATUS= and the log.
    pub(super) fn one_line_status(&self) -> String {
        let s = &self.session;
        let attached = s.sensors.status.iter().filter(|x| x.attached).count();
        format!(
            "{attached}/{} sensors attached; {} watched processes; {:.0} events/s; {} subscribers",
            s.sensors.status.len(),
            s.procs.live().count(),
            self.rate.2,
            self.subscribers.len()
        )
    }

    fn status(&self, policy: &CompiledPolicy) -> serde_json::Value {
        let s = &self.session;
        let kernel = s.sensors.drops().unwrap_or_default();
        let kernel_drops: std::collections::HashMap<String, u64> =
            kernel.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect();
        let drops: Vec<serde_json::Value> = kernel
            .into_iter()
            .map(|(reason, count)| json!({"reason": format!("kernel:{reason}"), "count": count}))
            .chain([
                json!({"reason": "userspace:decode_error", "count": s.reader.decode_errors}),
                json!({"reason": "userspace:timeline_overflow", "count": s.correlator.timelines.overflow}),
                json!({"reason": "userspace:subscriber_lagging", "count": self.lagging_dropped}),
            ])
            .chain(s.sensors.env_object_drops().into_iter().map(|(reason, count)| json!({"reason": reason, "count": count})))
            .collect();
        let socket = self
            .socket_stats
            .lock()
            .map(|x| serde_json::to_value(&*x).unwrap_or_default())
            .unwrap_or_default();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "host": *self.host,
            "uptime_s": self.started.elapsed().as_secs(),
            "sensors": s.sensors.choices,
            "unattached": s.sensors.unattached().collect::<Vec<_>>(),
            "attach": s.sensors.status,
            "env_objects": s.sensors.env_objects_status(),
            "events": {
                "received": s.reader.received,
                "handled": s.events_handled,
                "per_second": self.rate.2,
                "by_kind": s.events_by_kind.iter().map(|(kind, n)| json!({
                    "kind": kind,
                    "received": n,
                    "per_second": self.kind_rates.get(kind).map_or(0.0, |r| r.1),
                    "dropped_ring_full": kernel_drops.get(&format!("ring_full_{kind}")).copied().unwrap_or(0),
                })).collect::<Vec<_>>(),
            },
            "drops": drops,
            "policy": {
                "name": policy.name,
                "version": self.policy_version,
                "loaded_at": self.policy_loaded_at,
                "files": self.files,
            },
            "trees": {
                "watched_processes": s.procs.live().count(),
                "known_processes": s.procs.len(),
                "timeline": s.correlator.timeline_usage(),
                "tree_grace_s": self.config.memory.tree_grace.as_secs(),
            },
            "memory": {"rss_bytes": rss_bytes(), "dns_names": s.correlator.names.len()},
            "sinks": self.sinks.iter().map(Sink::status).collect::<Vec<_>>(),
            "sequence": {"next": self.ids.peek_seq(), "state_errors": self.ids.state_errors},
            "subscribers": self.subscribers.len(),
            "socket": socket,
        })
    }
}

fn now() -> String {
    WallClock::new().rfc3339(WallClock::boot_now_ns())
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
