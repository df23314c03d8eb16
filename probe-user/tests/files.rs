//! Root integration tests of the files sensor: every path-taking syscall it covers,
//! made by a real fixture with the exact syscall, reported with its result.

mod common;

use std::ffi::OsStr;

use common::*;

#[test]
fn every_path_syscall_is_seen_with_its_result() {
    if !bpf_available("every_path_syscall_is_seen_with_its_result") {
        return;
    }
    let dir = test_dir("files");
    let creat_target = dir.join("creat-target");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: files-test\ncategories:\n  - name: timezone\n    paths: [/etc/localtime]\n  - name: scratch\n    paths: [{}]\n",
            creat_target.display()
        ),
    )
    .unwrap();
    let run = probectl_json_with_policy(
        &policy,
        &[
            c_fixture().as_os_str(),
            OsStr::new("files"),
            OsStr::new("/etc/localtime"),
            creat_target.as_os_str(),
        ],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    for how in [
        "open",
        "openat",
        "openat2",
        "readlink",
        "readlinkat",
        "stat",
        "lstat",
        "fstatat",
        "statx",
        "access",
        "faccessat",
        "faccessat2",
    ] {
        let probe = run.probe(pid, &[how], "/etc/localtime");
        assert_eq!(probe["categories"][0], "timezone", "{how}");
        assert_eq!(
            probe["result"], "ok",
            "{how} of /etc/localtime succeeds: {probe:#}"
        );
    }
    let creat = run.probe(pid, &["creat"], creat_target.to_str().unwrap());
    assert_eq!(creat["categories"][0], "scratch");
    assert_eq!(creat["result"], "ok");
    assert!(creat_target.exists(), "the fixture really created it");
}

#[test]
fn a_failed_open_reports_its_errno() {
    if !bpf_available("a_failed_open_reports_its_errno") {
        return;
    }
    let dir = test_dir("enoent");
    let missing = dir.join("missing-zone");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!("apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: enoent\ncategories:\n  - name: timezone\n    path_prefixes: [{}/]\n", dir.display()),
    )
    .unwrap();
    let creat_in_missing_dir = dir.join("no-such-dir/x");
    let run = probectl_json_with_policy(
        &policy,
        &[
            c_fixture().as_os_str(),
            OsStr::new("files"),
            missing.as_os_str(),
            creat_in_missing_dir.as_os_str(),
        ],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    for how in ["openat", "stat", "access"] {
        assert_eq!(
            run.probe(pid, &[how], missing.to_str().unwrap())["result"],
            "ENOENT",
            "{how}"
        );
    }
    assert_eq!(
        run.probe(pid, &["creat"], creat_in_missing_dir.to_str().unwrap())["result"],
        "ENOENT"
    );
}

