//! The daemon's state between events: the engine, the listeners (sinks and
//! subscribers, in one fan-out), the shipping stage (repeats, ids), and the answers
//! to control requests. Every method does bounded work: the loop (`serve`) calls one
//! per turn.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::config::Config;
use super::listeners::Subscriber;
use super::server::{Command, SharedStats};
use crate::engine::listener::{Fanout, ListenerId, Outgoing};
use crate::engine::losses::Losses;
use crate::engine::{Engine, ReportScope};
use crate::policy::PolicyFile;
use crate::records::{Body, CliIdentity, LossRecord, Record, WatchingRecord};
use crate::ship::{self, Envelope, host::HostInfo, ids::IdGen};
use crate::time::{Stamp, boot_now_ns};

/// Event rates, sampled on the status timer.
#[derive(Debug)]
pub struct Rates {
    pub(super) at: Instant,
    pub(super) received: u64,
    pub per_second: f64,
    /// Per kind: (count at the last sample, events per second since the one before).
    pub(super) by_kind: std::collections::BTreeMap<&'static str, (u64, f64)>,
}

impl Default for Rates {
    fn default() -> Self {
        Self {
            at: Instant::now(),
            received: 0,
            per_second: 0.0,
            by_kind: std::collections::BTreeMap::new(),
        }
    }
}

/// A subscription of a control-socket client.
struct Subscription {
    id: u64,
    listener: ListenerId,
    roots: Vec<u32>,
}

/// The policy in force and where it came from.
pub struct PolicyMeta {
    pub files: Vec<PolicyFile>,
    pub version: String,
    pub loaded_at: String,
}

/// A policy prepared off the loop, waiting to be swapped in.
pub struct Prepared {
    pub source: String,
    pub result: Result<crate::policy::PreparedPolicy, String>,
    /// Where the answer goes (a `policy reload` client); `None` for SIGHUP.
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}

pub struct DaemonState {
    pub engine: Engine,
    pub fanout: Fanout,
    /// The sinks' ids in `fanout`, for `status`.
    sink_ids: Vec<ListenerId>,
    subscriptions: Vec<Subscription>,
    pub policy: PolicyMeta,
    pub config: Config,
    pub started: Instant,
    pub socket_stats: SharedStats,
    next_subscription: u64,
    pub rates: Rates,
    pub host: Arc<HostInfo>,
    pub ids: IdGen,
    /// Identical repeated records, summarised before the sinks.
    repeats: ship::repeats::Repeats,
    /// Loss counters as of the last `loss` record.
    reported_losses: Losses,
    /// Whether some sink needs the acting process's identity in the envelope.
    needs_process: bool,
}

impl DaemonState {
    pub fn new(
        engine: Engine,
        sinks: Vec<ship::sinks::Sink>,
        policy: PolicyMeta,
        config: Config,
        socket_stats: SharedStats,
        host: Arc<HostInfo>,
    ) -> Self {
        let sequence_file = config.state_dir.join("sequence");
        let repeats = ship::repeats::Repeats::new(config.repeats.keep, config.repeats.window);
        // `IdGen` makes the state directory (0700) if it is missing, through
        // `private_file`, and counts what it cannot save.
        let needs_process = sinks.iter().any(ship::sinks::Sink::needs_process);
        let mut fanout = Fanout::default();
        let sink_ids = sinks
            .into_iter()
            .map(|sink| fanout.add(Box::new(sink)))
            .collect();
        Self {
            engine,
            fanout,
            sink_ids,
            subscriptions: Vec::new(),
            policy,
            config,
            started: Instant::now(),
            socket_stats,
            next_subscription: 1,
            rates: Rates::default(),
            host,
            ids: IdGen::new(Some(&sequence_file)),
            repeats,
            reported_losses: Losses::default(),
            needs_process,
        }
    }

