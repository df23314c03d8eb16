//! `run` (and `doctor`) return without waiting for the kernel's detaches: the attachments' last
//! references go to a detached grandchild, which closes them once probectl has
//! exited and then exits itself. The exit code and the report are unchanged (the
//! other run tests check them); this checks who detaches, and that nothing lingers.
//!
//! No timing is asserted. The check right after probectl's exit relies on ordering:
//! the grandchild only starts closing once probectl is gone (it waits on a pidfd),
//! and it has ~50 attachments to close, each waiting for an RCU grace period.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Processes whose initial environment holds `mark` (a fork keeps it).
fn holders_of(mark: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == mark.as_bytes()))
        })
        .collect()
}

/// Descriptors of `pid` that are BPF links or perf events (attachments).
fn attachments(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| {
            let t = target.to_string_lossy();
            t.contains("perf_event") || t.contains("bpf_link") || t.contains("bpf-link")
        })
        .count()
}

#[test]
fn run_exits_before_its_attachments_are_detached_and_the_detacher_exits() {
    if !bpf_available("run_exits_before_its_attachments_are_detached_and_the_detacher_exits") {
        return;
    }
    exits_before_detaching(
        &["run", "--standalone", "--json", "--", "true"],
        Some(0),
        "\"type\":\"report\"",
    );
}

#[test]
fn doctor_exits_before_its_attachments_are_detached_and_the_detacher_exits() {
    if !bpf_available("doctor_exits_before_its_attachments_are_detached_and_the_detacher_exits") {
        return;
    }
    // doctor's exit code says whether every family attached (1 on a partial
    // kernel): only the output's order is checked here.
    exits_before_detaching(&["doctor", "--json"], None, "\"sensors\"");
}

#[test]
fn a_run_whose_command_cannot_start_exits_before_its_attachments_are_detached() {
    if !bpf_available("a_run_whose_command_cannot_start_exits_before_its_attachments_are_detached")
    {
        return;
    }
    exits_before_detaching(
        &[
            "run",
            "--standalone",
            "--",
            "/nonexistent/probectl-test-cli",
        ],
        Some(127),
        "command not found",
    );
}

/// Runs probectl with `args` under a marker variable; checks its exit code (when
/// `code` is given) and that `output_mark` was written (to stdout or stderr) before
/// the exit, then that a
/// detacher outlived probectl and goes away on its own.
fn exits_before_detaching(args: &[&str], code: Option<i32>, output_mark: &str) {
    let mark = format!("PROBECTL_TEARDOWN_TEST={}-{}", std::process::id(), args[0]);
    let (name, value) = mark.split_once('=').unwrap();
    let mut cmd = probectl_command();
    cmd.env(name, value).args(args);
    let out = run_with_deadline(cmd);
    if code.is_some() {
        assert_eq!(
            out.status.code(),
            code,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let output = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    let output = String::from_utf8_lossy(&output);
    assert!(
        output.contains(output_mark),
        "the output comes before the exit: {output}"
    );
    // probectl has exited; the detacher it left still runs. (Whether it still holds
    // descriptors when this looks depends on how far its closes got: the kernel may
    // finish releasing them after the last close, while the process exits, so only
    // its presence is an ordering fact.)
    let holders = holders_of(&mark);
    assert!(
        !holders.is_empty(),
        "no detacher outlives probectl's exit: the exit waited for the detaches"
    );
    let held: usize = holders.iter().map(|&p| attachments(p)).sum();
    eprintln!("detacher {holders:?} holds {held} attachments after probectl's exit");
    // And it goes away on its own.
    let deadline = Instant::now() + DEADLINE;
    while !holders_of(&mark).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the detacher {:?} is still there after {DEADLINE:?}",
            holders_of(&mark)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
