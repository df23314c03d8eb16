//! Root integration tests of `action: block` against the ways a CLI could get a read
//! or a call past a block rule: reading a policy file through a relative path, `..`
//! or a symlink (matched by inode), reading what only userspace can decide (a `~/`
//! file under a home that is not in /etc/passwd), and connecting through a send
//! (TCP Fast Open). The real Node and Python programs, the real hooks.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The fixture's exit code when its last call was refused with EPERM.
const REFUSED: i32 = 13;

const OUTSIDE_ALLOWLIST: &str = "{except: {cidr: [127.0.0.1/32]}}";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node_block.js")
}

/// `probectl run --json --enforce --policy POLICY -- node node_block.js ARGS`.
fn run(policy: &Path, args: &[&str]) -> JsonRun {
    let options: Vec<&OsStr> = vec![
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("--enforce"),
    ];
    let script = fixture();
    let mut argv: Vec<&OsStr> = vec![OsStr::new("node"), script.as_os_str()];
    argv.extend(args.iter().map(OsStr::new));
    probectl_json_with(&options, &argv)
}

/// The default policy plus one rule: the time zone read, then a connect anywhere but
/// 127.0.0.1.
fn zone_policy(dir: &Path) -> PathBuf {
    default_policy_plus(
        dir,
        &format!(
            "  - name: zone-then-out\n    probed: {{all_of: [timezone]}}\n    then: [connect, udp_send]\n    destination: {OUTSIDE_ALLOWLIST}\n    within: 30s\n    action: block\n"
        ),
    )
}

/// The kernel matches a file by inode when the path string names no policy path: a
/// relative path, `..`, a symlink planted elsewhere. Those reads must count for a
/// block rule too, or reading the zone file as `localtime` from /etc would evade it.
#[test]
fn the_zone_file_read_by_a_relative_path_or_a_symlink_feeds_the_block_rule() {
    if !bpf_available("the_zone_file_read_by_a_relative_path_or_a_symlink_feeds_the_block_rule") {
        return;
    }
    assert!(
        Path::new("/etc/localtime").exists(),
        "this test needs /etc/localtime"
    );
    let dir = test_dir("block-by-inode");
    let policy = zone_policy(&dir);
    let link = dir.join("zone");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/localtime", &link).unwrap();
    let listener = Listener::start_on("127.0.0.2:0");
    let port = listener.port.to_string();
    let dir_text = dir.display().to_string();
    let link_text = link.display().to_string();
    let fixture_text = fixture().display().to_string();
    for (cwd, file, refused) in [
        ("/etc", "localtime", true),
        ("/usr/share", "../../etc/localtime", true),
        (dir_text.as_str(), link_text.as_str(), true),
        (dir_text.as_str(), "zone", true),
        // The control: another file read the same way is no time-zone read.
        ("/", fixture_text.as_str(), false),
    ] {
        let run = run(&policy, &["file-connect", cwd, file, "127.0.0.2", &port]);
        let what = format!("read {file:?} from {cwd:?}");
        if !refused {
            assert_eq!(run.code, 0, "{what}: connected; stderr:\n{}", run.stderr);
            assert!(run.of_type("blocked").is_empty(), "{what}");
            continue;
        }
        assert_eq!(
            run.code, REFUSED,
            "{what}, then connect: EPERM; stderr:\n{}",
            run.stderr
        );
        let blocked = run.of_type("blocked");
        assert_eq!(blocked.len(), 1, "{what}: {blocked:#?}");
        let b = blocked[0];
        assert_eq!(b["rule"], "zone-then-out", "{b:#}");
        assert_eq!(
            b["categories"],
            serde_json::json!(["timezone"]),
            "{what}: {b:#}"
        );
        assert_eq!(b["destination"]["address"], "127.0.0.2", "{b:#}");
    }
}

