use super::*;

fn policy(rules: &str) -> Result<crate::policy::CompiledPolicy, PolicyError> {
    let yaml = format!(
        "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {{name: t}}\ncategories:\n  - name: timezone\n    env: [TZ]\n    paths: [/etc/localtime]\n  - name: relay\n    env: [ANTHROPIC_BASE_URL]\n  - name: proxy\n    env: [https_proxy]\n    env_case_insensitive: true\n  - name: stat-only\n    path_prefixes: [/etc/]\n    operations: [stat]\nrules:\n{rules}"
    );
    crate::policy::parse(&yaml, "t.yaml")
}

fn block_rule(name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    probed: {{all_of: [timezone, relay]}}\n    within: 30s\n    action: block\n{extra}"
    )
}

fn v4(addr: &str) -> u32 {
    u32::from(addr.parse::<std::net::Ipv4Addr>().unwrap())
}

/// The longest stored prefix containing `addr`, as the kernel's trie answers.
fn lookup4(t: &BlockTables, addr: &str) -> BlockNet {
    let a = v4(addr);
    t.net4
        .iter()
        .filter(|((len, key), _)| {
            let host = 32 - *len;
            host >= 32 || (a >> host) == (u32::from_be_bytes(*key) >> host)
        })
        .max_by_key(|((len, _), _)| *len)
        .map(|(_, v)| *v)
        .unwrap_or_default()
}

#[test]
fn overlapping_networks_of_several_rules_give_every_rule_that_holds_the_address() {
    let rules = [
        block_rule(
            "wide",
            "    destination: {cidr: [10.0.0.0/8], except: {cidr: [10.1.2.0/24]}}\n",
        ),
        block_rule("narrow", "    destination: {cidr: [10.1.0.0/16]}\n"),
        block_rule("host", "    destination: {cidr: [10.1.2.3]}\n"),
    ]
    .concat();
    let t = policy(&rules).expect("valid").block;
    assert_eq!(t.rules.len(), 3);
    let at = |a| lookup4(&t, a);
    assert_eq!(
        at("10.9.9.9"),
        BlockNet {
            rules: 0b001,
            except: 0
        }
    );
    assert_eq!(
        at("10.1.9.9"),
        BlockNet {
            rules: 0b011,
            except: 0
        }
    );
    // In all three rules' networks, and in the first one's allowlist.
    assert_eq!(
        at("10.1.2.3"),
        BlockNet {
            rules: 0b111,
            except: 0b001
        }
    );
    assert_eq!(
        at("10.1.2.4"),
        BlockNet {
            rules: 0b011,
            except: 0b001
        }
    );
    assert_eq!(at("11.0.0.1"), BlockNet::default());
}

#[test]
fn slots_are_shared_and_entries_feed_them_per_operation_and_evidence() {
    let rules = [
        block_rule("a", "    destination: {except: {cidr: [127.0.0.1/32]}}\n"),
        block_rule("b", "    then: [udp_send]\n"),
    ]
    .concat();
    let p = policy(&rules).expect("valid");
    let t = &p.block;
    // Same categories, evidence and window: two slots for both rules.
    assert_eq!(t.slots.len(), 2);
    assert_eq!(t.rules[0].all_of, 0b11);
    assert_eq!(t.rules[1].then, BLOCK_THEN_UDP);
    let id_of = |name: &str| {
        p.kernel
            .env_names
            .iter()
            .find(|(k, _)| k.starts_with(name.as_bytes()) && k[name.len()] == 0)
            .unwrap()
            .1
            .entry_id
    };
    let tz = &t.entries[&id_of("TZ")];
    assert_eq!(tz.slots[BLOCK_OP_GETENV], 0b01);
    // Present at exec is `exposed`: not counted unless the rule names it.
    assert_eq!(tz.slots[BLOCK_OP_PRESENT_AT_EXEC], 0);
    // TZ is case-sensitive: only an upper-case TZ counts in the kernel.
    assert_eq!(tz.exact_case, 0b01);
    // An env entry is only ever reported by the env programs.
    assert_eq!(tz.slots[probe_common::FILE_OP_OPENAT as usize], 0);
    assert_eq!(
        t.entries[&id_of("ANTHROPIC_BASE_URL")].slots[BLOCK_OP_GETENV],
        0b10
    );
    // The proxy category is in no block rule.
    assert!(!t.entries.contains_key(&id_of("HTTPS_PROXY")));
    let localtime = p
        .kernel
        .paths
        .iter()
        .find(|(_, k, _)| k.starts_with(b"/etc/localtime\0"))
        .unwrap()
        .2
        .entry_id;
    let e = &t.entries[&localtime];
    assert_eq!(e.slots[probe_common::FILE_OP_OPENAT as usize], 0b01);
    assert_eq!(e.slots[probe_common::FILE_OP_READLINK as usize], 0b01);
    // A stat only checks: not `read`.
    assert_eq!(e.slots[probe_common::FILE_OP_STAT as usize], 0);
    assert_eq!(e.slots[BLOCK_OP_GETENV], 0);
}

#[test]
fn exposed_counts_only_when_the_rule_names_it() {
    let p = policy(
        &block_rule(
            "a",
            "    probed: {all_of: [timezone], evidence: [read, exposed]}\n",
        )
        .replace("    probed: {all_of: [timezone, relay]}\n", ""),
    )
    .expect("valid");
    let tz = p
        .kernel
        .env_names
        .iter()
        .find(|(k, _)| k.starts_with(b"TZ\0"))
        .unwrap()
        .1
        .entry_id;
    assert_eq!(p.block.entries[&tz].slots[BLOCK_OP_PRESENT_AT_EXEC], 0b1);
}

