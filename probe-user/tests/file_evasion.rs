//! Root integration tests: ways to reach a policy file outside the path syscalls the
//! files sensor traces (`fixtures/file_evasion.c`). Each is caught by the file hooks
//! (BPF-LSM or fentry) where the kernel has them, and is named in the report as a
//! blind spot of the syscall-tracepoint tier where it has not; each test's name says
//! which, and each test checks the one that applies to the tier the run chose.
//! What catches or names each is in fixtures/techniques.rs, which `cargo xtask
//! kernels` also runs on kernels that have each tier.

mod common;
#[path = "fixtures/techniques.rs"]
#[expect(
    dead_code,
    reason = "the net techniques are for tests/net_kernel_copy.rs"
)]
mod techniques;

use std::ffi::OsStr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;
use techniques::{FileTechnique, file_technique};

/// Builds `fixtures/file_evasion.c` once per test binary.
fn evasion_fixture() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/file_evasion.c");
            let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("file_evasion-{}", std::process::id()));
            let status = Command::new("cc")
                .args(["-O1", "-Wall", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .unwrap_or_else(|e| panic!("cannot run cc: {e} (install gcc)"));
            assert!(status.success(), "cc failed to build {}", src.display());
            out
        })
        .clone()
}

/// A policy with one category, `secret`, naming `path` exactly.
fn policy_for(dir: &Path, path: &Path) -> PathBuf {
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: evasion\ncategories:\n  - name: secret\n    paths: [{}]\n",
            path.display()
        ),
    )
    .unwrap();
    policy
}

