//! Root integration tests of the process family's tiers: tp_btf where the kernel
//! loads it, else the sched/task tracepoints, each chosen by loading it. `doctor`
//! and every report name the tier in use and the tier passed over with its reason,
//! and execs, forks and exits are seen through whichever tier is in use.
//!
//! The fallback is forced for real, without kernel BTF (`common::btf`).

mod common;

use std::ffi::OsStr;

use common::{
    btf::{HIDE_BTF, doctor, probectl_with},
    daemon::Daemon,
    *,
};
use serde_json::Value;

fn process_choice(sensors: &Value) -> &Value {
    sensors
        .as_array()
        .expect("sensors")
        .iter()
        .find(|s| s["family"] == "process")
        .unwrap_or_else(|| panic!("no process family in {sensors:#}"))
}

/// A watched root that forks a child that forks a grandchild: the exec, the forks
/// (as lineage) and the three exits must all be seen.
fn assert_exec_fork_exit_seen(btf: bool, name: &str) -> JsonRun {
    let listener = Listener::start();
    let pidfile = test_dir(name).join("pids");
    let _ = std::fs::remove_file(&pidfile);
    let port = listener.port.to_string();
    let mut cmd = probectl_with(
        btf,
        &[OsStr::new("run"), OsStr::new("--json"), OsStr::new("--")],
    );
    cmd.args([
        c_fixture().as_os_str(),
        OsStr::new("fork"),
        OsStr::new(&port),
        pidfile.as_os_str(),
    ]);
    let run = json_run(cmd);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let [root, child, grandchild] = fork_pids(&pidfile);
    let execs = run.of_type("exec");
    assert!(
        execs.iter().any(|e| e["pid"] == root
            && e["argv"][1] == "fork"
            && e["exe"].as_str().is_some_and(|f| f.contains("/tz_probe"))),
        "the root's exec, with argv and the kernel's filename: {execs:#?}"
    );
    let conn = run.of_type("connect");
    assert_eq!(conn.len(), 1, "{conn:#?}");
    assert_eq!(
        conn[0]["lineage"],
        serde_json::json!([grandchild, child, root]),
        "lineage from the fork events"
    );
    let exits: Vec<u64> = run
        .of_type("exit")
        .iter()
        .map(|e| e["pid"].as_u64().unwrap())
        .collect();
    for pid in [root, child, grandchild] {
        assert_eq!(
            exits.iter().filter(|p| **p == pid).count(),
            1,
            "one exit of {pid}: {exits:?}"
        );
    }
    run
}

#[test]
fn without_kernel_btf_the_process_family_falls_back_to_tracepoints_and_says_why() {
    if !bpf_available(
        "without_kernel_btf_the_process_family_falls_back_to_tracepoints_and_says_why",
    ) {
        return;
    }
    let (code, doc) = doctor(false);
    assert_eq!(code, 0, "the fallback is healthy: {doc:#}");
    let process = process_choice(&doc["sensors"]);
    assert!(
        process["chosen"]
            .as_str()
            .is_some_and(|c| c.starts_with("tracepoints sched/*")),
        "{process:#}"
    );
    let passed = process["passed_over"].as_array().expect("passed_over");
    assert_eq!(passed.len(), 1, "{process:#}");
    assert!(
        passed[0]["attach_point"]
            .as_str()
            .is_some_and(|a| a.starts_with("tp_btf ")),
        "{process:#}"
    );
    let reason = passed[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no kernel BTF") && !reason.contains('\n'),
        "a one-line reason: {process:#}"
    );
    assert!(
        process["blind_spots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b.as_str().unwrap().contains("group_dead")),
        "the tracepoints' blind spot is named: {process:#}"
    );
    assert!(
        doc["coverage_notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("tp_btf passed over (no kernel BTF")),
        "{:#}",
        doc["coverage_notes"]
    );
    // The programs the tier replaces were attached instead.
    assert!(
        doc["programs_failed"].as_array().unwrap().is_empty(),
        "{:#}",
        doc["programs_failed"]
    );

    let run = assert_exec_fork_exit_seen(false, "process-tier-no-btf");
    let report = process_choice(&run.report()["sensors"]);
    assert_eq!(
        report["chosen"], process["chosen"],
        "the report names the tier"
    );
    assert_eq!(report["passed_over"], process["passed_over"]);
}

#[test]
fn the_process_tier_in_use_is_named_and_sees_exec_fork_exit() {
    if !bpf_available("the_process_tier_in_use_is_named_and_sees_exec_fork_exit") {
        return;
    }
    let (code, doc) = doctor(true);
    assert_eq!(code, 0, "{doc:#}");
    let process = process_choice(&doc["sensors"]);
    let chosen = process["chosen"].as_str().unwrap_or_default();
    let passed = process["passed_over"].as_array().expect("passed_over");
    if chosen.starts_with("tp_btf ") {
        assert!(passed.is_empty(), "{process:#}");
    } else {
        // This kernel refused tp_btf: the doctor says which program and why.
        assert!(chosen.starts_with("tracepoints sched/*"), "{process:#}");
        assert!(
            passed[0]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("tp_btf_")),
            "{process:#}"
        );
    }
    eprintln!("process tier on this kernel: {chosen}");
    let run = assert_exec_fork_exit_seen(true, "process-tier-default");
    assert_eq!(process_choice(&run.report()["sensors"])["chosen"], chosen);
}

#[test]
fn the_daemon_status_names_the_process_tier_and_the_tier_passed_over() {
    if !bpf_available("the_daemon_status_names_the_process_tier_and_the_tier_passed_over") {
        return;
    }
    let wrapper: Vec<String> = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        .into_iter()
        .map(str::to_owned)
        .chain([HIDE_BTF.to_owned()])
        .collect();
    let daemon = Daemon::start_wrapped("process-tier-status", "", &wrapper);
    let status = daemon.status();
    let process = process_choice(&status["sensors"]);
    assert!(
        process["chosen"]
            .as_str()
            .is_some_and(|c| c.starts_with("tracepoints sched/*")),
        "{process:#}"
    );
    let passed = &process["passed_over"][0];
    assert!(
        passed["attach_point"]
            .as_str()
            .is_some_and(|a| a.starts_with("tp_btf "))
            && passed["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no kernel BTF")),
        "{process:#}"
    );
    let out = run_with_deadline({
        let mut c = daemon.client();
        c.arg("status");
        c
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("passed over tp_btf ") && l.contains("no kernel BTF")),
        "{text}"
    );
    let (code, stderr) = daemon.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, 0, "{stderr}");
}
