//! Elastic Common Schema (ECS 9.4) records. Standard fields where ECS has them
//! (`@timestamp`, `event.*`, `host.*`, `process.*` with `process.parent.*`,
//! `file.*`, `destination.*`, `network.*`, `dns.*`, `rule.*`); everything specific to
//! probectl under one custom namespace, `probectl.*` (probe category, how a probe was
//! seen, the probes before a connection, the lineage). The test
//! `ecs_records_match_the_official_field_list` checks every field against ECS's own
//! definitions (tests/data/schemas).

use serde_json::{Map, Value, json};

use super::Envelope;
use super::host::HostInfo;
use crate::policy::rules::{NetworkEvent, Severity};
use crate::records::{Body, CliIdentity, Destination, Family, TargetType, TcpOutcome};

/// The ECS version the records follow (and the tests check against).
pub const ECS_VERSION: &str = "9.4.0";

pub fn encode(envelope: &Envelope, host: &HostInfo) -> Option<Value> {
    let mut doc = Map::new();
    let header = &envelope.record.header;
    let pid = header.pid.unwrap_or(0);
    doc.insert("@timestamp".into(), header.time.rfc3339().into());
    doc.insert("ecs".into(), json!({"version": ECS_VERSION}));
    doc.insert(
        "agent".into(),
        json!({"type": "probectl", "name": host.name, "version": env!("CARGO_PKG_VERSION")}),
    );
    doc.insert("host".into(), host_fields(host));
    let mut event = json!({
        "id": envelope.id,
        "sequence": envelope.seq,
        "module": "probectl",
        "kind": "event",
    });
    let mut probectl = Map::new();
    match &envelope.record.body {
        Body::Exec(e) => {
            set_event(
                &mut event,
                "exec",
                &["process"],
                &["start"],
                Some("success"),
            );
            doc.insert(
                "process".into(),
                process_fields(envelope.process.as_ref(), pid),
            );
            if let Some(why) = &e.selected_by {
                probectl.insert("selected_by".into(), why.clone().into());
            }
        }
        Body::Exit(e) => {
            set_event(&mut event, "exit", &["process"], &["end"], None);
            let mut p = process_fields(envelope.process.as_ref(), pid);
            if let Some(code) = e.exit_code {
                p["exit_code"] = code.into();
            }
            doc.insert("process".into(), p);
        }
        Body::Probe(p) => {
            let ok = p.result.is_ok();
            let outcome = if ok { "success" } else { "failure" };
            match p.target_type {
                TargetType::File => {
                    set_event(
                        &mut event,
                        p.how.name(),
                        &["file"],
                        &["access"],
                        Some(outcome),
                    );
                    let (dir, name) = p.target.rsplit_once('/').unwrap_or(("", &p.target));
                    doc.insert(
                        "file".into(),
                        json!({"path": p.target, "name": name, "directory": dir}),
                    );
                }
                TargetType::Env => {
                    set_event(
                        &mut event,
                        p.how.name(),
                        &["process"],
                        &["access"],
                        Some(outcome),
                    );
                }
                TargetType::Host => {
                    // The request was seen, not its answer.
                    set_event(
                        &mut event,
                        p.how.name(),
                        &["host"],
                        &["info"],
                        Some("unknown"),
                    );
                }
            }
            doc.insert(
                "process".into(),
                process_fields(envelope.process.as_ref(), pid),
            );
            let mut probe = json!({
                "categories": p.categories,
                "target_type": p.target_type,
                "target": p.target,
                "how": p.how,
                "evidence": p.evidence,
                "result": p.result,
            });
            for (k, v) in [
                ("given_path", p.given_path.clone().map(Value::from)),
                ("resolved_by", p.resolved_by.map(|r| json!(r))),
                ("value_prefix", p.value_prefix.clone().map(Value::from)),
                ("folded", p.folded.then_some(Value::Bool(true))),
                ("truncated", p.truncated.then_some(Value::Bool(true))),
            ] {
                if let Some(v) = v {
                    probe[k] = v;
                }
            }
            probectl.insert("probe".into(), probe);
        }
        Body::Connect(c) => {
            let outcome = if c.result.is_failure() {
                "failure"
            } else {
                "success"
            };
            set_event(
                &mut event,
                "connect",
                &["network"],
                &["connection", "start"],
                Some(outcome),
            );
            destination_fields(&mut doc, &c.destination, c.domain.as_deref());
            if c.destination.family != Family::Unix
                && let Some(Value::Object(network)) = doc.get_mut("network")
            {
                let transport = if c.event == NetworkEvent::UdpSend {
                    "udp"
                } else {
                    "tcp"
                };
                network.insert("transport".into(), transport.into());
            }
            doc.insert("process".into(), process_fields(Some(&c.cli), pid));
            if let Some(first) = c.matched_rules.first() {
                doc.insert("rule".into(), json!({"name": first.rule, "id": first.id}));
                event["severity"] = severity(first.severity).into();
            }
            probectl.insert(
                "connection".into(),
                json!({
                    "seen_at": c.seen_at,
                    "result": c.result,
                    "outcome": c.outcome,
                    "domain_source": c.domain_source,
                }),
            );
            first_bytes_fields(&mut doc, c.tls_server_name.as_deref(), c.http.as_ref());
            probectl.insert("probes_before".into(), json!(c.probes_before));
            if let Some(b) = &c.bypassed {
                probectl.insert("bypassed".into(), json!(b));
            }
            probectl.insert("matched_rules".into(), json!(c.matched_rules));
            probectl.insert("lineage".into(), json!(c.lineage));
        }
        Body::ConnectOutcome(o) => {
            let outcome = if o.outcome == TcpOutcome::Established {
                "success"
            } else {
                "failure"
            };
            set_event(
                &mut event,
                "connect_outcome",
                &["network"],
                &["connection"],
                Some(outcome),
            );
            destination_fields(&mut doc, &o.destination, None);
            doc.insert(
                "process".into(),
                process_fields(envelope.process.as_ref(), pid),
            );
            probectl.insert("ms_after_connect".into(), o.ms_after_connect.into());
        }
        Body::DnsQuery(q) => {
            set_event(&mut event, "dns_query", &["network"], &["protocol"], None);
            let mut dns = json!({"type": "question"});
            if let Some(name) = q.names.first() {
                dns["question"] =
                    json!({"name": name, "type": q.types.first().map(|t| dns_type(t))});
            }
            doc.insert("dns".into(), dns);
            doc.insert(
                "network".into(),
                json!({"protocol": "dns", "transport": "udp"}),
            );
            if let Some(server) = &q.server {
                destination_fields(&mut doc, server, None);
            }
            doc.insert(
                "process".into(),
                process_fields(envelope.process.as_ref(), pid),
            );
            probectl.insert("dns_names".into(), json!(q.names));
            if let Some(first) = q.matched_rules.first() {
                doc.insert("rule".into(), json!({"name": first.rule, "id": first.id}));
                event["severity"] = severity(first.severity).into();
            }
        }
        Body::FirstBytes(f) => {
            set_event(&mut event, "first_bytes", &["network"], &["protocol"], None);
            destination_fields(&mut doc, &f.destination, None);
            first_bytes_fields(&mut doc, f.tls_server_name.as_deref(), f.http.as_ref());
            doc.insert(
                "process".into(),
                process_fields(envelope.process.as_ref(), pid),
            );
            if let Some(first) = f.matched_rules.first() {
                doc.insert("rule".into(), json!({"name": first.rule, "id": first.id}));
                event["severity"] = severity(first.severity).into();
            }
            probectl.insert("ms_after_connect".into(), json!(f.ms_after_connect));
            probectl.insert("matched_rules".into(), json!(f.matched_rules));
        }
        Body::DnsAnswer(a) => {
            set_event(&mut event, "dns_answer", &["network"], &["protocol"], None);
            doc.insert(
                "dns".into(),
                json!({"type": "answer", "question": {"name": a.name}, "resolved_ip": a.addresses}),
            );
            doc.insert(
                "process".into(),
                process_fields(envelope.process.as_ref(), pid),
            );
        }
        // A block rule held at a call: `denied` when the kernel refused it, `allowed`
        // (observe mode: "would block") when it let it through. An alert either way.
        Body::Blocked(b) | Body::WouldBlock(b) => {
            let blocked = matches!(envelope.record.body, Body::Blocked(_));
            event["kind"] = "alert".into();
            set_event(
                &mut event,
                if blocked { "blocked" } else { "would_block" },
                &["network"],
                &["connection", if blocked { "denied" } else { "allowed" }],
                Some(if blocked { "failure" } else { "success" }),
            );
            event["severity"] = severity(b.matched.severity).into();
            event["reason"] = b.sentence(pid, blocked).into();
            doc.insert(
                "rule".into(),
                json!({"name": b.matched.rule, "id": b.matched.id, "ruleset": "probectl"}),
            );
            destination_fields(&mut doc, &b.destination, None);
            let transport = match b.event {
                crate::policy::rules::NetworkEvent::Connect => "tcp",
                _ => "udp",
            };
            doc.insert(
                "network".into(),
                json!({"direction": "egress", "transport": transport}),
            );
            doc.insert(
                "process".into(),
                process_fields(envelope.process.as_ref(), pid),
            );
            probectl.insert(
                "block".into(),
                json!({
                    "enforced": blocked,
                    "rule": b.matched.rule,
                    "categories": b.matched.categories,
                    "probed_by": b.matched.probed_by,
                    "reads": b.reads,
                }),
            );
        }
        Body::RuleMatch(m) => {
            event["kind"] = "alert".into();
            set_event(
                &mut event,
                "rule_match",
                &["intrusion_detection"],
                &["info"],
                None,
            );
            event["severity"] = severity(m.matched.severity).into();
            event["reason"] = format!(
                "{} probed {} then made a {}",
                m.process,
                m.matched.categories.join(", "),
                m.event.as_str()
            )
            .into();
            doc.insert(
                "rule".into(),
                json!({"name": m.matched.rule, "id": m.matched.id, "ruleset": "probectl"}),
            );
            if let Some(d) = &m.destination {
                destination_fields(&mut doc, d, m.names.first().map(String::as_str));
            }
            doc.insert(
                "process".into(),
                process_fields(envelope.process.as_ref(), pid),
            );
            probectl.insert("rule_match".into(), json!(m.matched));
        }
        Body::PolicyReload(r) => {
            set_event(
                &mut event,
                "policy_reload",
                &["configuration"],
                &["change"],
                Some(if r.ok { "success" } else { "failure" }),
            );
            if let Some(err) = &r.error {
                doc.insert("error".into(), json!({"message": err}));
            }
            probectl.insert(
                "policy".into(),
                json!({"name": r.policy, "source": r.source}),
            );
        }
        Body::Sensor(s) => {
            event["kind"] = "state".into();
            set_event(
                &mut event,
                "sensor_attach",
                &["configuration"],
                &["change"],
                Some(if s.attached { "success" } else { "failure" }),
            );
            probectl.insert("sensor".into(), json!(s));
        }
        Body::Loss(l) => {
            event["kind"] = "metric".into();
            event["action"] = "loss".into();
            event["dataset"] = "probectl.loss".into();
            event["outcome"] = "failure".into();
            probectl.insert("loss".into(), json!(l.losses));
        }
        Body::Repeated(r) => {
            event["action"] = "repeated".into();
            event["dataset"] = "probectl.repeated".into();
            event["outcome"] = "unknown".into();
            let mut repeated = json!(r);
            repeated["tree"] = header.tree.unwrap_or(0).into();
            probectl.insert("repeated".into(), repeated);
        }
        Body::Watching(_) | Body::Report(_) => return None,
    }
    doc.insert("event".into(), event);
    if !probectl.is_empty() {
        doc.insert("probectl".into(), Value::Object(probectl));
    }
    Some(Value::Object(doc))
}

