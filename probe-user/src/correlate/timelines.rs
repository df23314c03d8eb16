//! The probe timelines of every watched process tree, under one bound.
//!
//! Each tree (the outermost watched root of a process's lineage) has its own
//! `ProbeTable`, so a connection is joined only with probes from its own tree. The
//! bound counts distinct (operation, target) entries over all trees. When a new
//! entry does not fit, the least recently used other tree is evicted, exited trees
//! first; only when the new entry's own tree is the last one left is the probe
//! counted as overflow. Trees whose processes have all exited are evicted by the
//! owner (`Correlator::forget_trees`) after a grace period. Every eviction is
//! counted, so a report or `status` can say how much history was let go.

use std::collections::{BTreeMap, HashMap};

use super::probes::{ProbeTable, Recorded, SummaryRows, finish_summaries};
use crate::records::{ProbeSummary, TargetType};

/// Distinct (operation, target) pairs kept over all trees, unless configured.
pub const MAX_DISTINCT_PROBES: usize = 100_000;

#[derive(Debug)]
struct Tree {
    table: ProbeTable,
    /// Value of `Timelines::uses` at the last probe: larger is more recent.
    last_use: u64,
    /// Set once every process of the tree has exited (`mark_exited`).
    exited: bool,
}

#[derive(Debug)]
pub struct Timelines {
    trees: HashMap<u32, Tree>,
    /// Distinct (operation, target) pairs kept over all trees.
    pub capacity: usize,
    distinct: usize,
    uses: u64,
    /// Probes of new targets that did not fit even after eviction.
    pub overflow: u64,
    /// Trees evicted after all their processes exited and the grace period passed.
    pub evicted_after_exit: u64,
    /// Trees evicted, least recently used first, to make room for another's probes.
    pub evicted_for_room: u64,
    /// Distinct probes that left with evicted trees (they were streamed when seen).
    pub probes_evicted: u64,
}

impl Default for Timelines {
    fn default() -> Self {
        Self::with_capacity(MAX_DISTINCT_PROBES)
    }
}

