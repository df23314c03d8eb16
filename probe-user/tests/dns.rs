//! Root integration tests of DNS attribution: a fake resolver on loopback answers
//! real queries, and the connection that follows carries the name.

mod common;

use std::ffi::OsStr;
use std::net::UdpSocket;

use common::*;
use simple_dns::{
    CLASS, Packet, ResourceRecord,
    rdata::{A, RData},
};

const NAME: &str = "probe.example.test";

/// A resolver on `addr:53` that answers every A query with 127.0.0.1, until dropped
/// with the test process. Returns the address it serves on.
fn fake_resolver(addr: &str) -> String {
    let socket = UdpSocket::bind((addr, 53))
        .unwrap_or_else(|e| panic!("bind a fake resolver on {addr}:53: {e}"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let Ok(query) = Packet::parse(&buf[..n]) else {
                continue;
            };
            let mut reply = query.into_reply();
            let answers: Vec<_> = reply
                .questions
                .iter()
                .filter(|q| q.qtype == simple_dns::QTYPE::TYPE(simple_dns::TYPE::A))
                .map(|q| {
                    ResourceRecord::new(
                        q.qname.clone(),
                        CLASS::IN,
                        60,
                        RData::A(A {
                            address: 0x7f00_0001,
                        }),
                    )
                })
                .collect();
            reply.answers.extend(answers);
            if let Ok(bytes) = reply.build_bytes_vec() {
                let _ = socket.send_to(&bytes, from);
            }
        }
    });
    addr.to_owned()
}

/// The query for `NAME` and its answer (127.0.0.1) were decoded.
fn assert_query_and_answer(run: &JsonRun) {
    let queries = run.of_type("dns_query");
    assert!(
        queries.iter().any(|q| q["names"][0] == NAME),
        "the query was decoded: {queries:#?}\nstderr:\n{}",
        run.stderr
    );
    let answers = run.of_type("dns_answer");
    assert!(
        answers
            .iter()
            .any(|a| a["name"] == NAME && a["addresses"][0] == "127.0.0.1"),
        "{answers:#?}"
    );
}

fn assert_named_connection(run: &JsonRun, port: u16) {
    assert_query_and_answer(run);
    let conn: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == port)
        .collect();
    assert_eq!(conn.len(), 1, "{:#?}", run.of_type("connect"));
    assert_eq!(
        conn[0]["domain"], NAME,
        "the connection carries the name it was resolved from: {:#}",
        conn[0]
    );
    assert_eq!(conn[0]["domain_source"], "dns");
}

#[test]
fn a_programs_own_dns_query_names_its_next_connection() {
    if !bpf_available("a_programs_own_dns_query_names_its_next_connection") {
        return;
    }
    let server = fake_resolver("127.0.0.2");
    let listener = Listener::start();
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("dns"),
            OsStr::new(&server),
            OsStr::new(NAME),
            OsStr::new(&listener.port.to_string()),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let q = run.of_type("dns_query");
    assert_eq!(
        q[0]["server"]["address"],
        server.as_str(),
        "sendto named the server: {q:#?}"
    );
    assert_eq!(q[0]["server"]["port"], 53);
    assert_named_connection(&run, listener.port);
}

#[test]
fn glibc_getaddrinfo_queries_are_decoded_too() {
    if !bpf_available("glibc_getaddrinfo_queries_are_decoded_too") {
        return;
    }
    // glibc connects its UDP socket to the server and uses sendmmsg/recvfrom. Point it
    // at the fake resolver in a private mount namespace, so the host's resolv.conf and
    // its resolver are never touched.
    let server = fake_resolver("127.0.0.3");
    let dir = test_dir("dns");
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {server}\noptions attempts:1 timeout:2\n"),
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec {} run --json -- getent ahostsv4 {NAME}",
        resolv.display(),
        probectl().display()
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let out = run_with_deadline(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let run = JsonRun {
        code: out.status.code().unwrap_or(-1),
        records,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(
        run.code, 0,
        "getent resolved {NAME}; stderr:\n{}",
        run.stderr
    );
    assert_query_and_answer(&run);
    let dns_conn = run
        .of_type("connect")
        .into_iter()
        .find(|c| c["destination"]["port"] == 53)
        .cloned();
    assert_eq!(
        dns_conn.expect("glibc connects its resolver socket")["destination"]["address"],
        server.as_str()
    );
}

#[test]
fn a_query_split_over_two_iovecs_and_a_third_sendmmsg_name_are_seen() {
    if !bpf_available("a_query_split_over_two_iovecs_and_a_third_sendmmsg_name_are_seen") {
        return;
    }
    let server = fake_resolver("127.0.0.4");
    let run = probectl_json(
        &[
            net_fixture().as_os_str(),
            OsStr::new("dns-split"),
            OsStr::new(&server),
            OsStr::new(NAME),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert_query_and_answer(&run);
    assert_eq!(
        run.of_type("dns_query")[0]["server"]["address"],
        server.as_str()
    );

    let names = ["one.example.test", "two.example.test", "three.example.test"];
    let run = probectl_json(
        &[
            net_fixture().as_os_str(),
            OsStr::new("dns-mmsg3"),
            OsStr::new(&server),
            OsStr::new(names[0]),
            OsStr::new(names[1]),
            OsStr::new(names[2]),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let queries = run.of_type("dns_query");
    for name in names {
        assert!(
            queries.iter().any(|q| q["names"][0] == name),
            "{name} was decoded: {queries:#?}"
        );
    }
    let answers = run.of_type("dns_answer");
    assert_eq!(
        answers.len(),
        3,
        "each pending query's answer: {answers:#?}"
    );
}

#[test]
fn a_forged_unsolicited_dns_answer_names_nothing() {
    if !bpf_available("a_forged_unsolicited_dns_answer_names_nothing") {
        return;
    }
    let listener = Listener::start();
    let forged = "forged.example.test";
    let run = probectl_json(
        &[
            net_fixture().as_os_str(),
            OsStr::new("dns-forged"),
            OsStr::new(forged),
            OsStr::new(&listener.port.to_string()),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(
        run.of_type("dns_answer").is_empty(),
        "{:#?}",
        run.of_type("dns_answer")
    );
    let conn: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == listener.port)
        .collect();
    assert_eq!(conn.len(), 1, "{:#?}", run.of_type("connect"));
    assert_ne!(conn[0]["domain"], forged, "{:#}", conn[0]);
    let refused = run.report()["filtered"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["reason"] == "dns_answer_unsolicited")
        .cloned()
        .unwrap_or_else(|| panic!("{:#}", run.report()["filtered"]));
    assert_eq!(refused["count"], 1);
}
