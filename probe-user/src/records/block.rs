//! `blocked` and `would_block`: a block rule held at a connect or send, judged in the
//! kernel (see `policy::block`).

use serde::Serialize;

use super::{Destination, RuleMatch, Stamped};
use crate::policy::rules::NetworkEvent;

/// A block rule's sequence held at a call: the kernel refused it (`blocked`: the
/// caller got EPERM), or let it through because probectl does not enforce
/// (`would_block`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BlockRecord {
    /// The process that made the call.
    pub process: String,
    /// `connect`, or `udp_send` (a datagram, DNS queries included).
    pub event: NetworkEvent,
    pub destination: Destination,
    /// The rule: name, id, severity, the categories whose reads made it hold, and
    /// the processes that made them (`probed_by`).
    #[serde(flatten)]
    pub matched: RuleMatch,
    /// The reads as the kernel counted them: per category, how long before the call
    /// its last counted read was.
    pub reads: Vec<BlockRead>,
    /// The rule held only because the address was not learned yet while a DNS
    /// answer of the tree was on its way to probectl (`destination.dns_pending:
    /// block`); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dns_pending: bool,
}

/// One slot of the rule that held: a category read within the window.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BlockRead {
    pub category: String,
    /// Milliseconds between the last counted read and the call.
    pub ms_before: f64,
}

impl BlockRecord {
    /// "node (pid 10) read timezone, api-relay, then tried to connect to
    /// 127.0.0.2:443 (refused)" when `enforced`, "... then connected to ..." when not:
    /// the one-line reason of alerts, the stream and the report.
    pub fn sentence(&self, caller_pid: u32, enforced: bool) -> String {
        let mut verb = match (self.event, enforced) {
            (NetworkEvent::Connect, true) => {
                format!("tried to connect to {} (refused)", self.destination)
            }
            (NetworkEvent::Connect, false) => format!("connected to {}", self.destination),
            (_, true) => format!("tried to send to {} (refused)", self.destination),
            (_, false) => format!("sent to {}", self.destination),
        };
        if self.dns_pending {
            verb.push_str(" while a DNS answer was pending (address not learned yet)");
        }
        self.matched.sentence(&self.process, caller_pid, &verb)
    }
}

/// A `blocked` or `would_block` record kept for the end-of-run report.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct KeptBlock {
    /// True: the kernel refused the call (`blocked`); false: observe mode let it
    /// through (`would_block`).
    pub enforced: bool,
    #[serde(flatten)]
    pub record: Stamped<BlockRecord>,
}

/// Whether block rules refuse calls, and which rules block: in the report and in
/// `probectl status`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Enforcement {
    /// True: calls a block rule matches are refused (EPERM); false: they are only
    /// reported as `would_block`.
    pub enforcing: bool,
    /// The block rules in force (name, or `name (id)`).
    pub block_rules: Vec<String>,
    /// When a block rule names a host: whose DNS answers name its addresses, and
    /// the answers not learned because their server is not trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsTrustReport>,
    /// Sends block rules cannot judge on this kernel, and why (ICMP echo on ping
    /// sockets and raw-socket sends when their programs did not attach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_judged: Option<String>,
}

/// The resolvers trusted for block rules' host names (docs/policy.md, "Host names").
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DnsTrustReport {
    /// Where the list comes from.
    pub trusted_from: crate::policy::dns_trust::TrustSource,
    /// `ADDR:PORT` of each trusted resolver.
    pub trusted: Vec<String>,
    /// Answers from other servers (not learned), per server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untrusted: Vec<crate::policy::dns_trust::UntrustedAnswers>,
}
