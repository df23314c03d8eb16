//! The end-of-run report and what it summarises: probes per category, kept
//! connections, rules, CLIs, the bounds of what was kept, and every loss.

use serde::Serialize;

use super::{ConnectionRecord, Destination, Stamped, TargetType};
use crate::ops::How;
use crate::policy::rules::{Action, Severity};
use crate::process::identity::PackageInfo;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProbeSummary {
    pub target_type: TargetType,
    pub target: String,
    pub how: Vec<How>,
    /// The kinds of evidence of those operations (`read`, `checked`, ...).
    pub evidence: Vec<crate::ops::Evidence>,
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

/// Per rule, over the run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RuleSummary {
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub severity: Severity,
    pub action: Action,
    pub matches: u64,
    /// Of `matches`, repeats inside the suppression window.
    pub suppressed: u64,
    pub first_offset_ms: f64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CliSummary {
    pub name: String,
    pub exe: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageInfo>,
    /// Processes that ran it.
    pub pids: Vec<u32>,
    /// Categories probed (evidence `read` or `enumerated`), in policy order.
    pub categories: Vec<String>,
    /// Categories only checked (stat, access), not read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checked: Vec<String>,
    /// Categories only present in its environment at exec, never seen read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed: Vec<String>,
    /// What it probed, per category and kind of evidence, with the targets (and
    /// values the policy shows).
    pub facts: Vec<CliFact>,
    /// Distinct network destinations (IPv4, IPv6), with their DNS or /etc/hosts name
    /// when known.
    pub destinations: Vec<ContactedDestination>,
    /// Distinct local IPC endpoints (unix sockets: nscd, D-Bus, a local daemon), kept
    /// apart from the network calls.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub local_ipc: Vec<Destination>,
    /// Connections flagged as a proxy or relay bypass.
    #[serde(skip_serializing_if = "super::net::is_zero")]
    pub bypasses: u64,
    /// Rules its connections matched (names, each once).
    pub rules: Vec<String>,
    /// The sha256 of its executable, for a native CLI of a run that writes a profile
    /// (`run --profile`), or why there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_hash: Option<crate::process::exe_hash::ExeHash>,
    /// What probectl cannot see of this CLI, and why (a static executable, a runtime
    /// that copies the environment at start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Some of what it did cannot be seen (a static executable): its report is
    /// partial.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// One category and kind of evidence of one CLI: the targets, bounded.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CliFact {
    pub category: String,
    pub evidence: crate::ops::Evidence,
    /// Env names (`TZ=Asia/Shanghai` where the policy shows the value), paths,
    /// folded prefixes (`/usr/share/zoneinfo/** (600 files)`).
    pub targets: Vec<String>,
    /// Targets past the bound, counted.
    #[serde(skip_serializing_if = "super::net::is_zero")]
    pub more: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
pub struct ContactedDestination {
    #[serde(flatten)]
    pub destination: Destination,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// For a DNS server: the names the CLI asked it for (its `dns_query`s), each once,
    /// at most `MAX_SUMMARY_DNS_NAMES`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub dns_names: Vec<String>,
    /// The TLS server name its first bytes on the connection gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// The HTTP request its first bytes on the connection were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<super::HttpRequestLine>,
    /// A block rule refused the call (EPERM): it was attempted, not made.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub blocked: bool,
}

/// Names listed per DNS server in a CLI's summary; more are counted in the query
/// records, not listed here.
pub const MAX_SUMMARY_DNS_NAMES: usize = 32;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunReport {
    pub policy: String,
    pub cli: super::CliIdentity,
    pub probes: Vec<CategorySummary>,
    pub connections: Vec<Stamped<ConnectionRecord>>,
    /// How full the bounded timelines got.
    pub timeline: TimelineUsage,
    /// Every rule that matched in the run: matches, of which suppressed repeats.
    pub rules: Vec<RuleSummary>,
    /// Per CLI (exe, script, package): categories probed, destinations contacted,
    /// rules matched.
    pub clis: Vec<CliSummary>,
    /// Each sensor family's attach point, the better ones it passed over and why, and
    /// its blind spots (as `probectl doctor` shows them).
    pub sensors: Vec<crate::sensors::chain::SensorChoice>,
    /// Some sensor did not attach, or some CLI cannot be fully seen (`partial_reasons`):
    /// what they would have shown is missing.
    pub partial: bool,
    /// Why the report is partial besides unattached sensors: per CLI, its blind spot
    /// ("codex (pid 12): statically linked: ...").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial_reasons: Vec<String>,
    pub unattached_sensors: Vec<crate::sensors::AttachStatus>,
    /// Every non-zero loss: kernel drop counters and userspace decode failures.
    pub drops: Vec<DropCount>,
    /// Strings cut at their capture limit (argv, exe and file paths), by kind.
    pub truncated: Vec<DropCount>,
    /// Kernel matches that userspace did not report, and why (for example an env name
    /// whose letter case the policy's exact rule rejects). Not losses, but counted.
    pub filtered: Vec<DropCount>,
    /// What this run could not see, whatever the policy says.
    pub coverage_notes: Vec<String>,
    /// Whether block rules refused calls, and which rules block (absent when the
    /// policy has no block rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<super::Enforcement>,
    /// The calls block rules refused or would have refused (the first 256; later
    /// ones were streamed and are counted in `truncated` as `report_blocks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<super::KeptBlock>,
    pub exit_code: i32,
}
