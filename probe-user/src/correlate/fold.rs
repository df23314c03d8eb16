//! Folding of probe bursts. ICU, when /etc/localtime is a regular file, reads every
//! file under /usr/share/zoneinfo: hundreds of probes that say one thing ("it looked
//! for the time zone"). Probes that matched only through a policy prefix are shown
//! individually up to `FOLD_AFTER` distinct targets; beyond that, one entry per
//! prefix carries the count, in the stream, the summary and each connection's list.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::policy::Classifier;
use crate::records::{ProbeSummary, TargetType};

/// Distinct targets under one prefix that are listed one by one before folding.
pub const FOLD_AFTER: usize = 5;

/// How a folded target is written: the prefix and `**`.
pub fn folded_target(prefix: &str) -> String {
    format!("{prefix}**")
}

/// Decides, per process and prefix, whether a probe is still streamed on its own.
#[derive(Debug, Default)]
pub struct StreamFolder {
    /// Per (pid, prefix): the targets streamed one by one (at most `FOLD_AFTER`), and
    /// whether the folded entry has been streamed.
    prefixes: HashMap<(u32, String), (HashSet<String>, bool)>,
}

pub enum StreamDecision {
    /// Stream the probe as it is.
    Show,
    /// This probe starts folding: stream one entry for the prefix instead.
    StartFold(String),
    /// Already folded: count it, do not stream it.
    Suppress,
}

impl StreamFolder {
    /// Forgets the processes `keep` rejects (their trees were evicted).
    pub fn retain_pids(&mut self, keep: impl Fn(u32) -> bool) {
        self.prefixes.retain(|(pid, _), _| keep(*pid));
    }

    /// Called once per newly seen (pid, how, target) that matched through `prefix`.
    /// Another operation on a file already shown is still shown; any other target
    /// past the first `FOLD_AFTER` is folded.
    pub fn decide(&mut self, pid: u32, prefix: &str, target: &str) -> StreamDecision {
        let (shown, folded) = self.prefixes.entry((pid, prefix.to_owned())).or_default();
        if shown.contains(target) {
            return StreamDecision::Show;
        }
        if shown.len() < FOLD_AFTER {
            shown.insert(target.to_owned());
            return StreamDecision::Show;
        }
        if *folded {
            return StreamDecision::Suppress;
        }
        *folded = true;
        StreamDecision::StartFold(folded_target(prefix))
    }
}

/// Folds summary rows of one category: file targets under a prefix with more than
/// `FOLD_AFTER` distinct targets become one row.
pub fn fold_summaries(rows: Vec<ProbeSummary>, classifier: &Classifier) -> Vec<ProbeSummary> {
    fold(
        rows,
        |r| {
            (r.target_type == TargetType::File)
                .then(|| classifier.fold_prefix(&r.target).map(str::to_owned))
                .flatten()
        },
        |prefix, group| {
            let mut merged = group[0].clone();
            merged.target = folded_target(&prefix);
            merged.distinct_targets = Some(group.len() as u64);
            merged.count = group.iter().map(|r| r.count).sum();
            merged.first_offset_ms = group
                .iter()
                .map(|r| r.first_offset_ms)
                .fold(f64::INFINITY, f64::min);
            for r in &group[1..] {
                for how in &r.how {
                    if !merged.how.contains(how) {
                        merged.how.push(*how);
                    }
                }
                for pid in &r.pids {
                    if !merged.pids.contains(pid) {
                        merged.pids.push(*pid);
                    }
                }
            }
            merged
        },
    )
}

/// Groups `rows` by `key`; a group larger than `FOLD_AFTER` is replaced by `merge`.
/// Rows without a key, and small groups, are kept as they are, in order.
fn fold<T>(
    rows: Vec<T>,
    key: impl Fn(&T) -> Option<String>,
    merge: impl Fn(String, Vec<T>) -> T,
) -> Vec<T> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        if let Some(k) = key(r) {
            *counts.entry(k).or_default() += 1;
        }
    }
    let mut groups: BTreeMap<String, Vec<T>> = BTreeMap::new();
    let mut out = Vec::new();
    for r in rows {
        match key(&r) {
            Some(k) if counts[&k] > FOLD_AFTER => groups.entry(k).or_default().push(r),
            _ => out.push(r),
        }
    }
    out.extend(groups.into_iter().map(|(k, group)| merge(k, group)));
    out
}
