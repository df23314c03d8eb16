//! Correlation: turns events into records, keeps the run's probe timeline, and links
//! each connection to the probes that came before it in the same process tree.

mod attribution;
mod block;
mod bypass;
pub mod dns;
mod exposure;
mod first_bytes;
mod fold;
mod net;
mod net_names;
mod paths;
mod pending;
mod prior;
mod probe_events;
mod probes;
pub mod rules;
mod summary;
mod timelines;
mod values;

pub use dns::LearnedAnswer;
pub use fold::FOLD_AFTER;
pub use prior::MAX_LISTED_PRIOR;
pub use probe_events::redact_userinfo;
pub use summary::partial_reasons;
pub use timelines::{MAX_DISTINCT_PROBES, Timelines};

/// Connections kept for the end-of-run report (each was streamed when it happened).
pub const MAX_KEPT_CONNECTIONS: usize = 10_000;

use std::collections::{BTreeMap, HashMap, HashSet};

use probe_common::{
    EXEC_ARGV_LOST, EXEC_ARGV_MORE, EXEC_FILENAME_TRUNCATED, EXIT_CODE_KNOWN, UNIX_ABSTRACT,
    decode::Event,
};

use crate::escape::escape_bytes;
use crate::policy::CompiledPolicy;
use crate::process::ProcessTable;
use crate::records::*;
use crate::time::Stamp;

pub struct Correlator {
    start_ns: u64,
    category_names: Vec<String>,
    classifier: crate::policy::Classifier,
    /// Every probe so far, per process tree, folded by (type, operation, target).
    pub timelines: Timelines,
    /// Per process and policy prefix: bursts fold after a few distinct targets.
    folder: fold::StreamFolder,
    /// The run's connections for the report, the newest `MAX_KEPT_CONNECTIONS`; older
    /// ones were streamed and are counted in `connections_not_kept`.
    pub connections: std::collections::VecDeque<Stamped<ConnectionRecord>>,
    /// Number of `connections[0]` among every connection so far.
    connections_first: u64,
    pub connections_not_kept: u64,
    /// Kernel matches (case-folded) that the policy's exact case rule rejected.
    pub case_mismatches: u64,
    /// Accepted DNS answers of the current step, with their TTLs: the engine takes
    /// them (`take_answers`) after each event, for block rules' host globs.
    answers_learned: Vec<LearnedAnswer>,
    /// Kernel path matches that the classifier did not place in any category (only
    /// possible for truncated paths).
    pub unclassified_paths: u64,
    /// Probes whose operation no matching category counts (`operations:`).
    pub operation_not_counted: u64,
    /// File events naming an operation this build does not know (kernel and
    /// userspace builds differ): counted like undecodable records.
    pub unknown_file_ops: u64,
    /// Relative paths ending in a policy basename whose base directory could not be
    /// named (the process was gone before userspace could ask `/proc`).
    pub unresolved_paths: u64,
    /// `HOME`/`XDG_CONFIG_HOME` values at exec that cannot place `~/` (`own_home`).
    pub homes_unusable: u64,
    /// The policy's files on this host, for paths the kernel matched by inode or
    /// left to userspace.
    file_index: std::sync::Arc<crate::policy::FileIndex>,
    /// Execs whose argv the kernel could not keep until the exec completed.
    pub argv_lost: u64,
    /// Strings the kernel had to cut at their capture limit, by kind: the data is
    /// partly lost, so it is counted like a drop.
    pub truncated: BTreeMap<&'static str, u64>,
    /// Env names present at an exec, per process, until the exec completes.
    /// One entry per policy name, so a process that fails execve a million times
    /// keeps one entry per name, not a million.
    exposures: HashMap<u32, exposure::Exposure>,
    /// TCP outcomes that arrived before their connect's exit event.
    early_outcomes: pending::Pending<(u32, Destination), TcpOutcome>,
    /// Connects waiting for their TCP outcome: their number among all connections
    /// (to find the kept record) and their offset.
    awaiting_outcome: pending::Pending<(u32, Destination), (u64, f64)>,
    /// Names for addresses, from DNS answers and /etc/hosts.
    pub names: dns::NameBook,
    /// UDP destinations already reported per process, and whether the send failed
    /// (a refused send is reported once too, next to the sent one); later datagrams
    /// are not.
    udp_seen: HashSet<(u32, Destination, bool)>,
    /// Datagrams a block rule dropped at the egress hook, by (owner, address), with
    /// the drop's time, until the send's own exit event: a send that returned success
    /// then says `dropped`, not `sent` (`net::on_udp_send`).
    dropped_sends: HashMap<(u32, String), u64>,
    /// Category indices with their names, in name order: how records list probes.
    category_rank: Vec<(usize, String)>,
    /// The policy's rules, evaluated at each network event.
    rules: rules::RuleEngine,
    /// Values the policy shows, per process (`capture_value_prefix`).
    pub values: values::ShownValues,
    /// Records produced besides an event's own (rule alerts), handed out by
    /// `handle_into`.
    pending: Vec<Record>,
    /// Connections awaiting their first bytes, DNS sockets and the names each
    /// process asked for.
    net_names: net_names::NetNames,
    /// The block rules in force, to name what the kernel's block events refer to.
    block: block::BlockRules,
    /// Block events naming a rule the policy in force does not have (a reload
    /// changed the rules between the kernel's verdict and its record).
    pub block_unknown_rule: u64,
    /// `blocked` / `would_block` records for the report (`block::MAX_KEPT_BLOCKS`).
    kept_blocks: Vec<crate::records::KeptBlock>,
    pub blocks_not_kept: u64,
    /// Block slots of reads only userspace could decide, for the engine to write
    /// into the kernel (`take_late_feeds`).
    late_feeds: Vec<block::LateFeed>,
}

