use super::*;
use crate::ops::EvidenceSet;
use crate::records::{Family, PriorProbe, TargetType};

fn names() -> Vec<String> {
    ["timezone", "proxy", "api-relay"]
        .map(String::from)
        .to_vec()
}

/// The probes of a test, as rules see them: `last_ms_before` is measured from the
/// call, whatever its time (the window test of the real index is in `prior.rs`).
struct Rows<'a> {
    rows: &'a [PriorProbe],
    names: &'a [String],
}

impl<'a> Rows<'a> {
    fn new(rows: &'a [PriorProbe], names: &'a [String]) -> Self {
        Self { rows, names }
    }

    fn within(&self, since: u64, at: u64) -> impl Iterator<Item = &PriorProbe> {
        let window_ms = (at - since) as f64 / 1e6;
        self.rows
            .iter()
            .filter(move |p| p.last_ms_before <= window_ms)
    }

    fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).unwrap()
    }
}

impl super::super::prior::PriorView for Rows<'_> {
    fn probed(&self, c: usize, kinds: EvidenceSet, since: u64, at: u64) -> bool {
        self.within(since, at)
            .any(|p| p.category == self.names[c] && kinds.contains(p.how.evidence()))
    }
    fn distinct_at_least(
        &self,
        cats: Option<&[usize]>,
        kinds: EvidenceSet,
        since: u64,
        at: u64,
        min: u64,
    ) -> bool {
        let mut pairs: Vec<(&str, &str)> = self
            .within(since, at)
            .filter(|p| kinds.contains(p.how.evidence()))
            .filter(|p| cats.is_none_or(|cats| cats.contains(&self.index(&p.category))))
            .map(|p| (p.category.as_str(), p.target.as_str()))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs.len() as u64 >= min
    }
    fn categories(&self, kinds: EvidenceSet, since: u64, at: u64) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .within(since, at)
            .filter(|p| kinds.contains(p.how.evidence()))
            .map(|p| self.index(&p.category))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn probe(category: &str, target: &str, ms_before: f64, pid: u32) -> PriorProbe {
    PriorProbe {
        category: category.into(),
        target_type: TargetType::Env,
        target: target.into(),
        how: crate::ops::How::Getenv,
        evidence: crate::ops::Evidence::Read,
        pids: vec![pid],
        by: Vec::new(),
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

/// Calls are made this long after boot, so every window fits before them.
const AT: u64 = 1_000_000_000_000_000;

fn call<'a>(d: &'a Destination, at_ns: u64, names: &'a [String]) -> NetCall<'a> {
    NetCall {
        kind: NetworkEvent::Connect,
        tree: 1,
        at_ns: AT + at_ns,
        destination: Some(d),
        names,
        bypassed: false,
    }
}

#[test]
fn the_window_is_inclusive_at_its_boundary() {
    let mut e = engine("  - {name: r, probed: {all_of: [timezone]}, within: 30s}\n");
    let d = dest("192.0.2.1", 443);
    let mut at = |ms: f64| e_eval(&mut e, &d, &[probe("timezone", "TZ", ms, 5)]);
    fn e_eval(e: &mut RuleEngine, d: &Destination, p: &[PriorProbe]) -> usize {
        e.evaluate(&call(d, 0, &[]), &Rows::new(p, &names()), &names())
            .len()
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
        all.evaluate(
            &call(&d, 0, &[]),
            &Rows::new(std::slice::from_ref(&tz), &names()),
            &names()
        )
        .is_empty()
    );
    let m = all.evaluate(
        &call(&d, 0, &[]),
        &Rows::new(&[tz.clone(), relay.clone()], &names()),
        &names(),
    );
    assert_eq!(m[0].categories, ["api-relay", "timezone"]);

    let mut any = engine("  - {name: r, probed: {any_of: [proxy, api-relay]}, within: 1m}\n");
    assert!(
        any.evaluate(
            &call(&d, 0, &[]),
            &Rows::new(std::slice::from_ref(&tz), &names()),
            &names()
        )
        .is_empty()
    );
    assert_eq!(
        any.evaluate(
            &call(&d, 0, &[]),
            &Rows::new(std::slice::from_ref(&relay), &names()),
            &names()
        )
        .len(),
        1
    );

    let mut min = engine("  - {name: r, probed: {any_of: [timezone], min_count: 2}, within: 1m}\n");
    assert!(
        min.evaluate(
            &call(&d, 0, &[]),
            &Rows::new(&[tz.clone(), relay.clone()], &names()),
            &names()
        )
        .is_empty()
    );
    assert_eq!(
        min.evaluate(
            &call(&d, 0, &[]),
            &Rows::new(&[tz.clone(), tz_file, relay], &names()),
            &names()
        )
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
        min.evaluate(
            &call(&d, 0, &[]),
            &Rows::new(&[tz, tz_again], &names()),
            &names()
        )
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
        e.evaluate(&call(&d, 0, names), &Rows::new(&p, &names_()), &names_())
            .len()
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
            .evaluate(
                &call(&d, 0, &["x.relay.example".into()]),
                &Rows::new(&p, &names()),
                &names()
            )
            .len(),
        1
    );
    assert!(
        by_host
            .evaluate(&call(&d, 0, &[]), &Rows::new(&p, &names()), &names())
            .is_empty(),
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
    let first = e.evaluate(&call(&d, s, &[]), &Rows::new(&p, &names()), &names());
    let repeat = e.evaluate(&call(&d, 5 * s, &[]), &Rows::new(&p, &names()), &names());
    let later = e.evaluate(&call(&d, 12 * s, &[]), &Rows::new(&p, &names()), &names());
    assert!(!first[0].suppressed);
    assert!(repeat[0].suppressed);
    assert!(!later[0].suppressed, "10 s after the last alert");
    let other = dest("192.0.2.2", 443);
    assert!(
        !e.evaluate(
            &call(&other, 6 * s, &[]),
            &Rows::new(&p, &names()),
            &names()
        )[0]
        .suppressed,
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
    assert!(
        e.evaluate(&call(&d, 0, &[]), &Rows::new(&p, &names()), &names())
            .is_empty()
    );
    let q = NetCall {
        kind: NetworkEvent::DnsQuery,
        ..call(&d, 0, &[])
    };
    assert_eq!(e.evaluate(&q, &Rows::new(&p, &names()), &names()).len(), 1);
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
    let m = e.evaluate(&call(&remote, 0, &[]), &Rows::new(&p, &cats), &cats);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].rule, "fingerprint-then-network");
    assert_eq!(m[0].categories, ["proxy", "timezone"]);
    for local in [
        dest("127.0.0.1", 443),
        dest("::1", 443),
        dest("::ffff:127.0.0.1", 80),
    ] {
        assert!(
            e.evaluate(&call(&local, 0, &[]), &Rows::new(&p, &cats), &cats)
                .is_empty(),
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
        e.evaluate(&q, &Rows::new(&p, &cats), &cats).is_empty(),
        "unix connects stay local"
    );
    // Only the time zone: not enough.
    assert!(
        e.evaluate(&call(&remote, 0, &[]), &Rows::new(&p[..1], &cats), &cats)
            .is_empty()
    );
    // A DNS query is a call off this machine when its resolver is (a static musl or Go
    // CLI's own resolver); to a loopback stub resolver it is not.
    let names = ["api.example.com".to_owned()];
    let off = dest("198.51.100.53", 53);
    let query = NetCall {
        kind: NetworkEvent::DnsQuery,
        tree: 2,
        ..call(&off, 0, &names)
    };
    let m = e.evaluate(&query, &Rows::new(&p, &cats), &cats);
    assert_eq!(m.len(), 1, "{m:?}");
    let stub = dest("127.0.0.53", 53);
    let query = NetCall {
        kind: NetworkEvent::DnsQuery,
        tree: 3,
        ..call(&stub, 0, &names)
    };
    assert!(e.evaluate(&query, &Rows::new(&p, &cats), &cats).is_empty());
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
        let inside = e.evaluate(&call(&d, 0, &[]), &Rows::new(&[probe("timezone", "TZ", at, 5)], &names()), &names());
        proptest::prop_assert_eq!(inside.len(), 1);
        let outside =
            e.evaluate(&call(&d, 0, &[]), &Rows::new(&[probe("timezone", "TZ", at + 0.001, 5)], &names()), &names());
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
            all.evaluate(&call(&d, 0, &[]), &Rows::new(&prior, &names()), &names()).len(),
            usize::from(has(0) && has(1))
        );
        proptest::prop_assert_eq!(
            any.evaluate(&call(&d, 0, &[]), &Rows::new(&prior, &names()), &names()).len(),
            usize::from(has(0) || has(1))
        );
    }
}
