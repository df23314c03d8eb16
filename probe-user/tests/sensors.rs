//! Root integration tests: load the real eBPF programs through `probectl run`, run real
//! fixture processes that do the exact operations, and assert the reported fields.

mod common;

use std::ffi::OsStr;

use common::*;

#[test]
fn c_fixture_open_readlink_getenv_then_connect_are_linked() {
    if !bpf_available("c_fixture_open_readlink_getenv_then_connect_are_linked") {
        return;
    }
    let listener = Listener::start();
    let fixture = c_fixture();
    let port = listener.port.to_string();
    let run = probectl_json(
        &[fixture.as_os_str(), OsStr::new("probe"), OsStr::new(&port)],
        &[],
    );
    assert_eq!(
        run.code, 0,
        "fixture exit code passes through; stderr:\n{}",
        run.stderr
    );

    let report = run.report();
    let pid = report["cli"]["pid"].as_u64().expect("cli pid");
    assert_eq!(report["cli"]["exe"], fixture.to_str().unwrap());
    assert_eq!(
        report["partial"], false,
        "all sensors attach on this kernel: {:#}",
        report["unattached_sensors"]
    );
    assert_eq!(
        report["drops"].as_array().unwrap().len(),
        0,
        "no events lost: {:#}",
        report["drops"]
    );

    let exec = run.of_type("exec");
    assert_eq!(exec.len(), 1, "one exec: {exec:#?}");
    assert_eq!(exec[0]["pid"], pid);
    assert_eq!(exec[0]["argv"][1], "probe");

    let open = run.probe(pid, &["openat", "open"], "/etc/localtime");
    assert_eq!(open["categories"][0], "timezone");
    assert_eq!(open["target_type"], "file");
    run.probe(pid, &["readlink", "readlinkat"], "/etc/localtime");
    let tz = run.probe(pid, &["getenv"], "TZ");
    assert_eq!(tz["categories"][0], "timezone");
    let proxy = run.probe(pid, &["getenv"], "HTTPS_PROXY");
    assert_eq!(proxy["categories"][0], "proxy");

    let connects = run.of_type("connect");
    assert_eq!(connects.len(), 1, "one connect: {connects:#?}");
    let conn = connects[0];
    assert_eq!(conn["pid"], pid);
    assert_eq!(conn["destination"]["family"], "ipv4");
    assert_eq!(conn["destination"]["address"], "127.0.0.1");
    assert_eq!(conn["destination"]["port"], listener.port);
    assert_eq!(conn["result"], "ok");
    let before = probes_before(conn);
    for (cat, how, target) in [
        ("timezone", "getenv", "TZ"),
        ("proxy", "getenv", "HTTPS_PROXY"),
    ] {
        assert!(
            before.contains(&(cat.into(), how.into(), target.into())),
            "{cat} {how} {target} missing before the connect: {before:?}"
        );
    }
    assert!(
        before
            .iter()
            .any(|(c, h, t)| c == "timezone" && h.starts_with("open") && t == "/etc/localtime"),
        "{before:?}"
    );
    assert!(
        before
            .iter()
            .any(|(c, h, t)| c == "timezone" && h.starts_with("readlink") && t == "/etc/localtime"),
        "{before:?}"
    );
    assert_eq!(report["connections"].as_array().unwrap().len(), 1);
}

