//! The control socket's protocol: newline-delimited JSON, one request per line, each
//! answered by one response line; `subscribe` then streams `out` lines until the
//! client hangs up. Every message carries `"v": 1`; a request with another version is
//! refused, so a newer client meets a clear error instead of a misread.
//!
//! ```text
//! > {"v":1,"op":"status"}
//! < {"v":1,"ok":true,"status":{...}}
//! > {"v":1,"op":"subscribe","pids":[4242],"format":"json"}
//! < {"v":1,"ok":true,"subscribed":[4242]}
//! < {"v":1,"out":"{\"type\":\"probe\",...}\n"}
//! > {"v":1,"op":"finish"}            (or: every watched process exited)
//! < {"v":1,"out":"{\"type\":\"report\",...}\n"}
//! < {"v":1,"end":true,"reason":"finish requested"}
//! ```

use serde::{Deserialize, Serialize};

use crate::output::Format;

pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line accepted; a longer one is refused and the connection closed.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Time a client has to finish a request line once connected or after a response.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Time one write to a client may take before the client is dropped as stuck.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Sensors, rates, drops, policy, trees, memory and sinks.
    // Empty braces, not unit variants: serde checks unknown fields only in
    // struct variants of an internally tagged enum.
    Status {},
    /// The policy files in force.
    PolicyList {},
    /// Re-read the policy directories (root only).
    Reload {},
    /// Watch these processes and their descendants, and stream their records.
    Subscribe {
        pids: Vec<u32>,
        #[serde(default)]
        format: Format,
        #[serde(default)]
        color: bool,
        /// The readable report lists every probe and connection (`--details`).
        #[serde(default)]
        details: bool,
    },
    /// On a subscribed connection: stop now (after handling every event already in
    /// the ring), send the trees' report, and end.
    Finish {},
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("request is longer than {MAX_REQUEST_BYTES} bytes")]
    TooLong,
    #[error("request is not JSON: {0}")]
    NotJson(String),
    #[error("request has no \"v\" field; this daemon speaks version {PROTOCOL_VERSION}")]
    NoVersion,
    #[error("request is protocol version {0}; this daemon speaks version {PROTOCOL_VERSION}")]
    Version(u64),
    #[error("bad request: {0}")]
    Bad(String),
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, ProtocolError> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(ProtocolError::TooLong);
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| ProtocolError::Bad("a request is a JSON object".into()))?;
    match object.remove("v").map(|v| v.as_u64()) {
        None => return Err(ProtocolError::NoVersion),
        Some(Some(v)) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(Some(v)) => return Err(ProtocolError::Version(v)),
        Some(None) => return Err(ProtocolError::Bad("\"v\" must be a number".into())),
    }
    serde_json::from_value(value).map_err(|e| ProtocolError::Bad(e.to_string()))
}

/// A request as one line, newline included.
pub fn request_line(request: &Request) -> String {
    let mut value = serde_json::to_value(request).unwrap_or_default();
    if let Some(o) = value.as_object_mut() {
        o.insert("v".into(), PROTOCOL_VERSION.into());
    }
    format!("{value}\n")
}

/// `{"v":1,"ok":true, ...fields}` as one line.
pub fn ok_line(fields: serde_json::Value) -> String {
    let mut value = serde_json::json!({"v": PROTOCOL_VERSION, "ok": true});
    if let (Some(o), serde_json::Value::Object(extra)) = (value.as_object_mut(), fields) {
        o.extend(extra);
    }
    format!("{value}\n")
}

/// `{"v":1,"ok":false,"error":...}` as one line.
pub fn error_line(error: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"v": PROTOCOL_VERSION, "ok": false, "error": error})
    )
}

/// The last line of a subscription: why it ended (its report came just before).
pub fn end_line(reason: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"v": PROTOCOL_VERSION, "end": true, "reason": reason})
    )
}

/// A piece of subscribed output, exactly as the client should write it.
pub fn out_line(out: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"v": PROTOCOL_VERSION, "out": out})
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_mistakes_are_named() {
        let sub = Request::Subscribe {
            pids: vec![1, 2],
            format: Format::Json,
            color: false,
            details: false,
        };
        let line = request_line(&sub);
        assert_eq!(parse_request(line.trim_end().as_bytes()), Ok(sub));
        assert_eq!(
            parse_request(br#"{"v":1,"op":"status"}"#),
            Ok(Request::Status {})
        );
        assert_eq!(
            parse_request(br#"{"op":"status"}"#),
            Err(ProtocolError::NoVersion)
        );
        assert_eq!(
            parse_request(br#"{"v":2,"op":"status"}"#),
            Err(ProtocolError::Version(2))
        );
        assert!(matches!(
            parse_request(b"\x00garbage"),
            Err(ProtocolError::NotJson(_))
        ));
        assert!(matches!(
            parse_request(br#"{"v":1,"op":"status","extra":1}"#),
            Err(ProtocolError::Bad(_))
        ));
        assert!(matches!(
            parse_request(br#"{"v":1,"op":"format_disk"}"#),
            Err(ProtocolError::Bad(_))
        ));
        assert_eq!(
            parse_request(&vec![b' '; MAX_REQUEST_BYTES + 1]),
            Err(ProtocolError::TooLong)
        );
    }
}
