//! Root integration tests of the records written for log shipping: a daemon with a
//! native, an ECS and an OCSF sink watches a real fixture that probes, connects and
//! completes an alert rule; every ECS record is checked against the official ECS
//! field list and every OCSF record against the official class definitions.

mod common;

use common::daemon::Daemon;
use common::schemas::{Ecs, Ocsf};
use common::*;
use serde_json::Value;

const POLICY: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: ship-test}\ncategories:\n  - {name: timezone, env: [TZ], paths: [/etc/localtime]}\n  - {name: proxy, env: [HTTPS_PROXY, https_proxy]}\nrules:\n  - {name: tz-then-connect, id: T-1, probed: {any_of: [timezone]}, within: 1m, severity: high, action: alert}\n";

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn ecs_and_ocsf_records_match_the_official_schemas_and_share_ids() {
    if !bpf_available("ecs_and_ocsf_records_match_the_official_schemas_and_share_ids") {
        return;
    }
    let dir = test_dir("ship-formats");
    let (ecs_path, ocsf_path) = (dir.join("ecs.jsonl"), dir.join("ocsf.jsonl"));
    let _ = std::fs::remove_file(&ecs_path);
    let _ = std::fs::remove_file(&ocsf_path);
    let sinks = format!(
        "  - {{type: jsonl, path: {}, format: ecs}}\n  - {{type: jsonl, path: {}, format: ocsf}}\n",
        ecs_path.display(),
        ocsf_path.display()
    );
    let d = Daemon::start_full("ship-formats", "", &sinks, &[]);
    std::fs::write(d.policy_dir().join("ship.yaml"), POLICY).unwrap();
    let out = d.client().args(["policy", "reload"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");

    let listener = Listener::start();
    let mut cmd = d.client();
    cmd.args(["run", "--json", "--"])
        .arg(c_fixture())
        .args(["probe", &listener.port.to_string()]);
    let run = json_run(cmd);
    assert_eq!(run.code, 0, "{}", run.stderr);
    d.wait_record("the rule match", |r| r["type"] == "rule_match");
    // A plain HTTP request: what its first bytes named reaches the sinks too.
    let mut cmd = d.client();
    cmd.args(["run", "--json", "--", "python3"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/first_bytes.py"))
        .args(["http", &listener.port.to_string()]);
    let http_run = json_run(cmd);
    assert_eq!(http_run.code, 0, "{}", http_run.stderr);
    d.wait_record("the first bytes", |r| r["type"] == "first_bytes");
    let jsonl = d.jsonl.clone();
    let (code, stderr) = d.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, 0, "{stderr}");

    // Native: every record has a UUIDv7 id and consecutive sequence numbers.
    let native = lines(&jsonl);
    assert!(native.len() >= 5, "{native:#?}");
    for pair in native.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_u64(),
            pair[0]["seq"].as_u64().map(|s| s + 1),
            "{pair:#?}"
        );
        assert!(
            pair[0]["id"].as_str().unwrap() < pair[1]["id"].as_str().unwrap(),
            "sorted ids"
        );
    }
    for r in &native {
        let id = r["id"].as_str().unwrap();
        assert_eq!((id.len(), &id[14..15]), (36, "7"), "{r}");
    }
    // Every native record, and every record the run printed (its report included),
    // fits the committed JSON Schema, strictly.
    let schema = common::schemas::NativeSchema::load();
    for r in native.iter().chain(&run.records) {
        let problems = schema.problems(r);
        assert!(problems.is_empty(), "{problems:#?}\nin {r:#}");
    }
    let types: std::collections::BTreeSet<&str> = native
        .iter()
        .chain(&run.records)
        .filter_map(|r| r["type"].as_str())
        .collect();
    for t in [
        "exec",
        "probe",
        "connect",
        "rule_match",
        "exit",
        "report",
        "watching",
    ] {
        assert!(types.contains(t), "no {t} record was checked: {types:?}");
    }

    // ECS: every record valid; the same envelope ids as the native sink.
    let ecs = Ecs::load();
    let ecs_docs = lines(&ecs_path);
    assert_eq!(
        ecs_docs.len(),
        native.len(),
        "ECS has a form for every record"
    );
    for (doc, n) in ecs_docs.iter().zip(&native) {
        let problems = ecs.problems(doc);
        assert!(problems.is_empty(), "{problems:#?}\nin {doc:#}");
        assert_eq!(doc["event"]["id"], n["id"]);
        assert_eq!(doc["event"]["sequence"], n["seq"]);
    }
    let find = |pred: &dyn Fn(&Value) -> bool, what: &str| -> Value {
        ecs_docs
            .iter()
            .find(|d| pred(d))
            .cloned()
            .unwrap_or_else(|| panic!("no ECS {what}: {ecs_docs:#?}"))
    };
    let file = find(&|d| d["file"]["path"] == "/etc/localtime", "file probe");
    assert_eq!(file["probectl"]["probe"]["categories"][0], "timezone");
    assert!(
        file["process"]["executable"]
            .as_str()
            .unwrap()
            .contains("tz_probe"),
        "{file:#}"
    );
    let conn = find(&|d| d["event"]["action"] == "connect", "connection");
    assert_eq!(conn["destination"]["port"], listener.port);
    assert_eq!(conn["network"]["transport"], "tcp");
    assert_eq!(conn["rule"]["name"], "tz-then-connect");
    assert!(
        !conn["probectl"]["probes_before"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let alert = find(&|d| d["event"]["kind"] == "alert", "alert");
    assert_eq!(
        (
            alert["rule"]["id"].as_str(),
            alert["event"]["severity"].as_u64()
        ),
        (Some("T-1"), Some(73))
    );

    let http = find(&|d| d["event"]["action"] == "first_bytes", "first bytes");
    assert_eq!(http["http"]["request"]["method"], "POST", "{http:#}");
    assert_eq!(http["url"]["path"], "/v1/messages");
    assert_eq!(http["url"]["domain"], "relay.example");

    // OCSF: one record per connection, file probe and finding; all valid.
    let ocsf = Ocsf::load();
    let events = lines(&ocsf_path);
    for e in &events {
        let problems = ocsf.problems(e);
        assert!(problems.is_empty(), "{problems:#?}\nin {e:#}");
    }
    let classes: Vec<u64> = events
        .iter()
        .map(|e| e["class_uid"].as_u64().unwrap())
        .collect();
    for class in [4001, 1001, 2004] {
        assert!(
            classes.contains(&class),
            "no OCSF class {class}: {classes:?}"
        );
    }
    // Every gap in the OCSF sink's sequence is explained by a loss record: the records
    // OCSF has no class for (execs, exits, env lookups...) are counted there, under
    // `sink:<name>:not_encodable`, and loss records are OCSF events (Application Error).
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["metadata"]["sequence"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let own = format!("sink:file:ocsf:{}:", ocsf_path.display());
    let explained: u64 = events
        .iter()
        .filter(|e| e["class_uid"] == 6008)
        .flat_map(|e| {
            e["unmapped"]["probectl"]["loss"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|l| l["source"].as_str().unwrap().starts_with(&own))
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    let missing = (native.len() - events.len()) as u64;
    assert!(missing > 0, "execs and exits have no OCSF class");
    assert_eq!(
        explained, missing,
        "the OCSF sink's loss records explain each of the {missing} numbers it lacks"
    );
    assert_eq!(
        events.last().unwrap()["class_uid"],
        6008,
        "the last record is the loss record made at shutdown"
    );
    let net = events.iter().find(|e| e["class_uid"] == 4001).unwrap();
    assert_eq!(net["dst_endpoint"]["port"], listener.port);
    assert_eq!(
        net["actor"]["process"]["file"]["path"],
        conn["process"]["executable"]
    );
    assert!(
        ids_of(&native).contains(&net["metadata"]["uid"]),
        "shared envelope id"
    );
    let traffic = events
        .iter()
        .find(|e| e["class_uid"] == 4001 && e["url"]["path"] == "/v1/messages")
        .unwrap_or_else(|| panic!("the HTTP request as Network Activity: {events:#?}"));
    assert_eq!(traffic["dst_endpoint"]["hostname"], "relay.example");
}

fn ids_of(records: &[Value]) -> Vec<Value> {
    records.iter().map(|r| r["id"].clone()).collect()
}

/// The checks above can fail: each kind of mistake is caught.
#[test]
fn the_schema_checks_catch_each_kind_of_mistake() {
    let ecs = Ecs::load();
    let good = serde_json::json!({
        "@timestamp": "2026-11-25T00:00:00Z",
        "ecs": {"version": "9.4.0"},
        "event": {"kind": "event", "category": ["file"], "type": ["access"]},
        "file": {"path": "/etc/localtime"},
        "probectl": {"anything": [1, {"goes": true}]},
    });
    assert_eq!(ecs.problems(&good), Vec::<String>::new());
    let mut bad = good.clone();
    bad["file"]["colour"] = "blue".into();
    bad["file"]["path"] = 7.into();
    bad["event"]["type"] = serde_json::json!(["start"]);
    bad["event"]["kind"] = "gossip".into();
    bad.as_object_mut().unwrap().remove("ecs");
    let problems = ecs.problems(&bad).join("\n");
    for expected in [
        "file.colour is not an ECS field",
        "file.path: 7 is not an ECS keyword",
        "event.type \"start\" is not expected with event.category \"file\"",
        "event.kind: \"gossip\" is not one of ECS's allowed values",
        "required field ecs.version is missing",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in:\n{problems}"
        );
    }

    let ocsf = Ocsf::load();
    let event = serde_json::json!({
        "class_uid": 4001, "category_uid": 4, "activity_id": 1, "type_uid": 400101,
        "time": 1, "severity_id": 1,
        "metadata": {"version": "1.8.0", "product": {"name": "probectl"}},
        "dst_endpoint": {"ip": "192.0.2.1", "port": 443},
    });
    assert_eq!(ocsf.problems(&event), Vec::<String>::new());
    let mut bad = event.clone();
    bad.as_object_mut().unwrap().remove("time");
    bad["dst_endpoint"]["port"] = "https".into();
    bad["activity_id"] = 42.into();
    bad["vibes"] = "good".into();
    bad["metadata"]["product"] = serde_json::json!({"vendor_name": "x"});
    let problems = ocsf.problems(&bad).join("\n");
    for expected in [
        "network_activity.time is required",
        "network_activity.dst_endpoint.port: \"https\" is not an OCSF port_t",
        "network_activity.activity_id: 42 is not in its enum",
        "network_activity.vibes is not an attribute",
        "network_activity.metadata.product: needs at least one of",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in:\n{problems}"
        );
    }
    assert!(
        !ocsf
            .problems(&serde_json::json!({"class_uid": 9999}))
            .is_empty()
    );
}

/// Loss records are valid ECS (`event.kind: metric`) and OCSF (Application Error).
#[test]
fn a_loss_record_is_valid_ecs_and_ocsf() {
    use probe_user::output::Format;
    use probe_user::records::{Body, LossCount, LossRecord, Record};
    use probe_user::ship::{Envelope, encode, host::HostInfo};
    let envelope = Envelope {
        id: "01a210a7-992d-7000-a6ce-f48646ab2628".into(),
        seq: 9,
        record: Record::now(Body::Loss(LossRecord {
            losses: vec![LossCount {
                source: "sink:syslog:tcp:ecs:127.0.0.1:514:queue_full".into(),
                count: 3,
                total: 5,
            }],
        })),
        process: None,
    };
    let doc = encode(Format::Ecs, &envelope, &HostInfo::read()).expect("an ECS form");
    assert_eq!(doc["event"]["kind"], "metric");
    assert_eq!(doc["probectl"]["loss"][0]["count"], 3);
    let problems = Ecs::load().problems(&doc);
    assert!(problems.is_empty(), "{problems:#?}\n{doc:#}");
    let event = encode(Format::Ocsf, &envelope, &HostInfo::read()).expect("an OCSF form");
    assert_eq!(
        (event["class_uid"].as_u64(), event["count"].as_u64()),
        (Some(6008), Some(3))
    );
    assert_eq!(event["metadata"]["sequence"], 9);
    let problems = Ocsf::load().problems(&event);
    assert!(problems.is_empty(), "{problems:#?}\n{event:#}");
}

/// journald's native protocol, parsed as journald would: `NAME=value\n`, or `NAME\n`,
/// a 64-bit little-endian length, the value and `\n`.
fn journal_fields(datagram: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .expect("a field ends with a newline");
        let line = &rest[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            rest = &rest[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = &rest[nl + 9..nl + 9 + len];
            assert_eq!(
                rest[nl + 9 + len],
                b'\n',
                "binary field {name} ends with a newline"
            );
            out.insert(name, String::from_utf8_lossy(value).into_owned());
            rest = &rest[nl + 10 + len..];
        }
    }
    out
}

#[test]
fn the_journald_sink_speaks_the_native_protocol_with_structured_fields() {
    if !bpf_available("the_journald_sink_speaks_the_native_protocol_with_structured_fields") {
        return;
    }
    let dir = test_dir("ship-journald");
    let socket = dir.join("journal.sock");
    let _ = std::fs::remove_file(&socket);
    // Standing in for systemd-journald: a datagram socket at the configured path.
    let journal = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    journal.set_read_timeout(Some(DEADLINE)).unwrap();
    let sinks = format!("  - {{type: journald, socket: {}}}\n", socket.display());
    let d = Daemon::start_full("ship-journald", "", &sinks, &[]);
    let mut cmd = d.client();
    cmd.args(["run", "--json", "--", "cat", "/etc/timezone"]);
    assert_eq!(json_run(cmd).code, 0);
    let mut buf = vec![0u8; 1 << 20];
    let probe = loop {
        let n = journal.recv(&mut buf).expect("a datagram from the daemon");
        let fields = journal_fields(&buf[..n]);
        if fields.get("PROBECTL_TYPE").map(String::as_str) == Some("probe") {
            break fields;
        }
    };
    assert_eq!(probe["SYSLOG_IDENTIFIER"], "probectl");
    assert_eq!(probe["PRIORITY"], "6");
    assert_eq!(probe["PROBECTL_TARGET"], "/etc/timezone");
    assert_eq!(probe["PROBECTL_CATEGORIES"], "timezone");
    assert!(probe["MESSAGE"].contains("/etc/timezone"), "{probe:#?}");
    let record: Value = serde_json::from_str(&probe["PROBECTL_RECORD"]).unwrap();
    assert_eq!(record["target"], "/etc/timezone");
    let native = d.wait_record("the same probe in the native sink", |r| {
        r["type"] == "probe" && r["target"] == "/etc/timezone"
    });
    assert_eq!(
        probe["PROBECTL_ID"],
        native["id"].as_str().unwrap(),
        "one envelope"
    );
    assert_eq!(probe["PROBECTL_PID"], native["pid"].to_string());
}

#[test]
fn identical_repeats_of_one_tree_are_summarised_at_the_sinks_with_a_count() {
    if !bpf_available("identical_repeats_of_one_tree_are_summarised_at_the_sinks_with_a_count") {
        return;
    }
    let d = Daemon::start("ship-repeats", "repeats: {keep: 2, window: 1s}\n");
    let mut cmd = d.client();
    cmd.args([
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do cat /etc/timezone >/dev/null; done",
    ]);
    let run = json_run(cmd);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The run (a subscriber) saw every probe...
    let seen = run
        .of_type("probe")
        .iter()
        .filter(|p| p["target"] == "/etc/timezone")
        .count();
    assert_eq!(seen, 10, "{:#?}", run.of_type("probe"));
    // ...the sink two, and a count of the other eight.
    let summary = d.wait_record("the repeated summary", |r| {
        r["type"] == "repeated" && r["record_type"] == "probe"
    });
    assert_eq!(summary["count"], 8, "{summary:#}");
    assert!(
        summary["like"].as_str().unwrap().contains("/etc/timezone"),
        "{summary:#}"
    );
    let written = d
        .records()
        .iter()
        .filter(|r| r["type"] == "probe" && r["target"] == "/etc/timezone")
        .count();
    assert_eq!(written, 2);
    // Its ECS form is valid too.
    let now = probe_user::time::Stamp::now();
    let repeated = probe_user::records::RepeatedRecord {
        record_type: probe_user::records::Kind::Probe,
        like: summary["like"].as_str().unwrap().into(),
        count: 8,
        first_time: now,
        last_time: now,
        window_ms: 1000,
    };
    let mut record =
        probe_user::records::Record::now(probe_user::records::Body::Repeated(repeated));
    record.header.tree = Some(summary["tree"].as_u64().unwrap() as u32);
    let envelope = probe_user::ship::Envelope {
        id: summary["id"].as_str().unwrap().into(),
        seq: summary["seq"].as_u64().unwrap(),
        record,
        process: None,
    };
    let doc = probe_user::ship::encode(
        probe_user::output::Format::Ecs,
        &envelope,
        &probe_user::ship::host::HostInfo::read(),
    )
    .unwrap();
    let problems = Ecs::load().problems(&doc);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// docs/schema/probectl-record.schema.json is what the code defines (regenerate it
/// with `PROBECTL_BLESS=1 cargo test -p probe-user --test ship json_schema`).
#[test]
fn the_committed_json_schema_is_the_one_the_code_generates() {
    let generated =
        serde_json::to_string_pretty(&probe_user::ship::native_schema()).unwrap() + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/schema/probectl-record.schema.json"
    );
    if std::env::var_os("PROBECTL_BLESS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/schema/probectl-record.schema.json is out of date with the code: run `PROBECTL_BLESS=1 cargo test -p probe-user --test ship json_schema` and commit it"
    );
    // And it is strict: an unknown field, a wrong type and a missing field are caught.
    let schema = common::schemas::NativeSchema::load();
    let good = serde_json::json!({"type": "exit", "time": "t", "offset_ms": 1.5, "pid": 7, "exit_code": 0});
    assert_eq!(schema.problems(&good), Vec::<String>::new());
    let bad = serde_json::json!({"type": "exit", "time": "t", "offset_ms": "soon", "exit_code": 0, "colour": 1});
    let problems = schema.problems(&bad).join("\n");
    assert!(problems.contains("colour"), "{problems}");
}
