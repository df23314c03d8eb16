//! "The probes before this network event", kept per process tree so that a network
//! event costs the same however much the tree has probed. A watched program can read
//! 600 zoneinfo files and then connect 50,000 times, or alternate a new file with each
//! connect: either way no connect walks the tree's probes.
//!
//! Each probe updates, per category, in constant or logarithmic time:
//! * what rules read: the latest time of each target, ordered by that time, so "was this
//!   category probed within the window" is one lookup and "at least N distinct targets
//!   within it" stops after N;
//! * what a record lists: one row per (type, operation, target), or one row per
//!   (operation, policy prefix) once more than `FOLD_AFTER` files under that prefix
//!   were probed, ordered by first time, so a record lists its first
//!   `MAX_LISTED_PRIOR` rows without looking at the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::fold::{FOLD_AFTER, folded_target};
use crate::ops::{EvidenceSet, How};
use crate::records::{PriorProbe, TargetType};

/// Folded rows listed on one connection record; the rest are counted
/// (`probes_before_not_listed`), never silently dropped.
pub const MAX_LISTED_PRIOR: usize = 100;

/// Count, first and last time, processes of one listed row.
#[derive(Debug, Clone, Default)]
struct Agg {
    count: u64,
    first_ns: u64,
    last_ns: u64,
    pids: Vec<u32>,
    /// For a folded row: the distinct targets it stands for.
    distinct: Option<u64>,
}

/// Processes named on one row; more are not listed (the count says how many probes).
const MAX_ROW_PIDS: usize = 64;

impl Agg {
    fn new(pid: u32, t: u64) -> Self {
        Self {
            count: 1,
            first_ns: t,
            last_ns: t,
            pids: vec![pid],
            distinct: None,
        }
    }

    fn merge(&mut self, other: &Agg) {
        self.count += other.count;
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
        for &pid in &other.pids {
            if self.pids.len() < MAX_ROW_PIDS && !self.pids.contains(&pid) {
                self.pids.push(pid);
            }
        }
    }
}

/// A listed row: one target, or a folded prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RowKey {
    Single(TargetType, How, Arc<str>),
    Folded(How, Arc<str>),
}

#[derive(Debug, Default)]
struct Group {
    /// Distinct targets under the prefix probed with this operation.
    members: HashSet<Arc<str>>,
    folded: bool,
}

/// Latest probe time per target, and the same ordered by time: for one kind of
/// evidence in one category.
#[derive(Debug, Default)]
struct Latest {
    latest: HashMap<Arc<str>, u64>,
    by_latest: BTreeSet<(u64, Arc<str>)>,
}

impl Latest {
    fn touch(&mut self, target: &Arc<str>, t: u64) {
        match self.latest.get_mut(target) {
            Some(last) if *last >= t => {}
            Some(last) => {
                self.by_latest.remove(&(*last, target.clone()));
                *last = t;
                self.by_latest.insert((t, target.clone()));
            }
            None => {
                self.latest.insert(target.clone(), t);
                self.by_latest.insert((t, target.clone()));
            }
        }
    }

    /// Targets whose latest probe is in `since_ns..=at_ns`, oldest first.
    fn between(&self, since_ns: u64, at_ns: u64) -> impl Iterator<Item = &Arc<str>> {
        self.by_latest
            .range((since_ns, Arc::from(""))..)
            .take_while(move |(t, _)| *t <= at_ns)
            .map(|(_, target)| target)
    }
}

/// One category's probes in a tree.
#[derive(Debug, Default)]
struct Category {
    /// Per kind of evidence (`Evidence as usize`): rules count only the kinds they
    /// name, so each kind is indexed on its own.
    latest: [Latest; 4],
    /// Listed rows, and their place in first-time order.
    rows: HashMap<RowKey, (Agg, u64)>,
    order: BTreeMap<(u64, u64), RowKey>,
    /// Per (operation, prefix): the files under it, until it folds.
    groups: HashMap<(How, Arc<str>), Group>,
}

impl Category {
    /// Adds `agg` to row `key` (creating it), keeping `order` in step with its first
    /// time.
    fn add_to_row(&mut self, key: RowKey, agg: &Agg, seq: &mut u64) {
        match self.rows.get_mut(&key) {
            Some((row, at)) => {
                let first = row.first_ns;
                row.merge(agg);
                if row.first_ns != first {
                    // Events of two CPUs slightly out of order: the row moves up.
                    let key = self.order.remove(&(first, *at)).unwrap_or(key);
                    self.order.insert((row.first_ns, *at), key);
                }
            }
            None => {
                *seq += 1;
                self.order.insert((agg.first_ns, *seq), key.clone());
                self.rows.insert(key, (agg.clone(), *seq));
            }
        }
    }

    fn remove_row(&mut self, key: &RowKey) -> Option<Agg> {
        let (agg, at) = self.rows.remove(key)?;
        self.order.remove(&(agg.first_ns, at));
        Some(agg)
    }

