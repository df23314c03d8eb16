//! Evaluating the policy's rules at each network event: did this process tree probe
//! the rule's categories within its window before this call, and does the destination
//! match? Matches are listed on the event's record, summed in the report, and (for
//! `action: alert`) streamed as `rule_match` records, unless suppressed as repeats.

use std::collections::HashMap;
use std::net::IpAddr;

use super::prior::PriorView;
use crate::policy::rules::{
    CompiledDestination, CompiledRule, NetworkEvent, cidr_contains, glob_matches,
};
use crate::records::{Destination, RuleMatch, RuleSummary};

/// (rule, tree, destination) suppression entries kept at most.
const MAX_SUPPRESSION_KEYS: usize = 65_536;

/// The network event a rule is evaluated against.
pub struct NetCall<'a> {
    pub kind: NetworkEvent,
    /// The process tree it came from (the root of its lineage).
    pub tree: u32,
    pub at_ns: u64,
    pub destination: Option<&'a Destination>,
    /// Names the destination is known by: the DNS or /etc/hosts name of the address,
    /// or the names a query asks for.
    pub names: &'a [String],
    /// A connection that bypassed a proxy or relay setting the process read.
    pub bypassed: bool,
}

#[derive(Default)]
pub struct RuleEngine {
    rules: Vec<CompiledRule>,
    /// (rule, tree, destination) -> last reported match, for suppression.
    last_reported: HashMap<(usize, u32, String), u64>,
    summaries: Vec<Option<(u64, u64, u64)>>,
}

impl RuleEngine {
    pub fn new(rules: Vec<CompiledRule>) -> Self {
        let summaries = vec![None; rules.len()];
        Self {
            rules,
            last_reported: HashMap::new(),
            summaries,
        }
    }

    /// A reloaded policy's rules. Counts and suppression state carry over for rules
    /// that keep their name.
    pub fn replace_rules(&mut self, rules: Vec<CompiledRule>) {
        let old_names: Vec<String> = self.rules.iter().map(|r| r.name.clone()).collect();
        let position = |name: &str| old_names.iter().position(|n| n == name);
        let summaries = rules
            .iter()
            .map(|r| position(&r.name).and_then(|i| self.summaries[i]))
            .collect();
        let last_reported = std::mem::take(&mut self.last_reported)
            .into_iter()
            .filter_map(|((i, tree, dest), at)| {
                let new = rules.iter().position(|r| r.name == old_names[i])?;
                Some(((new, tree, dest), at))
            })
            .collect();
        *self = Self {
            rules,
            last_reported,
            summaries,
        };
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Drops the suppression state of an evicted tree.
    pub fn forget_tree(&mut self, tree: u32) {
        self.last_reported.retain(|(_, t, _), _| *t != tree);
    }

    /// Rules matching `call`, given the probes of its process tree that came before
    /// it (unfolded).
    pub fn evaluate(
        &mut self,
        call: &NetCall<'_>,
        prior: &dyn PriorView,
        category_names: &[String],
    ) -> Vec<RuleMatch> {
        self.evaluate_where(call, prior, category_names, |_| true)
    }

    /// `evaluate` for a name learnt after the call (a connection's TLS server name
    /// or HTTP Host): only the rules whose destination names hosts (in `hosts` or
    /// `except`), and of those only the ones `keep` accepts by name.
    pub fn evaluate_named(
        &mut self,
        call: &NetCall<'_>,
        prior: &dyn PriorView,
        category_names: &[String],
        keep: impl Fn(&str) -> bool,
    ) -> Vec<RuleMatch> {
        self.evaluate_where(call, prior, category_names, |rule| {
            rule.destination.as_ref().is_some_and(|d| {
                !d.hosts.is_empty() || d.except.as_deref().is_some_and(|e| !e.hosts.is_empty())
            }) && keep(&rule.name)
        })
    }

    fn evaluate_where(
        &mut self,
        call: &NetCall<'_>,
        prior: &dyn PriorView,
        category_names: &[String],
        considered: impl Fn(&CompiledRule) -> bool,
    ) -> Vec<RuleMatch> {
        let mut out = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.then.contains(&call.kind)
                || (rule.bypassed_proxy && !call.bypassed)
                || !considered(rule)
            {
                continue;
            }
            // Inclusive: a probe exactly `within` before the call counts (whole
            // nanoseconds, so no rounding decides the boundary).
            let since = call
                .at_ns
                .saturating_sub(u64::try_from(rule.within.as_nanos()).unwrap_or(u64::MAX));
            let Some(categories) = probed_match(rule, prior, since, call.at_ns, category_names)
            else {
                continue;
            };
            if let Some(dest) = &rule.destination
                && !destination_matches(dest, call.destination, call.names)
            {
                continue;
            }
            let key = (
                index,
                call.tree,
                call.destination
                    .map(ToString::to_string)
                    .unwrap_or_else(|| call.names.join(",")),
            );
            let suppressed = match (rule.suppress, self.last_reported.get(&key)) {
                (Some(window), Some(&last)) => {
                    call.at_ns.saturating_sub(last) < window.as_nanos() as u64
                }
                _ => false,
            };
            if !suppressed {
                if self.last_reported.len() >= MAX_SUPPRESSION_KEYS {
                    // Bounded: a program calling a million destinations must not grow
                    // this without end. Windows that ended go first; if that is not
                    // enough, suppression starts over (a repeat may alert again,
                    // nothing is lost).
                    let rules = &self.rules;
                    let now = call.at_ns;
                    self.last_reported.retain(|(i, _, _), at| {
                        rules[*i]
                            .suppress
                            .is_some_and(|w| now.saturating_sub(*at) < w.as_nanos() as u64)
                    });
                    if self.last_reported.len() >= MAX_SUPPRESSION_KEYS / 2 {
                        self.last_reported.clear();
                    }
                }
                self.last_reported.insert(key, call.at_ns);
            }
            let summary = self.summaries[index].get_or_insert((0, 0, call.at_ns));
            summary.0 += 1;
            summary.1 += u64::from(suppressed);
            out.push(RuleMatch::of(rule, categories, suppressed));
        }
        out
    }

