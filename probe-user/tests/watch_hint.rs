//! Root test of the kernel's watch hint (`WATCH_HINT`, one byte per tgid that every hook
//! checks before the watched set): userspace sets a root's byte, the kernel sets a
//! forked child's and clears both at their exits, and a process nobody watches keeps
//! a clear byte. A byte left clear for a watched process would blind every hook to it.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn the_kernel_keeps_the_hint_for_forks_and_exits_of_watched_processes() {
    use probe_user::policy::{self, PreparedPolicy};
    use probe_user::sensors::Sensors;

    if !bpf_available("the_kernel_keeps_the_hint_for_forks_and_exits_of_watched_processes") {
        return;
    }
    let default = policy::parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/default.yaml"
        ))
        .unwrap(),
        "default.yaml",
    )
    .unwrap();
    let mut sensors = Sensors::load(&PreparedPolicy::new(default)).expect("load the sensors");

    let mut outsider = Command::new("sleep").arg("30").spawn().unwrap();
    let outsider_pid = outsider.id();
    // Waits for a line, then forks a sleep, prints its pid, and waits for it.
    let mut root = Command::new("sh")
        .args(["-c", "read _; sleep 0.2 & echo $!; wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let root_pid = root.id();
    assert!(
        !sensors.watch_hint_set(root_pid),
        "a fresh map has no byte set (pid {root_pid})"
    );

    sensors.watch(root_pid).expect("watch the root");
    assert!(
        sensors.watch_hint_set(root_pid),
        "watch sets the root's byte"
    );

    writeln!(root.stdin.take().unwrap()).unwrap();
    let mut line = String::new();
    BufReader::new(root.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child_pid: u32 = line.trim().parse().expect("the child's pid");
    assert!(
        sensors.watch_hint_set(child_pid),
        "the kernel set the byte of the watched root's child {child_pid} at its fork"
    );
    assert!(
        !sensors.watch_hint_set(outsider_pid),
        "no byte for a process nobody watches ({outsider_pid})"
    );

    // The root waits for the child: both have exited when its wait returns, and the
    // exit hook runs before the parent is told.
    assert!(root.wait().unwrap().success());
    assert!(
        !sensors.watch_hint_set(child_pid),
        "the child's byte is cleared at its exit"
    );
    assert!(
        !sensors.watch_hint_set(root_pid),
        "the root's byte is cleared at its exit"
    );
    outsider.kill().unwrap();
    outsider.wait().unwrap();
}