#[test]
fn node_reads_proxy_and_time_zone_then_connects() {
    if !bpf_available("node_reads_proxy_and_time_zone_then_connects") {
        return;
    }
    let listener = Listener::start();
    let port = listener.port.to_string();
    let script = node_fixture();
    let run = probectl_json(
        &[OsStr::new("node"), script.as_os_str(), OsStr::new(&port)],
        &[("HTTPS_PROXY", "http://proxy.invalid:3128")],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let report = run.report();
    let pid = report["cli"]["pid"].as_u64().unwrap();
    assert_eq!(report["cli"]["name"], "node");
    assert_eq!(
        report["cli"]["script"],
        script.to_str().unwrap(),
        "the CLI is named by its script"
    );

    // process.env.HTTPS_PROXY -> getenv("HTTPS_PROXY"); Intl time zone -> getenv("TZ")
    // and /etc/localtime.
    run.probe(pid, &["getenv"], "HTTPS_PROXY");
    run.probe(pid, &["getenv"], "TZ");
    let connects: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == listener.port)
        .collect();
    assert_eq!(
        connects.len(),
        1,
        "one connect to the listener: {:#?}",
        run.of_type("connect")
    );
    let conn = connects[0];
    assert_eq!(conn["pid"], pid);
    assert_eq!(conn["destination"]["address"], "127.0.0.1");
    assert!(
        conn["result"] == "in_progress" || conn["result"] == "ok",
        "non-blocking connect: {}",
        conn["result"]
    );
    if conn["result"] == "in_progress" {
        assert_eq!(
            conn["outcome"], "established",
            "the handshake's outcome from the socket state: {conn:#}"
        );
    }
    let before = probes_before(conn);
    assert!(
        before.contains(&("proxy".into(), "getenv".into(), "HTTPS_PROXY".into())),
        "{before:?}"
    );
    assert!(
        before.contains(&("timezone".into(), "getenv".into(), "TZ".into())),
        "{before:?}"
    );
    assert!(
        before
            .iter()
            .any(|(c, _, t)| c == "timezone" && t == "/etc/localtime"),
        "ICU looks at /etc/localtime before the connect: {before:?}"
    );
}

#[test]
fn grandchild_inherits_the_watch_from_its_first_instruction() {
    if !bpf_available("grandchild_inherits_the_watch_from_its_first_instruction") {
        return;
    }
    let listener = Listener::start();
    let port = listener.port.to_string();
    let pidfile = tempfile_path("pids");
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("fork"),
            OsStr::new(&port),
            pidfile.as_os_str(),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let [root, child, grandchild] = fork_pids(&pidfile);
    assert_eq!(run.report()["cli"]["pid"], root);

    // Only the grandchild probes; the kernel watched it because its parent was watched.
    run.probe(grandchild, &["openat", "open"], "/etc/localtime");
    run.probe(grandchild, &["getenv"], "TZ");
    assert!(
        run.of_type("probe").iter().all(|p| p["pid"] == grandchild),
        "only the grandchild probes: {:#?}",
        run.of_type("probe")
    );
    let conn = run.of_type("connect");
    assert_eq!(conn.len(), 1, "{conn:#?}");
    assert_eq!(conn[0]["pid"], grandchild);
    assert_eq!(
        conn[0]["lineage"],
        serde_json::json!([grandchild, child, root]),
        "lineage from fork events"
    );
    assert!(
        probes_before(conn[0])
            .iter()
            .any(|(c, _, t)| c == "timezone" && t == "/etc/localtime")
    );
    let exits: Vec<u64> = run
        .of_type("exit")
        .iter()
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    for pid in [root, child, grandchild] {
        assert!(exits.contains(&pid), "exit of {pid} seen: {exits:?}");
    }
}

#[test]
fn unwatched_processes_produce_no_events() {
    if !bpf_available("unwatched_processes_produce_no_events") {
        return;
    }
    // The watched command blocks on a FIFO. Opening the FIFO's write end returns only
    // once the command has opened the read end, i.e. while the programs are attached
    // and the run is live. An outsider then does every probe; only after it finished is
    // the command released.
    let listener = Listener::start();
    let port = listener.port.to_string();
    let fifo = fifo(&test_dir("gate"), "gate");
    let fixture = c_fixture();
    let run = {
        let (fixture, fifo) = (fixture.clone(), fifo.clone());
        std::thread::spawn(move || {
            probectl_json(
                &[
                    fixture.as_os_str(),
                    OsStr::new("wait-fifo"),
                    fifo.as_os_str(),
                ],
                &[],
            )
        })
    };
    let mut gate = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the FIFO's write end");
    let outsider = std::process::Command::new(&fixture)
        .args(["probe", &port])
        .output()
        .expect("run outsider");
    assert!(outsider.status.success(), "outsider probed and connected");
    std::io::Write::write_all(&mut gate, b"x").expect("release the watched command");
    drop(gate);
    let run = run.join().expect("probectl thread");
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    assert!(
        run.records
            .iter()
            .all(|r| r.get("pid").is_none_or(|p| p == pid)),
        "only the watched pid appears: {:#?}",
        run.records
    );
    assert!(
        run.of_type("probe").is_empty(),
        "the outsider's probes leaked: {:#?}",
        run.of_type("probe")
    );
    assert!(
        run.of_type("connect").is_empty(),
        "the outsider's connect leaked: {:#?}",
        run.of_type("connect")
    );
    assert_eq!(
        run.of_type("exec").len(),
        1,
        "the watched command itself was seen"
    );
}