    /// Every rule that matched at least once, in policy order.
    pub fn summaries(&self, offset_ms: impl Fn(u64) -> f64) -> Vec<RuleSummary> {
        self.rules
            .iter()
            .zip(&self.summaries)
            .filter_map(|(rule, s)| {
                let (matches, suppressed, first_ns) = (*s)?;
                Some(RuleSummary {
                    rule: rule.name.clone(),
                    id: rule.id.clone(),
                    severity: rule.severity,
                    action: rule.action,
                    matches,
                    suppressed,
                    first_offset_ms: offset_ms(first_ns),
                })
            })
            .collect()
    }
}

/// The rule's categories that the probes in `since..=at` satisfy, or `None` if its
/// `probed` condition does not hold. Each question is a lookup or stops after
/// `min_count` targets: no walk over what the tree probed.
fn probed_match(
    rule: &CompiledRule,
    prior: &dyn PriorView,
    since: u64,
    at: u64,
    category_names: &[String],
) -> Option<Vec<String>> {
    let has = |c: usize| prior.probed(c, rule.evidence, since, at);
    if !rule.all_of.iter().all(|&c| has(c)) {
        return None;
    }
    if !rule.any_of.is_empty() && !rule.any_of.iter().any(|&c| has(c)) {
        return None;
    }
    if let Some(min) = rule.min_count {
        let cats = (!rule.any_of.is_empty()).then_some(rule.any_of.as_slice());
        if !prior.distinct_at_least(cats, rule.evidence, since, at, u64::from(min)) {
            return None;
        }
    }
    let mut names: Vec<String> = rule
        .all_of
        .iter()
        .chain(&rule.any_of)
        .filter(|&&c| has(c))
        .map(|&c| category_names[c].clone())
        .collect();
    if names.is_empty() {
        // `min_count` alone: name what was probed.
        names = prior
            .categories(rule.evidence, since, at)
            .into_iter()
            .filter_map(|c| category_names.get(c).cloned())
            .collect();
    }
    names.sort();
    names.dedup();
    Some(names)
}

fn destination_matches(
    spec: &CompiledDestination,
    dest: Option<&Destination>,
    names: &[String],
) -> bool {
    let ip: Option<IpAddr> = dest.and_then(|d| d.address.parse().ok());
    let by_cidr = spec.cidrs.is_empty()
        || ip.is_some_and(|ip| spec.cidrs.iter().any(|net| cidr_contains(net, &ip)));
    let by_port = spec.ports.is_empty() || dest.is_some_and(|d| spec.ports.contains(&d.port));
    let by_host = spec.hosts.is_empty()
        || names
            .iter()
            .any(|n| spec.hosts.iter().any(|h| glob_matches(h, n)));
    let excepted = spec
        .except
        .as_deref()
        .is_some_and(|except| destination_matches_any(except, dest, ip, names));
    by_cidr && by_port && by_host && !excepted
}

/// An allowlist entry matches when any of its lists does (a CIDR, a port or a host).
fn destination_matches_any(
    spec: &CompiledDestination,
    dest: Option<&Destination>,
    ip: Option<IpAddr>,
    names: &[String],
) -> bool {
    ip.is_some_and(|ip| spec.cidrs.iter().any(|net| cidr_contains(net, &ip)))
        || dest.is_some_and(|d| spec.ports.contains(&d.port))
        || names
            .iter()
            .any(|n| spec.hosts.iter().any(|h| glob_matches(h, n)))
}

#[cfg(test)]
mod tests;
