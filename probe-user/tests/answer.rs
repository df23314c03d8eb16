//! Root integration tests of the answer a user reads (issue: evidence by kind,
//! attribution, proxy bypass, a report that fits a screen), with real programs:
//! Python reading through libc's getenv, curl, a chatty Node CLI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/answer.py")
}

/// The default policy plus `rule` (YAML of one list item, indented two spaces).
fn policy_with(dir: &Path, rule: &str) -> PathBuf {
    default_policy_plus(dir, rule)
}

/// `probectl run --json --policy P -- env NAME=VALUE... python3 answer.py ARGS`.
fn run_python(policy: &Path, env: &[(&str, &str)], args: &[&str]) -> JsonRun {
    let mut cmd = probectl_command();
    cmd.arg("run")
        .arg("--json")
        .arg("--policy")
        .arg(policy)
        .arg("--")
        .arg("env");
    for (k, v) in env {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.arg("python3").arg(fixture()).args(args);
    let run = json_run(cmd);
    assert_eq!(run.code, 0, "the fixture ran; stderr:\n{}", run.stderr);
    run
}

/// The pid of the fixture's python3 (its exec record).
fn python_pid(run: &JsonRun) -> u64 {
    run.of_type("exec")
        .into_iter()
        .find(|e| e["argv"][0] == "python3")
        .and_then(|e| e["pid"].as_u64())
        .unwrap_or_else(|| panic!("no exec of python3; stderr:\n{}", run.stderr))
}

fn connects_to(run: &JsonRun, port: u16) -> Vec<&Value> {
    run.of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == port)
        .collect()
}

const RELAY_RULE: &str = "  - name: relay-then-call\n    probed: {all_of: [timezone, api-relay]}\n    then: [connect]\n    destination: {cidr: [127.0.0.0/8]}\n    within: 60s\n    severity: high\n    action: alert\n";

#[test]
fn an_exported_variable_never_read_fires_no_rule_and_a_read_one_does() {
    if !bpf_available("an_exported_variable_never_read_fires_no_rule_and_a_read_one_does") {
        return;
    }
    let dir = test_dir("answer-evidence");
    let policy = policy_with(&dir, RELAY_RULE);
    let env = [
        ("TZ", "Asia/Shanghai"),
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/"),
    ];

    // Exported, never read: exposed, and the rule (read by default) stays quiet.
    let listener = Listener::start();
    let port = listener.port.to_string();
    let quiet = run_python(&policy, &env, &["noread", &port]);
    let exposed: Vec<&Value> = quiet
        .of_type("probe")
        .into_iter()
        .filter(|p| p["target"] == "ANTHROPIC_BASE_URL")
        .collect();
    assert!(!exposed.is_empty(), "the exposure is still reported");
    assert!(
        exposed.iter().all(|p| p["evidence"] == "exposed"),
        "{exposed:#?}"
    );
    let conns = connects_to(&quiet, listener.port);
    assert_eq!(conns.len(), 1, "{conns:#?}");
    assert_eq!(
        conns[0]["matched_rules"],
        serde_json::json!([]),
        "{:#}",
        conns[0]
    );
    assert!(quiet.of_type("rule_match").is_empty());
    let python = quiet.report()["clis"]
        .as_array()
        .expect("clis")
        .iter()
        .find(|c| c["name"] == "python3")
        .cloned()
        .expect("python3 in the report's CLIs");
    // (Python's start reads TZ itself, through tzset: that one is a read.)
    assert!(
        !python["categories"]
            .as_array()
            .expect("categories")
            .contains(&Value::from("api-relay")),
        "{python:#}"
    );
    assert!(
        python["exposed"]
            .as_array()
            .expect("exposed")
            .contains(&Value::from("api-relay")),
        "{python:#}"
    );

    // Read with getenv: read, and the rule fires, with the value shown.
    let read = run_python(&policy, &env, &["read", &port]);
    let pid = python_pid(&read);
    let p = read.probe(pid, &["getenv"], "ANTHROPIC_BASE_URL");
    assert_eq!(p["evidence"], "read", "{p:#}");
    let conns = connects_to(&read, listener.port);
    assert!(
        conns[0]["matched_rules"]
            .as_array()
            .expect("matched_rules")
            .iter()
            .any(|m| m["rule"] == "relay-then-call"),
        "{:#}",
        conns[0]
    );
    let python = read.report()["clis"]
        .as_array()
        .expect("clis")
        .iter()
        .find(|c| c["name"] == "python3")
        .cloned()
        .expect("python3");
    let facts = serde_json::to_string(&python["facts"]).expect("facts");
    assert!(
        facts.contains("TZ=Asia/Shanghai"),
        "the zone is shown: {facts}"
    );
    assert!(
        facts.contains("ANTHROPIC_BASE_URL=http://127.0.0.1:9/"),
        "the relay is shown: {facts}"
    );
}

