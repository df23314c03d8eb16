//! Root integration tests of `run` and `watch` with a daemon running: they subscribe
//! to it instead of loading a second copy of the programs (the daemon's own sink
//! shows it produced the records), and `--standalone` still loads their own.

mod common;

use common::daemon::Daemon;
use common::*;

#[test]
fn run_goes_through_the_daemon_when_it_runs_and_standalone_on_request() {
    if !bpf_available("run_goes_through_the_daemon_when_it_runs_and_standalone_on_request") {
        return;
    }
    let d = Daemon::start("via-daemon-run", "memory: {tree_grace: 1s}\n");
    let listener = Listener::start();
    let port = listener.port.to_string();
    let fixture = c_fixture();

    let mut cmd = d.client();
    cmd.args(["run", "--json", "--"])
        .arg(&fixture)
        .args(["probe", &port]);
    let run = json_run(cmd);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let exec = run
        .of_type("exec")
        .into_iter()
        .find(|e| e["argv"][1] == "probe")
        .cloned()
        .unwrap_or_else(|| panic!("the fixture's exec: {:#?}", run.records));
    let pid = exec["pid"].as_u64().unwrap();
    run.probe(pid, &["getenv"], "TZ");
    let conn = run.of_type("connect");
    assert_eq!(conn.len(), 1, "{conn:#?}");
    assert!(
        !probes_before(conn[0]).is_empty(),
        "the connect lists the probes before it: {:#}",
        conn[0]
    );
    assert_eq!(run.report()["exit_code"], 0);
    assert_eq!(run.report()["cli"]["pid"], pid);
    // The daemon produced them: its own sink has the same exec.
    d.wait_record("the run's exec in the daemon's sink", |r| {
        r["type"] == "exec" && r["pid"] == pid
    });
    assert_eq!(d.status()["subscribers"], 0, "the run's subscription ended");
    // Its tree exited: a second after (`tree_grace: 1s`) the daemon lets its
    // timeline and process entries go, counted.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let timeline = d.status()["trees"]["timeline"].clone();
        if timeline["trees_evicted_after_exit"].as_u64() >= Some(1) {
            assert!(
                timeline["probes_evicted"].as_u64() >= Some(1),
                "{timeline:#}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never evicted: {timeline:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // --standalone: probectl's own programs, so the daemon never sees this one.
    let mut cmd = d.client();
    cmd.args(["run", "--json", "--standalone", "--"])
        .arg(&fixture)
        .args(["probe", &port]);
    let own = json_run(cmd);
    assert_eq!(own.code, 0, "{}", own.stderr);
    let own_pid = own
        .of_type("exec")
        .into_iter()
        .find(|e| e["argv"][1] == "probe")
        .map(|e| e["pid"].as_u64().unwrap())
        .expect("the fixture's exec");
    own.probe(own_pid, &["getenv"], "TZ");
    assert!(
        !d.records().iter().any(|r| r["pid"] == own_pid),
        "a standalone run does not go through the daemon"
    );
    // An exit code passes through the daemon too; and times count from this run's
    // start, not the daemon's (which started before the standalone run above).
    let mut cmd = d.client();
    cmd.args(["run", "--json", "--", "sh", "-c", "exit 7"]);
    let late = json_run(cmd);
    assert_eq!(late.code, 7);
    let exec = late.of_type("exec")[0];
    let offset = exec["offset_ms"].as_f64().unwrap();
    assert!(
        (0.0..2000.0).contains(&offset),
        "offset from the run's start: {exec}"
    );
    let uptime_ms = d.status()["uptime_s"].as_f64().unwrap() * 1000.0;
    assert!(
        uptime_ms > offset + 1000.0,
        "the daemon is older than the run: {uptime_ms}"
    );
}

#[test]
fn watch_through_the_daemon_follows_a_running_tree_that_later_forks_and_probes() {
    if !bpf_available("watch_through_the_daemon_follows_a_running_tree_that_later_forks_and_probes")
    {
        return;
    }
    let d = Daemon::start("via-daemon-watch", "");
    let gate = fifo(&d.dir, "gate");
    let listener = Listener::start();
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
    let mut cmd = d.client();
    cmd.args(["watch", "--json", &sh.to_string()]);
    let mut run = StreamingRun::spawn(cmd);
    let watching = run.wait_for("the watching record", |r| r["type"] == "watching");
    assert_eq!(watching["roots"][0], sh, "{watching:#}");
    std::fs::write(&gate, b"x").expect("open the gate");
    assert!(shell.wait().unwrap().success());
    let run = run.finish();
    assert_eq!(run.code, 0);
    let exec = run
        .of_type("exec")
        .into_iter()
        .find(|e| e["argv"][1] == "probe")
        .cloned()
        .unwrap_or_else(|| panic!("the fixture's exec: {:#?}", run.records));
    let fixture = exec["pid"].as_u64().unwrap();
    assert_eq!(exec["ppid"], sh, "forked later by the watched shell");
    run.probe(fixture, &["getenv"], "TZ");
    let conn = run.of_type("connect");
    assert_eq!(conn.len(), 1, "{conn:#?}");
    assert_eq!(run.report()["cli"]["pid"], sh);
}
