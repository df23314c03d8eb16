//! Root integration tests of `action: block`: a real Node CLI reads settings and then
//! calls out, and the kernel's cgroup hooks refuse the call (EPERM) when a block
//! rule's sequence holds in its process tree, and only then.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The fixture's exit code when its last call was refused with EPERM.
const REFUSED: i32 = 13;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node_block.js")
}

/// The default policy plus one block rule: time zone and API relay read, then a
/// connect or datagram anywhere but 127.0.0.1, within `within`.
fn block_policy(dir: &Path, within: &str, destination: &str) -> PathBuf {
    default_policy_plus(
        dir,
        &format!(
            "  - name: read-then-phone-home\n    id: BLOCK-1\n    probed: {{all_of: [timezone, api-relay]}}\n    then: [connect, udp_send]\n    destination: {destination}\n    within: {within}\n    severity: high\n    action: block\n"
        ),
    )
}

const OUTSIDE_ALLOWLIST: &str = "{except: {cidr: [127.0.0.1/32]}}";

/// `probectl run --json [--enforce] --policy POLICY -- node node_block.js ARGS`.
fn run(test: &str, enforce: bool, policy: Option<PathBuf>, args: &[&str]) -> JsonRun {
    let dir = test_dir(test);
    let policy = policy.unwrap_or_else(|| block_policy(&dir, "30s", OUTSIDE_ALLOWLIST));
    let mut options: Vec<&OsStr> = vec![OsStr::new("--policy"), policy.as_os_str()];
    if enforce {
        options.push(OsStr::new("--enforce"));
    }
    let script = fixture();
    let mut argv: Vec<&OsStr> = vec![OsStr::new("node"), script.as_os_str()];
    argv.extend(args.iter().map(OsStr::new));
    probectl_json_with(&options, &argv)
}

fn blocked(run: &JsonRun, ty: &str) -> Vec<Value> {
    run.of_type(ty).into_iter().cloned().collect()
}

