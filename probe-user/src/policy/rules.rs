//! Rules: "a process tree probed these categories, then made this network call". The
//! YAML form, its validation, and the compiled form the correlator evaluates.
//!
//! ```yaml
//! rules:
//!   - name: fingerprint-then-call-home
//!     id: PCTL-0001
//!     probed: { all_of: [timezone, api-relay] }   # or any_of: [...], min_count: N
//!                                                 # evidence: [read, enumerated] (the default;
//!                                                 #   also checked, exposed)
//!     then: [connect, udp_send, dns_query]        # the default; also unix_connect
//!     destination:                                # default: anywhere
//!       host: ["*.example.com"]
//!       cidr: ["203.0.113.0/24"]
//!       port: [443]
//!       except: { cidr: ["127.0.0.0/8", "::1/128"] }
//!     bypassed_proxy: true                        # only direct calls past a proxy/relay it read
//!     within: 30s
//!     severity: high                              # info, low, medium, high, critical
//!     action: alert                               # log (default), alert, or block
//!     suppress: 5m                                # repeats within 5 minutes are counted, not re-alerted
//! ```

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Needle, PolicyError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub probed: Probed,
    /// Network events that complete the sequence; when omitted, `connect`,
    /// `udp_send` and `dns_query` (not `unix_connect`, which stays on the machine).
    #[serde(default)]
    pub then: Vec<NetworkEvent>,
    #[serde(default)]
    pub destination: Option<DestinationSpec>,
    /// Only connections that bypassed a proxy or relay setting the process read (it
    /// read HTTPS_PROXY, ALL_PROXY or a `*_BASE_URL` and connected elsewhere directly).
    #[serde(default)]
    pub bypassed_proxy: bool,
    /// How long before the network event the probes count, e.g. `30s`, `500ms`, `5m`.
    pub within: String,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub action: Action,
    /// Repeats of this rule for the same tree and destination within this window are
    /// counted, not reported again.
    #[serde(default)]
    pub suppress: Option<String>,
}

/// Which probes must have come first. At least one condition; all given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probed {
    /// Every one of these categories was probed.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// At least one of these categories was probed.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// At least this many distinct probes (category, target), in the `any_of`
    /// categories if given, else in any category.
    #[serde(default)]
    pub min_count: Option<u32>,
    /// Which kinds of evidence count as probed: `read` and `enumerated` when omitted.
    /// `checked` (stat, access) and `exposed` (present at exec, never seen read) count
    /// only when named here.
    #[serde(default)]
    pub evidence: Vec<crate::ops::Evidence>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkEvent {
    /// An IPv4 or IPv6 connect.
    Connect,
    /// A unix-socket connect (D-Bus, a local daemon): local, so only when named.
    UnixConnect,
    /// A datagram to a destination (UDP sendto/sendmsg).
    UdpSend,
    /// A DNS query.
    DnsQuery,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    #[serde(default)]
    pub cidr: Vec<String>,
    #[serde(default)]
    pub port: Vec<u16>,
    /// Host name globs (`*` matches any run of characters, `api.*.com`), matched against
    /// the name a DNS answer or /etc/hosts gave the address, or the name queried.
    #[serde(default)]
    pub host: Vec<String>,
    /// Destinations that never match (an allowlist).
    #[serde(default)]
    pub except: Option<Box<DestinationSpec>>,
    /// A block rule with `host`: whether an address not learned yet counts as the
    /// host's while a DNS answer of the tree is on its way to probectl (at most 2 s).
    #[serde(default)]
    pub dns_pending: DnsPending,
}

/// `destination.dns_pending`: what a block rule's `host` does with an address
/// probectl has not learned yet, in the moment after the tree received a DNS answer
/// that probectl has not handled (docs/policy.md, "Host names").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsPending {
    /// Not the host's (the default): such a call goes through (fails open).
    #[default]
    Allow,
    /// The host's: such a call is refused like one to a learned address.
    Block,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl NetworkEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkEvent::Connect => "connect",
            NetworkEvent::UnixConnect => "unix_connect",
            NetworkEvent::UdpSend => "udp_send",
            NetworkEvent::DnsQuery => "dns_query",
        }
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Listed in the connection record and the report.
    #[default]
    Log,
    /// Also streamed as a `rule_match` record of its own.
    Alert,
    /// Judged in the kernel at the connect or send: refused (EPERM) when probectl
    /// enforces, reported as `would_block` otherwise (see `policy::block`). Also
    /// streamed as a `rule_match` record, like `alert`.
    Block,
}

