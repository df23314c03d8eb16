//! Root integration tests of where host-name block rules learn addresses from: only
//! the DNS answers of trusted resolvers (docs/policy.md, "Host names"). Two fake
//! resolvers on loopback give `allowed.test` different addresses; a real Node CLI
//! resolves it through whichever the private /etc/resolv.conf names, then connects.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The resolver probectl trusts in these tests (no other test uses it).
const TRUSTED: &str = "127.0.0.31";
/// A DNS server the watched CLI picks itself (its /etc/resolv.conf names it).
const ROGUE: &str = "127.0.0.32";
/// What the trusted resolver says `allowed.test` is; anything else is 127.0.0.35.
const ALLOWED_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 33);
/// What the rogue server says `allowed.test` is: an address outside the allowlist.
const ROGUE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 34);

/// Serves A queries on `addr:53` until the test process exits, answering
/// `allowed.test` with `allowed`, `n<i>.blocked.test` with 127.0.2.<i+1> (each a new
/// address) and anything else with 127.0.0.35.
fn fake_resolver(addr: &'static str, allowed: Ipv4Addr) {
    resolver::serve_a(addr, move |name| {
        let name = name.to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        let numbered = name
            .strip_prefix('n')
            .and_then(|r| r.strip_suffix(".blocked.test"))
            .and_then(|i| i.parse::<u8>().ok());
        let address = match (name, numbered) {
            ("allowed.test", _) => allowed,
            (_, Some(i)) => Ipv4Addr::new(127, 0, 2, i.saturating_add(1)),
            _ => Ipv4Addr::new(127, 0, 0, 35),
        };
        (address, 60)
    });
}

fn resolvers_up() {
    static UP: std::sync::Once = std::sync::Once::new();
    UP.call_once(|| {
        fake_resolver(TRUSTED, ALLOWED_ADDR);
        fake_resolver(ROGUE, ROGUE_ADDR);
    });
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node_block_hosts.js")
}

/// The default policy plus one block rule: time zone and API relay read, then a
/// connect outside the allowlist (`allowed.test`; both resolvers by CIDR, so that the
/// CLI's own lookups go through).
fn allowlist_policy(dir: &Path) -> PathBuf {
    default_policy_plus(
        dir,
        &format!(
            "  - name: read-then-call\n    id: BLOCK-DNS\n    probed: {{all_of: [timezone, api-relay]}}\n    then: [connect]\n    destination: {{except: {{host: [allowed.test], cidr: [{TRUSTED}/32, {ROGUE}/32]}}}}\n    within: 60s\n    severity: high\n    action: block\n"
        ),
    )
}

/// A blocklist by host name that also refuses, while a DNS answer of the tree is
/// pending in probectl, the addresses it has not learned yet.
fn pending_policy(dir: &Path) -> PathBuf {
    default_policy_plus(
        dir,
        "  - name: read-then-call\n    id: BLOCK-PENDING\n    probed: {all_of: [timezone, api-relay]}\n    then: [connect]\n    destination: {host: ['*blocked.test'], dns_pending: block}\n    within: 60s\n    severity: high\n    action: block\n",
    )
}

/// `probectl run --json --enforce PROBECTL_ARGS --policy POLICY -- node FIXTURE ARGS`
/// in a private mount namespace whose /etc/resolv.conf names `resolver` (the host's
/// file and resolver are never touched).
fn command(
    dir: &Path,
    policy: &Path,
    resolver: &str,
    probectl_args: &[&str],
    args: &[&str],
) -> std::process::Command {
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {resolver}\noptions attempts:1 timeout:2\n"),
    )
    .unwrap();
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec {} run --json --enforce {} --policy {} -- node {} {}",
        resolv.display(),
        probectl().display(),
        probectl_args.join(" "),
        policy.display(),
        fixture().display(),
        quoted.join(" ")
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    cmd.env_remove("CI");
    cmd.env(
        "PROBECTL_SOCKET",
        "/nonexistent/probectl-tests/no-daemon.sock",
    );
    cmd
}

/// The fixture's JSON line (the last JSON object on stderr).
fn fixture_line(run: &JsonRun) -> Value {
    run.stderr
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
        .unwrap_or_else(|| panic!("the fixture's result line; stderr:\n{}", run.stderr))
}