#[test]
fn a_zoneinfo_scan_is_folded_into_one_probe_with_a_count() {
    if !bpf_available("a_zoneinfo_scan_is_folded_into_one_probe_with_a_count") {
        return;
    }
    // What ICU does when /etc/localtime is a regular file: read every zone file.
    let files = std::process::Command::new("find")
        .args(["/usr/share/zoneinfo", "-type", "f"])
        .output()
        .expect("find");
    let expected = String::from_utf8_lossy(&files.stdout).lines().count() as u64;
    assert!(
        expected > 100,
        "the machine has tzdata ({expected} zone files)"
    );
    let run = probectl_json(
        &[
            OsStr::new("sh"),
            OsStr::new("-c"),
            OsStr::new("find /usr/share/zoneinfo -type f -exec cat {} + >/dev/null"),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let streamed: Vec<_> = run
        .of_type("probe")
        .into_iter()
        .filter(|p| {
            p["target"]
                .as_str()
                .unwrap()
                .starts_with("/usr/share/zoneinfo/")
        })
        .collect();
    // find stats and opens every entry (by relative path, matched by inode), cat
    // opens every file: each process folds on its own.
    let mut per_pid = std::collections::HashMap::<u64, usize>::new();
    for p in &streamed {
        *per_pid.entry(p["pid"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(
        // Up to five files, each by a few operations, then one folded line.
        per_pid.values().all(|n| *n <= 16),
        "a burst is a few lines per process, not hundreds: {per_pid:?}"
    );
    assert!(
        streamed
            .iter()
            .any(|p| p["folded"] == true && p["target"] == "/usr/share/zoneinfo/**"),
        "{streamed:#?}"
    );
    let tz = run.report()["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "timezone")
        .expect("timezone probes");
    let burst = tz["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == "/usr/share/zoneinfo/**")
        .expect("one folded row");
    assert!(
        burst["distinct_targets"].as_u64().unwrap() >= expected,
        "{burst:#} vs {expected} files"
    );
    assert!(burst["count"].as_u64().unwrap() >= expected);
}

#[test]
fn reading_a_whole_environment_from_proc_is_a_probe() {
    if !bpf_available("reading_a_whole_environment_from_proc_is_a_probe") {
        return;
    }
    // Its own environment, and its parent's by pid: both count, of any pid.
    let run = probectl_json(
        &[
            OsStr::new("sh"),
            OsStr::new("-c"),
            OsStr::new("cat /proc/self/environ /proc/$$/environ >/dev/null"),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let probes: Vec<_> = run
        .of_type("probe")
        .into_iter()
        .filter(|p| p["categories"][0] == "environment")
        .collect();
    let targets: Vec<&str> = probes
        .iter()
        .map(|p| p["target"].as_str().unwrap())
        .collect();
    assert!(targets.contains(&"/proc/self/environ"), "{probes:#?}");
    let shell = run.report()["cli"]["pid"].as_u64().unwrap();
    assert!(
        targets.contains(&format!("/proc/{shell}/environ").as_str()),
        "{probes:#?}"
    );
    assert!(
        probes
            .iter()
            .all(|p| p["how"] == "openat" && p["result"] == "ok"),
        "{probes:#?}"
    );
    // Other /proc files are not probes. (Env probes may be: under CI, `CI` is present
    // at exec and the default policy's ci-detection category reports it.)
    assert!(
        run.of_type("probe")
            .iter()
            .filter(|p| p["target_type"] == "file")
            .all(|p| p["target"].as_str().unwrap().ends_with("/environ")),
        "{:#?}",
        run.of_type("probe")
    );
}

/// A known blind spot, documented by a test: io_uring opens a file without an open
/// syscall, so the syscall tracepoints (the attach point available on this kernel)
/// do not see it. The report must say so rather than look complete.
#[test]
fn an_io_uring_open_is_a_reported_blind_spot() {
    if !bpf_available("an_io_uring_open_is_a_reported_blind_spot") {
        return;
    }
    let run = probectl_json(
        &[
            c_fixture().as_os_str(),
            OsStr::new("uring-open"),
            OsStr::new("/etc/localtime"),
        ],
        &[],
    );
    assert_eq!(
        run.code, 0,
        "the fixture opened /etc/localtime through io_uring; stderr:\n{}",
        run.stderr
    );
    let report = run.report();
    let files = report["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["family"] == "files")
        .unwrap()
        .clone();
    let chosen = files["chosen"].as_str().unwrap();
    if chosen.starts_with("syscall tracepoints") {
        assert!(
            run.of_type("probe")
                .iter()
                .all(|p| p["target"] != "/etc/localtime"),
            "tracepoints cannot see it: {:#?}",
            run.of_type("probe")
        );
        assert!(
            files["blind_spots"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b.as_str().unwrap().contains("io_uring")),
            "the report names the blind spot: {files:#}"
        );
    } else {
        // On a kernel where an LSM or fentry attach point is in use, the open is seen
        // (by the file hook: `file_open`).
        run.probe(
            report["cli"]["pid"].as_u64().unwrap(),
            &["openat", "file_open"],
            "/etc/localtime",
        );
    }
}

#[test]
fn default_policy_sees_host_identity_and_proxy_config_files() {
    if !bpf_available("default_policy_sees_host_identity_and_proxy_config_files") {
        return;
    }
    // Whatever exists on this machine: a missing file is a probe too (ENOENT).
    let run = probectl_json(
        &[
            OsStr::new("sh"),
            OsStr::new("-c"),
            OsStr::new(
                "cat /etc/machine-id /etc/hostname /sys/class/net/lo/address /sys/class/net/lo/mtu /etc/environment /root/.gitconfig >/dev/null 2>&1; true",
            ),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let probes = run.of_type("probe");
    for (target, category) in [
        ("/etc/machine-id", "host-identity"),
        ("/etc/hostname", "host-identity"),
        ("/sys/class/net/lo/address", "host-identity"),
        ("/etc/environment", "proxy-config"),
        ("/root/.gitconfig", "proxy-config"),
    ] {
        let p = probes
            .iter()
            .find(|p| p["target"] == target)
            .unwrap_or_else(|| panic!("no probe of {target}: {probes:#?}"));
        assert_eq!(p["categories"][0], category, "{p:#}");
        let exists = std::path::Path::new(target).exists();
        assert_eq!(p["result"], if exists { "ok" } else { "ENOENT" }, "{p:#}");
    }
    // The glob names the address files only, not the rest of the interface's directory.
    assert!(
        !probes
            .iter()
            .any(|p| p["target"] == "/sys/class/net/lo/mtu"),
        "{probes:#?}"
    );
}

#[test]
fn the_timeline_bound_is_configurable_and_overflow_is_counted() {
    if !bpf_available("the_timeline_bound_is_configurable_and_overflow_is_counted") {
        return;
    }
    let run = probectl_json_with(
        &[OsStr::new("--max-probes"), OsStr::new("2")],
        &[
            OsStr::new("sh"),
            OsStr::new("-c"),
            OsStr::new(
                "cat /etc/localtime /etc/timezone /etc/hostname /etc/machine-id >/dev/null 2>&1; true",
            ),
        ],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let report = run.report();
    let t = &report["timeline"];
    assert_eq!(t["max_distinct_probes"], 2, "{t:#}");
    assert_eq!(t["distinct_probes"], 2);
    assert!(t["probes_not_kept"].as_u64().unwrap() >= 2, "{t:#}");
    let lost = report["drops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == "userspace:timeline_overflow")
        .unwrap_or_else(|| panic!("{:#}", report["drops"]));
    assert_eq!(lost["count"], t["probes_not_kept"]);
}
