//! Root integration test of policy reload: SIGHUP re-reads `--policy`; a bad file is
//! refused and the policy in force stays; a good one takes over, in the kernel too.

mod common;

use std::ffi::OsStr;

use common::*;
use nix::sys::signal::Signal;

const TIMEZONE_ONLY: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: first}\ncategories:\n  - name: timezone\n    paths: [/etc/localtime]\n";
const HOST_TOO: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: second}\ncategories:\n  - name: host\n    paths: [/etc/hostname]\n  - name: timezone\n    paths: [/etc/localtime]\n";

/// A run under `TIMEZONE_ONLY` whose command waits on `step1`, reads /etc/hostname and
/// /etc/localtime, waits on `step2`, and reads both again: (policy, step1, step2, run).
fn two_step_run(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
    StreamingRun,
) {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, TIMEZONE_ONLY).unwrap();
    let (step1, step2) = (fifo(dir, "step1"), fifo(dir, "step2"));
    // Each step waits for the test, then reads both files.
    let script = format!(
        "cat {s1} >/dev/null; cat /etc/hostname /etc/localtime >/dev/null; cat {s2} >/dev/null; cat /etc/hostname /etc/localtime >/dev/null",
        s1 = step1.display(),
        s2 = step2.display()
    );
    let run = StreamingRun::start_with_policy(
        Some(&policy),
        &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(&script)],
        &[],
    );
    (policy, step1, step2, run)
}

#[test]
fn sighup_reloads_the_policy_and_keeps_the_old_one_when_the_new_is_bad() {
    if !bpf_available("sighup_reloads_the_policy_and_keeps_the_old_one_when_the_new_is_bad") {
        return;
    }
    let dir = test_dir("reload");
    let (policy, step1, step2, mut run) = two_step_run(&dir);
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

/// Writes a byte to each FIFO a reader still waits on (non-blocking: no reader, no
/// write), so a failed test's command can finish.
struct ReleaseFifos(Vec<std::path::PathBuf>);

impl Drop for ReleaseFifos {
    fn drop(&mut self) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        for path in &self.0 {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(path)
            {
                let _ = f.write_all(b"x");
            }
        }
    }
}

/// A policy with more paths than the kernel's `PATHS` map holds (1,024) is refused
/// before any map is touched, and the next valid policy goes in. Writing the new
/// entries first ("make before break") once left the map full of half a policy, and
/// every later reload was refused.
#[test]
fn a_reload_over_a_kernel_map_capacity_is_refused_and_the_next_one_goes_in() {
    if !bpf_available("a_reload_over_a_kernel_map_capacity_is_refused_and_the_next_one_goes_in") {
        return;
    }
    let dir = test_dir("reload-capacity");
    let (policy, step1, step2, mut run) = two_step_run(&dir);
    // Dropped before `run` if an assertion fails, so the command does not wait on its
    // FIFOs forever.
    let _release = ReleaseFifos(vec![step1.clone(), step2.clone()]);
    run.wait_for("the first step's cat", |r| {
        r["type"] == "exec" && r["argv"][1] == step1.to_str().unwrap()
    });

    // 1,100 distinct paths: valid, but PATHS holds 1,024.
    let paths: Vec<String> = (0..1_100)
        .map(|i| format!("/etc/probectl-capacity/f{i}"))
        .collect();
    std::fs::write(
        &policy,
        format!(
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {{name: too-big}}\ncategories:\n  - name: many\n    paths: [{}]\n  - name: timezone\n    paths: [/etc/localtime]\n",
            paths.join(", ")
        ),
    )
    .unwrap();
    run.signal(Signal::SIGHUP);
    let refused = run.wait_for("the refused reload", |r| r["type"] == "policy_reload");
    assert_eq!(refused["ok"], false, "{refused:#}");
    assert_eq!(refused["policy"], "first");
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("kernel map PATHS"), "{refused:#}");
    // The first policy is still the one in force, in the kernel too.
    std::fs::write(&step1, b"x").unwrap();
    let first_tz = run.wait_for("the time-zone probe under the first policy", |r| {
        r["type"] == "probe" && r["target"] == "/etc/localtime"
    });

    // A valid policy: accepted, and in force in the kernel.
    std::fs::write(&policy, HOST_TOO).unwrap();
    run.signal(Signal::SIGHUP);
    let next = run.wait_for("the next reload", |r| {
        r["type"] == "policy_reload" && *r != refused
    });
    assert_eq!(next["ok"], true, "{next:#}");
    assert_eq!(next["policy"], "second");
    std::fs::write(&step2, b"x").unwrap();
    let run = run.finish();
    assert_eq!(run.code, 0);
    let probes = run.of_type("probe");
    let hostname: Vec<_> = probes
        .iter()
        .filter(|p| p["target"] == "/etc/hostname")
        .collect();
    assert_eq!(hostname.len(), 1, "the second step's read: {probes:#?}");
    assert_eq!(hostname[0]["categories"][0], "host");
    assert_ne!(hostname[0]["pid"], first_tz["pid"]);
}

