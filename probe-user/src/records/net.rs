//! Records of network events: connections and datagrams, their outcomes, DNS, rule
//! matches; and the destination they name, formatted in one place.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{ConnectResult, Family, NameSource, Relation, SeenAt, TcpOutcome};
use crate::ops::How;
use crate::policy::rules::{Action, NetworkEvent, Severity};

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
pub struct Destination {
    /// `ipv4`, `ipv6` or `unix`.
    pub family: Family,
    /// The IP address, or the unix socket path (`@name` for an abstract socket).
    pub address: String,
    /// 0 for unix sockets.
    pub port: u16,
}

impl Destination {
    /// An IPv4 or IPv6 address as the kernel's sockaddr carried it.
    pub fn of_sockaddr(family: u16, addr: &[u8; 16], port: u16) -> Self {
        match family {
            probe_common::AF_INET => Destination {
                family: Family::Ipv4,
                address: Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string(),
                port,
            },
            probe_common::AF_INET6 => Destination {
                family: Family::Ipv6,
                address: Ipv6Addr::from(*addr).to_string(),
                port,
            },
            other => Destination {
                family: Family::Unknown,
                address: format!("family {other}"),
                port,
            },
        }
    }

    /// Written with the name the process knew it by, when there is one
    /// (`api.example.com:443`), else as `Display` writes it.
    pub fn named(&self, name: Option<&str>) -> String {
        match (self.family, name) {
            (Family::Ipv4 | Family::Ipv6, Some(name)) => format!("{name}:{}", self.port),
            _ => self.to_string(),
        }
    }

    /// The address part: IPv6 in brackets, so a port can follow.
    pub fn host(&self) -> String {
        match self.family {
            Family::Ipv6 => format!("[{}]", self.address),
            _ => self.address.clone(),
        }
    }
}

/// `192.0.2.1:443`, `[2001:db8::1]:443`, `unix:/run/x.sock`, `unix:@name`: the one
/// way every output writes a destination.
impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.family {
            Family::Unix => write!(f, "unix:{}", self.address),
            Family::Unknown => f.write_str(&self.address),
            _ => write!(f, "{}:{}", self.host(), self.port),
        }
    }
}

/// A probe that came before a connection, folded by (category, target, how).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PriorProbe {
    pub category: String,
    pub target_type: super::TargetType,
    pub target: String,
    pub how: How,
    /// What the probe proves: `read`, `checked`, `exposed` or `enumerated`.
    pub evidence: crate::ops::Evidence,
    pub pids: Vec<u32>,
    /// Who made it, relative to the process that made the network call (the first
    /// `MAX_ACTORS` of `pids`).
    pub by: Vec<ProbeActor>,
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

pub(super) fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ConnectionRecord {
    pub tid: u32,
    pub process: String,
    /// pid, parent, grandparent... within the watched tree (the nearest
    /// `MAX_PARENTS`).
    pub lineage: Vec<u32>,
    pub destination: Destination,
    /// What the call was: `connect` (a stream or a connected socket), `udp_send` (a
    /// datagram to an address; `result` says whether it left), `unix_connect` (a
    /// unix socket, stream or datagram).
    pub event: crate::policy::rules::NetworkEvent,
    /// Where it was seen: `syscall_and_cgroup_hook` (the syscall's result, the
    /// destination from the cgroup hook's kernel copy), `syscall` (the tracepoints
    /// alone: the destination read from the caller's memory) or `cgroup_hook` (the
    /// hook alone, for connects and sends made outside those syscalls: io_uring).
    pub seen_at: SeenAt,
    pub result: ConnectResult,
    /// For an `in_progress` TCP connect: `established` or `failed`, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TcpOutcome>,
    /// The name the process resolved for this address, and where probectl learnt it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_source: Option<NameSource>,
    pub probes_before: Vec<PriorProbe>,
    /// Rows past the `MAX_LISTED_PRIOR` listed (counted, not shown).
    #[serde(skip_serializing_if = "is_zero")]
    pub probes_before_not_listed: u64,
    /// The process read a proxy or relay setting and got a value, then connected
    /// somewhere else directly (see docs/events.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypassed: Option<ProxyBypass>,
    /// Who made the connection.
    pub cli: super::CliIdentity,
    /// Policy rules this connection completes (probes in the window, then this call).
    pub matched_rules: Vec<RuleMatch>,
    /// The server name of the TLS ClientHello the process sent first on this
    /// connection (SNI), escaped: names the destination without DNS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// The HTTP request the process sent first on this connection (plain HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRequestLine>,
}

/// An HTTP/1.x request line and Host header, escaped and bounded (method 16,
/// host 255, path 256 characters; a cut path ends in `...`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub struct HttpRequestLine {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub path: String,
}

