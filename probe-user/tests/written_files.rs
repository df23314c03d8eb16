//! Root integration tests of the files probectl writes as root. A user made here with
//! useradd plants links at the paths, in a sticky world-writable directory (as in
//! /tmp) and in a directory of their own, pointing at a root-owned file that stands in
//! for /etc/shadow: probectl refuses them with an error that says why, and that file is
//! unchanged. Files probectl creates are 0600. On a full disk (a 256 KiB tmpfs) no line
//! is torn, the failures are counted, and no sequence number repeats across restarts.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::daemon::Daemon;
use common::*;
use serde_json::Value;

const PLANTER: &str = "pctl-planter";
const SHADOW: &str = "root:$6$probectl-test$not-a-real-hash:20000:0:99999:7:::\n";

/// The unprivileged user who plants links.
fn planter_uid() -> u32 {
    users::ensure_user(PLANTER, &[]).0
}

/// Runs `args` as the planter.
fn as_planter(args: &[&str]) {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={PLANTER}"),
            &format!("--regid={PLANTER}"),
            "--clear-groups",
        ])
        .args(args)
        .output()
        .expect("run setpriv");
    assert!(out.status.success(), "as {PLANTER}: {args:?}: {out:?}");
}

fn plant_link(target: &Path, at: &Path) {
    let _ = std::fs::remove_file(at);
    as_planter(&[
        "ln",
        "-s",
        &target.display().to_string(),
        &at.display().to_string(),
    ]);
    assert!(at.symlink_metadata().unwrap().file_type().is_symlink());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A test's directories: `shared` is sticky and world-writable (like /tmp), `own`
/// belongs to the planter, `shadow` is a root-owned 0600 file with known content.
struct Setup {
    dir: PathBuf,
    shared: PathBuf,
    own: PathBuf,
    shadow: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Self {
        let uid = planter_uid();
        let dir = test_dir(name);
        let shared = dir.join("shared");
        let own = dir.join("own");
        for d in [&shared, &own] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        nix::unistd::chown(&own, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
        let shadow = dir.join("shadow");
        std::fs::write(&shadow, SHADOW).unwrap();
        std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            dir,
            shared,
            own,
            shadow,
        }
    }

    fn assert_shadow_unchanged(&self) {
        assert_eq!(
            std::fs::read_to_string(&self.shadow).unwrap(),
            SHADOW,
            "the root-owned file behind the link was written"
        );
        assert_eq!(mode(&self.shadow), 0o600);
    }
}

fn run(args: &[&str]) -> std::process::Output {
    let mut cmd = probectl_command();
    cmd.args(args);
    run_with_deadline(cmd)
}

fn refused(out: &std::process::Output, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "refused: {stderr}");
    assert!(stderr.contains(why), "the error says {why:?}: {stderr}");
}

