//! `action: block` rules compiled into the kernel's block maps (`probe_common::block`).
//!
//! A *slot* is one (category, evidence kinds, window) triple used by some block rule.
//! Each policy entry the kernel matches (an env name, an env glob, a path, a prefix,
//! the whole environment, a host call) gets, per operation, the slots a probe of it
//! feeds: the categories that name the entry, whose `operations:` count that
//! operation, in slots whose evidence kinds contain the operation's evidence
//! (`ops::How::evidence`, the one mapping userspace uses too).

use std::collections::HashMap;
use std::net::IpAddr;

use probe_common::{
    BLOCK_ENTRY_ENUMERATE, BLOCK_ENTRY_HOST_CALLS, BLOCK_OP_ENUMERATE, BLOCK_OP_GETENV,
    BLOCK_OP_HOST_CALL, BLOCK_OP_PRESENT_AT_EXEC, BLOCK_OP_SECURE_GETENV, BLOCK_OPS, BLOCK_PORTS,
    BLOCK_RULE_DNS_PENDING, BLOCK_RULE_HAS_CIDR, BLOCK_RULE_HAS_HOST, BLOCK_SLOTS,
    BLOCK_THEN_CONNECT, BLOCK_THEN_DNS, BLOCK_THEN_UDP, BlockEntry, BlockNet, BlockRule,
    ENTRY_PROC_ENVIRON, MAX_BLOCK_CIDRS, MAX_BLOCK_RULES, PATH_MATCH_EXACT,
};

use super::PolicyError;
use super::block_hosts::HostGlob;
use super::compile::{Classifier, KernelEntries};
use super::rules::{Action, CompiledDestination, CompiledRule, DnsPending, NetworkEvent};
use super::schema::Category;
use crate::ops::{EvidenceSet, HostCall, How};

/// Policy entries `BLOCK_ENTRIES` holds (the rest of the map is the files', see
/// `block_files`).
pub const MAX_BLOCK_POLICY_ENTRIES: usize =
    (probe_common::MAX_BLOCK_ENTRIES - probe_common::MAX_BLOCK_FILE_ENTRIES) as usize;

/// One slot: a category counted with these evidence kinds within this window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub category: usize,
    pub evidence: EvidenceSet,
    pub within_ns: u64,
}

/// What the kernel's block maps hold for a policy (empty: no block rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTables {
    /// Per kernel rule index: the rule's index in `CompiledPolicy::rules`.
    pub rule_of: Vec<usize>,
    pub rules: Vec<BlockRule>,
    pub slots: Vec<Slot>,
    pub entries: HashMap<u32, BlockEntry>,
    /// LPM keys (prefix length, address bytes) and values.
    pub net4: HashMap<(u32, [u8; 4]), BlockNet>,
    pub net6: HashMap<(u32, [u8; 16]), BlockNet>,
    /// The rules' host globs (`destination.host`, `except.host`), matched against the
    /// names userspace learns addresses under (`block_hosts`).
    pub hosts: Vec<HostGlob>,
}