/// What the first bytes a process sent on a connection named, streamed when they
/// were sent (the connection's record was streamed at its connect).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FirstBytesRecord {
    pub process: String,
    pub destination: Destination,
    /// `tls` or `http`.
    pub protocol: AppProtocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRequestLine>,
    /// Milliseconds since the connect call, when the connection was still kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms_after_connect: Option<f64>,
    /// Rules whose destination hosts match the name now known (and did not match at
    /// the connect, when no name was known yet).
    pub matched_rules: Vec<RuleMatch>,
}

/// The protocol a connection's first bytes spoke.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppProtocol {
    Tls,
    Http,
}

/// A direct connection by a process that had read a proxy or relay setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ProxyBypass {
    /// The settings it read and did not use for this connection (`NAME=value`,
    /// credentials redacted).
    pub settings: Vec<String>,
}

/// The outcome of a non-blocking TCP connect, streamed when the handshake ends.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ConnectOutcomeRecord {
    pub destination: Destination,
    pub outcome: TcpOutcome,
    /// Milliseconds since the connect call.
    pub ms_after_connect: f64,
}

/// A DNS query sent by a watched process (decoded from the captured datagram).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DnsQueryRecord {
    pub process: String,
    /// The server: the address the send named, else the one its socket was connected
    /// to (a connect to port 53 seen earlier in the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Destination>,
    /// Question names, escaped.
    pub names: Vec<String>,
    /// Question types (`TYPE(A)`, `TYPE(AAAA)`, ...).
    pub types: Vec<String>,
    /// Policy rules this query completes.
    pub matched_rules: Vec<RuleMatch>,
}

/// A DNS answer received by a watched process: the addresses it now knows a name by.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DnsAnswerRecord {
    pub name: String,
    pub addresses: Vec<String>,
}

/// Processes named as the makers of one probe row or one rule's reads.
pub const MAX_ACTORS: usize = 8;

/// A process that probed, and how it is related to the process that made the
/// network call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ProbeActor {
    pub pid: u32,
    pub process: String,
    pub relation: super::Relation,
}

impl ProbeActor {
    /// `node (pid 10)`.
    pub fn label(&self) -> String {
        format!("{} (pid {})", self.process, self.pid)
    }
}

/// The processes that made the reads a rule counted, per category.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProbedBy {
    pub category: String,
    pub by: Vec<ProbeActor>,
}

/// One rule that matched one network event.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RuleMatch {
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub severity: Severity,
    pub action: Action,
    /// The rule's categories that the tree probed in the window.
    pub categories: Vec<String>,
    /// Who made those reads, per category (a parent's read, a child's connect).
    pub probed_by: Vec<ProbedBy>,
    /// A repeat within the rule's suppression window: counted, not alerted again.
    pub suppressed: bool,
    /// The kinds of evidence the rule counted, and its window: which rows of the
    /// record's `probes_before` made the match (for `probed_by`).
    #[serde(skip)]
    pub counted: crate::ops::EvidenceSet,
    #[serde(skip)]
    pub within_ms: f64,
}

impl RuleMatch {
    /// A match of `rule` on `categories`, before attribution fills `probed_by`.
    pub fn of(
        rule: &crate::policy::rules::CompiledRule,
        categories: Vec<String>,
        suppressed: bool,
    ) -> Self {
        Self {
            rule: rule.name.clone(),
            id: rule.id.clone(),
            severity: rule.severity,
            action: rule.action,
            categories,
            probed_by: Vec::new(),
            suppressed,
            counted: rule.evidence,
            within_ms: rule.within.as_secs_f64() * 1e3,
        }
    }

    /// "node (pid 10) read timezone; its child curl (pid 12) connected to X": the sentence
    /// a rule match's alert and report lines use. `caller` is the process that made the
    /// call, `verb` what it did ("connected to X").
    pub fn sentence(&self, caller: &str, caller_pid: u32, verb: &str) -> String {
        let m = self;
        // Readers in first-seen order, each with the categories it read.
        let mut readers: Vec<(&ProbeActor, Vec<&str>)> = Vec::new();
        for p in &m.probed_by {
            for a in &p.by {
                match readers.iter_mut().find(|(r, _)| r.pid == a.pid) {
                    Some((_, cats)) => cats.push(&p.category),
                    None => readers.push((a, vec![&p.category])),
                }
            }
        }
        if readers.is_empty() {
            // Rows past the listing bound: the categories, without names.
            return format!(
                "{caller} (pid {caller_pid}) probed {}, then {verb}",
                m.categories.join(", ")
            );
        }
        let only_self = readers.iter().all(|(a, _)| a.relation == Relation::Itself);
        // The caller's own reads first, then the others': "its" below names the reader
        // listed last, so that one must be another process, and the one whose
        // relation is given (never "curl read timezone; its child curl connected").
        readers.sort_by_key(|(a, _)| a.relation != Relation::Itself);
        let reads: Vec<String> = readers
            .iter()
            .map(|(a, cats)| format!("{} read {}", a.label(), cats.join(", ")))
            .collect();
        if only_self {
            return format!("{}, then {verb}", reads.join("; "));
        }
        // The caller as the last reader listed sees it: "its child curl (pid 12)".
        let relation = readers
            .last()
            .map(|(a, _)| a.relation.inverse())
            .unwrap_or(Relation::Relative);
        let who = match relation {
            Relation::Relative => format!("{caller} (pid {caller_pid}), in the same tree,"),
            r => format!("its {} {caller} (pid {caller_pid})", r.name()),
        };
        format!("{}; {who} {verb}", reads.join("; "))
    }
}

