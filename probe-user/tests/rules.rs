//! Root integration tests of the rules: a real Node CLI probes and connects in a given
//! order, and the rule fires only when the probes came first, in the same process
//! tree.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The default policy plus one rule (its `rules:` list comes last): time zone and API
/// relay probed, then a connect to the test's listener, within 30 s.
fn policy_with_rule(dir: &Path, port: u16) -> PathBuf {
    default_policy_plus(
        dir,
        &format!(
            "  - name: fingerprint-then-call\n    id: TEST-1\n    probed: {{all_of: [timezone, api-relay]}}\n    then: [connect]\n    destination: {{cidr: [127.0.0.0/8], port: [{port}]}}\n    within: 30s\n    severity: high\n    action: alert\n"
        ),
    )
}

fn run_node(test: &str, mode: &str) -> (JsonRun, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node_rules.js");
    run_node_script(test, &script, mode)
}

fn run_node_script(test: &str, script: &Path, mode: &str) -> (JsonRun, u16) {
    let dir = test_dir(test);
    let listener = Listener::start();
    let policy = policy_with_rule(&dir, listener.port);
    let port = listener.port.to_string();
    let run = probectl_json_with_policy(
        &policy,
        &[
            OsStr::new("node"),
            script.as_os_str(),
            OsStr::new(mode),
            OsStr::new(&port),
        ],
    );
    assert_eq!(run.code, 0, "the fixture ran; stderr:\n{}", run.stderr);
    (run, listener.port)
}

fn connection(run: &JsonRun, port: u16) -> &Value {
    let conns: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == port)
        .collect();
    assert_eq!(conns.len(), 1, "{conns:#?}");
    conns[0]
}

#[test]
fn probes_then_connect_fires_the_rule() {
    if !bpf_available("probes_then_connect_fires_the_rule") {
        return;
    }
    let (run, port) = run_node("rule-fires", "probe-then-connect");
    let conn = connection(&run, port);
    let matched = conn["matched_rules"].as_array().unwrap();
    assert_eq!(matched.len(), 1, "{conn:#}");
    assert_eq!(matched[0]["rule"], "fingerprint-then-call");
    assert_eq!(matched[0]["id"], "TEST-1");
    assert_eq!(matched[0]["severity"], "high");
    assert_eq!(
        matched[0]["categories"],
        serde_json::json!(["api-relay", "timezone"])
    );
    assert_eq!(matched[0]["suppressed"], false);
    // The probes are listed with the connection, each before it.
    let before = probes_before(conn);
    assert!(
        before
            .iter()
            .any(|(c, h, t)| c == "api-relay" && h == "getenv" && t == "ANTHROPIC_BASE_URL"),
        "{before:?}"
    );
    assert!(before.iter().any(|(c, _, _)| c == "timezone"), "{before:?}");
    assert!(
        conn["probes_before"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["first_ms_before"].as_f64().unwrap() >= 0.0),
        "{conn:#}"
    );
    let alerts = run.of_type("rule_match");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["rule"], "fingerprint-then-call");
    assert_eq!(alerts[0]["event"], "connect");
    assert_eq!(alerts[0]["destination"]["port"], port);
    let summary = &run.report()["rules"];
    assert_eq!(summary[0]["rule"], "fingerprint-then-call");
    assert_eq!(summary[0]["matches"], 1);
    // The per-CLI summary: what node probed, where it went, which rules it matched.
    let clis = run.report()["clis"].as_array().unwrap();
    let node = clis
        .iter()
        .find(|c| c["name"] == "node")
        .unwrap_or_else(|| panic!("{clis:#?}"));
    assert_eq!(
        node["categories"],
        serde_json::json!(["timezone", "api-relay"]),
        "{node:#}"
    );
    assert_eq!(node["destinations"][0]["port"], port);
    assert_eq!(node["rules"], serde_json::json!(["fingerprint-then-call"]));
}

#[test]
fn connect_first_then_probe_does_not_fire() {
    if !bpf_available("connect_first_then_probe_does_not_fire") {
        return;
    }
    let (run, port) = run_node("rule-order", "connect-then-probe");
    let conn = connection(&run, port);
    assert_eq!(conn["matched_rules"], serde_json::json!([]), "{conn:#}");
    assert!(run.of_type("rule_match").is_empty());
    assert_eq!(run.report()["rules"], serde_json::json!([]));
    // The probes did happen, after the connect: the rule's order is what failed.
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    run.probe(pid, &["getenv"], "ANTHROPIC_BASE_URL");
}