/// A validated rule, with category names resolved to indices.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub name: String,
    pub id: Option<String>,
    pub all_of: Vec<usize>,
    pub any_of: Vec<usize>,
    pub min_count: Option<u32>,
    /// The kinds of evidence `probed` counts.
    pub evidence: crate::ops::EvidenceSet,
    pub then: Vec<NetworkEvent>,
    pub destination: Option<CompiledDestination>,
    /// Only connections flagged as a proxy/relay bypass.
    pub bypassed_proxy: bool,
    pub within: Duration,
    pub severity: Severity,
    pub action: Action,
    pub suppress: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct CompiledDestination {
    pub cidrs: Vec<(IpAddr, u8)>,
    pub ports: Vec<u16>,
    pub hosts: Vec<String>,
    pub except: Option<Box<CompiledDestination>>,
    pub dns_pending: DnsPending,
}

/// `30s`, `500ms`, `5m`, `1h`: a number and a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => return Err(format!("{text:?}: unknown unit {other:?}")),
    };
    Ok(d)
}

/// `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?}: {addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{text:?}: prefix length must be 0-{max}"))?,
        None => max,
    };
    Ok((addr, len))
}

/// Whether `addr` is inside the network. IPv4-mapped IPv6 addresses count as IPv4.
pub fn cidr_contains(net: &(IpAddr, u8), addr: &IpAddr) -> bool {
    let (a, n) = match (net.0, addr.to_canonical()) {
        (IpAddr::V4(net), IpAddr::V4(a)) => (u32::from(net) as u128, u32::from(a) as u128),
        (IpAddr::V6(net), IpAddr::V6(a)) => (u128::from(net), u128::from(a)),
        _ => return false,
    };
    let bits = if net.0.is_ipv4() { 32 } else { 128 };
    let shift = bits - u32::from(net.1);
    shift >= bits || (a >> shift) == (n >> shift)
}

/// `*` matches any run of characters (dots included); everything else literally,
/// ASCII case-insensitively (host names).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn compile_destination(spec: &DestinationSpec) -> Result<CompiledDestination, String> {
    let cidrs = spec
        .cidr
        .iter()
        .map(|c| parse_cidr(c))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(h) = spec.host.iter().find(|h| h.trim().is_empty()) {
        return Err(format!("host pattern {h:?} is empty"));
    }
    if spec.dns_pending == DnsPending::Block && spec.host.is_empty() {
        return Err("`dns_pending: block` needs `host` in the same destination".into());
    }
    if spec
        .except
        .as_deref()
        .is_some_and(|e| e.dns_pending != DnsPending::Allow)
    {
        return Err("`dns_pending` belongs in `destination`, not in `except`".into());
    }
    Ok(CompiledDestination {
        cidrs,
        ports: spec.port.clone(),
        hosts: spec.host.clone(),
        except: spec
            .except
            .as_deref()
            .map(compile_destination)
            .transpose()?
            .map(Box::new),
        dns_pending: spec.dns_pending,
    })
}

/// Why a rule cannot be judged in the kernel, if it cannot: the cgroup hooks see
/// an address and a port at the call, and the tree's reads of the rule's categories.
fn unblockable(rule: &Rule) -> Option<&'static str> {
    let dest = rule.destination.as_ref();
    if rule.probed.min_count.is_some() {
        Some("uses `probed.min_count`, which the kernel does not count")
    } else if rule.bypassed_proxy {
        Some("uses `bypassed_proxy`, which only userspace can tell")
    } else if rule.then.contains(&NetworkEvent::UnixConnect) {
        Some("lists `unix_connect` in `then`: only IP connects and datagrams are judged")
    } else if dest
        .and_then(|d| d.except.as_deref())
        .is_some_and(|e| e.except.is_some())
    {
        Some("nests an `except` in `except`")
    } else {
        None
    }
}

impl CompiledRule {
    /// Category indices renumbered, `map[old] = new` (policies merged into one).
    pub(super) fn renumber(&mut self, map: &[usize]) {
        for index in self.all_of.iter_mut().chain(self.any_of.iter_mut()) {
            *index = map[*index];
        }
    }
}