fn set_event(
    event: &mut Value,
    action: &str,
    category: &[&str],
    ty: &[&str],
    outcome: Option<&str>,
) {
    event["action"] = action.into();
    event["category"] = json!(category);
    event["type"] = json!(ty);
    event["dataset"] = format!("probectl.{}", category[0]).into();
    event["outcome"] = outcome.unwrap_or("unknown").into();
}

fn host_fields(host: &HostInfo) -> Value {
    let mut h = json!({
        "name": host.name,
        "hostname": host.name,
        "architecture": host.architecture,
        "os": {"type": "linux", "kernel": host.kernel},
    });
    if let Some(id) = &host.id {
        h["id"] = id.clone().into();
    }
    if let Some(name) = &host.os_name {
        h["os"]["full"] = name.clone().into();
    }
    h
}

fn process_fields(cli: Option<&CliIdentity>, pid: u32) -> Value {
    let mut p = json!({"pid": pid});
    let Some(cli) = cli else {
        return p;
    };
    p["name"] = cli.name.clone().into();
    if !cli.image.exe.is_empty() {
        p["executable"] = cli.image.exe.clone().into();
    }
    if !cli.image.argv.is_empty() {
        p["args"] = json!(cli.image.argv);
        p["args_count"] = cli.image.argv.len().into();
        p["command_line"] = cli.image.argv.join(" ").into();
    }
    if let Some(cwd) = &cli.image.cwd {
        p["working_directory"] = cwd.clone().into();
    }
    if let Some(uid) = cli.uid {
        p["user"] = json!({"id": uid.to_string()});
    }
    if let Some(parent) = cli.parents.first() {
        p["parent"] = json!({"pid": parent.pid, "name": parent.name});
    }
    p
}

