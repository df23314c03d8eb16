//! Root integration tests of the first bytes of each TCP connection: a real TLS
//! client (Python's ssl, OpenSSL) and a real HTTP client (Python's http.client) talk
//! to a loopback listener, and the connection is named by what they sent, without
//! DNS; hostile bytes are escaped, bounded or refused.

mod common;

use std::ffi::OsStr;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A loopback listener that reads what each connection sends first, then closes it
/// (a TLS client then fails its handshake and exits).
fn closing_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let port = listener.local_addr().expect("listener address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
        }
    });
    port
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/first_bytes.py")
}

/// The default policy plus a rule whose destination is a host name that only the
/// connection's first bytes give (the address is 127.0.0.1, named localhost).
fn policy_with_host_rule(dir: &Path) -> PathBuf {
    default_policy_plus(
        dir,
        "  - name: timezone-then-named-api\n    id: TEST-SNI\n    probed: {all_of: [timezone]}\n    then: [connect]\n    destination: {host: [api.example.test, relay.example]}\n    within: 30s\n    severity: high\n    action: alert\n",
    )
}

fn run_fixture(test: &str, mode: &str, port: u16) -> JsonRun {
    let dir = test_dir(test);
    let policy = policy_with_host_rule(&dir);
    let port = port.to_string();
    let run = probectl_json_with_policy(
        &policy,
        &[
            OsStr::new("python3"),
            fixture().as_os_str(),
            OsStr::new(mode),
            OsStr::new(&port),
        ],
    );
    assert_eq!(run.code, 0, "the fixture ran; stderr:\n{}", run.stderr);
    run
}

/// The one `first_bytes` record of the connections to `port`.
fn first_bytes_to(run: &JsonRun, port: u16) -> Vec<&Value> {
    run.of_type("first_bytes")
        .into_iter()
        .filter(|f| f["destination"]["port"] == port)
        .collect()
}

/// The report's kept connections to `port`.
fn kept_to(run: &JsonRun, port: u16) -> Vec<Value> {
    run.report()["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["destination"]["port"] == port)
        .cloned()
        .collect()
}

fn rule_names(v: &Value) -> Vec<String> {
    v["matched_rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_tls_client_hello_names_the_connection_by_its_server_name() {
    if !bpf_available("a_tls_client_hello_names_the_connection_by_its_server_name") {
        return;
    }
    let port = closing_listener();
    let run = run_fixture("first-bytes-tls", "tls", port);
    let first = first_bytes_to(&run, port);
    assert_eq!(first.len(), 1, "{first:#?}\nstderr:\n{}", run.stderr);
    assert_eq!(first[0]["protocol"], "tls", "{:#}", first[0]);
    assert_eq!(first[0]["tls_server_name"], "api.example.test");
    // The name is known only after the connect: the host rule matches on these bytes.
    assert_eq!(
        rule_names(first[0]),
        ["timezone-then-named-api"],
        "{:#}",
        first[0]
    );
    assert!(
        run.of_type("rule_match")
            .iter()
            .any(|m| m["rule"] == "timezone-then-named-api" && m["names"][0] == "api.example.test"),
        "{:#?}",
        run.of_type("rule_match")
    );
    let kept = kept_to(&run, port);
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(
        kept[0]["tls_server_name"], "api.example.test",
        "{:#}",
        kept[0]
    );
    assert!(rule_names(&kept[0]).contains(&"timezone-then-named-api".to_owned()));
    let clis = run.report()["clis"].as_array().unwrap();
    assert!(
        clis.iter().any(|c| c["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["port"] == port && d["tls_server_name"] == "api.example.test")),
        "the CLI's destinations carry the name: {clis:#?}"
    );
}

#[test]
fn an_http_post_to_a_relay_shows_its_method_host_and_path() {
    if !bpf_available("an_http_post_to_a_relay_shows_its_method_host_and_path") {
        return;
    }
    let listener = Listener::start();
    let run = run_fixture("first-bytes-http", "http", listener.port);
    let first = first_bytes_to(&run, listener.port);
    assert_eq!(first.len(), 1, "{first:#?}\nstderr:\n{}", run.stderr);
    assert_eq!(first[0]["protocol"], "http");
    let want =
        serde_json::json!({"method": "POST", "host": "relay.example", "path": "/v1/messages"});
    assert_eq!(first[0]["http"], want, "{:#}", first[0]);
    let kept = kept_to(&run, listener.port);
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0]["http"], want, "{:#}", kept[0]);

    // The readable stream and report say it in words.
    let mut cmd = probectl_command();
    cmd.args(["run", "--no-color", "--", "python3"])
        .arg(fixture())
        .args(["http", &listener.port.to_string()]);
    let out = run_with_deadline(cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let route = format!(
        "POST /v1/messages host relay.example to 127.0.0.1:{}",
        listener.port
    );
    assert!(text.contains(&route), "{route:?} in:\n{text}");
}

#[test]
fn hostile_first_bytes_are_escaped_bounded_or_refused() {
    if !bpf_available("hostile_first_bytes_are_escaped_bounded_or_refused") {
        return;
    }
    let listener = Listener::start();
    let run = run_fixture("first-bytes-hostile", "hostile", listener.port);
    let first = first_bytes_to(&run, listener.port);
    // The long request is read (cut and escaped); the one with terminal escapes in
    // its request line is no HTTP request: it names nothing and is counted.
    assert_eq!(first.len(), 1, "{first:#?}\nstderr:\n{}", run.stderr);
    let http = &first[0]["http"];
    let path = http["path"].as_str().unwrap();
    assert_eq!(path.chars().count(), 256, "{path}");
    assert!(path.starts_with("/aaaa") && path.ends_with("..."), "{path}");
    assert_eq!(http["host"], "h\\xff\\xfe.example", "{http:#}");
    let filtered = run.report()["filtered"].as_array().unwrap();
    assert!(
        filtered
            .iter()
            .any(|f| f["reason"] == "first_bytes_unrecognised" && f["count"].as_u64() >= Some(1)),
        "{filtered:#?}"
    );
    for r in &run.records {
        let line = r.to_string();
        assert!(
            !line.contains('\u{1b}') && !line.contains("owned"),
            "{line}"
        );
    }
}