/// `/proc/123/environ`: another process's environment, read. Reports fold these by
/// reader.
pub fn environ_of_other(target: &str) -> bool {
    target
        .strip_prefix("/proc/")
        .and_then(|rest| rest.strip_suffix("/environ"))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The group `/proc/N/environ` reads fold into in a CLI's summary.
pub(crate) const ENVIRON_GROUP: &str = "/proc/*/environ";

impl Correlator {
    pub fn new(policy: &CompiledPolicy, start_ns: u64) -> Self {
        Self {
            start_ns,
            category_names: policy.categories.iter().map(|c| c.name.clone()).collect(),
            classifier: policy.classifier.clone(),
            timelines: Timelines::default(),
            folder: fold::StreamFolder::default(),
            connections: std::collections::VecDeque::new(),
            connections_first: 0,
            connections_not_kept: 0,
            case_mismatches: 0,
            answers_learned: Vec::new(),
            homes_unusable: 0,
            unclassified_paths: 0,
            operation_not_counted: 0,
            unknown_file_ops: 0,
            unresolved_paths: 0,
            file_index: Default::default(),
            argv_lost: 0,
            truncated: BTreeMap::new(),
            exposures: HashMap::new(),
            early_outcomes: pending::Pending::with_capacity(net::MAX_EARLY_OUTCOMES),
            awaiting_outcome: pending::Pending::with_capacity(net::MAX_AWAITING_OUTCOMES),
            names: dns::NameBook::with_hosts_file("/etc/hosts"),
            udp_seen: HashSet::new(),
            dropped_sends: HashMap::new(),
            rules: rules::RuleEngine::new(policy.rules.clone()),
            category_rank: rank(&policy.categories),
            pending: Vec::new(),
            net_names: Default::default(),
            values: values::ShownValues::default(),
            block: block::BlockRules::of(policy),
            block_unknown_rule: 0,
            kept_blocks: Vec::new(),
            blocks_not_kept: 0,
            late_feeds: Vec::new(),
        }
    }

    /// Switches to a reloaded policy: categories are matched by name (probes so far keep
    /// the categories that still exist), rules keep their counts by name.
    /// The DNS answers accepted since the last call.
    pub fn take_answers(&mut self) -> Vec<LearnedAnswer> {
        std::mem::take(&mut self.answers_learned)
    }

    pub fn set_policy(
        &mut self,
        policy: &CompiledPolicy,
        index: std::sync::Arc<crate::policy::FileIndex>,
    ) {
        let names: Vec<String> = policy.categories.iter().map(|c| c.name.clone()).collect();
        let mapping: Vec<Option<usize>> = self
            .category_names
            .iter()
            .map(|old| names.iter().position(|n| n == old))
            .collect();
        self.category_names = names;
        self.category_rank = rank(&policy.categories);
        self.classifier = policy.classifier.clone();
        let classifier = &self.classifier;
        self.timelines
            .remap_categories(&mapping, &|target| classifier.fold_prefix(target));
        self.rules.replace_rules(policy.rules.clone());
        self.block = block::BlockRules::of(policy);
        self.file_index = index;
    }

    /// Bounds the probe timelines at `capacity` distinct (operation, target) pairs
    /// over all trees (before any event; the default is `MAX_DISTINCT_PROBES`).
    pub fn with_timeline_capacity(mut self, capacity: usize) -> Self {
        self.timelines = Timelines::with_capacity(capacity);
        self
    }

    /// The policy files as this host has them (from the loaded sensors), so paths the
    /// kernel matched by inode or by basename can be named.
    pub fn with_file_index(mut self, index: std::sync::Arc<crate::policy::FileIndex>) -> Self {
        self.file_index = index;
        self
    }

    /// For the daemon, on a timer: trees whose processes have all exited go first
    /// when room is needed, and `grace_ns` after their last exit their timeline,
    /// suppression state and process entries are dropped (counted in `timelines`).
    pub fn expire_trees(&mut self, now_ns: u64, grace_ns: u64, procs: &mut ProcessTable) {
        let expired = procs.expire_trees(now_ns, grace_ns);
        for tree in expired.newly_exited {
            self.timelines.mark_exited(tree);
        }
        if expired.forgotten.is_empty() {
            return;
        }
        for &tree in &expired.forgotten {
            self.timelines.evict_exited(tree);
            self.rules.forget_tree(tree);
        }
        self.udp_seen
            .retain(|(pid, _, _)| procs.get(*pid).is_some());
        self.early_outcomes
            .retain_keys(|(pid, _)| procs.get(*pid).is_some());
        self.awaiting_outcome
            .retain_keys(|(pid, _)| procs.get(*pid).is_some());
        self.folder.retain_pids(|pid| procs.get(pid).is_some());
        self.net_names.retain_pids(|pid| procs.get(pid).is_some());
        self.values.retain_pids(|pid| procs.get(pid).is_some());
    }

    /// The offset a record made now would have.
    pub fn offset_now_ms(&self) -> f64 {
        self.offset_ms(crate::time::boot_now_ns())
    }

    fn offset_ms(&self, ktime_ns: u64) -> f64 {
        (ktime_ns as f64 - self.start_ns as f64) / 1e6
    }

    /// The header of a record about process `pid`, for an event at `ktime_ns`.
    fn header(&self, ktime_ns: u64, pid: u32, procs: &ProcessTable) -> Header {
        Header {
            time: Stamp::from_boot_ns(ktime_ns),
            offset_ms: Some(self.offset_ms(ktime_ns)),
            pid: Some(pid),
            tree: Some(procs.tree_of(pid)),
        }
    }

    /// A record about process `pid`.
    fn record(&self, ktime_ns: u64, pid: u32, procs: &ProcessTable, body: Body) -> Record {
        Record {
            header: self.header(ktime_ns, pid, procs),
            body,
        }
    }

    /// Updates the process table and appends the records to stream for this event.
    /// The environment present at an exec is reported right after that exec, as probes
    /// of the new program.
    pub fn handle_into(&mut self, event: &Event, procs: &mut ProcessTable, out: &mut Vec<Record>) {
        out.extend(self.handle(event, procs));
        out.append(&mut self.pending);
        if let Event::Exec(e) = event {
            // A new image, a new environment.
            self.values.forget(e.header.tgid);
        }
        if let Event::Exec(e) = event
            && let Some(last) = self.exposures.remove(&e.header.tgid)
        {
            // A PATH search tries several files: the last attempt's environment
            // is the new image's (`Exposure`).
            let last = last.into_names();
            let homes = self.exec_homes(&last);
            procs.set_homes(e.header.tgid, homes);
            for x in last.into_values() {
                out.extend(self.on_env_at_exec(&x, e.header.ktime_ns, procs));
            }
        }
    }

    /// Updates the process table and returns the record to stream for this event, if
    /// any (see `handle_into`, which also reports the environment at exec).
    pub fn handle(&mut self, event: &Event, procs: &mut ProcessTable) -> Option<Record> {
        match event {
            Event::EnvAtExec(e) => {
                self.exposures.entry(e.header.tgid).or_default().add(e);
                None
            }
            Event::Exec(e) => {
                if e.flags & EXEC_ARGV_LOST != 0 {
                    self.argv_lost += 1;
                }
                if e.argv_truncated_mask != 0 || e.flags & EXEC_ARGV_MORE != 0 {
                    *self.truncated.entry("argv").or_default() += 1;
                }
                if e.flags & EXEC_FILENAME_TRUNCATED != 0 {
                    *self.truncated.entry("exe_path").or_default() += 1;
                }
                let argv: Vec<String> = e.argv_bytes().map(escape_bytes).collect();
                let pid = e.header.tgid;
                procs.on_exec(
                    pid,
                    e.uid,
                    e.filename_bytes(),
                    argv.clone(),
                    e.flags & EXEC_ARGV_MORE != 0,
                );
                let info = procs.get(pid);
                let body = Body::Exec(ExecRecord {
                    ppid: info.map(|i| i.ppid).unwrap_or(0),
                    uid: e.uid,
                    exe: info
                        .map(|i| i.image.exe.clone())
                        .unwrap_or_else(|| escape_bytes(e.filename_bytes())),
                    argv,
                    argv_incomplete: e.flags & EXEC_ARGV_MORE != 0,
                    argv_truncated: (0..probe_common::ARGV_SLOTS)
                        .filter(|i| e.argv_truncated_mask & (1 << i) != 0)
                        .collect(),
                    argv_lost: e.flags & EXEC_ARGV_LOST != 0,
                    exe_truncated: e.flags & EXEC_FILENAME_TRUNCATED != 0,
                    selected_by: None,
                    // lineage is the pid, then its parent (`ppid`), then theirs.
                    ancestors: procs
                        .lineage(pid)
                        .into_iter()
                        .skip(2)
                        .take(MAX_ANCESTORS)
                        .collect(),
                });
                Some(self.record(e.header.ktime_ns, pid, procs, body))
            }
            Event::Fork(e) => {
                procs.on_fork(e.parent_tgid, e.child_tgid);
                // A forked child runs with its parent's environment until it execs.
                self.values.inherit(e.parent_tgid, e.child_tgid);
                None
            }
            Event::Exit(e) => {
                self.exposures.remove(&e.header.tgid);
                // exit_group's argument is an int; the status a parent sees is its low byte.
                let code = (e.flags & EXIT_CODE_KNOWN != 0).then_some(e.exit_code & 0xff);
                procs.on_exit(e.header.tgid, code);
                let body = Body::Exit(ExitRecord { exit_code: code });
                Some(self.record(e.header.ktime_ns, e.header.tgid, procs, body))
            }
            Event::File(e) => self.on_file(e, procs),
            Event::Env(e) => self.on_env(e, procs),
            Event::HostCall(e) => self.on_host_call(e, procs),
            Event::PeerMemory(e) => self.on_peer_memory(e, procs),
            // The engine's business (libc scans), not a record.
            Event::ExecMapped(_) => None,
            Event::Connect(e) => {
                let dest = Destination::of_sockaddr(e.family, &e.addr, e.port);
                let (result, seen_at) = if e.header.kind == probe_common::EVENT_CONNECT_ISSUED {
                    (ConnectResult::Issued, SeenAt::CgroupHook)
                } else if e.flags & probe_common::CONNECT_DEST_FROM_HOOK != 0 {
                    (
                        ConnectResult::of_syscall(e.ret),
                        SeenAt::SyscallAndCgroupHook,
                    )
                } else {
                    (ConnectResult::of_syscall(e.ret), SeenAt::Syscall)
                };
                if e.header.kind != probe_common::EVENT_CONNECT_ISSUED {
                    self.net_names.note_dns_socket(e.header.tgid, e.fd, &dest);
                }
                Some(self.on_connect(&e.header, dest, result, seen_at, false, procs))
            }
            Event::ConnectUnix(e) => {
                let path = escape_bytes(e.path_bytes());
                let address = if e.flags & UNIX_ABSTRACT != 0 {
                    format!("@{path}")
                } else {
                    path
                };
                let dest = Destination {
                    family: Family::Unix,
                    address,
                    port: 0,
                };
                if e.flags & probe_common::UNIX_DATAGRAM != 0 {
                    return self.on_unix_datagram(&e.header, dest, e.ret, procs);
                }
                let result = ConnectResult::of_syscall(e.ret);
                Some(self.on_connect(&e.header, dest, result, SeenAt::Syscall, false, procs))
            }
            Event::ConnectOutcome(e) => self.on_outcome(e, procs),
            Event::UdpSend(e) => self.on_udp_send(e, procs),
            Event::DnsAnswer(e) => self.on_dns_answer(e, procs),
            Event::FirstBytes(e) => self.on_first_bytes(e, procs),
            Event::Block(e) => self.on_block(e, procs),
        }
    }

    /// What the timelines hold against their bounds.
    pub fn timeline_usage(&self) -> TimelineUsage {
        let t = &self.timelines;
        TimelineUsage {
            max_distinct_probes: t.capacity,
            distinct_probes: t.distinct(),
            probes_not_kept: t.overflow,
            trees: t.trees(),
            trees_evicted_after_exit: t.evicted_after_exit,
            trees_evicted_for_room: t.evicted_for_room,
            probes_evicted: t.probes_evicted,
            max_connections: MAX_KEPT_CONNECTIONS,
            connections_not_kept: self.connections_not_kept,
        }
    }

    /// Every rule that matched in the run, or (for one tree) in that tree's kept
    /// connections.
    pub fn rule_summaries(&self, tree: Option<(u32, &ProcessTable)>) -> Vec<RuleSummary> {
        let Some((tree, procs)) = tree else {
            return self.rules.summaries(|ns| self.offset_ms(ns));
        };
        let mut out: Vec<RuleSummary> = Vec::new();
        for conn in self.connections_of(tree, procs) {
            for m in &conn.body.matched_rules {
                let i = match out.iter().position(|s| s.rule == m.rule) {
                    Some(i) => i,
                    None => {
                        out.push(RuleSummary {
                            rule: m.rule.clone(),
                            id: m.id.clone(),
                            severity: m.severity,
                            action: m.action,
                            matches: 0,
                            suppressed: 0,
                            first_offset_ms: conn.header.offset_ms.unwrap_or(0.0),
                        });
                        out.len() - 1
                    }
                };
                out[i].matches += 1;
                out[i].suppressed += u64::from(m.suppressed);
                out[i].first_offset_ms = out[i]
                    .first_offset_ms
                    .min(conn.header.offset_ms.unwrap_or(0.0));
            }
        }
        out
    }

    /// The kept connections of one tree.
    pub fn connections_of<'a>(
        &'a self,
        tree: u32,
        procs: &'a ProcessTable,
    ) -> impl Iterator<Item = &'a Stamped<ConnectionRecord>> + 'a {
        // The tree a connection was made in is in its header; a record without one
        // is placed by its process now.
        self.connections.iter().filter(move |c| {
            c.header
                .tree
                .or_else(|| c.header.pid.map(|p| procs.tree_of(p)))
                == Some(tree)
        })
    }

    /// Per-category summary of every probe in the run.
    /// Probes per category, over every tree or only `tree`'s.
    pub fn summarize(&self, tree: Option<u32>) -> Vec<CategorySummary> {
        let mut by_cat = self.timelines.summaries(tree, |ns| self.offset_ms(ns));
        // Report categories in policy order.
        self.category_names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let probes = fold::fold_summaries(by_cat.remove(&i)?, &self.classifier);
                let mut probes = probes;
                probes.sort_by(|a, b| a.first_offset_ms.total_cmp(&b.first_offset_ms));
                Some(CategorySummary {
                    category: name.clone(),
                    probes,
                })
            })
            .collect()
    }
}

/// Category indices and names, in name order.
fn rank(categories: &[crate::policy::Category]) -> Vec<(usize, String)> {
    let mut ranked: Vec<(usize, String)> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.name.clone()))
        .collect();
    ranked.sort_by(|a, b| a.1.cmp(&b.1));
    ranked
}

#[cfg(test)]
mod tests;
