use super::*;
use crate::records::{Family, TargetType};

fn names() -> Vec<String> {
    ["timezone", "proxy", "api-relay"]
        .map(String::from)
        .to_vec()
}

fn probe(category: &str, target: &str, ms_before: f64, pid: u32) -> PriorProbe {
    PriorProbe {
        category: category.into(),
        target_type: TargetType::Env,
        target: target.into(),
        how: crate::ops::How::Getenv,
        pids: vec![pid],
        count: 1,
        distinct_targets: None,
        first_ms_before: ms_before,
        last_ms_before: ms_before,
        first_ns: 0,
        last_ns: 0,
    }
}

fn engine(rule_yaml: &str) -> RuleEngine {
    let yaml = format!(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {{name: t}}\ncategories:\n  - {{name: timezone, env: [TZ]}}\n  - {{name: proxy, env: [HTTPS_PROXY]}}\n  - {{name: api-relay, env: [ANTHROPIC_BASE_URL]}}\nrules:\n{rule_yaml}"
    );
    RuleEngine::new(crate::policy::parse(&yaml, "t.yaml").unwrap().rules)
}

fn dest(address: &str, port: u16) -> Destination {
    Destination {
        family: if address.contains(':') {
            Family::Ipv6
        } else {
            Family::Ipv4
        },
        address: address.into(),
        port,
    }
}

fn call<'a>(d: &'a Destination, at_ns: u64, names: &'a [String]) -> NetCall<'a> {
    NetCall {
        kind: NetworkEvent::Connect,
        tree: 1,
        at_ns,
        destination: Some(d),
        names,
    }
}

#[test]
fn the_window_is_inclusive_at_its_boundary() {
    let mut e = engine("  - {name: r, probed: {all_of: [timezone]}, within: 30s}\n");
    let d = dest("192.0.2.1", 443);
    let mut at = |ms: f64| e_eval(&mut e, &d, &[probe("timezone", "TZ", ms, 5)]);
    fn e_eval(e: &mut RuleEngine, d: &Destination, p: &[PriorProbe]) -> usize {
        e.evaluate(&call(d, 0, &[]), p, &names()).len()
    }
    assert_eq!(at(30_000.0), 1, "exactly 30 s before: inside");
    assert_eq!(at(30_000.001), 0, "just over 30 s before: outside");
    assert_eq!(at(0.0), 1);
}

#[test]
fn all_of_any_of_and_min_count() {
    let d = dest("192.0.2.1", 443);
    let tz = probe("timezone", "TZ", 1.0, 5);
    let tz_file = probe("timezone", "/etc/localtime", 1.0, 5);
    let relay = probe("api-relay", "ANTHROPIC_BASE_URL", 2.0, 5);
    let mut all = engine("  - {name: r, probed: {all_of: [timezone, api-relay]}, within: 1m}\n");
    assert!(
        all.evaluate(&call(&d, 0, &[]), std::slice::from_ref(&tz), &names())
            .is_empty()
    );
    let m = all.evaluate(&call(&d, 0, &[]), &[tz.clone(), relay.clone()], &names());
    assert_eq!(m[0].categories, ["api-relay", "timezone"]);

    let mut any = engine("  - {name: r, probed: {any_of: [proxy, api-relay]}, within: 1m}\n");
    assert!(
        any.evaluate(&call(&d, 0, &[]), std::slice::from_ref(&tz), &names())
            .is_empty()
    );
    assert_eq!(
        any.evaluate(&call(&d, 0, &[]), std::slice::from_ref(&relay), &names())
            .len(),
        1
    );

    let mut min = engine("  - {name: r, probed: {any_of: [timezone], min_count: 2}, within: 1m}\n");
    assert!(
        min.evaluate(&call(&d, 0, &[]), &[tz.clone(), relay.clone()], &names())
            .is_empty()
    );
    assert_eq!(
        min.evaluate(&call(&d, 0, &[]), &[tz.clone(), tz_file, relay], &names())
            .len(),
        1,
        "two distinct time-zone targets"
    );
    // The same target twice (two operations) is one distinct probe.
    let tz_again = PriorProbe {
        how: crate::ops::How::SecureGetenv,
        ..tz.clone()
    };
    assert!(
        min.evaluate(&call(&d, 0, &[]), &[tz, tz_again], &names())
            .is_empty()
    );
}

#[test]
fn destinations_by_cidr_port_host_and_allowlist() {
    let mut e = engine(
        "  - name: r\n    probed: {any_of: [timezone]}\n    within: 1m\n    destination: {cidr: [192.0.2.0/24, '2001:db8::/32'], port: [443], except: {host: ['*.allowed.example']}}\n",
    );
    let p = [probe("timezone", "TZ", 1.0, 5)];
    let mut hits = |addr: &str, port: u16, names: &[String]| {
        let d = dest(addr, port);
        e.evaluate(&call(&d, 0, names), &p, &names_()).len()
    };
    fn names_() -> Vec<String> {
        names()
    }
    assert_eq!(hits("192.0.2.9", 443, &[]), 1);
    assert_eq!(hits("2001:db8::5", 443, &[]), 1);
    assert_eq!(hits("192.0.2.9", 80, &[]), 0, "port");
    assert_eq!(hits("198.51.100.1", 443, &[]), 0, "cidr");
    assert_eq!(
        hits("192.0.2.9", 443, &["api.allowed.example".into()]),
        0,
        "allowlisted"
    );
    let mut by_host = engine(
        "  - name: r\n    probed: {any_of: [timezone]}\n    within: 1m\n    destination: {host: ['*.relay.example']}\n",
    );
    let d = dest("192.0.2.9", 443);
    assert_eq!(
        by_host
            .evaluate(&call(&d, 0, &["x.relay.example".into()]), &p, &names())
            .len(),
        1
    );
    assert!(
        by_host.evaluate(&call(&d, 0, &[]), &p, &names()).is_empty(),
        "no name known"
    );
}