#[test]
fn an_answer_from_a_server_the_cli_picked_does_not_open_the_allowlist() {
    if !bpf_available("an_answer_from_a_server_the_cli_picked_does_not_open_the_allowlist") {
        return;
    }
    resolvers_up();
    let listener = Listener::start_on("0.0.0.0:0");
    let port = listener.port.to_string();
    let dir = test_dir("block-dns-untrusted");
    let policy = allowlist_policy(&dir);
    // The CLI's resolv.conf names the rogue server, which says allowed.test is
    // 127.0.0.34; probectl trusts only 127.0.0.31. Every attempt (a fresh lookup,
    // 50 ms apart, long after any race) is refused.
    let trusted = format!("--trusted-resolver {TRUSTED}");
    let run = json_run(command(
        &dir,
        &policy,
        ROGUE,
        &[&trusted],
        &["each", "allowed.test", &port, "8"],
    ));
    let line = fixture_line(&run);
    assert_eq!(run.code, 0, "{line}\n{}", run.stderr);
    assert_eq!(line["address"], ROGUE_ADDR.to_string(), "{line}");
    let results = line["results"].as_array().unwrap();
    assert_eq!(results.len(), 8, "{line}");
    assert!(
        results.iter().all(|r| r == "EPERM"),
        "the rogue server's answer must not make 127.0.0.34 allowed.test: {line}"
    );
    // The answers are still decoded and shown; for block rules they are counted.
    assert!(
        run.of_type("dns_answer")
            .iter()
            .any(|a| a["name"] == "allowed.test" && a["addresses"][0] == ROGUE_ADDR.to_string()),
        "{:#?}",
        run.of_type("dns_answer")
    );
    let dns = &run.report()["enforcement"]["dns"];
    assert_eq!(dns["trusted_from"], "configured", "{dns:#}");
    assert_eq!(dns["trusted"], serde_json::json!([format!("{TRUSTED}:53")]));
    let untrusted = dns["untrusted"].as_array().unwrap();
    let rogue = untrusted
        .iter()
        .find(|u| u["server"] == format!("{ROGUE}:53"))
        .unwrap_or_else(|| panic!("the rogue server's answers are counted: {dns:#}"));
    assert!(rogue["answers"].as_u64().unwrap() >= 8, "{dns:#}");

    // The same answer from a resolver probectl trusts is learned: allowed.test
    // becomes reachable at 127.0.0.34.
    let dir = test_dir("block-dns-trusted");
    let policy = allowlist_policy(&dir);
    let trusted = format!("--trusted-resolver {ROGUE}");
    let run = json_run(command(
        &dir,
        &policy,
        ROGUE,
        &[&trusted],
        &["until", "allowed.test", &port, "ok"],
    ));
    let line = fixture_line(&run);
    assert_eq!(
        run.code, 0,
        "allowed.test became reachable: {line}\n{}",
        run.stderr
    );
    assert_eq!(line["address"], ROGUE_ADDR.to_string(), "{line}");
    let dns = &run.report()["enforcement"]["dns"];
    assert!(dns.get("untrusted").is_none(), "{dns:#}");
}

#[test]
fn by_default_the_resolvers_of_etc_resolv_conf_are_trusted() {
    if !bpf_available("by_default_the_resolvers_of_etc_resolv_conf_are_trusted") {
        return;
    }
    resolvers_up();
    let listener = Listener::start_on("0.0.0.0:0");
    let port = listener.port.to_string();
    let dir = test_dir("block-dns-resolv-conf");
    let policy = allowlist_policy(&dir);
    // No list given: probectl reads the (private) /etc/resolv.conf, which names the
    // trusted resolver, and learns its answer.
    let run = json_run(command(
        &dir,
        &policy,
        TRUSTED,
        &[],
        &["until", "allowed.test", &port, "ok"],
    ));
    let line = fixture_line(&run);
    assert_eq!(run.code, 0, "{line}\n{}", run.stderr);
    assert_eq!(line["address"], ALLOWED_ADDR.to_string(), "{line}");
    let dns = &run.report()["enforcement"]["dns"];
    assert_eq!(dns["trusted_from"], "resolv_conf", "{dns:#}");
    assert_eq!(dns["trusted"], serde_json::json!([format!("{TRUSTED}:53")]));
}

