//! probectl mounts tracefs when it is missing (it is not mounted at boot on the target
//! machines), so tracepoints attach without manual set-up.

mod common;

use std::ffi::OsStr;

use common::*;

fn tracefs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .expect("read /proc/mounts")
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("tracefs"))
}

#[test]
fn run_mounts_tracefs_when_it_is_missing() {
    if !bpf_available("run_mounts_tracefs_when_it_is_missing") {
        return;
    }
    // Unmount every tracefs (and the debugfs view of it) so the run starts without one.
    while tracefs_mounted() {
        let target = std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some("tracefs"))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .unwrap();
        nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH)
            .unwrap_or_else(|e| panic!("cannot unmount {target} to set up the test: {e}"));
    }
    assert!(!tracefs_mounted());
    let run = probectl_json(
        &[c_fixture().as_os_str(), OsStr::new("exit"), OsStr::new("3")],
        &[],
    );
    assert_eq!(run.code, 3, "stderr:\n{}", run.stderr);
    assert!(tracefs_mounted(), "probectl mounted tracefs");
    assert_eq!(
        run.report()["partial"],
        false,
        "every tracepoint attached after the mount: {:#}",
        run.report()["unattached_sensors"]
    );
    assert_eq!(run.of_type("exec").len(), 1);
}