    fn record(
        &mut self,
        target_type: TargetType,
        how: How,
        target: &Arc<str>,
        fold_prefix: Option<&Arc<str>>,
        agg: &Agg,
        seq: &mut u64,
    ) {
        self.latest[how.evidence() as usize].touch(target, agg.last_ns);
        let Some(prefix) = fold_prefix.filter(|_| target_type == TargetType::File) else {
            self.add_to_row(RowKey::Single(target_type, how, target.clone()), agg, seq);
            return;
        };
        let group = self.groups.entry((how, prefix.clone())).or_default();
        group.members.insert(target.clone());
        let distinct = group.members.len();
        if group.folded {
            let key = RowKey::Folded(how, prefix.clone());
            self.add_to_row(key.clone(), agg, seq);
            if let Some((row, _)) = self.rows.get_mut(&key) {
                row.distinct = Some(distinct as u64);
            }
            return;
        }
        if distinct <= FOLD_AFTER {
            self.add_to_row(RowKey::Single(target_type, how, target.clone()), agg, seq);
            return;
        }
        // More than FOLD_AFTER files under the prefix: their rows become one.
        group.folded = true;
        let members: Vec<Arc<str>> = group.members.iter().cloned().collect();
        let mut folded = agg.clone();
        for m in members {
            if let Some(a) = self.remove_row(&RowKey::Single(TargetType::File, how, m)) {
                folded.merge(&a);
            }
        }
        folded.distinct = Some(distinct as u64);
        *seq += 1;
        let key = RowKey::Folded(how, prefix.clone());
        self.order.insert((folded.first_ns, *seq), key.clone());
        self.rows.insert(key, (folded, *seq));
    }

    /// Whether any target was probed with evidence of `kinds` in `since_ns..=at_ns`.
    fn probed_between(&self, kinds: EvidenceSet, since_ns: u64, at_ns: u64) -> bool {
        // Ordered by time: the first one at or after `since_ns` decides.
        kinds.kinds().any(|k| {
            self.latest[k as usize]
                .between(since_ns, at_ns)
                .next()
                .is_some()
        })
    }
}

/// One tree's probes, as rules and records need them.
#[derive(Debug, Default)]
pub struct PriorIndex {
    categories: HashMap<usize, Category>,
    /// Every target and prefix once, shared by the structures above.
    names: HashSet<Arc<str>>,
    seq: u64,
}

/// A tree that has probed nothing.
pub struct NoProbes;

impl PriorView for NoProbes {
    fn probed(&self, _: usize, _: EvidenceSet, _: u64, _: u64) -> bool {
        false
    }
    fn distinct_at_least(
        &self,
        _: Option<&[usize]>,
        _: EvidenceSet,
        _: u64,
        _: u64,
        min: u64,
    ) -> bool {
        min == 0
    }
    fn categories(&self, _: EvidenceSet, _: u64, _: u64) -> Vec<usize> {
        Vec::new()
    }
}

/// What rules ask of the probes before a network event.
pub trait PriorView {
    /// Whether category `c` was probed, with evidence of `kinds`, in `since_ns..=at_ns`.
    fn probed(&self, c: usize, kinds: EvidenceSet, since_ns: u64, at_ns: u64) -> bool;
    /// Whether at least `min` distinct (category, target) pairs of `cats` (every
    /// category when `None`) were probed, with evidence of `kinds`, in
    /// `since_ns..=at_ns`.
    fn distinct_at_least(
        &self,
        cats: Option<&[usize]>,
        kinds: EvidenceSet,
        since_ns: u64,
        at_ns: u64,
        min: u64,
    ) -> bool;
    /// The categories probed, with evidence of `kinds`, in `since_ns..=at_ns`.
    fn categories(&self, kinds: EvidenceSet, since_ns: u64, at_ns: u64) -> Vec<usize>;
}