#[test]
fn a_parents_read_is_attributed_to_the_parent_when_its_child_connects() {
    if !bpf_available("a_parents_read_is_attributed_to_the_parent_when_its_child_connects") {
        return;
    }
    let dir = test_dir("answer-parent");
    let policy = policy_with(&dir, RELAY_RULE);
    let listener = Listener::start();
    let port = listener.port.to_string();
    let env = [("TZ", "UTC"), ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")];
    let run = run_python(&policy, &env, &["parent", &port]);
    let python = python_pid(&run);
    let conns = connects_to(&run, listener.port);
    assert_eq!(conns.len(), 1, "{conns:#?}");
    let conn = conns[0];
    assert_eq!(conn["process"], "curl", "{conn:#}");
    let matched = conn["matched_rules"]
        .as_array()
        .expect("matched_rules")
        .iter()
        .find(|m| m["rule"] == "relay-then-call")
        .unwrap_or_else(|| panic!("relay-then-call matched: {conn:#}"));
    for by in matched["probed_by"].as_array().expect("probed_by") {
        let actors = by["by"].as_array().expect("by");
        assert!(
            actors.iter().any(|a| a["pid"] == python
                && a["relation"] == "parent"
                && a["process"] == "python3"),
            "{} was read by the parent python3 (pid {python}): {by:#}",
            by["category"]
        );
        assert!(
            !actors.iter().any(|a| a["relation"] == "self"),
            "curl read none of it: {by:#}"
        );
    }
    // The streamed alert names both.
    let alert = run
        .of_type("rule_match")
        .into_iter()
        .find(|m| m["rule"] == "relay-then-call")
        .expect("the alert");
    assert_eq!(alert["process"], "curl");
    // And every row before the connection names who made it.
    for row in conn["probes_before"].as_array().expect("rows") {
        assert!(!row["by"].as_array().expect("by").is_empty(), "{row:#}");
    }
}

#[test]
fn a_direct_call_past_the_proxy_the_process_read_is_flagged() {
    if !bpf_available("a_direct_call_past_the_proxy_the_process_read_is_flagged") {
        return;
    }
    let dir = test_dir("answer-bypass");
    let policy = policy_with(
        &dir,
        "  - name: test-proxy-bypass\n    probed: {any_of: [proxy]}\n    bypassed_proxy: true\n    then: [connect]\n    within: 60s\n    severity: high\n    action: alert\n",
    );
    let proxy = Listener::start();
    let direct = Listener::start();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let run = run_python(
        &policy,
        &[("HTTPS_PROXY", &proxy_url)],
        &["bypass", &proxy.port.to_string(), &direct.port.to_string()],
    );
    let via_proxy = connects_to(&run, proxy.port);
    assert_eq!(via_proxy.len(), 1);
    assert!(via_proxy[0].get("bypassed").is_none(), "{:#}", via_proxy[0]);
    assert_eq!(
        via_proxy[0]["matched_rules"],
        serde_json::json!([]),
        "{:#}",
        via_proxy[0]
    );
    let past = connects_to(&run, direct.port);
    assert_eq!(past.len(), 1);
    assert_eq!(
        past[0]["bypassed"]["settings"],
        serde_json::json!([format!("HTTPS_PROXY={proxy_url}")]),
        "{:#}",
        past[0]
    );
    let rules: Vec<&Value> = past[0]["matched_rules"]
        .as_array()
        .expect("matched_rules")
        .iter()
        .map(|m| &m["rule"])
        .collect();
    // The test's rule and the default policy's own.
    assert!(
        rules.contains(&&Value::from("test-proxy-bypass")),
        "{rules:?}"
    );
    assert!(rules.contains(&&Value::from("proxy-bypass")), "{rules:?}");
}

/// A chatty Node CLI (children that only inherit the environment, repeated connects,
/// `/proc/N/environ` reads): the readable report fits a screen and keeps every fact.
#[test]
fn the_readable_report_of_a_chatty_cli_fits_a_screen_and_keeps_every_fact() {
    if !bpf_available("the_readable_report_of_a_chatty_cli_fits_a_screen_and_keeps_every_fact") {
        return;
    }
    let listener = Listener::start();
    let dir = test_dir("answer-chatty");
    let policy = policy_with(&dir, RELAY_RULE);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chatty.js");
    let readable = |details: bool| {
        let mut cmd = probectl_command();
        cmd.arg("run")
            .arg("--no-color")
            .arg("--policy")
            .arg(&policy);
        if details {
            cmd.arg("--details");
        }
        cmd.arg("--")
            .arg("env")
            .arg("TZ=Asia/Shanghai")
            .arg("ANTHROPIC_BASE_URL=http://127.0.0.1:9/")
            .arg("node")
            .arg(&script)
            .arg(listener.port.to_string());
        let out = run_with_deadline(cmd);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let start = text.find("== probectl report").expect("a report");
        text[start..].to_owned()
    };
    let report = readable(false);
    let lines = report.lines().count();
    assert!(lines <= 60, "{lines} lines:\n{report}");
    // Every fact is still there: the categories, the destination, the rule, the
    // inherited children.
    for fact in [
        "timezone: ",
        "TZ=Asia/Shanghai",
        "api-relay",
        "environment",
        "host-identity: /etc/hostname",
        &format!("127.0.0.1:{}", listener.port),
        "relay-then-call",
        "only inherited the environment",
    ] {
        assert!(report.contains(fact), "{fact:?} missing from:\n{report}");
    }
    // The JSON keeps every connection; the details list them.
    let details = readable(true);
    assert!(details.lines().count() > lines, "{details}");
    assert!(
        details.contains("the same"),
        "repeated connections fold:\n{details}"
    );
    assert!(
        details.contains("/proc/*/environ"),
        "environ reads fold:\n{details}"
    );
    let mut json = Command::new(probectl());
    json.arg("run")
        .arg("--json")
        .arg("--policy")
        .arg(&policy)
        .arg("--")
        .arg("env")
        .arg("TZ=Asia/Shanghai")
        .arg("node")
        .arg(&script)
        .arg(listener.port.to_string());
    let run = json_run(json);
    assert_eq!(
        connects_to(&run, listener.port).len(),
        20,
        "every connect is in the JSON"
    );
}
