//! The internal records: one structure per thing a user reads, from which both the
//! human format and JSON lines are produced.

use serde::Serialize;

use crate::sensors::AttachStatus;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Exec(ExecRecord),
    Probe(ProbeRecord),
    Connect(ConnectionRecord),
    ConnectOutcome(ConnectOutcomeRecord),
    DnsQuery(DnsQueryRecord),
    /// A sensor attached (or failed to) during the run: a libc first mapped by a
    /// watched process gets the env uprobes.
    Sensor(crate::sensors::AttachStatus),
    DnsAnswer(DnsAnswerRecord),
    /// A rule with `action: alert` matched (repeats inside its suppression window are
    /// not streamed again, only counted).
    RuleMatch(RuleMatchRecord),
    /// A policy reload (SIGHUP): in force, or refused with the old policy kept.
    PolicyReload(PolicyReloadRecord),
    /// `probectl watch` is attached: the processes it watches from now on.
    Watching(WatchingRecord),
    Exit(ExitRecord),
    Report(RunReport),
    /// The daemon lost records or events since its last `loss` record: counted per
    /// source, so a SIEM sees the loss as data (ECS `event.kind: metric`).
    Loss(LossRecord),
    /// Identical records of one tree held back from the sinks in one window, and how
    /// many (`ship::repeats`).
    Repeated(crate::ship::repeats::RepeatedRecord),
}

/// Losses since the previous `loss` record, by source (`kernel:ring_full_file`,
/// `sink:syslog:tcp:...:queue_full`, ...), with the running totals.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LossRecord {
    pub time: String,
    pub losses: Vec<LossCount>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LossCount {
    pub source: String,
    /// Since the previous loss record.
    pub count: u64,
    /// Since the daemon started.
    pub total: u64,
}

impl Record {
    /// The record with its offsets counted from `base_ms` instead of from the start
    /// of the session that made it (a daemon subscriber's stream starts at zero when
    /// it subscribes, as a standalone run's does).
    pub fn shifted(&self, base_ms: f64) -> Record {
        let mut r = self.clone();
        let shift = |x: &mut f64| *x -= base_ms;
        match &mut r {
            Record::Exec(x) => shift(&mut x.offset_ms),
            Record::Probe(x) => shift(&mut x.offset_ms),
            Record::Connect(x) => shift(&mut x.offset_ms),
            Record::ConnectOutcome(x) => shift(&mut x.offset_ms),
            Record::DnsQuery(x) => shift(&mut x.offset_ms),
            Record::DnsAnswer(x) => shift(&mut x.offset_ms),
            Record::RuleMatch(x) => shift(&mut x.offset_ms),
            Record::Exit(x) => shift(&mut x.offset_ms),
            Record::Report(x) => {
                for c in &mut x.connections {
                    shift(&mut c.offset_ms);
                }
                for p in x.probes.iter_mut().flat_map(|c| c.probes.iter_mut()) {
                    shift(&mut p.first_offset_ms);
                }
                for rule in &mut x.rules {
                    shift(&mut rule.first_offset_ms);
                }
            }
            Record::Sensor(_)
            | Record::PolicyReload(_)
            | Record::Watching(_)
            | Record::Loss(_)
            | Record::Repeated(_) => {}
        }
        r
    }