/// Asserts one `ty` record for rule BLOCK-1 to `address:port`, naming both reads and
/// the process that made each.
fn assert_block_record(run: &JsonRun, ty: &str, address: &str, port: u16, reader: Option<u64>) {
    let records = blocked(run, ty);
    assert_eq!(
        records.len(),
        1,
        "one {ty} record: {records:#?}\n{}",
        run.stderr
    );
    let b = &records[0];
    assert_eq!(b["rule"], "read-then-phone-home", "{b:#}");
    assert_eq!(b["id"], "BLOCK-1");
    assert_eq!(b["severity"], "high");
    assert_eq!(b["destination"]["address"], address, "{b:#}");
    assert_eq!(b["destination"]["port"], port, "{b:#}");
    assert_eq!(
        b["categories"],
        serde_json::json!(["api-relay", "timezone"]),
        "{b:#}"
    );
    let reads: Vec<&str> = b["reads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["category"].as_str().unwrap())
        .collect();
    assert_eq!(reads.len(), 2, "{b:#}");
    for category in ["api-relay", "timezone"] {
        assert!(reads.contains(&category), "{b:#}");
        let by = b["probed_by"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["category"] == category)
            .unwrap_or_else(|| panic!("no probed_by for {category}: {b:#}"));
        let actors = by["by"].as_array().unwrap();
        assert!(!actors.is_empty(), "who read {category}: {b:#}");
        assert!(actors.iter().all(|a| a["process"] == "node"), "{b:#}");
        if let Some(pid) = reader {
            assert!(
                actors.iter().any(|a| a["pid"] == pid),
                "{category} read by {pid}: {b:#}"
            );
        }
    }
}

#[test]
fn read_then_connect_outside_the_allowlist_is_refused_with_eperm() {
    if !bpf_available("read_then_connect_outside_the_allowlist_is_refused_with_eperm") {
        return;
    }
    let listener = Listener::start_on("127.0.0.2:0");
    let port = listener.port.to_string();
    let run = run(
        "block-eperm",
        true,
        None,
        &["read-connect", "127.0.0.2", &port],
    );
    assert_eq!(
        run.code, REFUSED,
        "the connect got EPERM; stderr:\n{}",
        run.stderr
    );
    let pid = run.of_type("exec")[0]["pid"].as_u64().unwrap();
    assert_block_record(&run, "blocked", "127.0.0.2", listener.port, Some(pid));
    assert!(run.of_type("would_block").is_empty());
    let b = &run.of_type("blocked")[0];
    assert_eq!(b["pid"], pid, "{b:#}");
    assert_eq!(b["event"], "connect");
    assert_report_lists(&run, true);
}

#[test]
fn the_same_to_an_allowlisted_address_connects() {
    if !bpf_available("the_same_to_an_allowlisted_address_connects") {
        return;
    }
    let listener = Listener::start();
    let port = listener.port.to_string();
    let run = run(
        "block-allowlisted",
        true,
        None,
        &["read-connect", "127.0.0.1", &port],
    );
    assert_eq!(run.code, 0, "connected; stderr:\n{}", run.stderr);
    assert!(
        run.of_type("blocked").is_empty(),
        "{:#?}",
        run.of_type("blocked")
    );
    // The reads were seen: the rule simply does not cover this destination.
    assert!(!run.of_type("probe").is_empty());
}

#[test]
fn connect_first_then_read_connects() {
    if !bpf_available("connect_first_then_read_connects") {
        return;
    }
    let listener = Listener::start_on("127.0.0.2:0");
    let port = listener.port.to_string();
    // The same process, the same destination: before the reads the connect goes
    // through, after them it is refused.
    let run = run(
        "block-order",
        true,
        None,
        &["connect-read", "127.0.0.2", &port],
    );
    assert!(run.stderr.contains("first: ok"), "stderr:\n{}", run.stderr);
    assert_eq!(
        run.code, REFUSED,
        "the second connect, after the reads; stderr:\n{}",
        run.stderr
    );
    assert_eq!(
        run.of_type("blocked").len(),
        1,
        "{:#?}",
        run.of_type("blocked")
    );
}

#[test]
fn a_child_reads_and_its_parent_connects_is_refused() {
    if !bpf_available("a_child_reads_and_its_parent_connects_is_refused") {
        return;
    }
    let listener = Listener::start_on("127.0.0.2:0");
    let port = listener.port.to_string();
    let run = run(
        "block-tree",
        true,
        None,
        &["child-reads", "127.0.0.2", &port],
    );
    assert_eq!(run.code, REFUSED, "EPERM; stderr:\n{}", run.stderr);
    let execs = run.of_type("exec");
    let parent = execs[0]["pid"].as_u64().unwrap();
    let child = execs
        .iter()
        .map(|e| e["pid"].as_u64().unwrap())
        .find(|p| *p != parent)
        .expect("the child's exec");
    assert_block_record(&run, "blocked", "127.0.0.2", listener.port, Some(child));
    let b = &run.of_type("blocked")[0];
    assert_eq!(b["pid"], parent);
    let relation = &b["probed_by"][0]["by"][0]["relation"];
    assert_eq!(relation, "child", "{b:#}");
}

#[test]
fn a_read_older_than_the_window_does_not_block() {
    if !bpf_available("a_read_older_than_the_window_does_not_block") {
        return;
    }
    let dir = test_dir("block-window");
    let policy = block_policy(&dir, "300ms", OUTSIDE_ALLOWLIST);
    let listener = Listener::start_on("127.0.0.2:0");
    let port = listener.port.to_string();
    let late = run(
        "block-window",
        true,
        Some(policy.clone()),
        &["read-wait-connect", "1000", "127.0.0.2", &port],
    );
    assert_eq!(late.code, 0, "connected; stderr:\n{}", late.stderr);
    assert!(
        late.of_type("blocked").is_empty(),
        "{:#?}",
        late.of_type("blocked")
    );
    // Within the same window it is refused: the window, not the policy, let it through.
    let soon = run(
        "block-window",
        true,
        Some(policy),
        &["read-wait-connect", "0", "127.0.0.2", &port],
    );
    assert_eq!(soon.code, REFUSED, "stderr:\n{}", soon.stderr);
}

#[test]
fn an_io_uring_connect_and_a_udp_send_after_the_reads_are_refused() {
    if !bpf_available("an_io_uring_connect_and_a_udp_send_after_the_reads_are_refused") {
        return;
    }
    // io_uring: the C fixture connects to 127.0.0.1 as a child of the reader, so the
    // rule here blocks that address.
    let dir = test_dir("block-uring");
    let listener = Listener::start();
    let port = listener.port.to_string();
    let policy = block_policy(
        &dir,
        "30s",
        &format!("{{cidr: [127.0.0.1/32], port: [{port}]}}"),
    );
    let c = c_fixture();
    let run_uring = run(
        "block-uring",
        true,
        Some(policy),
        &["read-run", c.to_str().unwrap(), "uring-connect", &port],
    );
    assert_eq!(
        run_uring.code, 1,
        "io_uring connect refused (3: no io_uring); stderr:\n{}",
        run_uring.stderr
    );
    let b = blocked(&run_uring, "blocked");
    assert_eq!(b.len(), 1, "{b:#?}");
    assert_eq!(b[0]["destination"]["port"], listener.port);
    assert_eq!(b[0]["event"], "connect");

    let udp = std::net::UdpSocket::bind("127.0.0.2:0").expect("udp socket");
    let udp_port = udp.local_addr().unwrap().port().to_string();
    let run_udp = run(
        "block-udp",
        true,
        None,
        &["read-udp", "127.0.0.2", &udp_port],
    );
    assert_eq!(
        run_udp.code, REFUSED,
        "sendmsg got EPERM; stderr:\n{}",
        run_udp.stderr
    );
    let b = blocked(&run_udp, "blocked");
    assert_eq!(b.len(), 1, "{b:#?}");
    assert_eq!(b[0]["event"], "udp_send");
    // The datagram's own record says it did not leave (it once said "sent"), and
    // stays a UDP send for the rules and the sinks.
    let sends: Vec<&Value> = run_udp
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["address"] == "127.0.0.2")
        .collect();
    assert_eq!(sends.len(), 1, "{sends:#?}");
    assert_eq!(sends[0]["event"], "udp_send", "{:#}", sends[0]);
    assert_ne!(sends[0]["result"], "sent", "{:#}", sends[0]);
    assert!(
        sends[0]["result"].to_string().contains("EPERM"),
        "{:#}",
        sends[0]
    );
}

