//! The records: one structure per thing a user reads, from which the human format,
//! JSON lines, ECS and OCSF are all produced. Every record is a body (what happened)
//! under one header (when, relative offset, which process, which tree), so the
//! fields every consumer needs are in one place, and time stays a typed `Stamp`
//! until an encoder formats it.

mod block;
mod events;
mod net;
mod report;
mod values;

pub use block::*;
pub use events::*;
pub use net::*;
pub use report::*;
pub use values::*;

use serde::Serialize;

use crate::time::Stamp;

/// What every record has.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub struct Header {
    /// When it happened: the kernel's time for an event, the moment it was made for
    /// a record about probectl itself (RFC 3339 UTC, microseconds).
    pub time: Stamp,
    /// Milliseconds since the start of the run or subscription that shows it (for
    /// records about a watched process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<f64>,
    /// The process it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The process tree it belongs to (the pid of the tree's root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<u32>,
}

impl Header {
    /// A record about probectl itself, made now.
    pub fn now() -> Self {
        Self {
            time: Stamp::now(),
            offset_ms: None,
            pid: None,
            tree: None,
        }
    }
}

/// A body under its header; its JSON is the header's fields and the body's side by
/// side.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Stamped<T> {
    #[serde(flatten)]
    pub header: Header,
    #[serde(flatten)]
    pub body: T,
}

pub type Record = Stamped<Body>;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
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
    Report(Box<RunReport>),
    /// The daemon lost records or events since its last `loss` record: counted per
    /// source, so a SIEM sees the loss as data (ECS `event.kind: metric`).
    Loss(LossRecord),
    /// Identical records of one tree held back from the sinks in one window, and how
    /// many (`ship::repeats`).
    Repeated(RepeatedRecord),
    /// What a connection's first bytes named: a TLS server name, an HTTP request.
    FirstBytes(FirstBytesRecord),
    /// A block rule held and the kernel refused the call (EPERM).
    Blocked(BlockRecord),
    /// A block rule held; probectl does not enforce, so the call went through.
    WouldBlock(BlockRecord),
}

/// A record's kind, as its `type` field names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Exec,
    Probe,
    Connect,
    ConnectOutcome,
    DnsQuery,
    Sensor,
    DnsAnswer,
    RuleMatch,
    PolicyReload,
    Watching,
    Exit,
    Report,
    Loss,
    Repeated,
    FirstBytes,
    Blocked,
    WouldBlock,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Probe => "probe",
            Kind::Connect => "connect",
            Kind::ConnectOutcome => "connect_outcome",
            Kind::DnsQuery => "dns_query",
            Kind::Sensor => "sensor",
            Kind::DnsAnswer => "dns_answer",
            Kind::RuleMatch => "rule_match",
            Kind::PolicyReload => "policy_reload",
            Kind::Watching => "watching",
            Kind::Exit => "exit",
            Kind::Report => "report",
            Kind::Loss => "loss",
            Kind::Repeated => "repeated",
            Kind::FirstBytes => "first_bytes",
            Kind::Blocked => "blocked",
            Kind::WouldBlock => "would_block",
        }
    }
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Exec(_) => Kind::Exec,
            Body::Probe(_) => Kind::Probe,
            Body::Connect(_) => Kind::Connect,
            Body::ConnectOutcome(_) => Kind::ConnectOutcome,
            Body::DnsQuery(_) => Kind::DnsQuery,
            Body::Sensor(_) => Kind::Sensor,
            Body::DnsAnswer(_) => Kind::DnsAnswer,
            Body::RuleMatch(_) => Kind::RuleMatch,
            Body::PolicyReload(_) => Kind::PolicyReload,
            Body::Watching(_) => Kind::Watching,
            Body::Exit(_) => Kind::Exit,
            Body::Report(_) => Kind::Report,
            Body::Loss(_) => Kind::Loss,
            Body::Repeated(_) => Kind::Repeated,
            Body::FirstBytes(_) => Kind::FirstBytes,
            Body::Blocked(_) => Kind::Blocked,
            Body::WouldBlock(_) => Kind::WouldBlock,
        }
    }
}

impl Record {
    /// A record about probectl itself (a sensor, a reload, a loss), made now.
    pub fn now(body: Body) -> Self {
        Self {
            header: Header::now(),
            body,
        }
    }

    /// The process a record is about, for filtering a subscriber's stream; `None`
    /// for records about probectl itself (sensors, reloads, reports).
    pub fn pid(&self) -> Option<u32> {
        self.header.pid
    }

    /// The record with its offsets counted from `base_ms` instead of from the start
    /// of the session that made it (a daemon subscriber's stream starts at zero when
    /// it subscribes, as a standalone run's does).
    pub fn shifted(&self, base_ms: f64) -> Record {
        let mut r = self.clone();
        shift_header(&mut r.header, base_ms);
        if let Body::Report(x) = &mut r.body {
            for c in &mut x.connections {
                shift_header(&mut c.header, base_ms);
            }
            for p in x.probes.iter_mut().flat_map(|c| c.probes.iter_mut()) {
                p.first_offset_ms -= base_ms;
            }
            for rule in &mut x.rules {
                rule.first_offset_ms -= base_ms;
            }
        }
        r
    }
}

fn shift_header(h: &mut Header, base_ms: f64) {
    if let Some(x) = &mut h.offset_ms {
        *x -= base_ms;
    }
}
