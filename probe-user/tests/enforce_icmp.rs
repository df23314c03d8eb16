//! Root integration tests of `action: block` on sends the cgroup sendmsg hooks never
//! see: an ICMP echo on an unprivileged ping socket, and one on a raw socket. A
//! Python CLI reads the machine id, then sends an echo to a loopback address outside
//! the allowlist; the kernel refuses the send (EPERM) when enforcing, and lets it out
//! with a `would_block` record when not.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use common::*;
use serde_json::Value;

/// The fixture's exit code when its send was refused with EPERM.
const REFUSED: i32 = 13;
/// The fixture's exit code when its send returned success but no reply came: the
/// packet was dropped where the kernel does not report it.
const NO_REPLY: i32 = 14;

const PING_GROUP_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

/// Serialises the tests of this file: each widens `net.ipv4.ping_group_range` and
/// puts the old value back, which must not happen under another test's feet.
static PING_RANGE_LOCK: Mutex<()> = Mutex::new(());

/// `net.ipv4.ping_group_range` widened to this process's group (ping sockets are
/// refused with EACCES outside it, root included), restored on drop, a panic
/// included.
struct PingRange {
    old: String,
    _lock: MutexGuard<'static, ()>,
}

impl PingRange {
    fn widen() -> Self {
        // A test that panicked holding the lock restored the range (drop runs while
        // unwinding): the poison carries nothing.
        let lock = PING_RANGE_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = std::fs::read_to_string(PING_GROUP_RANGE).expect("read ping_group_range");
        let gid = nix::unistd::getegid().as_raw();
        std::fs::write(PING_GROUP_RANGE, format!("{gid} {gid}")).expect("widen ping_group_range");
        Self { old, _lock: lock }
    }
}

impl Drop for PingRange {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(PING_GROUP_RANGE, self.old.trim()) {
            eprintln!("restoring {PING_GROUP_RANGE} to {:?}: {e}", self.old);
        }
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/icmp_block.py")
}

/// The default policy plus one block rule: the machine id read, then a connect or
/// datagram anywhere but 127.0.0.1. (Not the time zone: python3 reads
/// /etc/localtime at start, so the fixture could not send without having read it.)
fn block_policy(dir: &Path) -> PathBuf {
    default_policy_plus(
        dir,
        "  - name: identity-then-echo\n    id: BLOCK-ICMP\n    probed: {all_of: [host-identity]}\n    then: [connect, udp_send]\n    destination: {except: {cidr: [127.0.0.1/32]}}\n    within: 30s\n    severity: high\n    action: block\n",
    )
}

/// `probectl run --json [--enforce] --policy POLICY -- python3 icmp_block.py MODE ADDR`.
fn run(test: &str, enforce: bool, mode: &str, addr: &str) -> JsonRun {
    let dir = test_dir(test);
    let policy = block_policy(&dir);
    let mut options: Vec<&OsStr> = vec![OsStr::new("--policy"), policy.as_os_str()];
    if enforce {
        options.push(OsStr::new("--enforce"));
    }
    let script = fixture();
    let argv: Vec<&OsStr> = vec![
        OsStr::new("python3"),
        script.as_os_str(),
        OsStr::new(mode),
        OsStr::new(addr),
    ];
    probectl_json_with(&options, &argv)
}

/// Asserts one `ty` record of rule BLOCK-ICMP: a datagram send (port 0) to `addr`
/// by the fixture after its machine id read.
fn assert_echo_record(run: &JsonRun, ty: &str, addr: &str) {
    let records: Vec<&Value> = run.of_type(ty);
    assert_eq!(
        records.len(),
        1,
        "one {ty} record: {records:#?}\n{}",
        run.stderr
    );
    let b = records[0];
    let pid = run.of_type("exec")[0]["pid"].as_u64().unwrap();
    assert_eq!(b["pid"], pid, "{b:#}");
    assert_eq!(b["id"], "BLOCK-ICMP", "{b:#}");
    assert_eq!(b["event"], "udp_send", "{b:#}");
    assert_eq!(b["destination"]["address"], addr, "{b:#}");
    assert_eq!(b["destination"]["port"], 0, "{b:#}");
    assert_eq!(
        b["categories"],
        serde_json::json!(["host-identity"]),
        "{b:#}"
    );
}