impl Timelines {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            trees: HashMap::new(),
            capacity,
            distinct: 0,
            uses: 0,
            overflow: 0,
            evicted_after_exit: 0,
            evicted_for_room: 0,
            probes_evicted: 0,
        }
    }

    /// Distinct (operation, target) pairs kept now, over all trees.
    pub fn distinct(&self) -> usize {
        self.distinct
    }

    /// Trees with a timeline now.
    pub fn trees(&self) -> usize {
        self.trees.len()
    }

    /// One tree's probes.
    pub fn tree(&self, root: u32) -> Option<&ProbeTable> {
        self.trees.get(&root).map(|t| &t.table)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one probe's fields, passed through"
    )]
    pub fn record(
        &mut self,
        tree: u32,
        target_type: TargetType,
        how: crate::ops::How,
        target: &str,
        categories: &[usize],
        fold_prefix: Option<&str>,
        pid: u32,
        ktime_ns: u64,
    ) -> Recorded {
        let known = self
            .trees
            .get(&tree)
            .is_some_and(|t| t.table.contains(target_type, how, target));
        while !known && self.distinct >= self.capacity {
            if !self.evict_least_recent(tree) {
                self.overflow += 1;
                return Recorded::Dropped;
            }
        }
        self.uses += 1;
        let entry = self.trees.entry(tree).or_insert_with(|| Tree {
            table: ProbeTable::default(),
            last_use: 0,
            exited: false,
        });
        entry.last_use = self.uses;
        let before = entry.table.distinct();
        let recorded = entry.table.record(
            target_type,
            how,
            target,
            categories,
            fold_prefix,
            pid,
            ktime_ns,
        );
        self.distinct += entry.table.distinct() - before;
        recorded
    }

    /// Every process of `tree` has exited: it goes first when room is needed.
    pub fn mark_exited(&mut self, tree: u32) {
        if let Some(t) = self.trees.get_mut(&tree) {
            t.exited = true;
        }
    }

    /// Drops `tree`'s timeline after its grace period (counted).
    pub fn evict_exited(&mut self, tree: u32) {
        if self.remove(tree) {
            self.evicted_after_exit += 1;
        }
    }

    fn remove(&mut self, tree: u32) -> bool {
        let Some(t) = self.trees.remove(&tree) else {
            return false;
        };
        self.distinct -= t.table.distinct();
        self.probes_evicted += t.table.distinct() as u64;
        true
    }

    /// Evicts the least recently used tree other than `keep`, exited ones first.
    /// False when there is none.
    fn evict_least_recent(&mut self, keep: u32) -> bool {
        let victim = self
            .trees
            .iter()
            .filter(|(root, _)| **root != keep)
            .min_by_key(|(_, t)| (!t.exited, t.last_use))
            .map(|(root, _)| *root);
        match victim {
            Some(root) => {
                self.remove(root);
                self.evicted_for_room += 1;
                true
            }
            None => false,
        }
    }

    /// What each process probed, by category and evidence, over all trees.
    pub fn facts_by_pid<'p>(
        &self,
        fold: &impl Fn(&str) -> Option<&'p str>,
    ) -> super::probes::FactsByPid {
        let mut out = HashMap::new();
        for t in self.trees.values() {
            t.table.facts_by_pid_into(&mut out, fold);
        }
        out
    }

    /// Summary rows per category index over all trees (or only `only`'s).
    pub fn summaries(
        &self,
        only: Option<u32>,
        offset_ms: impl Fn(u64) -> f64,
    ) -> BTreeMap<usize, Vec<ProbeSummary>> {
        let mut acc = SummaryRows::new();
        for (_, t) in self
            .trees
            .iter()
            .filter(|(root, _)| only.is_none_or(|o| o == **root))
        {
            t.table.summaries_into(&mut acc, &offset_ms);
        }
        finish_summaries(acc)
    }

    /// After a policy reload: category indices move (`mapping[old] = new`).
    pub fn remap_categories<'p>(
        &mut self,
        mapping: &[Option<usize>],
        fold_prefix: &impl Fn(&str) -> Option<&'p str>,
    ) {
        for t in self.trees.values_mut() {
            t.table.remap_categories(mapping, fold_prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(t: &mut Timelines, tree: u32, target: &str, at: u64) -> Recorded {
        t.record(
            tree,
            TargetType::File,
            crate::ops::How::Open,
            target,
            &[0],
            None,
            tree,
            at,
        )
    }

    #[test]
    fn a_connection_sees_only_its_own_trees_probes() {
        let mut t = Timelines::default();
        probe(&mut t, 10, "/etc/localtime", 1);
        probe(&mut t, 20, "/etc/timezone", 2);
        let ranked = [(0, "timezone".to_owned())];
        let of_10: Vec<String> = t
            .tree(10)
            .map(|x| x.prior.listed(5, &ranked).0)
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.target)
            .collect();
        assert_eq!(of_10, ["/etc/localtime"]);
        assert!(t.tree(30).is_none(), "an unknown tree has no probes");
    }

    #[test]
    fn room_is_made_from_the_least_recent_tree_exited_ones_first() {
        let mut t = Timelines::with_capacity(3);
        probe(&mut t, 1, "/a", 1);
        probe(&mut t, 2, "/b", 2);
        probe(&mut t, 3, "/c", 3);
        t.mark_exited(3);
        // Tree 3 exited, so it goes although tree 1 is older.
        assert_eq!(probe(&mut t, 4, "/d", 4), Recorded::New);
        assert!(t.tree(3).is_none() && t.tree(1).is_some());
        // Then the least recently used live tree: 1 (2 was used later).
        assert_eq!(probe(&mut t, 4, "/e", 5), Recorded::New);
        assert!(t.tree(1).is_none() && t.tree(2).is_some());
        assert_eq!(
            (t.evicted_for_room, t.probes_evicted, t.distinct()),
            (2, 2, 3)
        );
        // A known target never needs room.
        assert_eq!(probe(&mut t, 2, "/b", 6), Recorded::Repeat);
        assert_eq!(t.evicted_for_room, 2);
    }

    #[test]
    fn a_tree_alone_at_the_bound_overflows_and_counts() {
        let mut t = Timelines::with_capacity(2);
        probe(&mut t, 1, "/a", 1);
        probe(&mut t, 1, "/b", 2);
        assert_eq!(probe(&mut t, 1, "/c", 3), Recorded::Dropped);
        assert_eq!((t.overflow, t.distinct()), (1, 2));
    }

    #[test]
    fn an_exited_tree_is_evicted_and_counted() {
        let mut t = Timelines::default();
        probe(&mut t, 1, "/a", 1);
        probe(&mut t, 1, "/b", 1);
        t.evict_exited(1);
        t.evict_exited(1);
        assert_eq!(
            (
                t.trees(),
                t.distinct(),
                t.evicted_after_exit,
                t.probes_evicted
            ),
            (0, 0, 1, 2)
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Under any sequence of probes and exits, the kept entries never exceed the
        /// bound, and every probe of a new target is kept or counted as overflow.
        #[test]
        fn the_bound_holds_and_nothing_goes_uncounted(
            capacity in 1usize..12,
            ops in prop::collection::vec((0u32..6, 0u8..16, any::<bool>()), 1..200),
        ) {
            let mut t = Timelines::with_capacity(capacity);
            let mut kept_or_counted = 0u64;
            for (i, (tree, target, exit)) in ops.into_iter().enumerate() {
                if exit {
                    t.mark_exited(tree);
                    continue;
                }
                let target = format!("/t{target}");
                let known = t.tree(tree).is_some_and(|x| x.contains(TargetType::File, crate::ops::How::Open, &target));
                let r = t.record(tree, TargetType::File, crate::ops::How::Open, &target, &[0], None, tree, i as u64);
                if !known {
                    kept_or_counted += 1;
                    prop_assert!(r == Recorded::New || r == Recorded::Dropped);
                }
                prop_assert!(t.distinct() <= capacity);
                let sum: usize = t.trees.values().map(|x| x.table.distinct()).sum();
                prop_assert_eq!(sum, t.distinct());
            }
            // Every new target is either still kept, left with an evicted tree, or overflowed.
            prop_assert_eq!(
                kept_or_counted,
                t.distinct() as u64 + t.probes_evicted + t.overflow
            );
        }
    }
}