/// Validates and compiles every rule against the policy's category names (a rule
/// names categories; their index in `categories` is what the correlator uses). Errors
/// name the rule and the field.
pub(super) fn compile_rules(
    rules: &[Rule],
    categories: &[&str],
    source_name: &str,
) -> Result<Vec<CompiledRule>, PolicyError> {
    let index: std::collections::HashMap<&str, usize> = categories
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, i))
        .collect();
    let invalid = |rule: &str, message: String, hint: String, needle: Option<Box<Needle>>| {
        PolicyError::Invalid {
            source_name: source_name.to_owned(),
            at: None,
            message: format!("rule {rule:?}: {message}"),
            hint,
            // Without a more precise place, the rule's name.
            needle: needle.or_else(|| Needle::in_rules(rule, false)),
        }
    };
    let category = |rule: &str, name: &str| -> Result<usize, PolicyError> {
        index.get(name).copied().ok_or_else(|| {
            let hint = match super::suggest::closest(name, categories) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("defined categories: {}", categories.join(", ")),
            };
            invalid(
                rule,
                format!("uses category {name:?}, which is not defined"),
                hint,
                Needle::in_rules(name, false),
            )
        })
    };
    let mut out: Vec<CompiledRule> = Vec::with_capacity(rules.len());
    let mut names = std::collections::HashSet::new();
    for rule in rules {
        let name = rule.name.as_str();
        if name.trim().is_empty() {
            return Err(invalid(
                name,
                "has an empty name".into(),
                "name every rule".into(),
                None,
            ));
        }
        if !names.insert(name) {
            return Err(invalid(
                name,
                "is defined twice".into(),
                "rule names are unique; rename one".into(),
                Needle::in_rules(name, true),
            ));
        }
        let p = &rule.probed;
        if p.all_of.is_empty() && p.any_of.is_empty() && p.min_count.is_none() {
            return Err(invalid(
                name,
                "`probed` names no condition".into(),
                "give `all_of`, `any_of` or `min_count`".into(),
                None,
            ));
        }
        let within = parse_duration(&rule.within).map_err(|e| {
            invalid(
                name,
                format!("within: {e}"),
                "durations look like 500ms, 30s, 5m or 1h".into(),
                Needle::in_rules(format!("within: {}", rule.within), false),
            )
        })?;
        let suppress = rule
            .suppress
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| {
                invalid(
                    name,
                    format!("suppress: {e}"),
                    "durations look like 500ms, 30s, 5m or 1h".into(),
                    Needle::in_rules("suppress:", false),
                )
            })?;
        let destination = rule
            .destination
            .as_ref()
            .map(compile_destination)
            .transpose()
            .map_err(|e| {
                invalid(
                    name,
                    format!("destination: {e}"),
                    "cidr entries look like 10.0.0.0/8 or ::1/128; host entries are names with `*`"
                        .into(),
                    Needle::in_rules("destination:", false),
                )
            })?;
        if rule.action != Action::Block
            && rule
                .destination
                .as_ref()
                .is_some_and(|d| d.dns_pending != DnsPending::Allow)
        {
            return Err(invalid(
                name,
                "uses `destination.dns_pending`, which only a block rule has".into(),
                "use `action: block`, or drop `dns_pending`".into(),
                Needle::in_rules("dns_pending", false),
            ));
        }
        if rule.action == Action::Block
            && let Some(why) = unblockable(rule)
        {
            return Err(invalid(
                name,
                format!("has `action: block` but {why}"),
                "the kernel judges a block rule alone: use `action: alert` for this rule, or drop that condition".into(),
                None,
            ));
        }
        out.push(CompiledRule {
            name: name.to_owned(),
            id: rule.id.clone(),
            all_of: p
                .all_of
                .iter()
                .map(|c| category(name, c))
                .collect::<Result<_, _>>()?,
            any_of: p
                .any_of
                .iter()
                .map(|c| category(name, c))
                .collect::<Result<_, _>>()?,
            min_count: p.min_count,
            evidence: if p.evidence.is_empty() {
                crate::ops::EvidenceSet::DEFAULT
            } else {
                crate::ops::EvidenceSet::of(&p.evidence)
            },
            then: if rule.then.is_empty() {
                vec![
                    NetworkEvent::Connect,
                    NetworkEvent::UdpSend,
                    NetworkEvent::DnsQuery,
                ]
            } else {
                rule.then.clone()
            },
            destination,
            bypassed_proxy: rule.bypassed_proxy,
            within,
            severity: rule.severity,
            action: rule.action,
            suppress,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