impl PriorIndex {
    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.names.get(text) {
            return known.clone();
        }
        let new: Arc<str> = Arc::from(text);
        self.names.insert(new.clone());
        new
    }

    /// One probe of `target` in categories `cats`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one probe's fields, passed through"
    )]
    pub fn record(
        &mut self,
        cats: &[usize],
        target_type: TargetType,
        how: How,
        target: &str,
        fold_prefix: Option<&str>,
        pid: u32,
        t: u64,
    ) {
        self.record_agg(
            cats,
            target_type,
            how,
            target,
            fold_prefix,
            &Agg::new(pid, t),
        );
    }

    /// Many probes of one target at once (rebuilding after a reload).
    #[expect(
        clippy::too_many_arguments,
        reason = "one row's fields, passed through"
    )]
    pub fn record_many(
        &mut self,
        cats: &[usize],
        target_type: TargetType,
        how: How,
        target: &str,
        fold_prefix: Option<&str>,
        (count, first_ns, last_ns): (u64, u64, u64),
        pids: &[u32],
    ) {
        let agg = Agg {
            count,
            first_ns,
            last_ns,
            pids: pids.iter().copied().take(MAX_ROW_PIDS).collect(),
            distinct: None,
        };
        self.record_agg(cats, target_type, how, target, fold_prefix, &agg);
    }

    fn record_agg(
        &mut self,
        cats: &[usize],
        target_type: TargetType,
        how: How,
        target: &str,
        fold_prefix: Option<&str>,
        agg: &Agg,
    ) {
        let target = self.intern(target);
        let prefix = fold_prefix.map(|p| self.intern(p));
        for &c in cats {
            self.categories.entry(c).or_default().record(
                target_type,
                how,
                &target,
                prefix.as_ref(),
                agg,
                &mut self.seq,
            );
        }
    }

    /// The rows a record lists for an event at `at_ns`: categories in `ranked` order
    /// (by name), each row's first probe first, at most `MAX_LISTED_PRIOR`, and how
    /// many more rows there were. Every category probed before `at_ns` gets its share
    /// of the room first (a hundred `/proc/N/environ` reads must not push the one time
    /// zone read out of the list, nor out of a rule's "read by"); what the shares leave
    /// goes to the categories in rank order.
    pub fn listed(&self, at_ns: u64, ranked: &[(usize, String)]) -> (Vec<PriorProbe>, u64) {
        let present: Vec<(&Category, &String)> = ranked
            .iter()
            .filter_map(|(c, name)| self.categories.get(c).map(|cat| (cat, name)))
            .filter(|(cat, _)| {
                cat.order
                    .keys()
                    .next()
                    .is_some_and(|&(first, _)| first <= at_ns)
            })
            .collect();
        if present.is_empty() {
            return (Vec::new(), 0);
        }
        let share = (MAX_LISTED_PRIOR / present.len()).max(1);
        let mut rows: Vec<Vec<PriorProbe>> = vec![Vec::new(); present.len()];
        let mut room = MAX_LISTED_PRIOR;
        // Two passes: the shares, then the rest of the room in rank order.
        for limit in [share, MAX_LISTED_PRIOR] {
            for ((cat, name), out) in present.iter().zip(rows.iter_mut()) {
                let wanted = limit.saturating_sub(out.len()).min(room);
                if wanted == 0 {
                    continue;
                }
                let before = out.len();
                cat.list_into(at_ns, name, out.len(), wanted, out);
                room -= out.len() - before;
            }
        }
        let mut more = 0u64;
        for ((cat, _), out) in present.iter().zip(&rows) {
            // Cut by the room: counted by size, not walked (rows after `at_ns`
            // included, as an upper bound).
            if out.len() < cat.order.len() && room == 0 {
                more += (cat.order.len() - out.len()) as u64;
            }
        }
        (rows.into_iter().flatten().collect(), more)
    }
}

impl Category {
    /// Appends at most `limit` rows of this category to `out`, those first probed by
    /// `at_ns`, after the first `skip` (listed already).
    fn list_into(
        &self,
        at_ns: u64,
        name: &str,
        skip: usize,
        limit: usize,
        out: &mut Vec<PriorProbe>,
    ) {
        for (&(first, _), key) in self.order.iter().skip(skip).take(limit) {
            if first > at_ns {
                break;
            }
            let Some((agg, _)) = self.rows.get(key) else {
                continue;
            };
            let (target_type, how, target) = match key {
                RowKey::Single(ty, how, target) => (*ty, *how, target.to_string()),
                RowKey::Folded(how, prefix) => (TargetType::File, *how, folded_target(prefix)),
            };
            let mut row = PriorProbe {
                category: name.to_owned(),
                target_type,
                target,
                how,
                evidence: how.evidence(),
                pids: agg.pids.clone(),
                by: Vec::new(),
                count: agg.count,
                distinct_targets: agg.distinct,
                first_ms_before: 0.0,
                last_ms_before: 0.0,
                first_ns: agg.first_ns,
                last_ns: agg.last_ns,
            };
            row.measure_from(at_ns);
            out.push(row);
        }
    }
}

impl PriorView for PriorIndex {
    fn probed(&self, c: usize, kinds: EvidenceSet, since_ns: u64, at_ns: u64) -> bool {
        self.categories
            .get(&c)
            .is_some_and(|cat| cat.probed_between(kinds, since_ns, at_ns))
    }

    fn distinct_at_least(
        &self,
        cats: Option<&[usize]>,
        kinds: EvidenceSet,
        since_ns: u64,
        at_ns: u64,
        min: u64,
    ) -> bool {
        if min == 0 {
            return true;
        }
        // A target seen with two kinds (TZ present at exec and read by getenv) counts
        // once per category: the set stops growing at `min`, so this stays bounded by
        // `min` times the number of kinds.
        let mut found = 0u64;
        let mut each = |cat: &Category| {
            let mut seen: HashSet<&Arc<str>> = HashSet::new();
            for k in kinds.kinds() {
                for target in cat.latest[k as usize].between(since_ns, at_ns) {
                    if seen.insert(target) {
                        found += 1;
                        if found >= min {
                            return true;
                        }
                    }
                }
            }
            false
        };
        match cats {
            Some(cats) => cats
                .iter()
                .filter_map(|c| self.categories.get(c))
                .any(&mut each),
            None => self.categories.values().any(&mut each),
        }
    }

    fn categories(&self, kinds: EvidenceSet, since_ns: u64, at_ns: u64) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .categories
            .iter()
            .filter(|(_, cat)| cat.probed_between(kinds, since_ns, at_ns))
            .map(|(c, _)| *c)
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests;
