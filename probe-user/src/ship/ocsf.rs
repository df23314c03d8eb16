//! OCSF 1.8 records: Network Activity (4001) for connections, UDP sends, what a
//! connection's first bytes named, and calls a block rule refused or would refuse
//! (with `action_id`/`disposition_id`), File
//! System Activity (1001) for file probes, Detection Finding (2004) for rule matches,
//! Application Error (6008) for loss records. Other records (execs, exits, env
//! lookups, DNS) have no class here and are not written by an OCSF sink: each is
//! counted (`not_encodable` in `status`) and reaches the next loss record as
//! `sink:<name>:not_encodable`, so every gap in an OCSF sink's `metadata.sequence` is
//! explained by a loss record. probectl's own data (categories,
//! probes before a connection) goes in `unmapped.probectl`. The test
//! `ocsf_records_match_the_official_class_definitions` checks each record against the
//! exported OCSF schema (tests/data/schemas).

use serde_json::{Value, json};

use super::Envelope;
use super::host::HostInfo;
use crate::ops::Operation;
use crate::policy::rules::{NetworkEvent, Severity};
use crate::records::{Body, CliIdentity, ConnectResult, Destination, Family, TargetType};

pub const OCSF_VERSION: &str = "1.8.0";

const NETWORK_ACTIVITY: u32 = 4001;
const FILE_ACTIVITY: u32 = 1001;
const DETECTION_FINDING: u32 = 2004;
const APPLICATION_ERROR: u32 = 6008;

pub fn encode(envelope: &Envelope, host: &HostInfo) -> Option<Value> {
    let pid = envelope.record.header.pid.unwrap_or(0);
    let (class_uid, activity_id, mut event) = match &envelope.record.body {
        Body::Connect(c) => {
            let activity = match c.result {
                ConnectResult::Ok | ConnectResult::InProgress | ConnectResult::Issued => 1, // Open
                ConnectResult::Sent => 6, // Traffic
                ConnectResult::Failed(ret) if ret == -libc::ECONNREFUSED => 5, // Refuse
                ConnectResult::Failed(_) | ConnectResult::Dropped => 4, // Fail
            };
            let mut e = json!({
                "dst_endpoint": endpoint(&c.destination, c.domain.as_deref()),
                "connection_info": {
                    "direction_id": 2, // Outbound
                    "protocol_name": if c.event == NetworkEvent::UdpSend { "udp" } else if c.destination.family == Family::Unix { "unix" } else { "tcp" },
                },
                "actor": actor(Some(&c.cli), pid),
                "status_id": if activity == 4 || activity == 5 { 2 } else { 1 },
                "status": c.result,
                "unmapped": {"probectl": {
                    "probes_before": c.probes_before,
                    "bypassed": c.bypassed,
                    "matched_rules": c.matched_rules,
                    "seen_at": c.seen_at,
                    "lineage": c.lineage,
                }},
            });
            if let Some(rule) = c.matched_rules.first() {
                e["severity_id"] = severity_id(rule.severity).into();
            }
            (NETWORK_ACTIVITY, activity, e)
        }
        // A block rule held at a call. OCSF's security-control attributes say what
        // probectl did: Denied/Blocked when the kernel refused the call (activity
        // Refuse), Observed/Detected in observe mode ("would block": the call went
        // through, activity Open or Traffic).
        Body::Blocked(b) | Body::WouldBlock(b) => {
            let blocked = matches!(envelope.record.body, Body::Blocked(_));
            let udp = b.event != crate::policy::rules::NetworkEvent::Connect;
            let activity = match (blocked, udp) {
                (true, _) => 5,      // Refuse
                (false, false) => 1, // Open
                (false, true) => 6,  // Traffic
            };
            let mut e = json!({
                "dst_endpoint": endpoint(&b.destination, None),
                "connection_info": {
                    "direction_id": 2, // Outbound
                    "protocol_name": if udp { "udp" } else { "tcp" },
                },
                "actor": actor(envelope.process.as_ref(), pid),
                "action_id": if blocked { 2 } else { 3 },       // Denied, Observed
                "disposition_id": if blocked { 2 } else { 15 }, // Blocked, Detected
                "message": b.sentence(pid, blocked),
                "severity_id": severity_id(b.matched.severity),
                "unmapped": {"probectl": {"block": {
                    "enforced": blocked,
                    "rule": b.matched.rule,
                    "rule_id": b.matched.id,
                    "categories": b.matched.categories,
                    "probed_by": b.matched.probed_by,
                    "reads": b.reads,
                }}},
            });
            if blocked {
                e["status_id"] = 2.into(); // Failure
                e["status"] = "EPERM".into();
            }
            (NETWORK_ACTIVITY, activity, e)
        }
        Body::Probe(p) if p.target_type == TargetType::File => {
            let activity = match p.how.operation() {
                Operation::Open => 14,    // Open
                Operation::Readlink => 2, // Read
                _ => 8,                   // Get Attributes
            };
            let (dir, name) = p.target.rsplit_once('/').unwrap_or(("", &p.target));
            let ok = p.result.is_ok();
            (
                FILE_ACTIVITY,
                activity,
                json!({
                    "file": {"name": name, "path": p.target, "parent_folder": dir, "type_id": 0},
                    "actor": actor(envelope.process.as_ref(), pid),
                    "status_id": if ok { 1 } else { 2 },
                    "status": p.result,
                    "unmapped": {"probectl": {
                        "categories": p.categories,
                        "how": p.how,
                        "evidence": p.evidence,
                        "given_path": p.given_path,
                        "resolved_by": p.resolved_by,
                        "folded": p.folded,
                    }},
                }),
            )
        }
        Body::RuleMatch(m) => {
            let mut e = json!({
                "finding_info": {
                    "uid": envelope.id,
                    "title": format!(
                        "{}: {} probed {} then made a {}",
                        m.matched.rule,
                        m.process,
                        m.matched.categories.join(", "),
                        m.event.as_str()
                    ),
                    "analytic": {"name": m.matched.rule, "uid": m.matched.id, "type_id": 1}, // Rule
                },
                "is_alert": true,
                "actor": actor(envelope.process.as_ref(), pid),
                "unmapped": {"probectl": {"rule_match": m.matched, "names": m.names}},
            });
            if let Some(d) = &m.destination {
                e["evidences"] =
                    json!([{"dst_endpoint": endpoint(d, m.names.first().map(String::as_str))}]);
            }
            e["severity_id"] = severity_id(m.matched.severity).into();
            (DETECTION_FINDING, 1, e) // Create
        }
        Body::FirstBytes(f) => {
            // What the connection's first bytes named: the destination's host name
            // (TLS server name, HTTP Host) and, for HTTP, the URL path. OCSF's `tls`
            // object requires the negotiated version, which the first bytes do not
            // give, so the server name goes in `dst_endpoint.hostname`.
            let host = f
                .tls_server_name
                .as_deref()
                .or_else(|| f.http.as_ref().and_then(|h| h.host.as_deref()));
            let mut e = json!({
                "dst_endpoint": endpoint(&f.destination, host),
                "connection_info": {"direction_id": 2, "protocol_name": "tcp"},
                "actor": actor(envelope.process.as_ref(), pid),
                "status_id": 1,
                "unmapped": {"probectl": {
                    "protocol": f.protocol,
                    "tls_server_name": f.tls_server_name,
                    "http": f.http,
                    "matched_rules": f.matched_rules,
                }},
            });
            if let Some(h) = &f.http {
                let mut url = json!({"path": h.path});
                if let Some(host) = &h.host {
                    url["hostname"] = host.as_str().into();
                }
                e["url"] = url;
            }
            if let Some(rule) = f.matched_rules.first() {
                e["severity_id"] = severity_id(rule.severity).into();
            }
            (NETWORK_ACTIVITY, 6, e) // Traffic
        }
        Body::Loss(l) => {
            let count: u64 = l.losses.iter().map(|x| x.count).sum();
            let sources: Vec<String> = l
                .losses
                .iter()
                .map(|x| format!("{} {}", x.source, x.count))
                .collect();
            (
                APPLICATION_ERROR,
                1, // General Error
                json!({
                    "message": format!("probectl lost {count} records: {}", sources.join(", ")),
                    "count": count,
                    "status": "Failure",
                    "status_id": 2,
                    "severity_id": 3, // Medium: records are missing downstream
                    "unmapped": {"probectl": {"loss": l.losses}},
                }),
            )
        }
        _ => return None,
    };
    let category_uid = class_uid / 1000;
    let o = event.as_object_mut()?;
    o.insert("class_uid".into(), class_uid.into());
    o.insert("category_uid".into(), category_uid.into());
    o.insert("activity_id".into(), activity_id.into());
    o.insert(
        "type_uid".into(),
        (u64::from(class_uid) * 100 + activity_id).into(),
    );
    o.insert("time".into(), envelope.record.header.time.epoch_ms().into());
    o.entry("severity_id").or_insert(1.into()); // Informational
    o.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "uid": envelope.id,
            "sequence": envelope.seq,
            "product": {"name": "probectl", "vendor_name": "probectl", "version": env!("CARGO_PKG_VERSION")},
        }),
    );
    o.insert("device".into(), device(host));
    Some(event)
}