fn destination_fields(doc: &mut Map<String, Value>, d: &Destination, domain: Option<&str>) {
    let mut dest = json!({"address": d.address});
    let mut network = json!({"direction": "egress"});
    if d.family == Family::Unix {
        network["type"] = "unix".into();
    } else {
        dest["ip"] = d.address.clone().into();
        dest["port"] = d.port.into();
        network["type"] = d.family.name().into();
    }
    if let Some(domain) = domain {
        dest["domain"] = domain.into();
    }
    doc.insert("destination".into(), dest);
    match doc.get_mut("network") {
        Some(Value::Object(n)) => {
            for (k, v) in network.as_object().into_iter().flatten() {
                n.entry(k.clone()).or_insert(v.clone());
            }
        }
        _ => {
            doc.insert("network".into(), network);
        }
    }
}

/// `TYPE(A)` -> `A`.
fn dns_type(t: &str) -> &str {
    t.strip_prefix("TYPE(")
        .and_then(|x| x.strip_suffix(')'))
        .unwrap_or(t)
}

/// ECS `event.severity` (0-100; the values Elastic's detection rules use).
fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 21,
        Severity::Medium => 47,
        Severity::High => 73,
        Severity::Critical => 99,
    }
}

/// ECS `tls.client.server_name`, `http.request.method`, `url.domain` and `url.path`
/// from what a connection's first bytes named.
fn first_bytes_fields(
    doc: &mut serde_json::Map<String, Value>,
    tls_server_name: Option<&str>,
    http: Option<&crate::records::HttpRequestLine>,
) {
    if let Some(name) = tls_server_name {
        doc.insert("tls".into(), json!({"client": {"server_name": name}}));
    }
    if let Some(h) = http {
        doc.insert("http".into(), json!({"request": {"method": h.method}}));
        let mut url = json!({"path": h.path});
        if let Some(host) = &h.host {
            url["domain"] = host.as_str().into();
        }
        doc.insert("url".into(), url);
    }
}
