//! Root integration tests of the TCP outcome sensor's two tiers
//! (`probe-ebpf/src/net_state.rs`): the raw tracepoint `inet_sock_set_state`, which
//! reads the destination from the socket through BTF offsets, and the tracepoint of
//! the same name, which reads it from the trace record, used when the raw tracepoint
//! cannot be (forced here without kernel BTF, `common::btf`). Each must report the
//! outcome of non-blocking connects, IPv4 and IPv6, established and refused, joined
//! to their connect records by destination (so a wrong port or address fails), and
//! `doctor` names the tier in use.

mod common;

use std::ffi::OsStr;

use common::{
    btf::{doctor, probectl_with},
    *,
};
use serde_json::Value;

/// Node (libuv connects without blocking) connects to a listener on `[::1]` and to a
/// closed port on 127.0.0.1; both connects must return `in_progress` and get their
/// outcome, established and failed.
fn assert_outcomes_seen(btf: bool) {
    let listener = Listener::start_on("[::1]:0");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("address").port();
    drop(closed);
    let script = format!(
        "const net = require('node:net');
         const ok = net.connect({open}, '::1', () => {{
           ok.end();
           net.connect({closed_port}, '127.0.0.1').on('error', (e) => {{
             process.exitCode = e.code === 'ECONNREFUSED' ? 0 : 3;
           }});
         }});
         ok.on('error', () => {{ process.exitCode = 2; }});",
        open = listener.port
    );
    let run = json_run(probectl_with(
        btf,
        &[
            OsStr::new("run"),
            OsStr::new("--json"),
            OsStr::new("--"),
            OsStr::new("node"),
            OsStr::new("-e"),
            OsStr::new(&script),
        ],
    ));
    assert_eq!(
        run.code, 0,
        "node connected to [::1] and was refused on 127.0.0.1; stderr:\n{}",
        run.stderr
    );
    let report = run.report();
    let connection = |port: u16| -> &Value {
        report["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .find(|c| c["destination"]["port"] == port)
            .unwrap_or_else(|| panic!("no connection to port {port}: {report:#}"))
    };
    for (port, family, address, outcome) in [
        (listener.port, "ipv6", "::1", "established"),
        (closed_port, "ipv4", "127.0.0.1", "failed"),
    ] {
        let c = connection(port);
        assert_eq!(c["destination"]["family"], family, "{c:#}");
        assert_eq!(c["destination"]["address"], address, "{c:#}");
        assert_eq!(c["result"], "in_progress", "libuv does not block: {c:#}");
        assert_eq!(
            c["outcome"], outcome,
            "the state change is joined to the connect by its destination (btf: {btf}): {c:#}"
        );
    }
}

fn net_note(doc: &Value) -> String {
    doc["coverage_notes"]
        .as_array()
        .expect("coverage_notes")
        .iter()
        .filter_map(Value::as_str)
        .find(|n| n.starts_with("connects are traced"))
        .unwrap_or_else(|| panic!("no network note: {doc:#}"))
        .to_owned()
}

#[test]
fn the_raw_tracepoint_gives_tcp_outcomes_and_is_named() {
    if !bpf_available("the_raw_tracepoint_gives_tcp_outcomes_and_is_named") {
        return;
    }
    let (code, doc) = doctor(true);
    assert_eq!(code, 0, "{doc:#}");
    let note = net_note(&doc);
    // Raw tracepoints and BTF are there on every kernel this project supports.
    assert!(
        note.contains("by the raw tracepoint inet_sock_set_state"),
        "{note}"
    );
    assert_outcomes_seen(true);
}

#[test]
fn without_kernel_btf_the_tracepoint_gives_tcp_outcomes_and_says_why() {
    if !bpf_available("without_kernel_btf_the_tracepoint_gives_tcp_outcomes_and_says_why") {
        return;
    }
    let (code, doc) = doctor(false);
    assert_eq!(code, 0, "the fallback is healthy: {doc:#}");
    let note = net_note(&doc);
    assert!(
        note.contains(
            "by the sock/inet_sock_set_state tracepoint, raw tracepoint passed over (kernel BTF"
        ),
        "{note}"
    );
    assert!(
        doc["programs_failed"].as_array().unwrap().is_empty(),
        "the tracepoint attached instead: {:#}",
        doc["programs_failed"]
    );
    assert_outcomes_seen(false);
}