    /// Hands the records the engine made to every listener: sinks get those the
    /// repeat summariser admits (in an envelope), subscribers those of their trees.
    pub fn fan_out(&mut self) {
        let records = self.engine.take_records();
        if records.is_empty() {
            return;
        }
        let now_ns = boot_now_ns();
        for record in records {
            let procs = &self.engine.procs;
            let tree = record.pid().map_or(0, |pid| procs.tree_of(pid));
            if !self.repeats.admit(tree, &record, now_ns) {
                // Held back from the sinks (counted for a `repeated` record), not from
                // subscribers.
                let out = Outgoing {
                    record: &record,
                    envelope: None,
                    direct: false,
                };
                self.fanout.send(&out, procs);
                continue;
            }
            let envelope = Arc::new(Envelope {
                id: self.ids.next_id(),
                seq: self.ids.next_seq(),
                process: record
                    .pid()
                    .filter(|_| self.needs_process)
                    .map(|pid| CliIdentity::of(procs, pid)),
                record,
            });
            let out = Outgoing {
                record: &envelope.record,
                envelope: Some(&envelope),
                direct: false,
            };
            self.fanout.send(&out, procs);
        }
        // Subscriptions whose listener went (lagging, or the client left) end here.
        let fanout = &self.fanout;
        self.subscriptions.retain(|s| fanout.contains(s.listener));
    }

    /// The last loss record, at shutdown: once every sink has handled what it was
    /// given (bounded wait), so its counts cover every record made.
    pub fn report_final_losses(&mut self) {
        self.fanout
            .settle(Instant::now() + std::time::Duration::from_secs(5));
        self.report_losses();
    }

    /// Waits until every sink has written what it was given.
    pub fn flush(&mut self) {
        self.fanout.flush();
    }

    pub fn records_written(&self) -> u64 {
        self.sink_statuses().iter().map(|s| s.written).sum()
    }

    pub fn sink_statuses(&self) -> Vec<ship::sinks::SinkStatus> {
        self.sink_ids
            .iter()
            .filter_map(|&id| self.fanout.sink_status(id))
            .collect()
    }