#[test]
fn conditions_the_kernel_cannot_judge_are_refused_naming_the_rule() {
    for (extra, why) in [
        ("    bypassed_proxy: true\n", "bypassed_proxy"),
        ("    then: [unix_connect]\n", "unix_connect"),
    ] {
        let err = policy(&block_rule("nope", extra))
            .expect_err(extra)
            .to_string();
        assert!(err.contains("\"nope\"") && err.contains(why), "{err}");
    }
    let min = block_rule("nope", "").replace(
        "all_of: [timezone, relay]",
        "any_of: [timezone], min_count: 2",
    );
    let err = policy(&min).expect_err("min_count").to_string();
    assert!(err.contains("min_count"), "{err}");
}

#[test]
fn host_globs_compile_into_the_rules_bits() {
    let p = policy(&format!(
        "{}{}",
        block_rule(
            "a",
            "    destination: {host: ['*.example.com'], except: {host: [ok.example.com]}}\n"
        ),
        block_rule(
            "b",
            "    destination: {except: {host: [allowed.test], cidr: [127.0.0.1/32]}}\n"
        ),
    ))
    .expect("host names are judged in the kernel");
    let (a, b) = (p.block.rules[0], p.block.rules[1]);
    assert_eq!(a.flags, BLOCK_RULE_HAS_HOST);
    // An `except` names no destination: rule b holds anywhere else.
    assert_eq!(b.flags, 0);
    let globs: Vec<(&str, u32, bool)> = p
        .block
        .hosts
        .iter()
        .map(|g| (g.pattern.as_str(), g.bit, g.except))
        .collect();
    assert_eq!(
        globs,
        [
            ("*.example.com", 0b01, false),
            ("ok.example.com", 0b01, true),
            ("allowed.test", 0b10, true),
        ]
    );
}

#[test]
fn too_many_block_rules_or_slots_are_refused() {
    let many: String = (0..17).map(|i| block_rule(&format!("r{i}"), "")).collect();
    let err = policy(&many).expect_err("17 rules").to_string();
    assert!(err.contains("at most 16"), "{err}");
    // Three categories per rule, each rule with its own window: 3 slots a rule.
    let rule = |i: usize| {
        block_rule(&format!("r{i}"), "")
            .replace(
                "all_of: [timezone, relay]",
                "all_of: [timezone, relay, proxy]",
            )
            .replace("within: 30s", &format!("within: {}s", i + 1))
    };
    let ten: String = (0..10).map(rule).collect();
    policy(&ten).expect("30 slots fit");
    let eleven = format!("{ten}{}", rule(10).replace("name: r10", "name: extra"));
    let err = policy(&eleven).expect_err("33 slots").to_string();
    assert!(
        err.contains("\"extra\"") && err.contains("more than 32"),
        "{err}"
    );
}

#[test]
fn a_policy_without_block_rules_has_empty_tables() {
    let p = policy(&block_rule("a", "").replace("action: block", "action: alert")).expect("valid");
    assert!(p.block.is_empty());
    assert!(p.block.entries.is_empty());
}

#[test]
fn check_and_explain_say_which_rules_block() {
    let p = policy(&format!(
        "{}  - name: just-log\n    probed: {{any_of: [timezone]}}\n    within: 30s\n",
        block_rule("phone-home", "    id: B-1\n")
    ))
    .unwrap();
    let summary = crate::policy::block_summary(&p).expect("a block rule");
    assert!(summary.contains("phone-home (B-1)"), "{summary}");
    assert!(!summary.contains("just-log"), "{summary}");
    let index = crate::policy::FileIndex::default();
    let text = crate::policy::explain(&p, "t.yaml", &index, 1);
    let line = text
        .lines()
        .find(|l| l.contains("phone-home [medium, block]"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("BLOCKS in the kernel"), "{line}");
    assert!(
        !text
            .lines()
            .any(|l| l.contains("just-log") && l.contains("BLOCKS")),
        "{text}"
    );
    let without =
        policy("  - name: just-log\n    probed: {any_of: [timezone]}\n    within: 30s\n").unwrap();
    assert!(crate::policy::block_summary(&without).is_none());
}

#[test]
fn dns_pending_is_a_flag_of_host_named_block_rules_only() {
    let p = policy(&block_rule(
        "pending",
        "    destination: {host: ['*.evil.example'], dns_pending: block}\n",
    ))
    .expect("dns_pending with host compiles");
    assert_eq!(
        p.block.rules[0].flags,
        BLOCK_RULE_HAS_HOST | BLOCK_RULE_DNS_PENDING
    );
    // The default is `allow`: no flag.
    let p = policy(&block_rule(
        "plain",
        "    destination: {host: ['*.evil.example'], dns_pending: allow}\n",
    ))
    .unwrap();
    assert_eq!(p.block.rules[0].flags, BLOCK_RULE_HAS_HOST);
    let refused = [
        // Nothing to resolve: no host in the destination.
        (
            block_rule("nohost", "    destination: {cidr: [10.0.0.0/8], dns_pending: block}\n"),
            "needs `host`",
        ),
        (
            block_rule(
                "inexcept",
                "    destination: {host: [a.test], except: {host: [b.test], dns_pending: block}}\n",
            ),
            "not in `except`",
        ),
        (
            "  - name: alert\n    probed: {all_of: [timezone]}\n    within: 30s\n    action: alert\n    destination: {host: [a.test], dns_pending: block}\n".to_owned(),
            "only a block rule",
        ),
        (
            block_rule("typo", "    destination: {host: [a.test], dns_pending: yes}\n"),
            "expected one of allow, block",
        ),
    ];
    for (rule, why) in refused {
        let err = policy(&rule).expect_err(&rule).to_string();
        assert!(err.contains(why), "{rule}: {err}");
    }
}
