//! Records for log shipping: one internal record (`correlate::Record`) wrapped in an
//! envelope (a sortable unique id, a per-host sequence number, the host, the acting
//! process) and encoded as probectl's native JSON, ECS or OCSF.

pub mod ecs;
pub mod host;
pub mod ids;
pub mod ocsf;
pub mod repeats;
pub mod sinks;

use serde::{Deserialize, Serialize};

use crate::correlate::{CliIdentity, Record};

/// The record formats a sink can write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// probectl's own records (docs/events.md), plus `id`, `seq` and `host`.
    Native,
    /// Elastic Common Schema (docs/events.md#ecs): the default machine format.
    #[default]
    Ecs,
    /// OCSF 1.8 (docs/events.md#ocsf).
    Ocsf,
}

impl RecordFormat {
    pub fn name(self) -> &'static str {
        match self {
            RecordFormat::Native => "native",
            RecordFormat::Ecs => "ecs",
            RecordFormat::Ocsf => "ocsf",
        }
    }
}

/// One record as it leaves the machine.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// UUIDv7: unique, and sortable by creation time.
    pub id: String,
    /// Per-host sequence number: consecutive, so a gap downstream is a loss.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, from the record's time.
    pub time_ms: i64,
    pub record: Record,
    /// The process the record is about, as the process table knew it.
    pub process: Option<CliIdentity>,
}

/// Encodes an envelope; `None` when the format has no class for this kind of record
/// (OCSF: exec, exit, env probes...), which the sink counts.
pub fn encode(
    format: RecordFormat,
    envelope: &Envelope,
    host: &host::HostInfo,
) -> Option<serde_json::Value> {
    match format {
        RecordFormat::Native => {
            let mut value = serde_json::to_value(&envelope.record).ok()?;
            if let Some(o) = value.as_object_mut() {
                o.insert("id".into(), envelope.id.clone().into());
                o.insert("seq".into(), envelope.seq.into());
                o.insert("host".into(), host.name.clone().into());
            }
            Some(value)
        }
        RecordFormat::Ecs => ecs::encode(envelope, host),
        RecordFormat::Ocsf => ocsf::encode(envelope, host),
    }
}

/// RFC 3339 (the records' `time`) to milliseconds since the epoch.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    // YYYY-MM-DDTHH:MM:SS(.fraction)Z, as `output::time` writes it.
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = text[19..].trim_start_matches('.').trim_end_matches('Z');
    let ms = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(3).collect();
        digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32)
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// The record's own time field.
pub fn record_time(record: &Record) -> &str {
    match record {
        Record::Exec(r) => &r.time,
        Record::Probe(r) => &r.time,
        Record::Connect(r) => &r.time,
        Record::ConnectOutcome(r) => &r.time,
        Record::DnsQuery(r) => &r.time,
        Record::DnsAnswer(r) => &r.time,
        Record::RuleMatch(r) => &r.time,
        Record::PolicyReload(r) => &r.time,
        Record::Watching(r) => &r.time,
        Record::Exit(r) => &r.time,
        Record::Loss(r) => &r.time,
        Record::Repeated(r) => &r.time,
        Record::Sensor(_) | Record::Report(_) => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_become_epoch_milliseconds() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2026-11-25T02:25:18.777444Z"),
            Some(1_795_573_518_777)
        );
        assert_eq!(rfc3339_ms("2000-02-29T12:00:00.5Z"), Some(951_825_600_500));
        assert_eq!(rfc3339_ms("yesterday"), None);
    }
}

/// One line of a `native` sink (or of `run --json` without the three envelope
/// fields), for the JSON Schema in docs/schema.
#[derive(schemars::JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct NativeLine {
    #[serde(flatten)]
    record: Record,
    /// UUIDv7 (sink lines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// Per-host sequence number (sink lines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    /// Host name (sink lines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
}

/// The JSON Schema (2020-12) of probectl's native records, as the code defines them;
/// `docs/schema/probectl-record.schema.json` is this, and a test keeps it so.
pub fn native_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let schema = generator.into_root_schema_for::<NativeLine>();
    serde_json::to_value(schema).unwrap_or_default()
}
