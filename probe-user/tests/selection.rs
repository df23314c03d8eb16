//! Selection in the kernel: a process whose program the policy names is watched from
//! its exec on, wherever it was started, with no userspace round trip (what daemon
//! mode relies on).

mod common;

use std::ffi::OsStr;

use common::*;

#[test]
fn a_selected_program_started_elsewhere_is_watched_from_its_exec() {
    if !bpf_available("a_selected_program_started_elsewhere_is_watched_from_its_exec") {
        return;
    }
    let fixture = c_fixture();
    let dir = test_dir("select");
    let policy = selecting_policy(&dir);
    let fifo = fifo(&dir, "gate");

    // The run's own command is a shell waiting on a FIFO; once its `cat` has exec'd,
    // the programs are attached and the selection is in the kernel.
    let script = format!("cat {} >/dev/null", fifo.display());
    let mut run = StreamingRun::start_with_policy(
        Some(&policy),
        &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(&script)],
        &[],
    );
    run.wait_for("the run's cat", |r| {
        r["type"] == "exec" && r["exe"].as_str().is_some_and(|e| e.ends_with("/cat"))
    });

    let listener = Listener::start();
    let outsider = std::process::Command::new(&fixture)
        .args(["probe", &listener.port.to_string()])
        .output()
        .expect("run the outsider");
    assert!(outsider.status.success());
    // The outsider has exited, so its events are in the ring; its exit record shows
    // they have been read.
    run.wait_for("the outsider's exit", |r| {
        r["type"] == "exit" && r["pid"] != serde_json::Value::Null && {
            let pid = r["pid"].as_u64().unwrap();
            std::fs::metadata(format!("/proc/{pid}")).is_err()
        }
    });
    std::fs::write(&fifo, b"x").expect("release the run");
    let run = run.finish();
    assert_eq!(run.code, 0);
    let exec = run
        .of_type("exec")
        .into_iter()
        .find(|e| e["exe"] == fixture.to_str().unwrap())
        .cloned()
        .expect("the outsider's exec was seen");
    let pid = exec["pid"].as_u64().unwrap();
    assert_eq!(exec["argv"][1], "probe");
    run.probe(pid, &["getenv"], "TZ");
    run.probe(pid, &["openat", "open"], "/etc/localtime");
    let conn: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["pid"] == pid)
        .collect();
    assert_eq!(conn.len(), 1, "{:#?}", run.of_type("connect"));
    assert_eq!(conn[0]["destination"]["port"], listener.port);
}

#[test]
fn a_selected_program_already_running_at_start_is_watched() {
    if !bpf_available("a_selected_program_already_running_at_start_is_watched") {
        return;
    }
    let dir = test_dir("select-running");
    let policy = selecting_policy(&dir);
    let gate = fifo(&dir, "outsider-gate");
    let end = fifo(&dir, "run-end");
    let listener = Listener::start();
    // Started before probectl: no exec for the kernel to select it by.
    let mut outsider = std::process::Command::new(c_fixture())
        .args([
            "gate-probe",
            gate.to_str().unwrap(),
            &listener.port.to_string(),
        ])
        .spawn()
        .expect("start the outsider");
    let pid = outsider.id() as u64;
    let script = format!("cat {} >/dev/null", end.display());
    let mut run = StreamingRun::start_with_policy(
        Some(&policy),
        &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(&script)],
        &[],
    );
    // probectl seeded the running processes before it let its command go.
    run.wait_for("the run's cat", |r| {
        r["type"] == "exec" && r["exe"].as_str().is_some_and(|e| e.ends_with("/cat"))
    });
    std::fs::write(&gate, b"x").expect("release the outsider");
    assert!(outsider.wait().unwrap().success());
    run.wait_for("the outsider's exit", |r| {
        r["type"] == "exit" && r["pid"] == pid
    });
    std::fs::write(&end, b"x").expect("end the run");
    let run = run.finish();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    run.probe(pid, &["getenv"], "TZ");
    run.probe(pid, &["openat", "open"], "/etc/localtime");
    let conn: Vec<_> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["pid"] == pid)
        .collect();
    assert_eq!(conn.len(), 1, "{:#?}", run.of_type("connect"));
    assert_eq!(conn[0]["destination"]["port"], listener.port);
    assert_eq!(
        conn[0]["process"],
        c_fixture().file_name().unwrap().to_str().unwrap(),
        "named from /proc, since no exec was seen: {:#}",
        conn[0]
    );
}