    /// Answers a control request. A reload only starts here: the policy is prepared
    /// on a blocking thread and comes back on `prepared`.
    pub fn handle(&mut self, command: Command, prepared: &mpsc::Sender<Prepared>) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::PolicyList { reply } => {
                let _ = reply.send(serde_json::json!({
                    "name": self.engine.policy().name,
                    "version": self.policy.version,
                    "loaded_at": self.policy.loaded_at,
                    "files": self.policy.files,
                }));
            }
            Command::Reload { reply } => self.start_reload(Some(reply), prepared),
            Command::Finish { id } => self.finish(id, "finish requested"),
            Command::Subscribe {
                pids,
                uid_only,
                format,
                color,
                details,
                out,
                reply,
            } => {
                let watched = match self.engine.watch_trees(&pids) {
                    Ok(w) => w,
                    Err(err) => {
                        let _ = reply.send(Err(err.to_string()));
                        return;
                    }
                };
                let id = self.next_subscription;
                self.next_subscription += 1;
                let mut sub = Subscriber::new(
                    pids.clone(),
                    self.engine.correlator.offset_now_ms(),
                    uid_only,
                    format,
                    color,
                    details,
                    out,
                );
                let _ = reply.send(Ok((id, watched.clone())));
                sub.send(&Record::now(Body::Watching(WatchingRecord {
                    roots: pids.clone(),
                    pids: watched,
                    policy: self.engine.policy().name.clone(),
                })));
                let listener = self.fanout.add(Box::new(sub));
                self.subscriptions.push(Subscription {
                    id,
                    listener,
                    roots: pids,
                });
                self.fan_out();
            }
        }
    }

    /// Starts preparing the policy directories on a blocking thread (reading, parsing,
    /// validating, compiling and indexing the policy's files: bounded, but a file
    /// system can be slow); the result comes back to the loop on `prepared`, to be
    /// swapped in by `apply`, which only writes kernel maps.
    pub fn start_reload(
        &mut self,
        reply: Option<oneshot::Sender<Result<String, String>>>,
        prepared: &mpsc::Sender<Prepared>,
    ) {
        let dirs = self.config.policy_dirs.clone();
        let tx = prepared.clone();
        tokio::task::spawn_blocking(move || {
            let source = dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let result = crate::policy::prepare(&crate::policy::PolicySource::Dirs(dirs))
                .map_err(|e| e.to_string());
            let _ = tx.blocking_send(Prepared {
                source,
                result,
                reply,
            });
        });
    }

    /// Swaps a prepared policy in (or keeps the old one if it was refused) and
    /// answers whoever asked.
    pub fn apply(&mut self, prepared: Prepared) -> Result<String, String> {
        let meta = prepared
            .result
            .as_ref()
            .ok()
            .map(|p| (p.files.clone(), p.version.clone()));
        let result = self.engine.apply_policy(prepared.source, prepared.result);
        if result.is_ok()
            && let Some((files, version)) = meta
        {
            self.policy.files = files;
            self.policy.version = version;
            self.policy.loaded_at = now();
        }
        self.fan_out();
        let answer = result.map(|()| self.engine.policy().name.clone());
        if let Some(reply) = prepared.reply {
            let _ = reply.send(answer.clone());
        }
        answer
    }

    /// `repeated` records for the windows that ended (`all`: every open one, at
    /// shutdown, so no count is left unsaid).
    pub fn summarise_repeats(&mut self, all: bool) {
        let at = if all { u64::MAX } else { boot_now_ns() };
        for r in self.repeats.due(at) {
            self.engine.push_record(r);
        }
        self.fan_out();
    }

    /// Ends subscription `id`: every event already in the ring is handled first, then
    /// the report of its trees and an end line go out, its listener is dropped, and
    /// its trees stop being watched unless a policy selects them or another
    /// subscription still watches them.
    pub fn finish(&mut self, id: u64, reason: &str) {
        self.engine.drain();
        self.fan_out();
        let Some(i) = self.subscriptions.iter().position(|s| s.id == id) else {
            return;
        };
        let sub = self.subscriptions.swap_remove(i);
        let root = sub.roots[0];
        let exit_code = self
            .engine
            .procs
            .get(root)
            .and_then(|p| p.exit_code)
            .unwrap_or(0);
        let losses = self.losses();
        let report = self
            .engine
            .report(root, exit_code, ReportScope::Tree, &losses);
        let procs = &self.engine.procs;
        self.fanout.send_to(
            sub.listener,
            &Record::now(Body::Report(Box::new(report))),
            procs,
        );
        self.fanout.end(sub.listener, reason);
        let keep: Vec<u32> = self
            .subscriptions
            .iter()
            .flat_map(|s| s.roots.iter().copied())
            .collect();
        let released = self.engine.unwatch_trees(&sub.roots, &keep);
        if released > 0 {
            tracing::info!(
                "subscription {id} ended: {released} process(es) of its trees no longer watched"
            );
        }
    }

    /// Ends the subscriptions whose processes have all exited (on a timer; exits
    /// whose event was lost are found through /proc).
    pub fn end_finished(&mut self) {
        if self.subscriptions.is_empty() {
            return;
        }
        self.engine.procs.prune_dead();
        let procs = &self.engine.procs;
        let done: Vec<u64> = self
            .subscriptions
            .iter()
            .filter(|s| !procs.live().any(|p| procs.descends_from(p, &s.roots)))
            .map(|s| s.id)
            .collect();
        for id in done {
            self.finish(id, "every watched process exited");
        }
    }

    /// Every loss counter now: the engine's, the sinks', the subscribers'.
    pub fn losses(&self) -> Losses {
        let mut losses = self.engine.losses();
        self.fanout.add_losses(&mut losses);
        losses
    }

    /// A `loss` record, to every sink, when any loss counter grew since the last one:
    /// losses are data a SIEM can alert on, not only a line in `status`.
    pub fn report_losses(&mut self) {
        let totals = self.losses();
        let losses = totals.grown_since(&self.reported_losses);
        self.reported_losses = totals;
        if losses.is_empty() {
            return;
        }
        self.engine
            .push_record(Record::now(Body::Loss(LossRecord { losses })));
        self.fan_out();
    }

    pub fn subscribers(&self) -> usize {
        self.subscriptions.len()
    }
}

pub(super) fn now() -> String {
    Stamp::now().rfc3339()
}
