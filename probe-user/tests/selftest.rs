//! `probectl selftest`: the real engine watches a child that performs each sensor's
//! operations; every row must be seen, through the tier in use. And with a family
//! left unattached (`--without net`), its rows are not seen and the exit code is 1.

mod common;

use common::*;
use serde_json::Value;

fn selftest(args: &[&str]) -> (i32, Value, String) {
    let mut cmd = probectl_command();
    cmd.arg("selftest").arg("--json").args(args);
    let out = run_with_deadline(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("selftest --json is not JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn row<'a>(report: &'a Value, family: &str, operation_starts: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| {
            r["family"] == family
                && r["operation"]
                    .as_str()
                    .is_some_and(|o| o.starts_with(operation_starts))
        })
        .unwrap_or_else(|| panic!("no {family} row {operation_starts:?} in {report:#}"))
}

#[test]
fn selftest_sees_every_operation_through_the_tier_in_use() {
    if !bpf_available("selftest_sees_every_operation_through_the_tier_in_use") {
        return;
    }
    let (code, report, stderr) = selftest(&[]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["passed"], true);
    let expected = [
        ("files", "open ", &["open", "openat", "openat2"][..]),
        ("files", "readlink ", &["readlink", "readlinkat"][..]),
        ("env", "getenv(PROBECTL_SELFTEST)", &["getenv"][..]),
        (
            "env",
            "PROBECTL_SELFTEST in the environment at exec",
            &["present_at_exec"][..],
        ),
        (
            "net",
            "TCP connect to 127.0.0.1:",
            &["syscall", "cgroup_hook", "syscall_and_cgroup_hook"][..],
        ),
        (
            "net",
            "UDP send to 127.0.0.1:",
            &["syscall", "cgroup_hook", "syscall_and_cgroup_hook"][..],
        ),
        ("process", "exec", &["exec"][..]),
    ];
    assert_eq!(
        report["rows"].as_array().map(Vec::len),
        Some(expected.len())
    );
    for (family, operation, seen_as) in expected {
        let r = row(&report, family, operation);
        assert_eq!(r["seen"], true, "{r:#}");
        let how = r["seen_as"].as_str().unwrap_or_default();
        assert!(
            seen_as.contains(&how),
            "{family} {operation}: seen as {how}: {r:#}"
        );
        let tier = r["tier"].as_str().unwrap_or_default();
        assert!(!tier.is_empty() && tier != "none", "{r:#}");
    }
    // The policy path is the self-test's own, in a directory it removed afterwards.
    let open = row(&report, "files", "open ");
    let path = open["operation"]
        .as_str()
        .unwrap()
        .trim_start_matches("open ");
    assert!(path.contains("probectl-selftest-"), "{path}");
    assert!(!std::path::Path::new(path).exists(), "{path} left behind");
}

#[test]
fn selftest_fails_when_the_net_sensor_is_missing() {
    if !bpf_available("selftest_fails_when_the_net_sensor_is_missing") {
        return;
    }
    let (code, report, stderr) = selftest(&["--without", "net"]);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["passed"], false);
    for operation in ["TCP connect", "UDP send"] {
        let r = row(&report, "net", operation);
        assert_eq!(r["seen"], false, "{r:#}");
        assert_eq!(r["tier"], "none", "{r:#}");
    }
    // The other families are unaffected.
    assert_eq!(row(&report, "files", "open ")["seen"], true);
    assert_eq!(row(&report, "process", "exec")["seen"], true);
    let unattached = report["unattached"].as_array().expect("unattached");
    assert!(
        unattached
            .iter()
            .any(|p| p["program"] == "sys_enter_connect"),
        "{unattached:#?}"
    );
}

#[test]
fn doctor_selftest_is_the_same_test() {
    if !bpf_available("doctor_selftest_is_the_same_test") {
        return;
    }
    let mut cmd = probectl_command();
    cmd.args(["doctor", "--selftest"]);
    let out = run_with_deadline(cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("selftest ok: 7 of 7 operations seen"),
        "{text}"
    );
    assert!(text.contains("tier in use"), "{text}");
}