impl BlockTables {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The `How` of a `BLOCK_OP_*` index (file ops are their `FILE_OP_*` number).
pub fn how_of_op(op: usize) -> Option<How> {
    match op {
        BLOCK_OP_GETENV => Some(How::Getenv),
        BLOCK_OP_SECURE_GETENV => Some(How::SecureGetenv),
        BLOCK_OP_ENUMERATE => Some(How::Enumerated),
        BLOCK_OP_PRESENT_AT_EXEC => Some(How::PresentAtExec),
        op if (BLOCK_OP_HOST_CALL..BLOCK_OPS).contains(&op) => {
            HostCall::of_kernel((op - BLOCK_OP_HOST_CALL) as u32).map(HostCall::how)
        }
        op => How::of_file_op(op as u32),
    }
}

fn error(rule: &str, message: String, hint: &str, source_name: &str) -> PolicyError {
    PolicyError::Invalid {
        source_name: source_name.to_owned(),
        at: None,
        message: format!("rule {rule:?}: {message}"),
        hint: hint.to_owned(),
        needle: super::Needle::in_rules(rule, false),
    }
}

/// Compiles the block rules of `rules` (those with `action: block`).
pub(super) fn compile(
    rules: &[CompiledRule],
    categories: &[Category],
    kernel: &KernelEntries,
    classifier: &Classifier,
    source_name: &str,
) -> Result<BlockTables, PolicyError> {
    let mut t = BlockTables::default();
    let mut cidrs: Vec<((IpAddr, u8), u32, bool)> = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if rule.action != Action::Block {
            continue;
        }
        let k = t.rules.len();
        if k >= MAX_BLOCK_RULES as usize {
            return Err(error(
                &rule.name,
                format!(
                    "is block rule number {}: at most {MAX_BLOCK_RULES} rules may block",
                    k + 1
                ),
                "merge block rules, or make some `action: alert`",
                source_name,
            ));
        }
        let within_ns = u64::try_from(rule.within.as_nanos()).unwrap_or(u64::MAX);
        let mut slot = |category: usize| -> Result<u32, PolicyError> {
            let s = Slot {
                category,
                evidence: rule.evidence,
                within_ns,
            };
            let i = match t.slots.iter().position(|x| *x == s) {
                Some(i) => i,
                None => {
                    if t.slots.len() >= BLOCK_SLOTS {
                        return Err(error(
                            &rule.name,
                            format!(
                                "needs more than {BLOCK_SLOTS} (category, evidence, window) combinations over all block rules"
                            ),
                            "give block rules the same `within` and `evidence`, or fewer categories",
                            source_name,
                        ));
                    }
                    t.slots.push(s);
                    t.slots.len() - 1
                }
            };
            Ok(1 << i)
        };
        let mut kr = BlockRule::default();
        for &c in &rule.all_of {
            kr.all_of |= slot(c)?;
        }
        for &c in &rule.any_of {
            kr.any_of |= slot(c)?;
        }
        for then in &rule.then {
            kr.then |= match then {
                NetworkEvent::Connect => BLOCK_THEN_CONNECT,
                NetworkEvent::UdpSend => BLOCK_THEN_UDP,
                NetworkEvent::DnsQuery => BLOCK_THEN_DNS,
                // Refused when the rule was validated.
                NetworkEvent::UnixConnect => 0,
            };
        }
        let none = CompiledDestination::default();
        let dest = rule.destination.as_ref().unwrap_or(&none);
        let except = dest.except.as_deref().unwrap_or(&none);
        let ports = |list: &[u16], what: &str| -> Result<([u16; BLOCK_PORTS], u32), PolicyError> {
            if list.len() > BLOCK_PORTS {
                return Err(error(
                    &rule.name,
                    format!(
                        "lists {} {what}: a block rule lists at most {BLOCK_PORTS}",
                        list.len()
                    ),
                    "split the rule",
                    source_name,
                ));
            }
            let mut out = [0u16; BLOCK_PORTS];
            out[..list.len()].copy_from_slice(list);
            Ok((out, list.len() as u32))
        };
        (kr.ports, kr.ports_len) = ports(&dest.ports, "destination ports")?;
        (kr.except_ports, kr.except_ports_len) = ports(&except.ports, "except ports")?;
        if !dest.cidrs.is_empty() {
            kr.flags |= BLOCK_RULE_HAS_CIDR;
        }
        if !dest.hosts.is_empty() {
            kr.flags |= BLOCK_RULE_HAS_HOST;
            if dest.dns_pending == DnsPending::Block {
                kr.flags |= BLOCK_RULE_DNS_PENDING;
            }
        }
        let bit = 1u32 << k;
        for (list, except) in [(&dest.hosts, false), (&except.hosts, true)] {
            t.hosts.extend(list.iter().map(|pattern| HostGlob {
                pattern: pattern.clone(),
                bit,
                except,
            }));
        }
        cidrs.extend(dest.cidrs.iter().map(|c| (*c, bit, false)));
        cidrs.extend(except.cidrs.iter().map(|c| (*c, bit, true)));
        t.rules.push(kr);
        t.rule_of.push(index);
    }
    if t.rules.is_empty() {
        return Ok(t);
    }
    (t.net4, t.net6) = nets(&cidrs);
    for (n, family) in [(t.net4.len(), "IPv4"), (t.net6.len(), "IPv6")] {
        if n > MAX_BLOCK_CIDRS as usize {
            return Err(error(
                &rules[t.rule_of[0]].name,
                format!("block rules list {n} {family} networks; at most {MAX_BLOCK_CIDRS}"),
                "use wider networks",
                source_name,
            ));
        }
    }
    t.entries = entries(&t.slots, categories, kernel, classifier);
    if t.entries.len() > MAX_BLOCK_POLICY_ENTRIES {
        return Err(error(
            &rules[t.rule_of[0]].name,
            format!(
                "block rules count {} policy entries; at most {MAX_BLOCK_POLICY_ENTRIES}",
                t.entries.len()
            ),
            "block on fewer or smaller categories",
            source_name,
        ));
    }
    Ok(t)
}