#[test]
fn a_bad_selector_is_rejected_with_a_hint() {
    let dir = test_dir("select-bad");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: x\nselect:\n  comms: [\"/usr/bin/node\"]\n").unwrap();
    let mut cmd = std::process::Command::new(probectl());
    cmd.args(["policy", "check"]).arg(&policy);
    let out = run_with_deadline(cmd);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("is not a program name") && msg.contains("hint:"),
        "{msg}"
    );
}

/// The default policy with `select:` replaced.
/// Starts `run_args` under `probectl run` with `policy` while the run's own command
/// waits; returns the pid of `outsider` (started once the run is up, gated on `gate`)
/// and the finished run.
fn run_outsider(
    policy: &std::path::Path,
    dir: &std::path::Path,
    outsider: &mut std::process::Command,
    gate: &std::path::Path,
    exec_pid: impl Fn(&serde_json::Value) -> bool,
) -> (u64, JsonRun) {
    let end = fifo(dir, "run-end");
    let script = format!("cat {} >/dev/null", end.display());
    let mut run = StreamingRun::start_with_policy(
        Some(policy),
        &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(&script)],
        &[],
    );
    run.wait_for("the run's cat", |r| {
        r["type"] == "exec" && r["exe"].as_str().is_some_and(|e| e.ends_with("/cat"))
    });
    let mut child = outsider.spawn().expect("start the outsider");
    let exec = run.wait_for("the outsider's exec, selected", |r| {
        r["type"] == "exec" && exec_pid(r)
    });
    let pid = exec["pid"].as_u64().unwrap();
    std::fs::write(gate, b"x").expect("release the outsider");
    assert!(child.wait().unwrap().success());
    run.wait_for("the outsider's exit", |r| {
        r["type"] == "exit" && r["pid"] == pid
    });
    std::fs::write(&end, b"x").expect("end the run");
    (pid, run.finish())
}

#[test]
fn a_program_selected_by_exe_glob_is_watched_after_userspace_picks_it() {
    if !bpf_available("a_program_selected_by_exe_glob_is_watched_after_userspace_picks_it") {
        return;
    }
    let dir = test_dir("select-exe");
    let name = c_fixture()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let policy = policy_selecting(&dir, &format!("  exe: [\"**/{name}\"]"));
    let gate = fifo(&dir, "gate");
    let listener = Listener::start();
    let mut outsider = std::process::Command::new(c_fixture());
    outsider.args([
        "gate-probe",
        gate.to_str().unwrap(),
        &listener.port.to_string(),
    ]);
    let (pid, run) = run_outsider(&policy, &dir, &mut outsider, &gate, |r| {
        r["selected_by"] == format!("exe **/{name}")
    });
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    run.probe(pid, &["getenv"], "TZ");
    assert!(
        run.of_type("connect")
            .iter()
            .any(|c| c["pid"] == pid && c["destination"]["port"] == listener.port),
        "{:#?}",
        run.of_type("connect")
    );
    // Nothing else the machine ran in the meantime was reported.
    assert!(
        run.of_type("exec")
            .iter()
            .all(|e| e["pid"] == pid || e["selected_by"].is_null()),
        "{:#?}",
        run.of_type("exec")
    );
}

#[test]
fn a_program_run_by_a_selected_uid_is_watched_from_its_exec() {
    if !bpf_available("a_program_run_by_a_selected_uid_is_watched_from_its_exec") {
        return;
    }
    let dir = test_dir("select-uid");
    let policy = policy_selecting(&dir, "  uids: [65534]");
    let gate = fifo(&dir, "gate");
    std::fs::set_permissions(&gate, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let listener = Listener::start();
    let fixture = c_fixture();
    let mut outsider = std::process::Command::new("setpriv");
    outsider
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&fixture)
        .args([
            "gate-probe",
            gate.to_str().unwrap(),
            &listener.port.to_string(),
        ]);
    let fixture_path = fixture.to_str().unwrap().to_owned();
    let (pid, run) = run_outsider(&policy, &dir, &mut outsider, &gate, |r| {
        r["exe"] == fixture_path.as_str() && r["uid"] == 65534
    });
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    run.probe(pid, &["getenv"], "TZ");
    run.probe(pid, &["openat", "open"], "/etc/localtime");
}