/// Reads only userspace can decide (here `~/` files under a `HOME` that is no passwd
/// home: a basename candidate and an own-home candidate) are written into the
/// kernel's block state once decided, so a later call is judged with them.
#[test]
fn a_read_userspace_decides_counts_for_a_later_call() {
    if !bpf_available("a_read_userspace_decides_counts_for_a_later_call") {
        return;
    }
    let dir = test_dir("block-late");
    let home = short_dir("block-late").join("home");
    let files = [
        home.join(".claude/settings.json"),
        home.join(".config/anthropic/configs/default"),
    ];
    for file in &files {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"{}").unwrap();
    }
    let policy = default_policy_plus(
        &dir,
        &format!(
            "  - name: relay-then-out\n    probed: {{all_of: [api-relay]}}\n    then: [connect]\n    destination: {OUTSIDE_ALLOWLIST}\n    within: 30s\n    action: block\n"
        ),
    );
    let listener = Listener::start_on("127.0.0.2:0");
    let port = listener.port.to_string();
    let home_env = format!("HOME={}", home.display());
    let script = fixture();
    for file in &files {
        let file = file.display().to_string();
        let argv: Vec<&OsStr> = [
            OsStr::new("env"),
            OsStr::new(&home_env),
            OsStr::new("node"),
            script.as_os_str(),
        ]
        .into_iter()
        .chain(["file-connect", "/", &file, "127.0.0.2", &port, "500"].map(OsStr::new))
        .collect();
        let run = probectl_json_with(
            &[
                OsStr::new("--policy"),
                policy.as_os_str(),
                OsStr::new("--enforce"),
            ],
            &argv,
        );
        // The read is decided in userspace (the report names it)...
        let probes = run.of_type("probe");
        assert!(
            probes.iter().any(|p| p["target"] == file.as_str()
                && p["categories"] == serde_json::json!(["api-relay"])),
            "{file} read as api-relay: {probes:#?}"
        );
        // ...and the call half a second later is refused.
        assert_eq!(
            run.code, REFUSED,
            "read {file}, wait, connect: EPERM; stderr:\n{}",
            run.stderr
        );
        let blocked = run.of_type("blocked");
        assert_eq!(blocked.len(), 1, "{file}: {blocked:#?}");
        assert_eq!(blocked[0]["rule"], "relay-then-out");
        let drops = run.report()["drops"].as_array().unwrap();
        assert!(
            drops
                .iter()
                .all(|d| d["reason"] != "userspace:block_late_feed_failed"),
            "{drops:#?}"
        );
    }
}

/// A TCP Fast Open connect (sendto with MSG_FASTOPEN) is a connect made by a send:
/// the cgroup connect hook judges it, and its record is a refused connect, not a
/// datagram "sent" (nor an io_uring connect, as it once said).
#[test]
fn a_tcp_fast_open_connect_after_the_read_is_refused_and_recorded_as_a_connect() {
    if !bpf_available("a_tcp_fast_open_connect_after_the_read_is_refused_and_recorded_as_a_connect")
    {
        return;
    }
    let dir = test_dir("block-fastopen");
    let policy = zone_policy(&dir);
    let listener = Listener::start_on("127.0.0.2:0");
    let script = format!(
        "import socket, sys\n\
         open('/etc/localtime', 'rb').read()\n\
         s = socket.socket()\n\
         try:\n    s.sendto(b'GET / HTTP/1.0\\r\\n\\r\\n', socket.MSG_FASTOPEN, ('127.0.0.2', {}))\n\
         except PermissionError:\n    sys.exit({REFUSED})\n",
        listener.port
    );
    let run = probectl_json_with(
        &[
            OsStr::new("--policy"),
            policy.as_os_str(),
            OsStr::new("--enforce"),
        ],
        &[OsStr::new("python3"), OsStr::new("-c"), OsStr::new(&script)],
    );
    assert_eq!(
        run.code, REFUSED,
        "the sendto got EPERM; stderr:\n{}",
        run.stderr
    );
    let blocked = run.of_type("blocked");
    assert_eq!(blocked.len(), 1, "{blocked:#?}");
    assert_eq!(blocked[0]["event"], "connect", "{:#}", blocked[0]);
    let calls: Vec<&Value> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["address"] == "127.0.0.2")
        .collect();
    assert_eq!(calls.len(), 1, "one record of the call: {calls:#?}");
    assert_eq!(calls[0]["event"], "connect", "{:#}", calls[0]);
    assert_eq!(
        calls[0]["seen_at"], "syscall_and_cgroup_hook",
        "{:#}",
        calls[0]
    );
    assert!(
        calls[0]["result"].to_string().contains("EPERM"),
        "{:#}",
        calls[0]
    );
}