#[test]
fn without_enforce_the_connect_goes_through_and_would_block_is_written() {
    if !bpf_available("without_enforce_the_connect_goes_through_and_would_block_is_written") {
        return;
    }
    let listener = Listener::start_on("127.0.0.2:0");
    let port = listener.port.to_string();
    let run = run(
        "block-observe",
        false,
        None,
        &["read-connect", "127.0.0.2", &port],
    );
    assert_eq!(run.code, 0, "connected; stderr:\n{}", run.stderr);
    let pid = run.of_type("exec")[0]["pid"].as_u64().unwrap();
    assert_block_record(&run, "would_block", "127.0.0.2", listener.port, Some(pid));
    assert!(run.of_type("blocked").is_empty());
    assert_report_lists(&run, false);
}

/// The report says whether probectl enforced, names the block rule, and lists the
/// one call it judged.
fn assert_report_lists(run: &JsonRun, enforced: bool) {
    let report = run.report();
    assert_eq!(
        report["enforcement"],
        serde_json::json!({"enforcing": enforced, "block_rules": ["read-then-phone-home (BLOCK-1)"]}),
        "{report:#}"
    );
    let blocks = report["blocks"].as_array().expect("report.blocks");
    assert_eq!(blocks.len(), 1, "{blocks:#?}");
    assert_eq!(blocks[0]["enforced"], enforced);
    assert_eq!(blocks[0]["rule"], "read-then-phone-home");
    assert_eq!(blocks[0]["destination"]["address"], "127.0.0.2");
    // The CLI's summary marks the destination it was refused, not "connected".
    let dest = report["clis"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["destinations"].as_array().cloned().unwrap_or_default())
        .find(|d| d["address"] == "127.0.0.2")
        .unwrap_or_else(|| panic!("127.0.0.2 among the destinations: {report:#}"));
    assert_eq!(
        dest["blocked"].as_bool().unwrap_or(false),
        enforced,
        "{dest:#}"
    );
}