#[test]
fn an_echo_on_a_ping_socket_after_the_read_is_refused_with_eperm() {
    if !bpf_available("an_echo_on_a_ping_socket_after_the_read_is_refused_with_eperm") {
        return;
    }
    let _range = PingRange::widen();
    let run = run("icmp-ping-eperm", true, "read-ping", "127.0.0.2");
    assert_eq!(
        run.code, REFUSED,
        "the echo's sendto got EPERM; stderr:\n{}",
        run.stderr
    );
    assert_echo_record(&run, "blocked", "127.0.0.2");
    assert!(run.of_type("would_block").is_empty(), "{}", run.stderr);
    assert_send_result(&run, "127.0.0.2", "EPERM");
}

/// Asserts that the send's own connection record (a datagram to `addr`, port 0)
/// carries `result`.
fn assert_send_result(run: &JsonRun, addr: &str, result: &str) {
    let sends: Vec<&Value> = run
        .of_type("connect")
        .into_iter()
        .filter(|c| c["destination"]["address"] == addr)
        .collect();
    assert_eq!(sends.len(), 1, "{sends:#?}\n{}", run.stderr);
    assert_eq!(sends[0]["event"], "udp_send", "{:#}", sends[0]);
    assert_eq!(sends[0]["destination"]["port"], 0, "{:#}", sends[0]);
    assert_eq!(sends[0]["result"], result, "{:#}", sends[0]);
}

#[test]
fn without_enforce_the_echo_goes_out_and_would_block_is_written() {
    if !bpf_available("without_enforce_the_echo_goes_out_and_would_block_is_written") {
        return;
    }
    let _range = PingRange::widen();
    let run = run("icmp-ping-would", false, "read-ping", "127.0.0.2");
    assert_eq!(
        run.code, 0,
        "the echo went out and its reply came back; stderr:\n{}",
        run.stderr
    );
    assert_echo_record(&run, "would_block", "127.0.0.2");
    assert!(run.of_type("blocked").is_empty(), "{}", run.stderr);
    assert_send_result(&run, "127.0.0.2", "sent");
}

#[test]
fn an_echo_without_a_prior_read_goes_out() {
    if !bpf_available("an_echo_without_a_prior_read_goes_out") {
        return;
    }
    let _range = PingRange::widen();
    let run = run("icmp-ping-no-read", true, "ping", "127.0.0.2");
    assert_eq!(
        run.code, 0,
        "the echo went out and its reply came back; stderr:\n{}",
        run.stderr
    );
    assert!(run.of_type("blocked").is_empty(), "{}", run.stderr);
    assert!(run.of_type("would_block").is_empty(), "{}", run.stderr);
}

#[test]
fn an_echo_on_a_raw_socket_after_the_read_is_refused_with_eperm() {
    if !bpf_available("an_echo_on_a_raw_socket_after_the_read_is_refused_with_eperm") {
        return;
    }
    // Raw sockets need CAP_NET_RAW, not the ping range (root here).
    let run = run("icmp-raw-eperm", true, "read-raw", "127.0.0.2");
    assert_eq!(
        run.code, REFUSED,
        "the raw echo's sendto got EPERM; stderr:\n{}",
        run.stderr
    );
    assert_echo_record(&run, "blocked", "127.0.0.2");
}

