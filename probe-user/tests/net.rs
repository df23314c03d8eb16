//! Root integration tests of the network sensor: IPv6 and v4-mapped connects, unix
//! sockets, the outcome of non-blocking connects, UDP destinations.

mod common;

use std::ffi::OsStr;

use common::*;

#[test]
fn ipv6_connect_reports_address_port_and_refusal() {
    if !bpf_available("ipv6_connect_reports_address_port_and_refusal") {
        return;
    }
    let listener = Listener::start_on("[::1]:0");
    let port = listener.port.to_string();
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("connect6"),
            OsStr::new(&port),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let conn = run.of_type("connect");
    assert_eq!(conn.len(), 1, "{conn:#?}");
    assert_eq!(conn[0]["destination"]["family"], "ipv6");
    assert_eq!(conn[0]["destination"]["address"], "::1");
    assert_eq!(conn[0]["destination"]["port"], listener.port);
    assert_eq!(conn[0]["result"], "ok");

    // A port nobody listens on: the result is the errno, reported by name.
    let closed = std::net::TcpListener::bind("[::1]:0").expect("bind");
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("connect6"),
            OsStr::new(&closed_port.to_string()),
        ],
        &[],
    );
    assert_eq!(
        run.code, 1,
        "the fixture reports the failed connect; stderr:\n{}",
        run.stderr
    );
    let conn = run.of_type("connect");
    assert_eq!(conn.len(), 1, "{conn:#?}");
    assert_eq!(conn[0]["result"], "ECONNREFUSED");
    assert_eq!(conn[0]["destination"]["port"], closed_port);
}

#[test]
fn a_refused_non_blocking_connect_reports_its_outcome() {
    if !bpf_available("a_refused_non_blocking_connect_reports_its_outcome") {
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let script = format!(
        "require('node:net').connect({port}, '127.0.0.1').on('error', (e) => {{ process.exitCode = e.code === 'ECONNREFUSED' ? 0 : 1; }});"
    );
    let run = probectl_json(
        &[OsStr::new("node"), OsStr::new("-e"), OsStr::new(&script)],
        &[],
    );
    assert_eq!(
        run.code, 0,
        "node saw ECONNREFUSED; stderr:\n{}",
        run.stderr
    );
    let conns: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == port)
        .collect();
    assert_eq!(conns.len(), 1, "{:#?}", run.of_type("connect"));
    assert_eq!(
        conns[0]["result"], "in_progress",
        "libuv connects without blocking"
    );
    let report_conn = &run.report()["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["destination"]["port"] == port)
        .cloned()
        .unwrap();
    let streamed_outcome = run
        .of_type("connect_outcome")
        .iter()
        .any(|o| o["destination"]["port"] == port && o["outcome"] == "failed");
    assert!(
        conns[0]["outcome"] == "failed" || (streamed_outcome && report_conn["outcome"] == "failed"),
        "the refusal is reported: {:#?}",
        run.records
    );
}

#[test]
fn unix_socket_connects_report_the_path() {
    if !bpf_available("unix_socket_connects_report_the_path") {
        return;
    }
    let dir = test_dir("unix");
    let path = dir.join("agent.sock");
    let _ = std::fs::remove_file(&path);
    let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind a unix listener");
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("unix"),
            path.as_os_str(),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let conn = run.of_type("connect");
    assert_eq!(conn.len(), 1, "{conn:#?}");
    assert_eq!(conn[0]["destination"]["family"], "unix");
    assert_eq!(conn[0]["destination"]["address"], path.to_str().unwrap());
    assert_eq!(conn[0]["result"], "ok");

    // An abstract socket nobody listens on: the name with '@', and the refusal.
    let name = format!("@probectl-test-{}", std::process::id());
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("unix"),
            OsStr::new(&name),
        ],
        &[],
    );
    assert_eq!(
        run.code, 1,
        "the fixture saw the refusal; stderr:\n{}",
        run.stderr
    );
    let conn = run.of_type("connect");
    assert_eq!(conn.len(), 1, "{conn:#?}");
    assert_eq!(conn[0]["destination"]["address"], name.as_str());
    assert_eq!(conn[0]["result"], "ECONNREFUSED");
}