    /// The process a record is about, for filtering a subscriber's stream; `None`
    /// for records about probectl itself (sensors, reloads, reports).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Record::Exec(r) => Some(r.pid),
            Record::Probe(r) => Some(r.pid),
            Record::Connect(r) => Some(r.pid),
            Record::ConnectOutcome(r) => Some(r.pid),
            Record::DnsQuery(r) => Some(r.pid),
            Record::DnsAnswer(r) => Some(r.pid),
            Record::RuleMatch(r) => Some(r.pid),
            Record::Exit(r) => Some(r.pid),
            Record::Sensor(_)
            | Record::PolicyReload(_)
            | Record::Watching(_)
            | Record::Report(_)
            | Record::Loss(_)
            | Record::Repeated(_) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ExecRecord {
    pub time: String,
    pub offset_ms: f64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    /// More arguments existed than were captured.
    pub argv_incomplete: bool,
    /// Indices of arguments cut at the capture limit (127 bytes).
    pub argv_truncated: Vec<usize>,
    /// The kernel lost the arguments of this exec (counted in the report's drops).
    pub argv_lost: bool,
    /// The executable path was cut at the capture limit (255 bytes).
    pub exe_truncated: bool,
    /// For a process started outside the watched tree: the policy selector that
    /// picked it at this exec (`exe ...`, `argv contains ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_by: Option<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    Env,
    File,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProbeRecord {
    pub time: String,
    pub offset_ms: f64,
    pub pid: u32,
    pub tid: u32,
    /// Short name of the process (exe basename).
    pub process: String,
    pub categories: Vec<String>,
    pub target_type: TargetType,
    /// The env name or path, escaped.
    pub target: String,
    /// How it was seen: getenv, secure_getenv, open, openat, readlink, readlinkat.
    pub how: &'static str,
    /// What the probe got: `set`/`unset` for env lookups; `ok` or the errno name for
    /// file operations.
    pub result: String,
    /// The kernel truncated the target (path or name too long).
    pub truncated: bool,
    /// This record stands for every further probe under a policy prefix by this
    /// process (a burst, such as ICU reading all of /usr/share/zoneinfo): they are
    /// counted in the report, not streamed.
    pub folded: bool,
    /// For `present_at_exec` of categories that ask for it: the start of the value,
    /// credentials redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_prefix: Option<String>,
    /// The path as the process wrote it (escaped), when it is not the target: a
    /// relative path, `..`, `/proc/self/root/...`, a symlink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_path: Option<String>,
    /// How `given_path` was tied to the target: `kernel_inode` (the file the syscall
    /// reached is a policy file) or `userspace` (joined to the cwd or dirfd and
    /// normalised by probectl).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct WatchingRecord {
    pub time: String,
    /// The pids asked for.
    pub roots: Vec<u32>,
    /// Every process watched now: the roots and their descendants.
    pub pids: Vec<u32>,
    pub policy: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PolicyReloadRecord {
    pub time: String,
    /// The new policy is in force.
    pub ok: bool,
    /// The policy in force after the attempt.
    pub policy: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A rule that matched a network event, as its own record.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RuleMatchRecord {
    pub time: String,
    pub offset_ms: f64,
    pub pid: u32,
    pub process: String,
    /// `connect`, `udp_send` or `dns_query`.
    pub event: crate::policy::rules::NetworkEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Names of the destination (DNS or /etc/hosts), or the names a query asked for.
    pub names: Vec<String>,
    #[serde(flatten)]
    pub matched: super::rules::RuleMatch,
}

/// The bounds of what a run keeps in memory, and how much of them it used.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TimelineUsage {
    /// Distinct (operation, target) probes kept (`--max-probes`).
    pub max_distinct_probes: usize,
    pub distinct_probes: usize,
    /// Probes of new targets past the bound (counted in `drops` too).
    pub probes_not_kept: u64,
    /// Process trees with a timeline now.
    pub trees: usize,
    /// Trees let go after all their processes exited and the grace period passed.
    pub trees_evicted_after_exit: u64,
    /// Trees let go, least recently used first, to make room under the bound.
    pub trees_evicted_for_room: u64,
    /// Distinct probes that left with evicted trees (streamed when seen; no longer in
    /// the summary or joined to later connections).
    pub probes_evicted: u64,
    /// Connections kept for the report.
    pub max_connections: usize,
    pub connections_not_kept: u64,
}

pub const SEEN_AT_SYSCALL: &str = "syscall";
pub const SEEN_AT_CGROUP_HOOK: &str = "cgroup_hook";

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub struct Destination {
    /// `ipv4`, `ipv6` or `unix`.
    pub family: &'static str,
    /// The IP address, or the unix socket path (`@name` for an abstract socket).
    pub address: String,
    /// 0 for unix sockets.
    pub port: u16,
}

/// A probe that came before a connection, folded by (category, target, how).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PriorProbe {
    pub category: String,
    pub target_type: TargetType,
    pub target: String,
    pub how: &'static str,
    pub pids: Vec<u32>,
    pub count: u64,
    /// For a folded burst (target `prefix**`): how many distinct files it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_targets: Option<u64>,
    /// Milliseconds between the first such probe and the connection.
    pub first_ms_before: f64,
    /// Milliseconds between the last such probe and the connection.
    pub last_ms_before: f64,
    /// Kernel times of the first and last such probe (the `_ms_before` fields are
    /// these, relative to the connection).
    #[serde(skip)]
    pub first_ns: u64,
    #[serde(skip)]
    pub last_ns: u64,
}

impl PriorProbe {
    /// Sets the `_ms_before` fields for a network event at `at_ns`; a row whose first
    /// probe came after it (events of two CPUs slightly out of order) gets an
    /// infinite distance, so no window counts it.
    pub fn measure_from(&mut self, at_ns: u64) {
        if self.first_ns > at_ns {
            (self.first_ms_before, self.last_ms_before) = (f64::INFINITY, f64::INFINITY);
            return;
        }
        self.first_ms_before = (at_ns - self.first_ns) as f64 / 1e6;
        self.last_ms_before = at_ns.saturating_sub(self.last_ns) as f64 / 1e6;
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ConnectionRecord {
    pub time: String,
    pub offset_ms: f64,
    pub pid: u32,
    pub tid: u32,
    pub process: String,
    /// pid, parent, grandparent... within the watched tree.
    pub lineage: Vec<u32>,
    pub destination: Destination,
    /// Where it was seen: `syscall` (connect/sendto/sendmsg tracepoints) or
    /// `cgroup_hook` (the cgroup sock_addr hook, for connects and sends made outside
    /// those syscalls, i.e. through io_uring).
    pub seen_at: &'static str,
    /// `ok`, `in_progress` (non-blocking connect), `issued` (seen by the cgroup hook:
    /// no syscall result), `sent` (a datagram), or the errno name.
    pub result: String,
    /// For an `in_progress` TCP connect: `established` or `failed`, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The name the process resolved for this address, and where probectl learnt it
    /// (`dns`: an answer it received in this run; `/etc/hosts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_source: Option<&'static str>,
    pub probes_before: Vec<PriorProbe>,
    /// Rows past the `MAX_LISTED_PRIOR` listed (counted, not shown).
    #[serde(skip_serializing_if = "is_zero")]
    pub probes_before_not_listed: u64,
    /// Who made the connection.
    pub cli: CliIdentity,
    /// Policy rules this connection completes (probes in the window, then this call).
    pub matched_rules: Vec<super::rules::RuleMatch>,
}

/// The outcome of a non-blocking TCP connect, streamed when the handshake ends.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ConnectOutcomeRecord {
    pub time: String,
    pub offset_ms: f64,
    pub pid: u32,
    pub destination: Destination,
    /// `established` or `failed` (refused, unreachable, timed out).
    pub outcome: String,
    /// Milliseconds since the connect call.
    pub ms_after_connect: f64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ExitRecord {
    pub time: String,
    pub offset_ms: f64,
    pub pid: u32,
    /// `None` when the process did not call exit_group (killed by a signal, say).
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CliIdentity {
    pub pid: u32,
    pub name: String,
    /// For interpreters: the script or package path from argv.
    pub script: Option<String>,
    pub uid: Option<u32>,
    /// Executable, command line, working directory, container, package: shared with
    /// the process table and every other record about the process.
    #[serde(flatten)]
    pub image: std::sync::Arc<crate::process::Image>,
    /// Parent, grandparent... inside the watched tree (and above it, for a process
    /// found already running): pid and name, the nearest `MAX_PARENTS`.
    pub parents: Vec<ParentRef>,
}

/// Parents listed in a record's identity; a deeper lineage is cut (the chain of
/// pids in a connection's `lineage` is cut alike).
pub const MAX_PARENTS: usize = 64;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ParentRef {
    pub pid: u32,
    pub name: String,
}

impl CliIdentity {
    /// What the process table knows of `pid`.
    pub fn of(procs: &crate::process::ProcessTable, pid: u32) -> Self {
        let info = procs.get(pid);
        let image = info.map(|i| i.image.clone()).unwrap_or_default();
        CliIdentity {
            pid,
            name: image.name().to_owned(),
            script: image.script().map(str::to_owned),
            uid: info.and_then(|i| i.uid),
            image,
            parents: procs
                .lineage(pid)
                .into_iter()
                .skip(1)
                .take(MAX_PARENTS)
                .map(|p| ParentRef {
                    pid: p,
                    name: procs
                        .get(p)
                        .map(|i| i.name().to_owned())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProbeSummary {
    pub target_type: TargetType,
    pub target: String,
    pub how: Vec<&'static str>,
    pub count: u64,
    /// For a folded burst (target `prefix**`): how many distinct files it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_targets: Option<u64>,
    pub pids: Vec<u32>,
    pub first_offset_ms: f64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CategorySummary {
    pub category: String,
    pub probes: Vec<ProbeSummary>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DropCount {
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunReport {
    pub policy: String,
    pub cli: CliIdentity,
    pub probes: Vec<CategorySummary>,
    pub connections: Vec<ConnectionRecord>,
    /// How full the bounded timelines got.
    pub timeline: TimelineUsage,
    /// Every rule that matched in the run: matches, of which suppressed repeats.
    pub rules: Vec<super::rules::RuleSummary>,
    /// Per CLI (exe, script, package): categories probed, destinations contacted,
    /// rules matched.
    pub clis: Vec<super::summary::CliSummary>,
    /// Each sensor family's attach point, the better ones it passed over and why, and
    /// its blind spots (as `probectl doctor` shows them).
    pub sensors: Vec<crate::sensors::chain::SensorChoice>,
    /// Some sensor did not attach: what it would have seen is missing.
    pub partial: bool,
    pub unattached_sensors: Vec<AttachStatus>,
    /// Every non-zero loss: kernel drop counters and userspace decode failures.
    pub drops: Vec<DropCount>,
    /// Strings cut at their capture limit (argv, exe and file paths), by kind.
    pub truncated: Vec<DropCount>,
    /// Kernel matches that userspace did not report, and why (for example an env name
    /// whose letter case the policy's exact rule rejects). Not losses, but counted.
    pub filtered: Vec<DropCount>,
    /// What this run could not see, whatever the policy says.
    pub coverage_notes: Vec<String>,
    pub exit_code: i32,
}

/// A DNS query sent by a watched process (decoded from the captured datagram).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DnsQueryRecord {
    pub time: String,
    pub offset_ms: f64,
    pub pid: u32,
    pub process: String,
    /// The server, when the send named it (otherwise the socket's earlier connect did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Destination>,
    /// Question names, escaped.
    pub names: Vec<String>,
    /// Question types (`TYPE(A)`, `TYPE(AAAA)`, ...).
    pub types: Vec<String>,
    /// Policy rules this query completes.
    pub matched_rules: Vec<super::rules::RuleMatch>,
}

/// A DNS answer received by a watched process: the addresses it now knows a name by.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DnsAnswerRecord {
    pub time: String,
    pub offset_ms: f64,
    pub pid: u32,
    pub name: String,
    pub addresses: Vec<String>,
}
