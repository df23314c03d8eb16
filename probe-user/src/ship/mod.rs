//! Records for log shipping: one internal record (`records::Record`) wrapped in an
//! envelope (a sortable unique id, a per-host sequence number, the host, the acting
//! process) and encoded as probectl's native JSON, ECS or OCSF.

pub mod ecs;
pub mod host;
pub mod ids;
pub mod ocsf;
pub mod repeats;
pub mod sinks;

use crate::output::Format;
use crate::records::{CliIdentity, Record};

/// One record as it leaves the machine.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// UUIDv7: unique, and sortable by creation time.
    pub id: String,
    /// Per-host sequence number: consecutive, so a gap downstream is a loss.
    pub seq: u64,
    pub record: Record,
    /// The process the record is about, as the process table knew it.
    pub process: Option<CliIdentity>,
}

/// Encodes an envelope; `None` when the format has no class for this kind of record
/// (OCSF: exec, exit, env probes...), which the sink counts. `Human` is rendered by a
/// `Printer`, not encoded here.
pub fn encode(
    format: Format,
    envelope: &Envelope,
    host: &host::HostInfo,
) -> Option<serde_json::Value> {
    match format {
        Format::Human => None,
        Format::Json => {
            let mut value = serde_json::to_value(&envelope.record).ok()?;
            if let Some(o) = value.as_object_mut() {
                o.insert("id".into(), envelope.id.clone().into());
                o.insert("seq".into(), envelope.seq.into());
                o.insert("host".into(), host.name.clone().into());
            }
            Some(value)
        }
        Format::Ecs => ecs::encode(envelope, host),
        Format::Ocsf => ocsf::encode(envelope, host),
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