#[test]
fn run_output_and_profile_refuse_links_and_files_another_user_planted() {
    if !bpf_available("run_output_and_profile_refuse_links_and_files_another_user_planted") {
        return;
    }
    let s = Setup::new("written-run");
    let p = |p: &Path| p.display().to_string();

    // A link at the output path, in the sticky directory.
    let out_path = s.shared.join("out.jsonl");
    plant_link(&s.shadow, &out_path);
    let out = run(&["run", "--json", "--output", &p(&out_path), "--", "true"]);
    refused(&out, "is a symbolic link");
    s.assert_shadow_unchanged();

    // A link at the profile path: refused before the command runs.
    let profile = s.shared.join("profile.yaml");
    plant_link(&s.shadow, &profile);
    let marker = s.dir.join("ran");
    let _ = std::fs::remove_file(&marker);
    let out = run(&["run", "--profile", &p(&profile), "--", "touch", &p(&marker)]);
    refused(&out, "is a symbolic link");
    assert!(!marker.exists(), "the command did not run");
    s.assert_shadow_unchanged();

    // A link on the way: the planter's `logs` points into a root-only directory.
    let root_only = s.dir.join("root-only");
    let _ = std::fs::remove_dir_all(&root_only);
    std::fs::create_dir(&root_only).unwrap();
    plant_link(&root_only, &s.own.join("logs"));
    let out = run(&[
        "run",
        "--json",
        "--output",
        &p(&s.own.join("logs/out.jsonl")),
        "--",
        "true",
    ]);
    refused(&out, "is a symbolic link owned by uid");
    assert_eq!(std::fs::read_dir(&root_only).unwrap().count(), 0);

    // A regular file of the planter's, where a record file would go.
    let theirs = s.own.join("theirs.jsonl");
    let _ = std::fs::remove_file(&theirs);
    as_planter(&["touch", &p(&theirs)]);
    let out = run(&["run", "--json", "--output", &p(&theirs), "--", "true"]);
    refused(&out, "belongs to uid");
    assert_eq!(std::fs::metadata(&theirs).unwrap().len(), 0);

    // What probectl creates is 0600, and a looser file of root's is tightened.
    let fresh = s.own.join("fresh.jsonl");
    let loose = s.shared.join("loose.jsonl");
    std::fs::write(&loose, "old\n").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fresh_profile = s.own.join("fresh.yaml");
    for (path, args) in [
        (
            &fresh,
            vec!["run", "--json", "--output", &p(&fresh), "--", "true"],
        ),
        (
            &loose,
            vec!["run", "--json", "--output", &p(&loose), "--", "true"],
        ),
        (
            &fresh_profile,
            vec!["run", "--profile", &p(&fresh_profile), "--", "true"],
        ),
    ] {
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(mode(path), 0o600, "{}", path.display());
        assert_eq!(std::fs::metadata(path).unwrap().uid(), 0);
    }
    let text = std::fs::read_to_string(&loose).unwrap();
    assert!(!text.contains("old"), "replaced: {text}");
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[test]
fn sinks_state_and_spool_never_follow_a_planted_link_and_rotate_safely() {
    if !bpf_available("sinks_state_and_spool_never_follow_a_planted_link_and_rotate_safely") {
        return;
    }
    let s = Setup::new("written-daemon");
    let shadow2 = s.dir.join("shadow2");
    std::fs::write(&shadow2, SHADOW).unwrap();

    // The planter's directory holds the daemon's state and a rotated file sink, with
    // links planted at the sequence file and at the names rotation moves files to.
    plant_link(&s.shadow, &s.own.join("sequence"));
    plant_link(&s.shadow, &s.own.join("events.jsonl.1"));
    plant_link(&shadow2, &s.own.join("events.jsonl.2"));
    let events = s.own.join("events.jsonl");
    let sinks = format!(
        "  - {{type: file, path: {}, format: ecs, rotate: {{max_bytes: 3000, keep: 2}}}}\n",
        events.display()
    );
    let extra = format!("state_dir: {}\n", s.own.display());
    let d = Daemon::start_full("written-daemon", &extra, &sinks, &[]);
    let status = d.status();
    assert!(
        status["sequence"]["state_errors"].as_u64() >= Some(1),
        "the planted sequence link is a counted state error: {:#}",
        status["sequence"]
    );
    let deadline = Instant::now() + DEADLINE;
    while !s
        .own
        .join("events.jsonl.2")
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_file())
    {
        assert!(
            Instant::now() < deadline,
            "two rotations within {DEADLINE:?}"
        );
        let mut cmd = d.client();
        cmd.args([
            "run",
            "--json",
            "--",
            "sh",
            "-c",
            "cat /etc/timezone >/dev/null",
        ]);
        assert_eq!(json_run(cmd).code, 0);
    }
    let (code, stderr) = d.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("is a symbolic link"),
        "the state error is logged: {stderr}"
    );
    s.assert_shadow_unchanged();
    assert_eq!(std::fs::read_to_string(&shadow2).unwrap(), SHADOW);
    for name in ["events.jsonl", "events.jsonl.1", "events.jsonl.2"] {
        let path = s.own.join(name);
        let meta = path.symlink_metadata().unwrap();
        assert!(meta.file_type().is_file(), "{name} is a file of records");
        assert_eq!(
            (meta.uid(), meta.permissions().mode() & 0o7777),
            (0, 0o600),
            "{name}"
        );
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
        }
    }
}

/// `probectl daemon` with `sinks` and `state_dir`, expected to refuse to start.
fn daemon_refuses(name: &str, state_dir: &Path, sinks: &str, why: &str) {
    let dir = test_dir(name);
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "socket: {}\nstate_dir: {}\nsinks:\n{sinks}",
            dir.join("probectl.sock").display(),
            state_dir.display()
        ),
    )
    .unwrap();
    let mut cmd = probectl_command();
    cmd.args(["daemon", "--config"]).arg(&config);
    let out = run_with_deadline(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the daemon refused to start: {stderr}"
    );
    assert!(stderr.contains(why), "the error says {why:?}: {stderr}");
}