/// The LPM tables: each stored prefix carries the bits of every listed network that
/// contains it, so the longest match gives every rule whose network holds the
/// address (any other listed network that holds it is shorter, so contains the
/// longest match).
#[expect(clippy::type_complexity, reason = "the two tries' key types")]
fn nets(
    cidrs: &[((IpAddr, u8), u32, bool)],
) -> (
    HashMap<(u32, [u8; 4]), BlockNet>,
    HashMap<(u32, [u8; 16]), BlockNet>,
) {
    // Everything as 128-bit numbers; IPv4 (and IPv4-mapped IPv6) networks apart.
    let norm = |(addr, len): (IpAddr, u8)| -> (bool, u128, u8) {
        match addr.to_canonical() {
            IpAddr::V4(a) => {
                let len = if addr.is_ipv6() {
                    len.saturating_sub(96)
                } else {
                    len
                };
                (true, u128::from(u32::from(a)), len.min(32))
            }
            IpAddr::V6(a) => (false, u128::from(a), len),
        }
    };
    let masked = |v4: bool, a: u128, len: u8| -> u128 {
        let host_bits = if v4 { 32 } else { 128 } - u32::from(len);
        if host_bits >= 128 {
            0
        } else {
            (a >> host_bits) << host_bits
        }
    };
    let list: Vec<(bool, u128, u8, u32, bool)> = cidrs
        .iter()
        .map(|(c, bit, except)| {
            let (v4, a, len) = norm(*c);
            (v4, masked(v4, a, len), len, *bit, *except)
        })
        .collect();
    let contains = |outer: &(bool, u128, u8, u32, bool), inner: &(bool, u128, u8, u32, bool)| {
        outer.0 == inner.0 && outer.2 <= inner.2 && masked(outer.0, inner.1, outer.2) == outer.1
    };
    let mut v4 = HashMap::new();
    let mut v6 = HashMap::new();
    for p in &list {
        let mut value = BlockNet::default();
        for q in list.iter().filter(|q| contains(q, p)) {
            if q.4 {
                value.except |= q.3;
            } else {
                value.rules |= q.3;
            }
        }
        if p.0 {
            v4.insert((u32::from(p.2), (p.1 as u32).to_be_bytes()), value);
        } else {
            v6.insert((u32::from(p.2), p.1.to_be_bytes()), value);
        }
    }
    (v4, v6)
}

