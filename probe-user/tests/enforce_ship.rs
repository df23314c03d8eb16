//! Root integration tests of the `blocked` and `would_block` records at the sinks:
//! a daemon that enforces (or only observes) a block rule writes them as valid ECS
//! (`event.type: denied` / `allowed`) and valid OCSF Network Activity with the
//! security-control disposition (Blocked / Detected).

mod common;

use std::path::Path;

use common::daemon::Daemon;
use common::schemas::{Ecs, Ocsf};
use common::*;
use serde_json::Value;

const POLICY: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: block-ship}\ncategories:\n  - {name: timezone, env: [TZ], paths: [/etc/localtime]}\n  - {name: api-relay, env: [ANTHROPIC_BASE_URL]}\nrules:\n  - name: read-then-phone-home\n    id: BLOCK-1\n    probed: {all_of: [timezone, api-relay]}\n    then: [connect, udp_send]\n    destination: {except: {cidr: [127.0.0.1/32]}}\n    within: 30s\n    severity: high\n    action: block\n";

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A daemon (`enforce` as given) with ECS and OCSF sinks runs the Node fixture, which
/// reads TZ and ANTHROPIC_BASE_URL and connects to 127.0.0.2; returns the ECS and
/// OCSF forms of the record of type `ty`, and the fixture's exit code.
fn shipped(name: &str, enforce: bool, ty: &str) -> (Value, Value, i32) {
    let dir = test_dir(name);
    let (ecs_path, ocsf_path) = (dir.join("ecs.jsonl"), dir.join("ocsf.jsonl"));
    let _ = std::fs::remove_file(&ecs_path);
    let _ = std::fs::remove_file(&ocsf_path);
    let sinks = format!(
        "  - {{type: jsonl, path: {}, format: ecs}}\n  - {{type: jsonl, path: {}, format: ocsf}}\n",
        ecs_path.display(),
        ocsf_path.display()
    );
    let d = Daemon::start_full(name, &format!("enforce: {enforce}\n"), &sinks, &[]);
    std::fs::write(d.policy_dir().join("block.yaml"), POLICY).unwrap();
    let out = d.client().args(["policy", "reload"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let listener = Listener::start_on("127.0.0.2:0");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node_block.js");
    let mut cmd = d.client();
    cmd.args(["run", "--json", "--", "node"])
        .arg(&fixture)
        .args(["read-connect", "127.0.0.2", &listener.port.to_string()]);
    let run = json_run(cmd);
    d.wait_record(ty, |r| r["type"] == ty);
    // `probectl status` says whether the daemon enforces and which rules block.
    let out = d.client().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Enforcement: "))
        .unwrap_or_else(|| panic!("no Enforcement line in status:\n{text}"));
    let expected = if enforce {
        "Enforcement: ON:"
    } else {
        "Enforcement: off (observe):"
    };
    assert!(
        line.starts_with(expected) && line.contains("read-then-phone-home (BLOCK-1)"),
        "{line}"
    );
    let (code, stderr) = d.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, 0, "{stderr}");
    let ecs = Ecs::load();
    let ecs_doc = lines(&ecs_path)
        .into_iter()
        .find(|d| d["event"]["action"] == ty)
        .unwrap_or_else(|| panic!("no ECS {ty}"));
    let problems = ecs.problems(&ecs_doc);
    assert!(problems.is_empty(), "{problems:#?}\nin {ecs_doc:#}");
    let ocsf = Ocsf::load();
    let ocsf_doc = lines(&ocsf_path)
        .into_iter()
        .find(|e| e["unmapped"]["probectl"]["block"].is_object())
        .unwrap_or_else(|| panic!("no OCSF {ty}"));
    let problems = ocsf.problems(&ocsf_doc);
    assert!(problems.is_empty(), "{problems:#?}\nin {ocsf_doc:#}");
    (ecs_doc, ocsf_doc, run.code)
}

#[test]
fn a_blocked_call_is_denied_in_ecs_and_blocked_in_ocsf() {
    if !bpf_available("a_blocked_call_is_denied_in_ecs_and_blocked_in_ocsf") {
        return;
    }
    let (ecs, ocsf, code) = shipped("ship-blocked", true, "blocked");
    assert_eq!(code, 13, "the fixture's connect got EPERM");
    assert_eq!(ecs["event"]["kind"], "alert", "{ecs:#}");
    assert_eq!(
        ecs["event"]["type"],
        serde_json::json!(["connection", "denied"])
    );
    assert_eq!(ecs["event"]["outcome"], "failure");
    assert_eq!(ecs["rule"]["id"], "BLOCK-1");
    assert_eq!(ecs["destination"]["ip"], "127.0.0.2");
    assert_eq!(ecs["network"]["transport"], "tcp");
    assert_eq!(ecs["probectl"]["block"]["enforced"], true);
    let reason = ecs["event"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("node") && reason.contains("127.0.0.2"),
        "{reason}"
    );
    assert_eq!(
        (ocsf["class_uid"].as_u64(), ocsf["activity_id"].as_u64()),
        (Some(4001), Some(5)),
        "Network Activity, Refuse: {ocsf:#}"
    );
    assert_eq!(
        (ocsf["action_id"].as_u64(), ocsf["disposition_id"].as_u64()),
        (Some(2), Some(2)),
        "Denied, Blocked"
    );
    assert_eq!(ocsf["severity_id"], 4, "high");
    assert_eq!(ocsf["dst_endpoint"]["ip"], "127.0.0.2");
    let reads = ocsf["unmapped"]["probectl"]["block"]["reads"]
        .as_array()
        .unwrap();
    assert_eq!(reads.len(), 2, "{ocsf:#}");
}

#[test]
fn a_would_block_call_is_allowed_in_ecs_and_detected_in_ocsf() {
    if !bpf_available("a_would_block_call_is_allowed_in_ecs_and_detected_in_ocsf") {
        return;
    }
    let (ecs, ocsf, code) = shipped("ship-would-block", false, "would_block");
    assert_eq!(code, 0, "observe mode lets the connect through");
    assert_eq!(
        ecs["event"]["type"],
        serde_json::json!(["connection", "allowed"])
    );
    assert_eq!(ecs["event"]["outcome"], "success");
    assert_eq!(ecs["probectl"]["block"]["enforced"], false);
    assert_eq!(
        (
            ocsf["activity_id"].as_u64(),
            ocsf["action_id"].as_u64(),
            ocsf["disposition_id"].as_u64()
        ),
        (Some(1), Some(3), Some(15)),
        "Open, Observed, Detected: {ocsf:#}"
    );
}