/// Through the library: a policy refused before any write (over capacity) and one
/// whose write fails midway (an LPM key the kernel rejects, after other maps have
/// moved) both leave every policy map exactly as it was, read back from the kernel.
#[test]
fn a_refused_or_failed_policy_update_leaves_the_kernel_maps_exactly_as_they_were() {
    use probe_user::policy::{self, PolicySource};
    use probe_user::sensors::{SensorError, Sensors};

    if !bpf_available(
        "a_refused_or_failed_policy_update_leaves_the_kernel_maps_exactly_as_they_were",
    ) {
        return;
    }
    let default = policy::prepare(&PolicySource::BuiltIn).expect("the built-in policy");
    let mut sensors = Sensors::load(&default).expect("load the sensors");
    let before = sensors.read_policy_maps().unwrap();
    assert!(!before.paths.is_empty() && !before.env_names.is_empty());

    // Over capacity: refused before any map is touched.
    let mut too_big = default.clone();
    let template = too_big.policy.kernel.paths[0];
    for i in 0..1_100u32 {
        let mut entry = template;
        entry.1[200..204].copy_from_slice(&i.to_le_bytes());
        entry.0 = 204 * 8;
        too_big.policy.kernel.paths.push(entry);
    }
    let err = sensors.apply_policy(&too_big).expect_err("over PATHS");
    assert!(
        matches!(err, SensorError::OverCapacity { map: "PATHS", .. }),
        "{err}"
    );
    assert_eq!(sensors.read_policy_maps().unwrap(), before);

    // Fails midway: new env names and select ids are written first (they come before
    // PATHS), then the kernel rejects a path key longer than its 2,048 bits.
    let hostile = policy::parse(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: other}\nselect: {uids: [4242]}\ncategories:\n  - {name: c, env: [PROBECTL_A, PROBECTL_B], paths: [/etc/hostname]}\n",
        "t.yaml",
    )
    .unwrap();
    let mut failing = policy::PreparedPolicy::new(hostile);
    failing.policy.kernel.paths[0].0 = 4_000;
    let err = sensors
        .apply_policy(&failing)
        .expect_err("EINVAL from the trie");
    match &err {
        SensorError::PolicyUpdate { map, restored, .. } => {
            assert_eq!(*map, "PATHS", "{err}");
            assert_eq!(restored, &None, "{err}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(sensors.read_policy_maps().unwrap(), before);

    // A valid policy still goes in whole.
    failing.policy.kernel.paths[0].0 = (b"/etc/hostname".len() as u32 + 1) * 8;
    sensors.apply_policy(&failing).expect("a valid policy");
    let after = sensors.read_policy_maps().unwrap();
    // The policy's two names, and HOME and XDG_CONFIG_HOME (always read at exec, for
    // `~/` under each process's own home).
    assert_eq!(after.env_names.len(), 4);
    assert_eq!(after.uids.len(), 1);
    assert_eq!(after.paths.len(), 1);
}
