//! Records of network events: connections and datagrams, their outcomes, DNS, rule
//! matches; and the destination they name, formatted in one place.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{ConnectResult, Family, NameSource, SeenAt, TcpOutcome};
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
    pub tid: u32,
    pub process: String,
    /// pid, parent, grandparent... within the watched tree (the nearest
    /// `MAX_PARENTS`).
    pub lineage: Vec<u32>,
    pub destination: Destination,
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
    /// A repeat within the rule's suppression window: counted, not alerted again.
    pub suppressed: bool,
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