fn endpoint(d: &Destination, domain: Option<&str>) -> Value {
    let mut e = if d.family == Family::Unix {
        json!({"name": d.address})
    } else {
        json!({"ip": d.address, "port": d.port})
    };
    if let Some(domain) = domain {
        e["hostname"] = domain.into();
    }
    e
}

fn actor(cli: Option<&CliIdentity>, pid: u32) -> Value {
    let mut p = json!({"pid": pid});
    if let Some(cli) = cli {
        p["name"] = cli.name.clone().into();
        if !cli.image.argv.is_empty() {
            p["cmd_line"] = cli.image.argv.join(" ").into();
        }
        if !cli.image.exe.is_empty() {
            let name = cli.image.exe.rsplit('/').next().unwrap_or(&cli.image.exe);
            p["file"] = json!({"path": cli.image.exe, "name": name, "type_id": 1}); // Regular File
        }
        if let Some(uid) = cli.uid {
            p["user"] = json!({"uid": uid.to_string()});
        }
        if let Some(cwd) = &cli.image.cwd {
            p["working_directory"] = cwd.clone().into();
        }
        if let Some(parent) = cli.parents.first() {
            p["parent_process"] = json!({"pid": parent.pid, "name": parent.name});
        }
    }
    json!({"process": p})
}

fn device(host: &HostInfo) -> Value {
    let mut d = json!({
        "hostname": host.name,
        "type_id": 0, // Unknown: a workstation or a server, probectl cannot tell
        "os": {"name": host.os_name.clone().unwrap_or_else(|| "Linux".into()), "type_id": 200, "kernel_release": host.kernel},
    });
    if let Some(id) = &host.id {
        d["uid"] = id.clone().into();
    }
    d
}

fn severity_id(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}