#[test]
fn v4_mapped_connects_and_udp_destinations_are_reported() {
    if !bpf_available("v4_mapped_connects_and_udp_destinations_are_reported") {
        return;
    }
    let tcp = std::net::TcpListener::bind("[::]:0").expect("dual-stack listener");
    let tcp_port = tcp.local_addr().unwrap().port();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n\
         s.connect(('::ffff:127.0.0.1', {tcp_port}))\n\
         s.close()\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         u.sendto(b'one', ('127.0.0.1', {udp_port}))\n\
         u.sendto(b'two', ('127.0.0.1', {udp_port}))\n"
    );
    let run = probectl_json(
        &[OsStr::new("python3"), OsStr::new("-c"), OsStr::new(&script)],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let conns = run.of_type("connect");
    let mapped = conns
        .iter()
        .find(|c| c["destination"]["port"] == tcp_port)
        .unwrap_or_else(|| panic!("{conns:#?}"));
    assert_eq!(mapped["destination"]["family"], "ipv6");
    assert_eq!(mapped["destination"]["address"], "::ffff:127.0.0.1");
    assert_eq!(mapped["result"], "ok");
    assert_eq!(mapped["seen_at"], "syscall_and_cgroup_hook");
    assert_eq!(
        conns
            .iter()
            .filter(|c| c["destination"]["port"] == tcp_port)
            .count(),
        1,
        "a syscall connect is reported once, not again by the cgroup hook: {conns:#?}"
    );
    let hosts_name = std::fs::read_to_string("/etc/hosts")
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .find(|w| w.first() == Some(&"127.0.0.1"))
        .and_then(|w| w.get(1).map(|n| n.to_string()));
    if let Some(name) = hosts_name {
        assert_eq!(
            mapped["domain"],
            name.as_str(),
            "a v4-mapped address is named like its IPv4 one: {mapped:#}"
        );
        assert_eq!(mapped["domain_source"], "/etc/hosts");
    }
    let sends: Vec<_> = conns
        .iter()
        .filter(|c| c["destination"]["port"] == udp_port)
        .collect();
    assert_eq!(
        sends.len(),
        1,
        "the first datagram to a destination is reported, not every one: {conns:#?}"
    );
    assert_eq!(sends[0]["result"], "sent");
    assert_eq!(sends[0]["destination"]["address"], "127.0.0.1");
    assert_eq!(sends[0]["seen_at"], "syscall_and_cgroup_hook");
    drop((tcp, udp));
}

#[test]
fn io_uring_connects_and_sends_are_seen_by_the_cgroup_hooks() {
    if !bpf_available("io_uring_connects_and_sends_are_seen_by_the_cgroup_hooks") {
        return;
    }
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let tcp_port = tcp.local_addr().unwrap().port();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let port = tcp_port.to_string();
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("uring-connect"),
            OsStr::new(&port),
        ],
        &[],
    );
    assert_eq!(
        run.code, 0,
        "the fixture connected through io_uring (3 = no io_uring); stderr:\n{}",
        run.stderr
    );
    let conns = run.of_type("connect");
    assert_eq!(conns.len(), 1, "one connect, reported once: {conns:#?}");
    let c = conns[0];
    assert_eq!(c["destination"]["address"], "127.0.0.1");
    assert_eq!(c["destination"]["port"], tcp_port);
    assert_eq!(c["seen_at"], "cgroup_hook", "{c:#}");
    assert_eq!(c["result"], "issued");
    let report = run.report();
    assert_eq!(
        report["connections"][0]["outcome"], "established",
        "the TCP outcome joins the hook's record: {report:#}"
    );
    let net = report["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["family"] == "net")
        .unwrap();
    assert!(
        net["chosen"]
            .as_str()
            .unwrap()
            .starts_with("cgroup v2 sock_addr"),
        "{net:#}"
    );

    let port = udp_port.to_string();
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("uring-sendmsg"),
            OsStr::new(&port),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let mut buf = [0u8; 16];
    udp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let (n, _) = udp
        .recv_from(&mut buf)
        .expect("the datagram really arrived");
    assert_eq!(&buf[..n], b"probectl\0");
    let conns = run.of_type("connect");
    assert_eq!(conns.len(), 1, "{conns:#?}");
    assert_eq!(conns[0]["destination"]["port"], udp_port);
    assert_eq!(conns[0]["result"], "sent");
    assert_eq!(conns[0]["seen_at"], "cgroup_hook");
    drop(tcp);
}