#[test]
fn a_child_probing_and_its_parent_connecting_fires_the_rule() {
    if !bpf_available("a_child_probing_and_its_parent_connecting_fires_the_rule") {
        return;
    }
    let (run, port) = run_node("rule-tree", "child-probes");
    let conn = connection(&run, port);
    let root = run.report()["cli"]["pid"].as_u64().unwrap();
    assert_eq!(conn["pid"], root, "the parent connects");
    let relay = run
        .of_type("probe")
        .into_iter()
        .find(|p| p["target"] == "ANTHROPIC_BASE_URL" && p["how"] == "getenv")
        .expect("the child's getenv");
    assert_ne!(relay["pid"], root, "the child probes: {relay:#}");
    let matched = conn["matched_rules"].as_array().unwrap();
    assert_eq!(matched.len(), 1, "{conn:#}");
    assert_eq!(matched[0]["rule"], "fingerprint-then-call");
}

#[test]
fn a_connection_names_the_cli_and_its_package() {
    if !bpf_available("a_connection_names_the_cli_and_its_package") {
        return;
    }
    // The fixture installed like an npm package: node_modules/<pkg>/bin/cli.js.
    let pkg = test_dir("rule-identity").join("node_modules/fixture-cli");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    std::fs::write(
        pkg.join("package.json"),
        r#"{"name": "fixture-cli", "version": "0.0.7"}"#,
    )
    .unwrap();
    let script = pkg.join("bin/cli.js");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node_rules.js"),
        &script,
    )
    .unwrap();
    let (run, port) = run_node_script("rule-identity", &script, "probe-then-connect");
    let cli = &connection(&run, port)["cli"];
    assert_eq!(cli["name"], "node", "{cli:#}");
    assert_eq!(cli["script"], script.to_str().unwrap());
    assert_eq!(cli["package"]["name"], "fixture-cli");
    assert_eq!(cli["package"]["version"], "0.0.7");
    assert_eq!(
        cli["cwd"],
        std::env::current_dir().unwrap().to_str().unwrap(),
        "the command runs in probectl's working directory"
    );
    assert_eq!(run.report()["cli"]["package"]["name"], "fixture-cli");
}

#[test]
fn profiles_of_two_versions_show_the_new_probe() {
    if !bpf_available("profiles_of_two_versions_show_the_new_probe") {
        return;
    }
    let dir = test_dir("profiles");
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node_rules.js"),
    )
    .unwrap();
    let mut profiles = Vec::new();
    for (version, extra) in [
        ("1.0.0", ""),
        // The upgrade also reads the machine id.
        (
            "1.1.0",
            "require('node:fs').readFileSync('/etc/machine-id');\n",
        ),
    ] {
        let pkg = dir.join(format!("v{version}/node_modules/fixture-cli"));
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::write(
            pkg.join("package.json"),
            format!(r#"{{"name": "fixture-cli", "version": "{version}"}}"#),
        )
        .unwrap();
        let script = pkg.join("bin/cli.js");
        std::fs::write(&script, format!("{extra}{fixture}")).unwrap();
        let listener = Listener::start();
        let profile = dir.join(format!("{version}.yaml"));
        let port = listener.port.to_string();
        let run = probectl_json_with(
            &[OsStr::new("--profile"), profile.as_os_str()],
            &[
                OsStr::new("node"),
                script.as_os_str(),
                OsStr::new("probe-then-connect"),
                OsStr::new(&port),
            ],
        );
        assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
        profiles.push(profile);
    }
    let text = std::fs::read_to_string(&profiles[0]).unwrap();
    assert!(
        text.contains("kind: Profile") && text.contains("fixture-cli"),
        "{text}"
    );
    let mut cmd = std::process::Command::new(probectl());
    cmd.arg("diff").args(&profiles);
    let out = run_with_deadline(cmd);
    let diff = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "they differ:\n{diff}");
    assert!(diff.contains("version 1.0.0 -> 1.1.0"), "{diff}");
    assert!(diff.contains("+ category host-identity"), "{diff}");
    assert!(
        diff.contains("+ probe host-identity: file /etc/machine-id"),
        "{diff}"
    );
    assert!(
        !diff.contains("ANTHROPIC_BASE_URL"),
        "unchanged probes are not listed:\n{diff}"
    );
    let mut same = std::process::Command::new(probectl());
    same.arg("diff").arg(&profiles[0]).arg(&profiles[0]);
    let out = run_with_deadline(same);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no differences\n");
}