#[test]
fn command_exit_code_is_passed_through() {
    if !bpf_available("command_exit_code_is_passed_through") {
        return;
    }
    let run = probectl_json(
        &[c_fixture().as_os_str(), OsStr::new("exit"), OsStr::new("7")],
        &[],
    );
    assert_eq!(run.code, 7, "stderr:\n{}", run.stderr);
    assert_eq!(run.report()["exit_code"], 7);
    let exit = run.of_type("exit");
    assert_eq!(
        exit[0]["exit_code"], 7,
        "exit_group code from the kernel: {exit:#?}"
    );
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    dir.join(format!(
        "{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

#[test]
fn a_burst_is_delivered_or_counted_as_lost_never_silently_dropped() {
    if !bpf_available("a_burst_is_delivered_or_counted_as_lost_never_silently_dropped") {
        return;
    }
    const CALLS: u64 = 50_000;
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("burst"),
            OsStr::new(&CALLS.to_string()),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let report = run.report();
    let delivered: u64 = report["probes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["probes"].as_array().unwrap())
        .filter(|p| p["target"] == "TZ")
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    let lost: u64 = report["drops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            ["kernel:ring_full_env", "userspace:timeline_overflow"]
                .contains(&d["reason"].as_str().unwrap())
        })
        .map(|d| d["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        delivered + lost,
        CALLS,
        "every getenv(TZ) is either reported or counted as lost: delivered {delivered}, lost {lost}, drops {:#}",
        report["drops"]
    );
    // Repeats are folded in the stream: one line, not fifty thousand.
    let streamed = run
        .of_type("probe")
        .iter()
        .filter(|p| p["target"] == "TZ")
        .count();
    assert_eq!(streamed, 1);
}

#[test]
fn command_runs_as_the_sudo_invoking_user() {
    if !bpf_available("command_runs_as_the_sudo_invoking_user") {
        return;
    }
    let fixture = c_fixture();
    let run = probectl_json(
        &[fixture.as_os_str(), OsStr::new("exit"), OsStr::new("0")],
        &[("SUDO_UID", "65534"), ("SUDO_GID", "65534")],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let exec = run.of_type("exec");
    assert_eq!(exec.len(), 1, "{exec:#?}");
    assert_eq!(exec[0]["uid"], 65534, "exec'd as SUDO_UID, not root");
    assert_eq!(run.report()["cli"]["uid"], 65534);
}

#[test]
fn long_and_many_arguments_are_flagged_and_counted_never_silently_cut() {
    if !bpf_available("long_and_many_arguments_are_flagged_and_counted_never_silently_cut") {
        return;
    }
    let long = "x".repeat(300);
    let extra: Vec<String> = (0..10).map(|i| format!("arg{i}")).collect();
    let fixture = c_fixture();
    let mut args: Vec<&OsStr> = vec![
        fixture.as_os_str(),
        OsStr::new("exit"),
        OsStr::new("0"),
        OsStr::new(&long),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let run = probectl_json(&args, &[]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let exec = run.of_type("exec");
    assert_eq!(exec.len(), 1);
    let argv = exec[0]["argv"].as_array().unwrap();
    assert_eq!(argv.len(), 8, "eight slots are captured: {argv:#?}");
    assert_eq!(
        argv[3].as_str().unwrap().len(),
        127,
        "the long argument is cut at 127 bytes"
    );
    assert_eq!(exec[0]["argv_truncated"], serde_json::json!([3]));
    assert_eq!(exec[0]["argv_incomplete"], true, "14 arguments, 8 captured");
    let truncated = run.report()["truncated"].as_array().unwrap().clone();
    assert!(
        truncated
            .iter()
            .any(|t| t["reason"] == "argv" && t["count"] == 1),
        "{truncated:#?}"
    );
}
