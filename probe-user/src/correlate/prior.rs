//! "The probes before this connection", per process tree, cached. A watched program
//! that read 600 zoneinfo files and then makes 50,000 connects must not have its
//! probe table rebuilt, folded and sorted 50,000 times: the rows of a tree are built
//! once per change of its table, and each network event only measures them from its
//! own time (no allocation for the rules) and copies the folded rows it lists.

use std::collections::HashMap;

use super::{Correlator, fold};
use crate::records::PriorProbe;

/// Folded rows listed on one connection record; the rest are counted
/// (`probes_before_not_listed`), never silently dropped.
pub const MAX_LISTED_PRIOR: usize = 100;

/// One tree's rows as of one version of its table.
#[derive(Debug, Default)]
pub(super) struct PriorRows {
    version: u64,
    /// One row per (category, type, target, how): what rules read.
    pub(super) rows: Vec<PriorProbe>,
    /// The same, folded like the summary and sorted (category, then the earliest
    /// first): what a record lists.
    folded: Vec<PriorProbe>,
}

impl PriorRows {
    /// The folded rows that came before `at_ns`, measured from it: at most
    /// `MAX_LISTED_PRIOR`, and how many more there were.
    pub(super) fn listed(&self, at_ns: u64) -> (Vec<PriorProbe>, u64) {
        let mut before = self.folded.iter().filter(|r| r.first_ns <= at_ns);
        let listed: Vec<PriorProbe> = before
            .by_ref()
            .take(MAX_LISTED_PRIOR)
            .map(|r| {
                let mut r = r.clone();
                r.measure_from(at_ns);
                r
            })
            .collect();
        (listed, before.count() as u64)
    }
}

/// Per tree, the rows of the last version asked for.
pub(super) type PriorCache = HashMap<u32, PriorRows>;

impl Correlator {
    /// `tree`'s rows measured from `at_ns`, from the cache when its table has not
    /// changed. Give them back with `put_prior`.
    pub(super) fn take_prior(&mut self, tree: u32, at_ns: u64) -> PriorRows {
        let version = self.timelines.version(tree).unwrap_or(0);
        let mut prior = match self.prior.remove(&tree) {
            Some(cached) if cached.version == version => cached,
            _ => {
                let rows = self.timelines.rows(tree, &self.category_names);
                let mut folded = fold::fold_prior(rows.clone(), &self.classifier);
                // Category, then the earliest probe first.
                folded.sort_by(|a, b| {
                    a.category
                        .cmp(&b.category)
                        .then(a.first_ns.cmp(&b.first_ns))
                });
                PriorRows {
                    version,
                    rows,
                    folded,
                }
            }
        };
        for r in &mut prior.rows {
            r.measure_from(at_ns);
        }
        prior
    }

    pub(super) fn put_prior(&mut self, tree: u32, prior: PriorRows) {
        // One entry per tree with a timeline: as bounded as the timelines are.
        if self.timelines.version(tree).is_some() {
            self.prior.insert(tree, prior);
        }
    }
}
