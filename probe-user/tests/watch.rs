//! Root integration tests of `probectl watch`: processes that already run are watched
//! with their descendants, the ones they have and the ones they fork later.

mod common;

use std::ffi::OsStr;

use common::*;

#[test]
fn watch_follows_a_running_tree_that_later_forks_and_probes() {
    if !bpf_available("watch_follows_a_running_tree_that_later_forks_and_probes") {
        return;
    }
    let dir = test_dir("watch");
    let gate = fifo(&dir, "gate");
    let listener = Listener::start();
    // Already running before probectl: a shell whose child waits on the gate; then it
    // forks the fixture, which probes and connects.
    let script = format!(
        "cat {} >/dev/null; {} probe {}",
        gate.display(),
        c_fixture().display(),
        listener.port
    );
    let mut shell = std::process::Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .expect("start the shell");
    let sh = shell.id() as u64;
    let sh_arg = sh.to_string();
    let mut run = StreamingRun::start_probectl(&[
        OsStr::new("watch"),
        OsStr::new("--json"),
        OsStr::new(&sh_arg),
    ]);
    let watching = run.wait_for("the watching record", |r| r["type"] == "watching");
    let pids = watching["pids"].as_array().unwrap();
    assert_eq!(pids[0], sh, "{watching:#}");
    assert!(
        pids.len() >= 2,
        "the shell and its waiting cat: {watching:#}"
    );
    std::fs::write(&gate, b"x").expect("open the gate");
    assert!(shell.wait().unwrap().success());
    let run = run.finish();
    assert_eq!(run.code, 0);
    let exec = run
        .of_type("exec")
        .into_iter()
        .find(|e| e["argv"][1] == "probe")
        .cloned()
        .unwrap_or_else(|| panic!("the fixture's exec: {:#?}", run.of_type("exec")));
    let fixture = exec["pid"].as_u64().unwrap();
    assert_eq!(exec["ppid"], sh, "lineage from the seeded shell");
    run.probe(fixture, &["getenv"], "TZ");
    let conn: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["pid"] == fixture)
        .collect();
    assert_eq!(conn.len(), 1, "{:#?}", run.of_type("connect"));
    // The fixture, the shell, then the shell's own ancestors, known from /proc.
    let lineage = conn[0]["lineage"].as_array().unwrap();
    assert_eq!(
        lineage[..2],
        [serde_json::json!(fixture), serde_json::json!(sh)]
    );
    assert_eq!(lineage[2], std::process::id(), "the test started the shell");
    assert_eq!(run.report()["cli"]["pid"], sh);
}

#[test]
fn watch_for_a_duration_reports_and_exits_0() {
    if !bpf_available("watch_for_a_duration_reports_and_exits_0") {
        return;
    }
    let mut sleeper = std::process::Command::new("sleep")
        .arg("120")
        .spawn()
        .expect("start sleep");
    let pid = sleeper.id().to_string();
    let mut cmd = probectl_command();
    cmd.args(["watch", "--json", "--for", "1s", &pid]);
    let out = run_with_deadline(cmd);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["type"] == "report")
        .unwrap_or_else(|| panic!("no report in:\n{stdout}"));
    assert_eq!(report["cli"]["name"], "sleep");
}

#[test]
fn watching_a_pid_that_does_not_exist_says_so_and_exits_3() {
    // Checked before anything is loaded: no root needed.
    let mut cmd = probectl_command();
    cmd.args(["watch", "999999999"]);
    let out = run_with_deadline(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no process 999999999") && stderr.contains("hint:"),
        "{stderr}"
    );
}