/// Categories (with whether the kernel must see the name written in upper case)
/// for each kernel entry.
fn entries(
    slots: &[Slot],
    categories: &[Category],
    kernel: &KernelEntries,
    classifier: &Classifier,
) -> HashMap<u32, BlockEntry> {
    let used: Vec<usize> = slots.iter().map(|s| s.category).collect();
    let mut by_entry: HashMap<u32, Vec<(usize, bool)>> = HashMap::new();
    // Env names: exact names, and the globs that match them (the kernel looks a glob
    // up only when the exact lookup missed, so the exact entry stands for both).
    let env_cats = |upper: &str, glob: bool| -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        for &c in &used {
            let cat = &categories[c];
            for name in &cat.env {
                let (literal, is_glob) = match name.strip_suffix('*') {
                    Some(l) => (l, true),
                    None => (name.as_str(), false),
                };
                let hit = if is_glob {
                    upper.starts_with(&literal.to_ascii_uppercase())
                        && (!glob || literal.len() <= upper.len())
                } else {
                    !glob && name.eq_ignore_ascii_case(upper)
                };
                if !hit {
                    continue;
                }
                if cat.env_case_insensitive {
                    out.push((c, false));
                } else if literal == literal.to_ascii_uppercase() {
                    // Case-sensitive: only a name written in upper case is judged.
                    out.push((c, true));
                }
            }
        }
        out
    };
    let text = |key: &[u8]| {
        String::from_utf8_lossy(key.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
    };
    for (key, policy) in &kernel.env_names {
        by_entry
            .entry(policy.entry_id)
            .or_default()
            .extend(env_cats(&text(key), false));
    }
    for (bits, key, policy) in &kernel.env_prefixes {
        let literal = text(&key[..(*bits as usize / 8).min(key.len())]);
        by_entry
            .entry(policy.entry_id)
            .or_default()
            .extend(env_cats(&literal, true));
    }
    // Paths: exact entries and prefixes, with every shorter prefix that contains them
    // (the trie gives the longest match only). Glob patterns are judged in userspace.
    for (bits, key, policy) in &kernel.paths {
        let len = (*bits as usize / 8).min(key.len());
        let exact = policy.match_kind == PATH_MATCH_EXACT;
        let path = text(&key[..if exact { len.saturating_sub(1) } else { len }]);
        let mut cats: Vec<(usize, bool)> = Vec::new();
        if exact {
            cats.extend(
                classifier
                    .exact_path_categories()
                    .iter()
                    .filter(|(p, _)| *p == path)
                    .map(|(_, c)| (*c, false)),
            );
        }
        cats.extend(
            classifier
                .prefix_categories()
                .iter()
                .filter(|(p, _)| path.starts_with(p.as_str()))
                .map(|(_, c)| (*c, false)),
        );
        by_entry.entry(policy.entry_id).or_default().extend(cats);
    }
    // `~/` entries under a process's own home: a hit the kernel verified against the
    // home's hash (probe-ebpf `own_home`) feeds with the entry's own key, for the
    // categories the key alone is sure of (globs are decided in userspace).
    for (bits, key, policy) in &kernel.own_home_paths {
        let len = (*bits as usize / 8).min(key.len());
        let exact = policy.match_kind == PATH_MATCH_EXACT;
        let rest = text(&key[1.min(len)..if exact { len.saturating_sub(1) } else { len }]);
        by_entry.entry(policy.entry_id).or_default().extend(
            classifier
                .own_home
                .key_categories(key[0], &rest, exact)
                .into_iter()
                .map(|c| (c, false)),
        );
    }
    let whole = classifier.whole_environment_categories();
    by_entry
        .entry(ENTRY_PROC_ENVIRON)
        .or_default()
        .extend(whole.iter().map(|c| (*c, false)));
    by_entry
        .entry(BLOCK_ENTRY_ENUMERATE)
        .or_default()
        .extend(whole.iter().map(|c| (*c, false)));
    let env_ids: std::collections::HashSet<u32> = kernel
        .env_names
        .iter()
        .map(|(_, p)| p.entry_id)
        .chain(kernel.env_prefixes.iter().map(|(_, _, p)| p.entry_id))
        .collect();
    // The operations that can report each kind of entry (the others stay 0).
    let reaches = |id: u32, op: usize| -> bool {
        if env_ids.contains(&id) {
            matches!(
                op,
                BLOCK_OP_GETENV | BLOCK_OP_SECURE_GETENV | BLOCK_OP_PRESENT_AT_EXEC
            )
        } else if id == BLOCK_ENTRY_ENUMERATE {
            op == BLOCK_OP_ENUMERATE
        } else {
            op < BLOCK_OP_GETENV
        }
    };
    let mut out = HashMap::new();
    for (id, cats) in by_entry {
        let mut entry = BlockEntry::default();
        for (op, mask) in entry.slots.iter_mut().enumerate() {
            let Some(how) = how_of_op(op).filter(|_| reaches(id, op)) else {
                continue;
            };
            *mask = slot_mask(slots, &cats, how, classifier);
        }
        entry.exact_case = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                cats.iter().any(|(c, exact)| *exact && *c == s.category)
                    && !cats.iter().any(|(c, exact)| !*exact && *c == s.category)
            })
            .fold(0, |acc, (i, _)| acc | (1 << i));
        if entry.slots.iter().any(|m| *m != 0) {
            out.insert(id, entry);
        }
    }
    let mut host = BlockEntry::default();
    for call in [
        HostCall::Uname,
        HostCall::Siocgifhwaddr,
        HostCall::RtmGetlink,
    ] {
        let cats: Vec<(usize, bool)> = classifier
            .host_call_categories(call)
            .into_iter()
            .map(|c| (c, false))
            .collect();
        host.slots[BLOCK_OP_HOST_CALL + call.kernel() as usize] =
            slot_mask(slots, &cats, call.how(), classifier);
    }
    if host.slots.iter().any(|m| *m != 0) {
        out.insert(BLOCK_ENTRY_HOST_CALLS, host);
    }
    out
}

/// The slots a probe of categories `cats` made by `how` feeds (for reads userspace
/// decides, `correlate::block::LateFeed`).
pub fn slots_fed(slots: &[Slot], cats: &[usize], how: How, classifier: &Classifier) -> u32 {
    let cats: Vec<(usize, bool)> = cats.iter().map(|c| (*c, false)).collect();
    slot_mask(slots, &cats, how, classifier)
}

/// The slots a probe made by `how` of an entry named by `cats` feeds.
pub(super) fn slot_mask(
    slots: &[Slot],
    cats: &[(usize, bool)],
    how: How,
    classifier: &Classifier,
) -> u32 {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            cats.iter().any(|(c, _)| *c == s.category)
                && classifier.counts(s.category, how)
                && s.evidence.contains(how.evidence())
        })
        .fold(0, |acc, (i, _)| acc | (1 << i))
}

#[cfg(test)]
mod tests;
