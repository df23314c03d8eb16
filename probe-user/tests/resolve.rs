//! Root integration tests of path resolution: a policy file reached by a path string
//! that is not the policy path (relative, dirfd-relative, `..`, `/proc/self/root`, a
//! symlink elsewhere) is still a probe of that file, and the report says how it
//! was tied to it.

mod common;

use std::ffi::OsStr;

use common::*;

#[test]
fn indirect_paths_reach_policy_files_and_say_how() {
    if !bpf_available("indirect_paths_reach_policy_files_and_say_how") {
        return;
    }
    let base = test_dir("resolve");
    let dir = base.join("d").canonicalize().unwrap_or_else(|_| {
        std::fs::create_dir_all(base.join("d")).unwrap();
        base.join("d").canonicalize().unwrap()
    });
    let elsewhere = base.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for name in ["rel", "dirfd", "dotdot", "procroot", "target", "stat"] {
        std::fs::write(dir.join(name), name).unwrap();
    }
    std::os::unix::fs::symlink(dir.join("target"), dir.join("link")).unwrap();
    let link_elsewhere = elsewhere.join("tz-link");
    std::os::unix::fs::symlink(dir.join("target"), &link_elsewhere).unwrap();
    let d = dir.display().to_string();
    let names = [
        "rel", "dirfd", "dotdot", "procroot", "target", "stat", "link", "missing",
    ];
    let paths: Vec<String> = names.iter().map(|n| format!("{d}/{n}")).collect();
    let policy = base.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: resolve-test\ncategories:\n  - name: scratch\n    paths: [{}]\n",
            paths.join(", ")
        ),
    )
    .unwrap();
    let run = probectl_json_with_policy(
        &policy,
        &[
            c_fixture().as_os_str(),
            OsStr::new("resolve"),
            dir.as_os_str(),
            link_elsewhere.as_os_str(),
        ],
    );
    assert_eq!(
        run.code, 0,
        "the fixture did every operation; stderr:\n{}",
        run.stderr
    );
    let pid = run.report()["cli"]["pid"].as_u64().unwrap();
    let dir_name = dir.file_name().unwrap().to_string_lossy().into_owned();
    // (how, file, the string the fixture passed, how it was tied, result)
    let expected = [
        ("openat", "rel", "rel".to_owned(), "kernel_inode", "ok"),
        ("openat", "dirfd", "dirfd".to_owned(), "kernel_inode", "ok"),
        (
            "openat",
            "dotdot",
            format!("{d}/../{dir_name}/dotdot"),
            "kernel_inode",
            "ok",
        ),
        (
            "openat",
            "procroot",
            format!("/proc/self/root{d}/procroot"),
            "kernel_inode",
            "ok",
        ),
        (
            "openat",
            "target",
            link_elsewhere.display().to_string(),
            "kernel_inode",
            "ok",
        ),
        ("fstatat", "stat", "stat".to_owned(), "kernel_inode", "ok"),
        ("readlinkat", "link", "link".to_owned(), "userspace", "ok"),
        (
            "faccessat",
            "missing",
            "missing".to_owned(),
            "userspace",
            "ENOENT",
        ),
    ];
    for (how, file, given, resolved_by, result) in expected {
        let probe = run.probe(pid, &[how], &format!("{d}/{file}"));
        assert_eq!(probe["categories"][0], "scratch", "{probe:#}");
        assert_eq!(probe["given_path"], given.as_str(), "{probe:#}");
        assert_eq!(probe["resolved_by"], resolved_by, "{probe:#}");
        assert_eq!(probe["result"], result, "{probe:#}");
    }
    let lost = &run.report()["drops"];
    assert!(
        lost.as_array().is_none_or(|d| d.is_empty()),
        "nothing lost or unresolved: {lost:#}"
    );
}

#[test]
fn cd_etc_and_cat_localtime_is_a_time_zone_probe() {
    if !bpf_available("cd_etc_and_cat_localtime_is_a_time_zone_probe") {
        return;
    }
    // A short-lived child with a relative path: matched in the kernel, so its exit
    // cannot race the resolution.
    let run = probectl_json(
        &[
            OsStr::new("sh"),
            OsStr::new("-c"),
            OsStr::new("cd /etc && cat localtime >/dev/null && readlink localtime >/dev/null"),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let probes = run.of_type("probe");
    let open = probes
        .iter()
        .find(|p| p["target"] == "/etc/localtime" && p["how"] == "openat")
        .unwrap_or_else(|| panic!("cat's open of localtime: {probes:#?}"));
    assert_eq!(open["categories"][0], "timezone");
    assert_eq!(open["given_path"], "localtime");
    assert_eq!(open["resolved_by"], "kernel_inode");
    let readlink = probes
        .iter()
        .find(|p| {
            p["target"] == "/etc/localtime" && (p["how"] == "readlink" || p["how"] == "readlinkat")
        })
        .unwrap_or_else(|| panic!("readlink's read of localtime: {probes:#?}"));
    assert_eq!(readlink["given_path"], "localtime");
    assert_eq!(readlink["resolved_by"], "userspace");
}