#[test]
fn with_dns_pending_block_no_connect_races_past_a_fresh_answer() {
    if !bpf_available("with_dns_pending_block_no_connect_races_past_a_fresh_answer") {
        return;
    }
    resolvers_up();
    let listener = Listener::start_on("0.0.0.0:0");
    let port = listener.port.to_string();
    let dir = test_dir("block-dns-pending-race");
    let policy = pending_policy(&dir);
    // 50 fresh names, each connected to the moment its answer arrives: without
    // `dns_pending: block` most of these go through before probectl has stored the
    // address (tests/enforce_hosts.rs measures it); with it, none does.
    let run = json_run(command(&dir, &policy, TRUSTED, &[], &["race", "50", &port]));
    let race = fixture_line(&run);
    assert_eq!(run.code, 0, "{race}\n{}", run.stderr);
    let (through, refused) = (
        race["through"].as_u64().unwrap(),
        race["refused"].as_u64().unwrap(),
    );
    let pending = run
        .of_type("blocked")
        .iter()
        .filter(|b| b["dns_pending"] == true)
        .count();
    eprintln!(
        "dns_pending: block: of 50 connects made at once after a fresh answer, {through} went through, {refused} were refused ({pending} of them before the address was stored)"
    );
    assert_eq!((through, refused), (0, 50), "{race}");
}

#[test]
fn with_dns_pending_block_an_unrelated_address_passes_once_the_answer_is_handled() {
    if !bpf_available(
        "with_dns_pending_block_an_unrelated_address_passes_once_the_answer_is_handled",
    ) {
        return;
    }
    resolvers_up();
    let listener = Listener::start_on("0.0.0.0:0");
    let port = listener.port.to_string();
    let dir = test_dir("block-dns-pending-cleared");
    let policy = pending_policy(&dir);
    let (gate, out) = (dir.join("gate"), dir.join("out.json"));
    let mut run = StreamingRun::spawn(command(
        &dir,
        &policy,
        TRUSTED,
        &[],
        &[
            "gate",
            "elsewhere.test",
            &port,
            gate.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    ));
    // The answer's record is written after probectl handled it (and told the
    // kernel): from then on the tree has nothing pending.
    run.wait_for("the answer for elsewhere.test", |r| {
        r["type"] == "dns_answer" && r["name"] == "elsewhere.test"
    });
    std::fs::write(&gate, b"").unwrap();
    let run = run.finish();
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap_or_default())
        .unwrap_or_else(|e| panic!("the fixture's result ({e}); stderr: {}", run.stderr));
    assert_eq!(result["address"], "127.0.0.35", "{result}");
    assert_eq!(
        result["result"], "ok",
        "an address no rule names, after the answer was handled: {result}"
    );
    assert!(
        run.of_type("blocked").is_empty(),
        "{:#?}",
        run.of_type("blocked")
    );
}

#[test]
fn with_dns_pending_block_a_stalled_probectl_refuses_unknown_addresses_for_2_s_only() {
    if !bpf_available(
        "with_dns_pending_block_a_stalled_probectl_refuses_unknown_addresses_for_2_s_only",
    ) {
        return;
    }
    resolvers_up();
    let listener = Listener::start_on("0.0.0.0:0");
    let port = listener.port.to_string();
    let dir = test_dir("block-dns-pending-stalled");
    let policy = pending_policy(&dir);
    let (gate, out) = (dir.join("gate"), dir.join("out.json"));
    let mut run = StreamingRun::spawn(command(
        &dir,
        &policy,
        TRUSTED,
        &[],
        &[
            "stalled",
            "elsewhere.test",
            &port,
            gate.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    ));
    // The reads are in (the rule's sequence holds); then probectl stops handling
    // events (stopped, its programs still attached): the answer that follows is
    // never handled, as if userspace had hung.
    run.wait_for("the fixture's read of ANTHROPIC_BASE_URL", |r| {
        r["type"] == "probe" && r["target"] == "ANTHROPIC_BASE_URL"
    });
    run.signal(nix::sys::signal::Signal::SIGSTOP);
    std::fs::write(&gate, b"").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let result = loop {
        if let Ok(bytes) = std::fs::read(&out)
            && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
        {
            break v;
        }
        if std::time::Instant::now() > deadline {
            run.signal(nix::sys::signal::Signal::SIGCONT);
            panic!("the fixture wrote no result");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    run.signal(nix::sys::signal::Signal::SIGCONT);
    let run = run.finish();
    eprintln!("stalled probectl: {result}");
    assert_eq!(result["address"], "127.0.0.35", "{result}");
    // Refused while the answer is pending, then let through: the 2 s bound, not
    // userspace, ends it.
    assert_eq!(result["first"], "EPERM", "{result}");
    assert_eq!(result["result"], "ok", "{result}");
    let after = result["through_after_ms"].as_u64().unwrap();
    assert!(
        (1_500..6_000).contains(&after),
        "let through about 2 s after the answer: {result}"
    );
    assert!(
        run.of_type("blocked")
            .iter()
            .any(|b| b["dns_pending"] == true && b["destination"]["address"] == "127.0.0.35"),
        "{:#?}",
        run.of_type("blocked")
    );
}
