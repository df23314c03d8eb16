//! probectl mounts tracefs when it is missing (it is not mounted at boot on the target
//! machines), so tracepoints attach without manual set-up.

mod common;

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
    // In a private mount namespace, so the host's tracefs stays mounted for everyone
    // else: unmount every tracefs there, run probectl, and list the mounts it left.
    let script = format!(
        "set -e\n\
         grep ' tracefs ' /proc/mounts | cut -d' ' -f2 | sort -r | while read -r m; do umount -l \"$m\"; done\n\
         if grep -q ' tracefs ' /proc/mounts; then echo 'still mounted' >&2; exit 90; fi\n\
         {} run --json -- {} exit 3 >\"$1\" || echo \"probectl exit $?\" >&2\n\
         grep ' tracefs ' /proc/mounts\n",
        probectl().display(),
        c_fixture().display()
    );
    let records = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tracefs-{}.jsonl", std::process::id()));
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(&records);
    let out = run_with_deadline(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "namespace script failed: {stderr}");
    assert!(
        stderr.contains("probectl exit 3"),
        "the command's exit code passed through: {stderr}"
    );
    assert!(
        stdout.contains("/sys/kernel/tracing tracefs"),
        "probectl mounted tracefs: {stdout}"
    );
    let text = std::fs::read_to_string(&records).expect("records");
    let report: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["type"] == "report")
        .expect("a report");
    assert_eq!(
        report["partial"], false,
        "every tracepoint attached after the mount: {:#}",
        report["unattached_sensors"]
    );
    assert!(tracefs_mounted(), "the host's tracefs is untouched");
}