#[test]
fn repeats_inside_the_suppression_window_are_counted_not_alerted() {
    let mut e = engine(
        "  - {name: r, probed: {any_of: [timezone]}, within: 1m, action: alert, suppress: 10s}\n",
    );
    let d = dest("192.0.2.1", 443);
    let p = [probe("timezone", "TZ", 1.0, 5)];
    let s = 1_000_000_000u64;
    let first = e.evaluate(&call(&d, s, &[]), &p, &names());
    let repeat = e.evaluate(&call(&d, 5 * s, &[]), &p, &names());
    let later = e.evaluate(&call(&d, 12 * s, &[]), &p, &names());
    assert!(!first[0].suppressed);
    assert!(repeat[0].suppressed);
    assert!(!later[0].suppressed, "10 s after the last alert");
    let other = dest("192.0.2.2", 443);
    assert!(
        !e.evaluate(&call(&other, 6 * s, &[]), &p, &names())[0].suppressed,
        "another destination"
    );
    let summary = &e.summaries(|_| 0.0)[0];
    assert_eq!((summary.matches, summary.suppressed), (4, 1));
}

#[test]
fn then_limits_the_network_events() {
    let mut e =
        engine("  - {name: r, probed: {any_of: [timezone]}, then: [dns_query], within: 1m}\n");
    let d = dest("192.0.2.1", 443);
    let p = [probe("timezone", "TZ", 1.0, 5)];
    assert!(e.evaluate(&call(&d, 0, &[]), &p, &names()).is_empty());
    let q = NetCall {
        kind: NetworkEvent::DnsQuery,
        ..call(&d, 0, &[])
    };
    assert_eq!(e.evaluate(&q, &p, &names()).len(), 1);
}

#[test]
fn the_default_rule_flags_calls_off_this_machine_only() {
    let policy = crate::policy::load_default().unwrap();
    let cats: Vec<String> = policy.categories.iter().map(|c| c.name.clone()).collect();
    let mut e = RuleEngine::new(policy.rules);
    let p = [
        probe("timezone", "TZ", 5.0, 9),
        probe("proxy", "HTTPS_PROXY", 4.0, 9),
    ];
    let remote = dest("203.0.113.5", 443);
    let m = e.evaluate(&call(&remote, 0, &[]), &p, &cats);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].rule, "fingerprint-then-network");
    assert_eq!(m[0].categories, ["proxy", "timezone"]);
    for local in [
        dest("127.0.0.1", 443),
        dest("::1", 443),
        dest("::ffff:127.0.0.1", 80),
    ] {
        assert!(
            e.evaluate(&call(&local, 0, &[]), &p, &cats).is_empty(),
            "{local:?}"
        );
    }
    let unix = Destination {
        family: Family::Unix,
        address: "/run/dbus/system_bus_socket".into(),
        port: 0,
    };
    let q = NetCall {
        kind: NetworkEvent::UnixConnect,
        ..call(&unix, 0, &[])
    };
    assert!(
        e.evaluate(&q, &p, &cats).is_empty(),
        "unix connects stay local"
    );
    // Only the time zone: not enough.
    assert!(
        e.evaluate(&call(&remote, 0, &[]), &p[..1], &cats)
            .is_empty()
    );
}

proptest::proptest! {
    /// A probe exactly `within` before the call counts; one a microsecond earlier does
    /// not, whatever the window.
    #[test]
    fn the_window_is_inclusive_at_its_exact_boundary(window_ms in 1u64..10_000_000) {
        let mut e = engine(&format!(
            "  - {{name: r, probed: {{all_of: [timezone]}}, within: {window_ms}ms}}\n"
        ));
        let d = dest("192.0.2.1", 443);
        let at = window_ms as f64;
        let inside = e.evaluate(&call(&d, 0, &[]), &[probe("timezone", "TZ", at, 5)], &names());
        proptest::prop_assert_eq!(inside.len(), 1);
        let outside =
            e.evaluate(&call(&d, 0, &[]), &[probe("timezone", "TZ", at + 0.001, 5)], &names());
        proptest::prop_assert!(outside.is_empty());
    }

    /// all_of needs every category, any_of one of them, in any order of probes.
    #[test]
    fn all_of_and_any_of_follow_set_logic(
        probed in proptest::collection::vec(0usize..3, 0..6),
    ) {
        let cats = ["timezone", "proxy", "api-relay"];
        let prior: Vec<PriorProbe> =
            probed.iter().map(|&c| probe(cats[c], "X", 1.0, 5)).collect();
        let d = dest("192.0.2.1", 443);
        let mut all = engine("  - {name: r, probed: {all_of: [timezone, proxy]}, within: 1m}\n");
        let mut any = engine("  - {name: r, probed: {any_of: [timezone, proxy]}, within: 1m}\n");
        let has = |c: usize| probed.contains(&c);
        proptest::prop_assert_eq!(
            all.evaluate(&call(&d, 0, &[]), &prior, &names()).len(),
            usize::from(has(0) && has(1))
        );
        proptest::prop_assert_eq!(
            any.evaluate(&call(&d, 0, &[]), &prior, &names()).len(),
            usize::from(has(0) || has(1))
        );
    }
}