#[test]
fn a_daemon_refuses_a_sink_or_spool_behind_a_planted_link() {
    if !bpf_available("a_daemon_refuses_a_sink_or_spool_behind_a_planted_link") {
        return;
    }
    let s = Setup::new("written-refused");
    let planted = s.shared.join("events.jsonl");
    plant_link(&s.shadow, &planted);
    daemon_refuses(
        "written-refused-jsonl",
        &s.dir,
        &format!("  - {{type: jsonl, path: {}}}\n", planted.display()),
        "is a symbolic link",
    );
    s.assert_shadow_unchanged();

    // The spool directory of a TCP syslog sink, planted as a link to a root-only
    // directory.
    let root_only = s.dir.join("root-only");
    let _ = std::fs::remove_dir_all(&root_only);
    std::fs::create_dir(&root_only).unwrap();
    plant_link(&root_only, &s.own.join("spool"));
    daemon_refuses(
        "written-refused-spool",
        &s.own,
        "  - {type: syslog, address: \"127.0.0.1:9\", transport: tcp}\n",
        "is a symbolic link owned by uid",
    );
    assert_eq!(std::fs::read_dir(&root_only).unwrap().count(), 0);
}

/// A tmpfs of `size` mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        let _ = Command::new("umount").arg(at).output();
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount a tmpfs: {out:?}");
        Self(at.to_owned())
    }

    /// Takes every byte left, so that nothing new can be written.
    fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.0.join("filler"))
            .unwrap();
        let chunk = vec![b'x'; 512];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(b"x").is_ok() {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// `for` loop of `n` execs of `cat /etc/timezone` (three records each) as a client run.
fn busy_run(d: &Daemon, n: u32) {
    let mut cmd = d.client();
    cmd.args([
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        &format!("i=0; while [ $i -lt {n} ]; do cat /etc/timezone >/dev/null; i=$((i+1)); done"),
    ]);
    let out = json_run(cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn sink_named<'a>(status: &'a Value, prefix: &str) -> &'a Value {
    status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no sink {prefix}: {status:#}"))
}

/// Stops the daemon; the sequence numbers its native sink holds.
fn stop_and_collect(d: Daemon) -> Vec<u64> {
    let jsonl = d.jsonl.clone();
    let (code, stderr) = d.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, 0, "{stderr}");
    std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|r| r["seq"].as_u64().expect("a sequence number"))
        .collect()
}

#[test]
fn a_full_disk_tears_no_line_counts_its_losses_and_repeats_no_sequence_number() {
    if !bpf_available("a_full_disk_tears_no_line_counts_its_losses_and_repeats_no_sequence_number")
    {
        return;
    }
    let dir = test_dir("written-full");
    let full = Tmpfs::mount(&dir.join("full"), "256k");
    let events = full.0.join("events.jsonl");
    let sink = format!("file:ecs:{}", events.display());
    let sinks = format!(
        "  - {{type: jsonl, path: {}, format: ecs}}\n",
        events.display()
    );
    // Every record goes to the sinks (no summarising of repeats), and the sequence
    // state lives on the same small file system.
    let extra = format!("state_dir: {}\nrepeats: {{keep: 0}}\n", full.0.display());
    let mut seqs: Vec<u64> = Vec::new();

    // Fill it, and keep writing.
    let d = Daemon::start_full("written-full", &extra, &sinks, &[]);
    let deadline = Instant::now() + DEADLINE;
    while sink_named(&d.status(), &sink)["errors"].as_u64() == Some(0) {
        assert!(
            Instant::now() < deadline,
            "the tmpfs filled within {DEADLINE:?}"
        );
        busy_run(&d, 100);
    }
    busy_run(&d, 20);
    let loss = d.wait_record("a loss record for the full disk", |r| {
        r["type"] == "loss"
            && r["losses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["source"] == format!("sink:{sink}:errors"))
    });
    let status = d.status();
    let st = sink_named(&status, &sink);
    assert!(
        st["errors"].as_u64() > Some(0) && st["written"].as_u64() > Some(0),
        "{st}"
    );
    assert!(
        loss["losses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["count"].as_u64() > Some(0))
    );
    seqs.extend(stop_and_collect(d));

    // A restart on the full disk (the state file is there, rewritten in place).
    let d = Daemon::start_full("written-full", &extra, &sinks, &[]);
    busy_run(&d, 3);
    seqs.extend(stop_and_collect(d));

    // The state file gone and no room to make it again: the reservation cannot be
    // saved, which is counted; twice, so a start follows a run that saved nothing.
    std::fs::remove_file(full.0.join("sequence")).unwrap();
    full.fill();
    for _ in 0..2 {
        let d = Daemon::start_full("written-full", &extra, &sinks, &[]);
        busy_run(&d, 3);
        let status = d.status();
        assert!(
            status["sequence"]["state_errors"].as_u64() >= Some(1),
            "{:#}",
            status["sequence"]
        );
        seqs.extend(stop_and_collect(d));
    }

    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seqs.len(),
        "a sequence number repeated across the restarts"
    );

    // Whole records only, though the disk filled mid-record.
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.ends_with('\n'), "no torn last line");
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("torn line: {e}: {line}"));
    }
    assert!(
        text.lines().count() > 10,
        "records were written before the disk filled"
    );
}
