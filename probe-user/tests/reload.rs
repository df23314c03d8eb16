//! Root integration test of policy reload: SIGHUP re-reads `--policy`; a bad file is
//! refused and the policy in force stays; a good one takes over, in the kernel too.

mod common;

use std::ffi::OsStr;

use common::*;
use nix::sys::signal::Signal;

const TIMEZONE_ONLY: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: first}\ncategories:\n  - name: timezone\n    paths: [/etc/localtime]\n";
const HOST_TOO: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: second}\ncategories:\n  - name: host\n    paths: [/etc/hostname]\n  - name: timezone\n    paths: [/etc/localtime]\n";

#[test]
fn sighup_reloads_the_policy_and_keeps_the_old_one_when_the_new_is_bad() {
    if !bpf_available("sighup_reloads_the_policy_and_keeps_the_old_one_when_the_new_is_bad") {
        return;
    }
    let dir = test_dir("reload");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, TIMEZONE_ONLY).unwrap();
    let (step1, step2) = (fifo(&dir, "step1"), fifo(&dir, "step2"));
    // Each step waits for the test, then reads both files.
    let script = format!(
        "cat {s1} >/dev/null; cat /etc/hostname /etc/localtime >/dev/null; cat {s2} >/dev/null; cat /etc/hostname /etc/localtime >/dev/null",
        s1 = step1.display(),
        s2 = step2.display()
    );
    let mut run = StreamingRun::start_with_policy(
        Some(&policy),
        &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(&script)],
        &[],
    );
    run.wait_for("the first step's cat", |r| {
        r["type"] == "exec" && r["argv"][1] == step1.to_str().unwrap()
    });

    // A bad policy: refused, the first stays in force.
    std::fs::write(&policy, "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: broken}\ncategories:\n  - name: host\n    paths: [etc/hostname]\n").unwrap();
    run.signal(Signal::SIGHUP);
    let refused = run.wait_for("the refused reload", |r| r["type"] == "policy_reload");
    assert_eq!(refused["ok"], false, "{refused:#}");
    assert_eq!(refused["policy"], "first");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("is neither absolute"),
        "{refused:#}"
    );
    std::fs::write(&step1, b"x").unwrap();
    let first_tz = run.wait_for("the time-zone probe under the first policy", |r| {
        r["type"] == "probe" && r["target"] == "/etc/localtime"
    });
    let cat1 = first_tz["pid"].clone();

    // A good one: in force from now on, kernel maps included.
    std::fs::write(&policy, HOST_TOO).unwrap();
    run.signal(Signal::SIGHUP);
    let done = run.wait_for("the accepted reload", |r| {
        r["type"] == "policy_reload" && r["ok"] == true
    });
    assert_eq!(done["policy"], "second");
    std::fs::write(&step2, b"x").unwrap();
    let run = run.finish();
    assert_eq!(run.code, 0);
    let probes = run.of_type("probe");
    let hostname: Vec<_> = probes
        .iter()
        .filter(|p| p["target"] == "/etc/hostname")
        .collect();
    assert_eq!(
        hostname.len(),
        1,
        "only the second step's read counts: {probes:#?}"
    );
    assert_eq!(hostname[0]["categories"][0], "host");
    assert_ne!(hostname[0]["pid"], cat1, "the read after the reload");
    // The category both policies have is still reported (it was never absent).
    assert!(
        probes
            .iter()
            .any(|p| p["target"] == "/etc/localtime" && p["pid"] == hostname[0]["pid"]),
        "{probes:#?}"
    );
    let report = run.report();
    assert_eq!(
        report["policy"], "second",
        "the report names the policy in force"
    );
}