#[test]
fn a_variable_only_present_at_exec_does_not_block() {
    if !bpf_available("a_variable_only_present_at_exec_does_not_block") {
        return;
    }
    let dir = test_dir("block-exposed");
    let policy = block_policy(&dir, "30s", OUTSIDE_ALLOWLIST);
    let listener = Listener::start_on("127.0.0.2:0");
    let port = listener.port.to_string();
    let script = fixture();
    let mut cmd = probectl_command();
    cmd.args(["run", "--json", "--enforce", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg("node")
        .arg(&script)
        .args(["tz-connect", "127.0.0.2", &port])
        .env("ANTHROPIC_BASE_URL", "https://relay.example")
        .env("TZ", "UTC");
    let run = json_run(cmd);
    assert_eq!(run.code, 0, "connected; stderr:\n{}", run.stderr);
    assert!(
        run.of_type("blocked").is_empty(),
        "{:#?}",
        run.of_type("blocked")
    );
    // The variable was there, and seen there: it just was never read.
    assert!(
        run.of_type("probe")
            .iter()
            .any(|p| p["target"] == "ANTHROPIC_BASE_URL" && p["how"] == "present_at_exec"),
        "{:#?}",
        run.of_type("probe")
    );
}

#[test]
fn killing_probectl_while_enforcing_fails_open() {
    if !bpf_available("killing_probectl_while_enforcing_fails_open") {
        return;
    }
    let dir = test_dir("block-kill");
    let policy = block_policy(&dir, "5m", OUTSIDE_ALLOWLIST);
    let listener = Listener::start_on("127.0.0.2:0");
    let port = listener.port.to_string();
    let gate = dir.join("gate");
    let out = dir.join("out");
    let _ = std::fs::remove_file(&gate);
    let _ = std::fs::remove_file(&out);
    let script = fixture();
    let mut cmd = probectl_command();
    cmd.args(["run", "--json", "--enforce", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg("node")
        .arg(&script)
        .args(["gated", "127.0.0.2", &port])
        .arg(&gate)
        .arg(&out);
    let mut probectl = StreamingRun::spawn(cmd);
    let first = probectl.wait_for("the first connect refused", |r| r["type"] == "blocked");
    assert_eq!(first["destination"]["address"], "127.0.0.2");
    let result = wait_file(&out, "first:");
    assert!(result.contains("first: EPERM"), "{result}");
    probectl.signal(nix::sys::signal::Signal::SIGKILL);
    drop(probectl);
    std::fs::write(&gate, b"go").unwrap();
    let result = wait_file(&out, "second:");
    assert!(
        result.contains("second: ok"),
        "after probectl was killed the connect goes through: {result}"
    );
}

/// Waits (bounded) until `path` contains `what`; returns its text.
fn wait_file(path: &Path, what: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never said {what:?}: {text:?}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Through the library: a reload whose block maps fail midway (an LPM key the kernel
/// rejects, after the other block maps moved) leaves every block map, and the rule
/// count, exactly as they were: the old block rules stay in force.
#[test]
fn a_failed_reload_leaves_the_old_block_rules_in_force() {
    use probe_user::policy::{self, PreparedPolicy};
    use probe_user::sensors::{SensorError, Sensors};

    if !bpf_available("a_failed_reload_leaves_the_old_block_rules_in_force") {
        return;
    }
    let dir = test_dir("block-reload");
    let old = block_policy(&dir, "30s", OUTSIDE_ALLOWLIST);
    let old = policy::parse(&std::fs::read_to_string(&old).unwrap(), "old.yaml").unwrap();
    let mut sensors = Sensors::load(&PreparedPolicy::new(old)).expect("load the sensors");
    sensors.set_enforce(true).unwrap();
    let before = sensors.read_policy_maps().unwrap();
    assert_eq!(before.block_rules.len(), 1);
    assert_eq!(before.block_net4.len(), 1, "{:?}", before.block_net4);
    assert_eq!(sensors.enforcement().unwrap(), (true, 1));

    let new = default_policy_plus(
        &dir,
        "  - name: other\n    probed: {any_of: [proxy]}\n    destination: {cidr: [192.0.2.0/24, \"2001:db8::/32\"]}\n    within: 5s\n    action: block\n  - name: third\n    probed: {all_of: [timezone]}\n    within: 1s\n    action: block\n",
    );
    let new = policy::parse(&std::fs::read_to_string(&new).unwrap(), "new.yaml").unwrap();
    let mut failing = PreparedPolicy::new(new);
    // The IPv6 trie comes after the entries, rules, windows and IPv4 trie.
    let key = *failing.policy.block.net6.keys().next().unwrap();
    let value = failing.policy.block.net6.remove(&key).unwrap();
    failing.policy.block.net6.insert((4_000, key.1), value);
    let err = sensors
        .apply_policy(&failing)
        .expect_err("EINVAL from the trie");
    match &err {
        SensorError::PolicyUpdate { map, restored, .. } => {
            assert_eq!(*map, "BLOCK_NET6", "{err}");
            assert_eq!(restored, &None, "{err}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(sensors.read_policy_maps().unwrap(), before);
    assert_eq!(
        sensors.enforcement().unwrap(),
        (true, 1),
        "the old rule still judges"
    );
}
