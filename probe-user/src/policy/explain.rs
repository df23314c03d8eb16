//! `probectl policy explain`: what a policy makes probectl trace, and why, in words.

use std::fmt::Write as _;

use super::rules::{Action, CompiledDestination, CompiledRule, DnsPending, NetworkEvent};
use super::{CompiledPolicy, FileIndex};

/// Operations that count for each kind of target (what the sensors report).
const ENV_OPS: &str = "getenv, secure_getenv, present in the environment at exec";
const FILE_OPS: &str =
    "open, openat, openat2, creat, readlink(at), stat, lstat, fstatat, statx, access, faccessat(2)";

pub fn explain(policy: &CompiledPolicy, source: &str, index: &FileIndex, homes: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Policy {:?} ({source})\n", policy.name);
    let _ = writeln!(
        s,
        "Watched: the command `probectl run` starts, and every process it forks."
    );
    if !policy.kernel.select_comms.is_empty() {
        let comms: Vec<String> = policy
            .kernel
            .select_comms
            .iter()
            .map(|k| {
                let len = k.iter().position(|&b| b == 0).unwrap_or(k.len());
                String::from_utf8_lossy(&k[..len]).into_owned()
            })
            .collect();
        let _ = writeln!(
            s,
            "Also watched, wherever they start: programs named {} (selected in the kernel at their exec; ones already running are found in /proc at start), with their descendants.",
            comms.join(", ")
        );
    }
    let _ = writeln!(s, "\nCategories (what counts as a probe):");
    for cat in &policy.categories {
        let _ = writeln!(
            s,
            "  {}{}",
            cat.name,
            cat.description
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
        if !cat.env.is_empty() {
            let mut how = vec![if cat.env_case_insensitive {
                "any letter case"
            } else {
                "exact case"
            }];
            if cat.capture_value_prefix {
                how.push("the first 64 bytes of the value reported when present at exec, credentials redacted");
            }
            let _ = writeln!(s, "    env ({}): {}", how.join("; "), cat.env.join(", "));
            let _ = writeln!(s, "      seen as: {ENV_OPS}");
        }
        if !cat.paths.is_empty() {
            let _ = writeln!(s, "    files: {}", cat.paths.join(", "));
        }
        if !cat.path_prefixes.is_empty() {
            let _ = writeln!(s, "    everything under: {}", cat.path_prefixes.join(", "));
        }
        if cat
            .paths
            .iter()
            .chain(&cat.path_prefixes)
            .any(|p| p.starts_with("~/"))
        {
            let _ = writeln!(
                s,
                "      `~/` is each of {homes} home directories on this host (root and regular users)"
            );
        }
        if !cat.paths.is_empty() || !cat.path_prefixes.is_empty() {
            let _ = writeln!(
                s,
                "      seen as: {FILE_OPS}; by any path that reaches the file (relative, `..`, symlinks)"
            );
        }
        if !cat.host_calls.is_empty() {
            let names: Vec<&str> = cat.host_calls.iter().map(|c| c.how().name()).collect();
            let _ = writeln!(
                s,
                "    host-identity requests without a file: {}",
                names.join(", ")
            );
        }
        if cat.proc_environ {
            let _ = writeln!(
                s,
                "    whole-environment reads: /proc/<pid>/environ of any process, and enumerations (Node's Object.keys(process.env))"
            );
        }
    }
    let _ = writeln!(s, "\nRules:");
    if policy.rules.is_empty() {
        let _ = writeln!(
            s,
            "  (none: probes and connections are reported, nothing is flagged)"
        );
    }
    for rule in &policy.rules {
        let _ = writeln!(s, "  {}", rule_sentence(rule, policy));
    }
    let k = &policy.kernel;
    let exact = k
        .paths
        .iter()
        .filter(|p| p.2.match_kind == probe_common::PATH_MATCH_EXACT)
        .count();
    let _ = writeln!(
        s,
        "\nIn the kernel: {} env names, {} exact paths and {} prefixes, {} program names; {} files indexed by inode on this host{}.",
        k.env_names.len(),
        exact,
        k.paths.len() - exact,
        k.select_comms.len(),
        index.files.len(),
        if index.not_indexed > 0 {
            format!(
                " (at least {} more under prefixes not indexed: map full or walk bound reached)",
                index.not_indexed
            )
        } else {
            String::new()
        }
    );
    s
}

fn rule_sentence(rule: &CompiledRule, policy: &CompiledPolicy) -> String {
    let name = |i: &usize| policy.categories[*i].name.as_str();
    let mut conditions = Vec::new();
    if !rule.all_of.is_empty() {
        conditions.push(format!(
            "all of {}",
            rule.all_of.iter().map(name).collect::<Vec<_>>().join(", ")
        ));
    }
    if !rule.any_of.is_empty() {
        conditions.push(format!(
            "any of {}",
            rule.any_of.iter().map(name).collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(n) = rule.min_count {
        conditions.push(format!("at least {n} distinct targets"));
    }
    let events: Vec<&str> = rule.then.iter().map(|e| NetworkEvent::as_str(*e)).collect();
    let mut line = format!(
        "{} [{}, {}]{}: a process tree probes {}, then makes a {}{} within {:?}",
        rule.name,
        rule.severity.as_str(),
        match rule.action {
            Action::Alert => "alert",
            Action::Log => "log",
            Action::Block => "block",
        },
        rule.id
            .as_deref()
            .map(|id| format!(" (id {id})"))
            .unwrap_or_default(),
        conditions.join(" and "),
        events.join(" or "),
        rule.destination
            .as_ref()
            .map(|d| format!(" to {}", destination_words(d)))
            .unwrap_or_default(),
        rule.within
    );
    if rule.action == Action::Block {
        line.push_str(
            "; BLOCKS in the kernel: when enforcing (`run --enforce`, the daemon's `enforce: true`) the call is refused with EPERM, otherwise a would_block record is written; only reads the kernel matched itself (env names, path strings) count",
        );
        if rule
            .destination
            .as_ref()
            .is_some_and(|d| d.dns_pending == DnsPending::Block)
        {
            line.push_str(&format!(
                "; dns_pending: block: while a DNS answer of the tree is not yet handled by probectl (at most {} s), an address not learned yet counts as a named host, so the connect that follows a fresh answer is refused too (a call to port 53 excepted)",
                probe_common::BLOCK_DNS_PENDING_NS / 1_000_000_000
            ));
        }
    }
    if rule.bypassed_proxy {
        line.push_str(
            "; only a connection that goes around a proxy or relay setting the process read",
        );
    }
    let counted: Vec<&str> = rule.evidence.kinds().map(|k| k.name()).collect();
    line.push_str(&format!("; probes count when {}", counted.join(" or ")));
    if let Some(window) = rule.suppress {
        line.push_str(&format!(
            "; repeats for the same tree and destination within {window:?} are counted, not reported again"
        ));
    }
    line
}

fn destination_words(d: &CompiledDestination) -> String {
    let mut parts = Vec::new();
    if !d.cidrs.is_empty() {
        let nets: Vec<String> = d.cidrs.iter().map(|(a, l)| format!("{a}/{l}")).collect();
        parts.push(format!("an address in {}", nets.join(", ")));
    }
    if !d.ports.is_empty() {
        let ports: Vec<String> = d.ports.iter().map(u16::to_string).collect();
        parts.push(format!("port {}", ports.join(", ")));
    }
    if !d.hosts.is_empty() {
        parts.push(format!("a host named {}", d.hosts.join(", ")));
    }
    let mut words = if parts.is_empty() {
        "anywhere".to_owned()
    } else {
        parts.join(", ")
    };
    if let Some(except) = &d.except {
        words.push_str(&format!(" except {}", destination_words(except)));
    }
    words
}

/// The block rules of `policy`, for `policy check`: `None` without any.
pub fn block_summary(policy: &CompiledPolicy) -> Option<String> {
    let names: Vec<String> = policy
        .rules
        .iter()
        .filter(|r| r.action == Action::Block)
        .map(|r| match &r.id {
            Some(id) => format!("{} ({id})", r.name),
            None => r.name.clone(),
        })
        .collect();
    let pending: Vec<&str> = policy
        .rules
        .iter()
        .filter(|r| {
            r.action == Action::Block
                && r.destination
                    .as_ref()
                    .is_some_and(|d| d.dns_pending == DnsPending::Block)
        })
        .map(|r| r.name.as_str())
        .collect();
    (!names.is_empty()).then(|| {
        let mut line = format!(
            "block rules: {}: the kernel refuses matching calls when enforcing (`run --enforce`, the daemon's `enforce: true`); otherwise they only write would_block records",
            names.join(", ")
        );
        if !pending.is_empty() {
            line.push_str(&format!(
                "; with `dns_pending: block`, {} also refuse an address not learned yet while a DNS answer of the tree is pending (at most 2 s)",
                pending.join(", ")
            ));
        }
        line
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_categories_rules_and_kernel_entries() {
        let yaml = format!(
            "{}\n  - name: r\n    id: X-1\n    probed: {{all_of: [timezone], any_of: [proxy]}}\n    then: [connect]\n    destination: {{cidr: [10.0.0.0/8], except: {{port: [22]}}}}\n    within: 30s\n    action: alert\n    suppress: 5m\n",
            crate::policy::DEFAULT_POLICY_YAML
        );
        let p = crate::policy::parse(&yaml, "t.yaml").unwrap();
        let text = explain(&p, "t.yaml", &FileIndex::default(), 2);
        for needle in [
            "Policy \"default\" (t.yaml)",
            "  timezone: ",
            "env (exact case; the first 64 bytes of the value reported when present at exec, credentials redacted): TZ",
            "env (any letter case; the first 64 bytes",
            "everything under: /usr/share/zoneinfo/",
            "`~/` is each of 2 home directories",
            "whole-environment reads",
            "fingerprint-then-network [medium, log] (id PCTL-0001): a process tree probes all of timezone and any of api-relay, proxy, proxy-config, host-identity, then makes a connect or udp_send or dns_query to anywhere except an address in 127.0.0.0/8, ::1/128 within 60s; probes count when read or enumerated",
            "proxy-bypass [medium, log] (id PCTL-0002): a process tree probes any of proxy, api-relay, then makes a connect or udp_send within 600s; only a connection that goes around a proxy or relay setting the process read",
            "r [medium, alert] (id X-1): a process tree probes all of timezone and any of proxy, then makes a connect to an address in 10.0.0.0/8 except port 22 within 30s; probes count when read or enumerated; repeats",
            "In the kernel: ",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