/// A rule that matched a network event, as its own record.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RuleMatchRecord {
    pub process: String,
    /// `connect`, `udp_send` or `dns_query`.
    pub event: NetworkEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Names of the destination (DNS or /etc/hosts), or the names a query asked for.
    pub names: Vec<String>,
    #[serde(flatten)]
    pub matched: RuleMatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_written_one_way() {
        let d = |family, address: &str, port| Destination {
            family,
            address: address.into(),
            port,
        };
        assert_eq!(
            d(Family::Ipv4, "192.0.2.1", 443).to_string(),
            "192.0.2.1:443"
        );
        assert_eq!(
            d(Family::Ipv6, "2001:db8::1", 443).to_string(),
            "[2001:db8::1]:443"
        );
        assert_eq!(d(Family::Unix, "@bus", 0).to_string(), "unix:@bus");
        let v6 = Destination::of_sockaddr(probe_common::AF_INET6, &[0; 16], 53);
        assert_eq!(v6.to_string(), "[::]:53");
    }
}

#[cfg(test)]
mod sentence_tests {
    use crate::ops::EvidenceSet;
    use crate::policy::rules::{Action, Severity};
    use crate::records::{ProbeActor, ProbedBy, Relation, RuleMatch};

    fn actor(pid: u32, process: &str, relation: Relation) -> ProbeActor {
        ProbeActor {
            pid,
            process: process.into(),
            relation,
        }
    }

    fn matched(probed_by: Vec<ProbedBy>) -> RuleMatch {
        RuleMatch {
            rule: "r".into(),
            id: None,
            severity: Severity::High,
            action: Action::Alert,
            categories: probed_by.iter().map(|p| p.category.clone()).collect(),
            probed_by,
            suppressed: false,
            counted: EvidenceSet::DEFAULT,
            within_ms: 1e3,
        }
    }

    #[test]
    fn a_parents_read_is_never_blamed_on_the_child_that_connected() {
        let m = matched(vec![ProbedBy {
            category: "proxy".into(),
            by: vec![actor(10, "node", Relation::Parent)],
        }]);
        assert_eq!(
            m.sentence("curl", 12, "connected to 192.0.2.1:443"),
            "node (pid 10) read proxy; its child curl (pid 12) connected to 192.0.2.1:443"
        );
        let own = matched(vec![
            ProbedBy {
                category: "timezone".into(),
                by: vec![actor(12, "curl", Relation::Itself)],
            },
            ProbedBy {
                category: "proxy".into(),
                by: vec![actor(12, "curl", Relation::Itself)],
            },
        ]);
        assert_eq!(
            own.sentence("curl", 12, "connected to X"),
            "curl (pid 12) read timezone, proxy, then connected to X"
        );
        // The caller read too, after its parent: "its" must still name the parent.
        let both = matched(vec![
            ProbedBy {
                category: "proxy".into(),
                by: vec![actor(10, "node", Relation::Parent)],
            },
            ProbedBy {
                category: "timezone".into(),
                by: vec![actor(12, "curl", Relation::Itself)],
            },
        ]);
        assert_eq!(
            both.sentence("curl", 12, "connected to X"),
            "curl (pid 12) read timezone; node (pid 10) read proxy; its child curl (pid 12) connected to X"
        );
        // Two other readers: the relation is the one of the reader "its" names.
        let two = matched(vec![
            ProbedBy {
                category: "proxy".into(),
                by: vec![actor(10, "node", Relation::Parent)],
            },
            ProbedBy {
                category: "timezone".into(),
                by: vec![actor(11, "python3", Relation::Sibling)],
            },
        ]);
        assert_eq!(
            two.sentence("curl", 12, "connected to X"),
            "node (pid 10) read proxy; python3 (pid 11) read timezone; its sibling curl (pid 12) connected to X"
        );
    }
}