#[test]
fn icmpv6_echoes_after_the_read_are_dropped() {
    if !bpf_available("icmpv6_echoes_after_the_read_are_dropped") {
        return;
    }
    let _range = PingRange::widen();
    // Unread, the echo on an IPv6 ping socket goes out and its reply comes back.
    let control = run("icmp6-ping-no-read", true, "ping", "::1");
    assert_eq!(control.code, 0, "reply; stderr:\n{}", control.stderr);
    assert!(control.of_type("blocked").is_empty(), "{}", control.stderr);
    // After the read it is dropped, but the kernel's IPv6 ping send ignores the
    // output's verdict: sendto returns success, and no reply comes.
    let ping = run("icmp6-ping-dropped", true, "read-ping", "::1");
    assert_eq!(
        ping.code, NO_REPLY,
        "the echo was dropped (sendto succeeded, no reply); stderr:\n{}",
        ping.stderr
    );
    assert_echo_record(&ping, "blocked", "::1");
    // Its own record says so, not `sent`.
    assert_send_result(&ping, "::1", "dropped");
    // A raw ICMPv6 socket reports the drop: EPERM.
    let raw = run("icmp6-raw-eperm", true, "read-raw", "::1");
    assert_eq!(raw.code, REFUSED, "EPERM; stderr:\n{}", raw.stderr);
    assert_echo_record(&raw, "blocked", "::1");
    assert_send_result(&raw, "::1", "EPERM");
    // Unread, the IPv6 echo's record says `sent`.
    assert_send_result(&control, "::1", "sent");
}

/// The egress judge runs for every packet of every process, so it is attached only
/// while a block rule that can refuse an ICMP or raw send (one naming `udp_send`) is
/// in force: loaded without one it is idle, a reload to a connect-only block rule
/// leaves it idle, one that adds such a rule attaches it, one that removes it detaches
/// it.
#[test]
fn the_icmp_judges_are_attached_only_while_block_rules_are_in_force() {
    use probe_user::policy::{self, PreparedPolicy};
    use probe_user::sensors::Sensors;

    if !bpf_available("the_icmp_judges_are_attached_only_while_block_rules_are_in_force") {
        return;
    }
    let dir = test_dir("icmp-judge-attach");
    let plain = PreparedPolicy::new(policy::load_default().unwrap());
    let blocking = block_policy(&dir);
    let blocking = policy::parse(&std::fs::read_to_string(&blocking).unwrap(), "b.yaml").unwrap();
    let blocking = PreparedPolicy::new(blocking);
    let mut sensors = Sensors::load(&plain).expect("load the sensors");
    assert!(
        !sensors.raw_judges_attached() && !sensors.raw_socket_owners_recorded(),
        "no block rule: the judges are idle"
    );
    // Loaded and verified all the same: doctor can say they would judge.
    assert!(sensors.raw_sends_not_judged().is_none());
    let connect_only = default_policy_plus(
        &dir,
        "  - name: identity-then-connect\n    probed: {all_of: [host-identity]}\n    then: [connect]\n    within: 30s\n    action: block\n",
    );
    let connect_only =
        policy::parse(&std::fs::read_to_string(&connect_only).unwrap(), "c.yaml").unwrap();
    sensors
        .apply_policy(&PreparedPolicy::new(connect_only))
        .expect("a policy with a connect-only block rule");
    assert!(
        !sensors.raw_judges_attached(),
        "a rule that never judges a datagram does not attach the egress judge"
    );
    assert!(
        sensors.raw_socket_owners_recorded(),
        "but sockets' owners are recorded, for a reload that adds such a rule"
    );
    sensors
        .apply_policy(&blocking)
        .expect("a policy with a block rule");
    assert!(sensors.raw_judges_attached(), "a block rule attaches them");
    sensors.apply_policy(&plain).expect("back to no block rule");
    assert!(
        !sensors.raw_judges_attached(),
        "and its removal detaches them"
    );
    drop(sensors);
    // Started with a block rule, they are attached from the start.
    let sensors = Sensors::load(&blocking).expect("load the sensors");
    assert!(sensors.raw_judges_attached());
}
