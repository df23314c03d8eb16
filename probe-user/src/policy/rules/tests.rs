use super::*;

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    for bad in ["", "30", "s", "3x", "-1s", "1.5s", "30 s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn cidrs_at_their_edges() {
    let net = parse_cidr("10.1.0.0/16").unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(cidr_contains(&net, &ip("10.1.0.0")));
    assert!(cidr_contains(&net, &ip("10.1.255.255")));
    assert!(!cidr_contains(&net, &ip("10.2.0.0")));
    assert!(!cidr_contains(&net, &ip("10.0.255.255")));
    // v4-mapped IPv6 counts as IPv4; IPv6 never matches a v4 network otherwise.
    assert!(cidr_contains(&net, &ip("::ffff:10.1.2.3")));
    assert!(!cidr_contains(&net, &ip("::1")));
    let all = parse_cidr("0.0.0.0/0").unwrap();
    assert!(cidr_contains(&all, &ip("255.255.255.255")));
    let all6 = parse_cidr("::/0").unwrap();
    assert!(cidr_contains(&all6, &ip("2001:db8::1")));
    let one = parse_cidr("::1").unwrap();
    assert_eq!(one.1, 128);
    assert!(cidr_contains(&one, &ip("::1")));
    assert!(!cidr_contains(&one, &ip("::2")));
    let host = parse_cidr("192.0.2.7/32").unwrap();
    assert!(cidr_contains(&host, &ip("192.0.2.7")));
    assert!(!cidr_contains(&host, &ip("192.0.2.6")));
    for bad in [
        "10.0.0.0/33",
        "::/129",
        "example.com/8",
        "10.0.0.0/x",
        "10.0.0/8",
    ] {
        assert!(parse_cidr(bad).is_err(), "{bad}");
    }
}

#[test]
fn host_globs() {
    assert!(glob_matches("*.anthropic.com", "api.anthropic.com"));
    assert!(glob_matches("*.anthropic.com", "a.b.anthropic.com"));
    assert!(!glob_matches("*.anthropic.com", "anthropic.com"));
    assert!(glob_matches("API.*.com", "api.example.com"));
    assert!(glob_matches("*", ""));
    assert!(glob_matches("exact.host", "EXACT.host"));
    assert!(!glob_matches("exact.host", "exact.host.evil"));
    assert!(glob_matches("a*b*c", "aXXbYYc"));
    assert!(!glob_matches("a*b*c", "aXXbYY"));
}

fn rule_yaml(body: &str) -> String {
    format!(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {{name: t}}\ncategories:\n  - name: timezone\n    env: [TZ]\n  - name: proxy\n    env: [HTTPS_PROXY]\nrules:\n{body}"
    )
}

#[test]
fn a_valid_rule_compiles() {
    let yaml = rule_yaml(
        "  - name: r\n    probed: {all_of: [timezone], any_of: [proxy, timezone], min_count: 2}\n    then: [connect]\n    destination: {cidr: [10.0.0.0/8], port: [443], host: ['*.x.com'], except: {cidr: [10.9.0.0/16]}}\n    within: 30s\n    severity: high\n    action: alert\n    suppress: 5m\n",
    );
    let p = crate::policy::parse(&yaml, "t.yaml").expect("valid");
    let r = &p.rules[0];
    assert_eq!(r.all_of, [0]);
    assert_eq!(r.any_of, [1, 0]);
    assert_eq!(r.min_count, Some(2));
    assert_eq!(r.within, Duration::from_secs(30));
    assert_eq!(r.suppress, Some(Duration::from_secs(300)));
    assert_eq!(r.severity, Severity::High);
    assert_eq!(r.action, Action::Alert);
    let d = r.destination.as_ref().unwrap();
    assert_eq!(d.except.as_ref().unwrap().cidrs.len(), 1);
}

#[test]
fn bad_rules_are_rejected_with_hints() {
    let cases = [
        (
            "  - name: r\n    probed: {all_of: [timezon]}\n    within: 1s\n",
            "not defined",
            "did you mean `timezone`?",
        ),
        (
            "  - name: r\n    probed: {}\n    within: 1s\n",
            "no condition",
            "all_of",
        ),
        (
            "  - name: r\n    probed: {any_of: [proxy]}\n    within: 30\n",
            "within",
            "durations",
        ),
        (
            "  - name: r\n    probed: {any_of: [proxy]}\n    within: 1s\n    destination: {cidr: [10.0.0.0/40]}\n",
            "prefix length",
            "cidr",
        ),
        (
            "  - name: r\n    probed: {any_of: [proxy]}\n    within: 1s\n  - name: r\n    probed: {any_of: [proxy]}\n    within: 1s\n",
            "defined twice",
            "unique",
        ),
    ];
    for (body, message, hint) in cases {
        let err = crate::policy::parse(&rule_yaml(body), "t.yaml")
            .expect_err(body)
            .to_string();
        assert!(
            err.contains(message) && err.contains(hint),
            "{body}\n=> {err}"
        );
        assert!(err.starts_with("t.yaml"), "{err}");
    }
    // Misspelt fields are caught by the parser, with a position and a hint.
    let err = crate::policy::parse(
        &rule_yaml("  - name: r\n    probed: {any_of: [proxy]}\n    witin: 1s\n"),
        "t.yaml",
    )
    .expect_err("typo")
    .to_string();
    assert!(err.contains("did you mean `within`?"), "{err}");
    let err = crate::policy::parse(
        &rule_yaml(
            "  - name: r\n    probed: {any_of: [proxy]}\n    within: 1s\n    severity: urgent\n",
        ),
        "t.yaml",
    )
    .expect_err("bad severity")
    .to_string();
    assert!(err.contains("urgent"), "{err}");
}