/// The files family's entry in the report's `sensors`.
fn files_choice(run: &JsonRun) -> Value {
    run.report()["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["family"] == "files")
        .unwrap()
        .clone()
}

fn on_tracepoints(run: &JsonRun) -> bool {
    files_choice(run)["chosen"]
        .as_str()
        .unwrap()
        .starts_with("syscall tracepoints")
}

/// On the tracepoint tier: no probe of `target`, and a blind spot naming `technique`.
/// On a hook tier: a probe of `target` by one of its `hows`.
fn caught_or_named(run: &JsonRun, target: &str, technique: &FileTechnique) {
    let (hows, words) = (technique.hows, technique.blind_spot);
    let files = files_choice(run);
    if on_tracepoints(run) {
        assert!(
            run.of_type("probe").iter().all(|p| p["target"] != target),
            "the tracepoint tier cannot see it; if it now does, rename the test: {:#?}",
            run.of_type("probe")
        );
        assert!(
            files["blind_spots"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b.as_str().unwrap().contains(words)),
            "the report names the blind spot ({words}): {files:#}"
        );
    } else {
        let pid = run.report()["cli"]["pid"].as_u64().unwrap();
        let probe = run.probe(pid, hows, target);
        assert_eq!(probe["categories"][0], "secret", "{probe:#}");
    }
}

/// A regular policy file with some content, in a fresh test directory.
fn secret_file(test: &str) -> (PathBuf, PathBuf) {
    let dir = test_dir(test);
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    (dir, secret)
}

/// The fixture in `technique`'s mode with `arg`, watched with `policy`.
fn run_fixture(policy: &Path, technique: &FileTechnique, arg: &OsStr) -> JsonRun {
    let run = probectl_json_with_policy(
        policy,
        &[
            evasion_fixture().as_os_str(),
            OsStr::new(technique.mode),
            arg,
        ],
    );
    assert_eq!(run.code, 0, "the fixture did it; stderr:\n{}", run.stderr);
    run
}

#[test]
fn an_open_through_int_0x80_is_caught_by_the_hooks_and_named_by_the_tracepoint_tier() {
    if !bpf_available("int_0x80_open") {
        return;
    }
    let (dir, secret) = secret_file("evasion-int80");
    let run = run_fixture(
        &policy_for(&dir, &secret),
        file_technique("int80"),
        secret.as_os_str(),
    );
    caught_or_named(&run, secret.to_str().unwrap(), file_technique("int80"));
}

#[test]
fn a_stat_through_int_0x80_is_caught_by_the_hooks_and_named_by_the_tracepoint_tier() {
    if !bpf_available("int_0x80_stat") {
        return;
    }
    let (dir, secret) = secret_file("evasion-int80-stat");
    let run = run_fixture(
        &policy_for(&dir, &secret),
        file_technique("int80_stat"),
        secret.as_os_str(),
    );
    caught_or_named(&run, secret.to_str().unwrap(), file_technique("int80_stat"));
}

#[test]
fn open_by_handle_at_is_caught_by_the_hooks_and_named_by_the_tracepoint_tier() {
    if !bpf_available("open_by_handle_at") {
        return;
    }
    let (dir, secret) = secret_file("evasion-handle");
    let run = run_fixture(
        &policy_for(&dir, &secret),
        file_technique("by_handle"),
        secret.as_os_str(),
    );
    caught_or_named(&run, secret.to_str().unwrap(), file_technique("by_handle"));
}

/// An overlay whose lower directory holds the policy file: the merged path is
/// another string, and the file opened there has the overlay's device and inode.
#[test]
fn an_overlayfs_open_is_caught_by_the_hooks_and_named_by_the_tracepoint_tier() {
    if !bpf_available("overlayfs_open") {
        return;
    }
    let dir = test_dir("evasion-overlay");
    let (lower, upper, work, merged) = (
        dir.join("lower"),
        dir.join("upper"),
        dir.join("work"),
        dir.join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    let secret = lower.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .unwrap_or_else(|e| panic!("mount overlay at {}: {e}", merged.display()));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(merged.clone());
    let run = run_fixture(
        &policy_for(&dir, &secret),
        file_technique("overlayfs"),
        merged.join("secret").as_os_str(),
    );
    caught_or_named(&run, secret.to_str().unwrap(), file_technique("overlayfs"));
}

/// A policy symlink (like /etc/localtime) and a second name for the link itself.
fn policy_symlink(test: &str) -> (PathBuf, PathBuf) {
    let dir = test_dir(test);
    let zone = dir.join("zone");
    let _ = std::fs::remove_file(&zone);
    std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", &zone).unwrap();
    (dir, zone)
}

#[test]
fn a_readlink_through_a_hardlink_to_a_policy_symlink_is_caught_by_the_hooks_and_named_by_the_tracepoint_tier()
 {
    if !bpf_available("hardlink_readlink") {
        return;
    }
    let (dir, zone) = policy_symlink("evasion-hardlink");
    let other = dir.join("other-name");
    let _ = std::fs::remove_file(&other);
    // link(2) does not follow the symlink: `other-name` is the link itself.
    std::fs::hard_link(&zone, &other).unwrap();
    assert!(
        std::fs::symlink_metadata(&other)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let run = run_fixture(
        &policy_for(&dir, &zone),
        file_technique("hardlink_readlink"),
        other.as_os_str(),
    );
    caught_or_named(
        &run,
        zone.to_str().unwrap(),
        file_technique("hardlink_readlink"),
    );
}

/// A readlink of the policy symlink through a 4,094-byte path (`/./././...`): the
/// kernel keeps 255 bytes of it. On the tracepoint tier the miss is counted.
#[test]
fn a_readlink_through_a_4094_byte_path_is_caught_by_the_hooks_and_counted_and_named_by_the_tracepoint_tier()
 {
    if !bpf_available("long_path_readlink") {
        return;
    }
    let (dir, zone) = policy_symlink("evasion-long");
    let tail = zone.to_str().unwrap();
    let pad = (4094 - tail.len()) / 2;
    let mut long = "/.".repeat(pad);
    if long.len() + tail.len() < 4094 {
        long.push('/');
    }
    long.push_str(tail);
    assert_eq!(long.len(), 4094);
    let run = run_fixture(
        &policy_for(&dir, &zone),
        file_technique("long_path_readlink"),
        OsStr::new(&long),
    );
    caught_or_named(&run, tail, file_technique("long_path_readlink"));
    if on_tracepoints(&run) {
        let counted = run.report()["drops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["reason"] == "kernel:path_truncated_unmatched")
            .map(|d| d["count"].as_u64().unwrap());
        assert!(
            counted.is_some_and(|n| n >= 1),
            "the truncated, unmatched path is counted: {:#}",
            run.report()["drops"]
        );
    }
}

/// probectl's test process (unwatched) opens the policy file and passes the fd to
/// the watched fixture over a unix socket; the fixture reads it.
#[test]
fn a_file_received_over_scm_rights_is_caught_by_the_hooks_and_named_by_the_tracepoint_tier() {
    if !bpf_available("scm_rights") {
        return;
    }
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let (dir, secret) = secret_file("evasion-scm");
    let socket = dir.join("fd.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let file = std::fs::File::open(&secret).unwrap();
    let sender = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let fds = [file.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"x")];
        sendmsg::<()>(
            conn.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    });
    let run = run_fixture(
        &policy_for(&dir, &secret),
        file_technique("scm_rights"),
        socket.as_os_str(),
    );
    sender.join().unwrap();
    caught_or_named(&run, secret.to_str().unwrap(), file_technique("scm_rights"));
}

/// The io_uring open of a test file (the /etc/localtime one is in tests/files.rs).
#[test]
fn an_io_uring_open_is_caught_by_the_hooks_and_named_by_the_tracepoint_tier() {
    if !bpf_available("io_uring_open") {
        return;
    }
    let (dir, secret) = secret_file("evasion-uring");
    let run = run_fixture(
        &policy_for(&dir, &secret),
        file_technique("io_uring_open"),
        secret.as_os_str(),
    );
    caught_or_named(
        &run,
        secret.to_str().unwrap(),
        file_technique("io_uring_open"),
    );
}
