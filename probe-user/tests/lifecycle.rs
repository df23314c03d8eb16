//! Root integration tests of the watched set across the process lifecycle: threads,
//! a leader that exits before its threads, exec from a non-leader thread, and a
//! double-forked daemon that outlives its parents.

mod common;

use std::ffi::OsStr;

use common::*;

/// Asserts that `pid` opened /etc/localtime, looked up TZ and connected to `port`,
/// with the probes linked to the connection.
fn assert_probed_then_connected(run: &JsonRun, pid: u64, port: u16) {
    run.probe(pid, &["openat", "open"], "/etc/localtime");
    run.probe(pid, &["getenv"], "TZ");
    let conns: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["port"] == port)
        .collect();
    assert_eq!(
        conns.len(),
        1,
        "one connect to {port}: {:#?}",
        run.of_type("connect")
    );
    assert_eq!(conns[0]["pid"], pid);
    let before = probes_before(conns[0]);
    assert!(
        before
            .iter()
            .any(|(c, _, t)| c == "timezone" && t == "/etc/localtime"),
        "{before:?}"
    );
}

#[test]
fn a_thread_that_probes_is_charged_to_its_process() {
    if !bpf_available("a_thread_that_probes_is_charged_to_its_process") {
        return;
    }
    let listener = Listener::start();
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("thread"),
            OsStr::new(&listener.port.to_string()),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    assert_probed_then_connected(&run, pid, listener.port);
    let probe = run.probe(pid, &["getenv"], "TZ");
    assert_ne!(probe["tid"], pid, "the probing thread is not the leader");
    assert!(
        run.of_type("exec").len() == 1 && run.of_type("exit").len() == 1,
        "a thread is not a new process: {:#?}",
        run.records
    );
}

#[test]
fn a_process_stays_watched_after_its_leader_thread_exits() {
    if !bpf_available("a_process_stays_watched_after_its_leader_thread_exits") {
        return;
    }
    let listener = Listener::start();
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("leader-exit"),
            OsStr::new(&listener.port.to_string()),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    assert_probed_then_connected(&run, pid, listener.port);
    let exits = run.of_type("exit");
    assert_eq!(
        exits.len(),
        1,
        "one exit, when the last thread ended: {exits:#?}"
    );
    assert_eq!(exits[0]["exit_code"], 0);
}

#[test]
fn exec_from_a_non_leader_thread_stays_watched() {
    if !bpf_available("exec_from_a_non_leader_thread_stays_watched") {
        return;
    }
    let listener = Listener::start();
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("thread-exec"),
            OsStr::new(&listener.port.to_string()),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    let execs = run.of_type("exec");
    assert_eq!(
        execs.len(),
        2,
        "the first exec and the thread's exec: {execs:#?}"
    );
    assert!(
        execs.iter().all(|e| e["pid"] == pid),
        "exec keeps the thread-group id: {execs:#?}"
    );
    assert_eq!(execs[1]["argv"][1], "probe", "{execs:#?}");
    assert_probed_then_connected(&run, pid, listener.port);
}

#[test]
fn a_double_forked_daemon_is_watched_after_its_parents_exit() {
    if !bpf_available("a_double_forked_daemon_is_watched_after_its_parents_exit") {
        return;
    }
    let listener = Listener::start();
    let pidfile = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("daemon-{}", std::process::id()));
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("daemon"),
            OsStr::new(&listener.port.to_string()),
            pidfile.as_os_str(),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let [root, child, daemon] = fork_pids(&pidfile);
    assert_probed_then_connected(&run, daemon, listener.port);
    // The daemon probed only after root and child had exited: the run waited for it.
    let exit_at = |pid: u64| {
        run.of_type("exit")
            .iter()
            .find(|e| e["pid"] == pid)
            .map(|e| e["offset_ms"].as_f64().unwrap())
    };
    let probe_at = run.probe(daemon, &["getenv"], "TZ")["offset_ms"]
        .as_f64()
        .unwrap();
    let (root_exit, child_exit) = (
        exit_at(root).expect("root exit"),
        exit_at(child).expect("child exit"),
    );
    assert!(
        probe_at > root_exit && probe_at > child_exit,
        "daemon probed at {probe_at} ms, after exits at {root_exit} and {child_exit}"
    );
    assert!(
        exit_at(daemon).is_some(),
        "the daemon's own exit ends the run"
    );
}

/// A shell subshell `( cat | tr | cut )` forks without an exec, then forks the
/// pipeline's commands: they are two levels below sh in the real tree, and the
/// readable stream draws them there (the subshell itself has no exec line), not at
/// the top as when only exec records built the tree.
#[test]
fn commands_under_a_fork_only_subshell_are_drawn_at_their_real_depth() {
    if !bpf_available("commands_under_a_fork_only_subshell_are_drawn_at_their_real_depth") {
        return;
    }
    let script = "(cat /etc/hostname | tr a-z A-Z | cut -c1-3); echo done";
    let args = [OsStr::new("sh"), OsStr::new("-c"), OsStr::new(script)];

    // The real lineage, from the JSON records: each command's parent is a process
    // that never exec'd, itself a child of sh.
    let run = probectl_json(&args, &[]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let sh = run.report()["cli"]["pid"].as_u64().unwrap();
    let execs = run.of_type("exec");
    let exec_pids: Vec<&serde_json::Value> = execs.iter().map(|e| &e["pid"]).collect();
    for name in ["cat", "tr", "cut"] {
        let e = execs
            .iter()
            .find(|e| e["argv"][0] == name)
            .unwrap_or_else(|| panic!("no exec of {name}: {execs:#?}"));
        assert_ne!(e["ppid"], sh, "{name} is not sh's own child: {e:#}");
        assert!(
            !exec_pids.contains(&&e["ppid"]),
            "the subshell never execs: {e:#}"
        );
        assert_eq!(e["ancestors"][0], sh, "the subshell is sh's child: {e:#}");
    }

    // The readable stream: sh at the top, the subshell's commands two guides in.
    let out = test_dir("subshell-tree").join("readable.txt");
    let _ = std::fs::remove_file(&out);
    let mut cmd = probectl_command();
    cmd.args(["run", "--no-color", "-o"])
        .arg(&out)
        .arg("--")
        .args(args);
    let done = run_with_deadline(cmd);
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("readable output");
    // "  +0.010s  │ │ [123] exec    /usr/bin/tr  argv: tr a-z A-Z": the guides
    // between the time column and the pid are the depth.
    let depth_of = |program: &str| -> usize {
        let line = text
            .lines()
            .find(|l| l.contains("] exec") && l.contains(&format!("argv: {program}")))
            .unwrap_or_else(|| panic!("no exec line of {program}:\n{text}"));
        let after_time = line.trim_start().split_once("  ").map_or("", |(_, r)| r);
        after_time.matches("│ ").count()
    };
    assert_eq!(depth_of("sh"), 0, "{text}");
    for name in ["cat", "tr", "cut"] {
        assert_eq!(depth_of(name), 2, "{name} under sh's subshell:\n{text}");
    }
}
