//! Root integration tests of the net tier's primary source: destinations are the
//! kernel's own copy (cgroup sock_addr hooks), not the caller's memory, and every
//! connect of a watched process is either reported or counted as lost. The
//! techniques are listed in fixtures/techniques.rs, which `cargo xtask kernels` also
//! runs in each kernel it boots.

mod common;
#[path = "fixtures/techniques.rs"]
#[expect(
    dead_code,
    reason = "the file techniques are for tests/file_evasion.rs"
)]
mod techniques;

use std::ffi::OsStr;
use std::os::fd::AsRawFd;

use common::*;
use techniques::{DECOY_PORT, NET_TECHNIQUES};

fn ports_of(run: &JsonRun) -> Vec<u64> {
    run.of_type("connect")
        .iter()
        .filter_map(|c| c["destination"]["port"].as_u64())
        .collect()
}

/// Sum of the report's kernel drop counters whose reason names the connect path.
fn connect_drops(report: &serde_json::Value) -> u64 {
    report["drops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            let r = d["reason"].as_str().unwrap_or_default();
            r.starts_with("kernel:") && r.contains("connect")
        })
        .map(|d| d["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_sockaddr_rewritten_during_a_blocking_connect_reports_the_real_peer() {
    if !bpf_available("a_sockaddr_rewritten_during_a_blocking_connect_reports_the_real_peer") {
        return;
    }
    let run = probectl_json(&[net_fixture().as_os_str(), OsStr::new("decoy")], &[]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let ports = ports_of(&run);
    assert!(
        !ports.contains(&DECOY_PORT),
        "the decoy written after the kernel's copy is not reported: {:#?}",
        run.of_type("connect")
    );
    // The connect that filled the listener's queue, and the blocked one: both to the
    // real peer.
    assert_eq!(ports.len(), 2, "{:#?}", run.of_type("connect"));
    assert_eq!(ports[0], ports[1], "{:#?}", run.of_type("connect"));
}

#[test]
fn datagram_destinations_the_kernel_copied_are_seen() {
    if !bpf_available("datagram_destinations_the_kernel_copied_are_seen") {
        return;
    }
    // Bound, so that nothing answers with ICMP errors; each technique sends to the
    // first `udp_ports` of them.
    let sockets: Vec<std::net::UdpSocket> = (0..2)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    for technique in NET_TECHNIQUES.iter().filter(|t| t.udp_ports > 0) {
        let mode = technique.mode;
        let want = &ports[..technique.udp_ports];
        let mut argv = vec![net_fixture().into_os_string(), mode.into()];
        argv.extend(want.iter().map(|p| p.to_string().into()));
        let argv: Vec<&OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
        let run = probectl_json(&argv, &[]);
        assert_eq!(run.code, 0, "{mode}: stderr:\n{}", run.stderr);
        let sends: Vec<_> = run
            .of_type("connect")
            .into_iter()
            .filter(|c| c["result"] == "sent")
            .collect();
        for &port in want {
            let seen = sends
                .iter()
                .find(|c| c["destination"]["port"] == port)
                .unwrap_or_else(|| panic!("{mode}: port {port} not seen: {sends:#?}"));
            assert_eq!(seen["destination"]["address"], "127.0.0.1", "{mode}");
            assert_eq!(seen["destination"]["family"], "ipv4", "{mode}");
        }
    }
    drop(sockets);
}

#[test]
fn two_thousand_blocked_connects_are_each_received_or_counted() {
    if !bpf_available("two_thousand_blocked_connects_are_each_received_or_counted") {
        return;
    }
    // A listener whose accept queue is full (backlog 0, one connection queued): every
    // later SYN is dropped, so each connect blocks until the fixture exits. std's
    // listeners take a backlog of 128, so this one is made by hand.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // SAFETY: listen(2) on a socket this test owns.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let _queued = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    const N: u64 = 2_000;
    let run = probectl_json(
        &[
            net_fixture().as_os_str(),
            OsStr::new("blocked"),
            OsStr::new(&N.to_string()),
            OsStr::new(&port.to_string()),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let received = run
        .of_type("connect")
        .iter()
        .filter(|c| c["destination"]["port"] == port)
        .count() as u64;
    let report = run.report();
    let dropped = connect_drops(report);
    assert_eq!(
        received + dropped,
        N,
        "received {received}, dropped {dropped}: {:#}",
        report["drops"]
    );
    drop(l);
}
