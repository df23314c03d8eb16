//! Root integration tests of DNS attribution: a fake resolver on loopback answers
//! real queries, and the connection that follows carries the name.

mod common;

use std::ffi::OsStr;

use common::*;

const NAME: &str = "probe.example.test";

/// A resolver on `addr:53` that answers every A query with 127.0.0.1, until dropped
/// with the test process. Returns the address it serves on.
fn fake_resolver(addr: &str) -> String {
    common::resolver::serve_a(addr, |_| (std::net::Ipv4Addr::LOCALHOST, 60));
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

/// `fixtures/musl_resolve.c`, linked statically against musl (`musl-gcc -static`), as
/// static musl CLIs ship: its stub resolver is inside the binary, not in a libc.
fn static_musl_resolver() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/musl_resolve.c");
            let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("musl_resolve-{}", std::process::id()));
            let status = std::process::Command::new("musl-gcc")
                .args(["-static", "-O1", "-Wall", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .unwrap_or_else(|e| {
                    panic!("cannot run musl-gcc: {e} (apt-get install musl-tools, or run `cargo xtask test`)")
                });
            assert!(status.success(), "musl-gcc -static failed to build {}", src.display());
            out
        })
        .clone()
}

/// The default policy plus a rule that any query for a `*.example.test` name after a
/// time-zone read completes (`then: [dns_query]`).
fn policy_with_dns_rule(dir: &std::path::Path) -> std::path::PathBuf {
    default_policy_plus(
        dir,
        "  - name: timezone-then-dns\n    id: TEST-DNS\n    probed: {all_of: [timezone]}\n    then: [dns_query]\n    destination: {host: [\"*.example.test\"]}\n    within: 30s\n    severity: high\n    action: alert\n",
    )
}

/// `probectl run --json --policy POLICY -- ARGS` in a private mount namespace whose
/// /etc/resolv.conf names `server` (the host's file and resolver are never touched).
fn run_with_resolver(test: &str, server: &str, args: &[&str]) -> JsonRun {
    let dir = test_dir(test);
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {server}\noptions attempts:1 timeout:2\n"),
    )
    .unwrap();
    let policy = policy_with_dns_rule(&dir);
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec {} run --json --policy {} -- {}",
        resolv.display(),
        probectl().display(),
        policy.display(),
        quoted.join(" ")
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    cmd.env_remove("CI");
    cmd.env(
        "PROBECTL_SOCKET",
        "/nonexistent/probectl-tests/no-daemon.sock",
    );
    json_run(cmd)
}

/// What a CLI's summary lists for a DNS server: the names it asked.
fn summary_dns_names(run: &JsonRun, exe_name: &str, server: &str) -> Vec<String> {
    let clis = run.report()["clis"].as_array().unwrap();
    let cli = clis
        .iter()
        .find(|c| c["exe"].as_str().is_some_and(|e| e.contains(exe_name)))
        .unwrap_or_else(|| panic!("{exe_name} has a summary: {clis:#?}"));
    let dest = cli["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["address"] == server && d["port"] == 53)
        .unwrap_or_else(|| panic!("the DNS server is among the CLI's destinations: {cli:#}"));
    dest["dns_names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_static_musl_resolvers_sendto_query_is_among_the_clis_destinations_and_rules_see_it() {
    if !bpf_available(
        "a_static_musl_resolvers_sendto_query_is_among_the_clis_destinations_and_rules_see_it",
    ) {
        return;
    }
    let server = fake_resolver("127.0.0.6");
    let listener = Listener::start();
    let fixture = static_musl_resolver();
    let port = listener.port.to_string();
    let run = run_with_resolver(
        "dns-musl-static",
        &server,
        &[fixture.to_str().unwrap(), NAME, &port],
    );
    assert_eq!(
        run.code, 0,
        "the static fixture resolved {NAME}; stderr:\n{}",
        run.stderr
    );
    // musl sent the query with sendto() to the server on an unconnected socket.
    let q = run.of_type("dns_query");
    let query = q
        .iter()
        .find(|q| q["names"][0] == NAME)
        .unwrap_or_else(|| panic!("the query was decoded: {q:#?}\nstderr:\n{}", run.stderr));
    assert_eq!(query["server"]["address"], server.as_str(), "{query:#}");
    assert_eq!(query["server"]["port"], 53);
    let matched: Vec<&str> = query["matched_rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["rule"].as_str())
        .collect();
    assert_eq!(matched, ["timezone-then-dns"], "{query:#}");
    assert!(
        run.of_type("rule_match")
            .iter()
            .any(|m| m["rule"] == "timezone-then-dns"
                && m["event"] == "dns_query"
                && m["names"][0] == NAME),
        "{:#?}",
        run.of_type("rule_match")
    );
    // The server and the name asked are among the CLI's destinations, and the rule
    // among its rules.
    assert_eq!(summary_dns_names(&run, "musl_resolve", &server), [NAME]);
    let clis = run.report()["clis"].as_array().unwrap();
    assert!(
        clis.iter().any(|c| c["rules"][0] == "timezone-then-dns"),
        "{clis:#?}"
    );
    assert_named_connection(&run, listener.port);
}

#[test]
fn a_query_written_with_write_on_a_connected_socket_is_decoded() {
    if !bpf_available("a_query_written_with_write_on_a_connected_socket_is_decoded") {
        return;
    }
    // Go's resolver connects a UDP socket to the server and uses write()/read().
    let server = fake_resolver("127.0.0.7");
    let fixture = static_musl_resolver();
    let run = run_with_resolver(
        "dns-write",
        &server,
        &[fixture.to_str().unwrap(), "--write", &server, NAME],
    );
    assert_eq!(
        run.code, 0,
        "the fixture got its answer; stderr:\n{}",
        run.stderr
    );
    let q = run.of_type("dns_query");
    let query = q.iter().find(|q| q["names"][0] == NAME).unwrap_or_else(|| {
        panic!(
            "the written query was decoded: {q:#?}\nstderr:\n{}",
            run.stderr
        )
    });
    assert_eq!(
        query["server"]["address"],
        server.as_str(),
        "the socket's connect named the server: {query:#}"
    );
    assert_eq!(summary_dns_names(&run, "musl_resolve", &server), [NAME]);
}
