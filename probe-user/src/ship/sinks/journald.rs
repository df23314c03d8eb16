//! journald's native protocol (systemd.journal-fields(7), "Native protocol"): one
//! datagram per record to `/run/systemd/journal/socket`, each field `NAME=value\n`,
//! or, for values with a newline, `NAME\n` + 64-bit little-endian length + value +
//! `\n`. Fields: `MESSAGE` (the readable line), `PRIORITY`, `SYSLOG_IDENTIFIER`, and
//! structured `PROBECTL_*` fields (`PROBECTL_TYPE`, `_ID`, `_SEQ`, `_PID`,
//! `_CATEGORIES`, `_TARGET`, `_DESTINATION`, `_RULE`) plus `PROBECTL_RECORD`, the
//! record as JSON, so `journalctl -o json` gives it whole.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use super::{Delivery, Writer};
use crate::records::Body;
use crate::ship::Envelope;

pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

pub struct Journald {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journald {
    pub fn new(path: PathBuf) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        Ok(Self { socket, path })
    }
}

/// The datagram for one record.
pub fn datagram(envelope: &Envelope) -> Vec<u8> {
    let record = &envelope.record;
    let mut out = Vec::new();
    let message = crate::output::render_plain(record);
    field(&mut out, "MESSAGE", message.trim_end());
    let priority = match &record.body {
        Body::RuleMatch(_) => "4",
        Body::Loss(_) => "4",
        Body::PolicyReload(r) if !r.ok => "4",
        _ => "6",
    };
    field(&mut out, "PRIORITY", priority);
    field(&mut out, "SYSLOG_IDENTIFIER", "probectl");
    field(&mut out, "PROBECTL_ID", &envelope.id);
    field(&mut out, "PROBECTL_SEQ", &envelope.seq.to_string());
    let json = serde_json::to_value(record).unwrap_or_default();
    field(&mut out, "PROBECTL_TYPE", record.body.kind().name());
    if let Some(pid) = record.pid() {
        field(&mut out, "PROBECTL_PID", &pid.to_string());
    }
    match &record.body {
        Body::Probe(p) => {
            field(&mut out, "PROBECTL_CATEGORIES", &p.categories.join(","));
            field(&mut out, "PROBECTL_TARGET", &p.target);
        }
        Body::Connect(c) => {
            field(&mut out, "PROBECTL_DESTINATION", &c.destination.to_string());
            if let Some(m) = c.matched_rules.first() {
                field(&mut out, "PROBECTL_RULE", &m.rule);
            }
        }
        Body::RuleMatch(m) => field(&mut out, "PROBECTL_RULE", &m.matched.rule),
        _ => {}
    }
    field(&mut out, "PROBECTL_RECORD", &json.to_string());
    out
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    } else {
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'\n');
}

impl Writer for Journald {
    fn write_record(
        &mut self,
        envelope: &Envelope,
        _: &str,
        _: &std::sync::atomic::AtomicBool,
    ) -> std::io::Result<Delivery> {
        self.socket
            .send_to(&datagram(envelope), &self.path)
            .map(|_| Delivery::Sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_newlines_use_the_binary_form() {
        let mut out = Vec::new();
        field(&mut out, "A", "one line");
        field(&mut out, "B", "two\nlines");
        let mut expected = b"A=one line\nB\n".to_vec();
        expected.extend_from_slice(&9u64.to_le_bytes());
        expected.extend_from_slice(b"two\nlines\n");
        assert_eq!(out, expected);
    }
}
