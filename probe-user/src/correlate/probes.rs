//! One process tree's probes, folded as they arrive by (target type, operation,
//! target): a count, the first and last time, the processes. A connection's "probes
//! before it" and the end-of-run summary are read from these tables, so neither keeps
//! nor rescans one entry per event, and a repeated probe costs a lookup, not an
//! allocation.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::records::{ProbeSummary, TargetType};

#[derive(Debug)]
struct Entry {
    /// Policy category indices.
    categories: Vec<usize>,
    count: u64,
    first_ns: u64,
    last_ns: u64,
    /// Every process that made it (a set: a fork storm must not make each probe walk
    /// a list of thousands).
    pids: std::collections::HashSet<u32>,
}

/// One process tree's probes (the bound over all trees is kept by `Timelines`).
#[derive(Debug, Default)]
pub struct ProbeTable {
    /// The same probes as rules and connection records read them (`prior`).
    pub prior: super::prior::PriorIndex,
    entries: HashMap<(TargetType, crate::ops::How), HashMap<String, Entry>>,
    distinct: usize,
}

/// What recording a probe found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// First probe of this target by this process with this operation: stream it.
    New,
    /// Seen before from this process: counted only.
    Repeat,
    /// The timelines are full: counted as overflow.
    Dropped,
}

impl ProbeTable {
    /// Distinct (operation, target) pairs kept so far.
    pub fn distinct(&self) -> usize {
        self.distinct
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one probe's fields, passed through"
    )]
    pub fn record(
        &mut self,
        target_type: TargetType,
        how: crate::ops::How,
        target: &str,
        categories: &[usize],
        fold_prefix: Option<&str>,
        pid: u32,
        ktime_ns: u64,
    ) -> Recorded {
        self.prior.record(
            categories,
            target_type,
            how,
            target,
            fold_prefix,
            pid,
            ktime_ns,
        );
        let by_target = self.entries.entry((target_type, how)).or_default();
        if let Some(e) = by_target.get_mut(target) {
            e.count += 1;
            e.first_ns = e.first_ns.min(ktime_ns);
            e.last_ns = e.last_ns.max(ktime_ns);
            if !e.pids.insert(pid) {
                return Recorded::Repeat;
            }
            return Recorded::New;
        }
        self.distinct += 1;
        let entry = Entry {
            categories: categories.to_vec(),
            count: 1,
            first_ns: ktime_ns,
            last_ns: ktime_ns,
            pids: std::collections::HashSet::from([pid]),
        };
        by_target.insert(target.to_owned(), entry);
        Recorded::New
    }

    /// After a policy reload: category indices move (`mapping[old] = new`), and
    /// categories the new policy lacks are dropped from the rows.
    /// `fold_prefix` is the new policy's (folding follows the policy's prefixes).
    pub fn remap_categories<'p>(
        &mut self,
        mapping: &[Option<usize>],
        fold_prefix: &impl Fn(&str) -> Option<&'p str>,
    ) {
        self.prior = super::prior::PriorIndex::default();
        for ((target_type, how), by_target) in &mut self.entries {
            for (target, e) in by_target {
                e.categories = e
                    .categories
                    .iter()
                    .filter_map(|c| mapping.get(*c).copied().flatten())
                    .collect();
                self.prior.record_many(
                    &e.categories,
                    *target_type,
                    *how,
                    target,
                    fold_prefix(target),
                    (e.count, e.first_ns, e.last_ns),
                    &e.pids.iter().copied().take(64).collect::<Vec<u32>>(),
                );
            }
        }
    }

    /// Adds what each process probed to `out`: per (category, evidence), its targets
    /// (bounded: see `FactTargets`). `fold` names the policy prefix a file target
    /// folds under, so a burst of 600 zoneinfo files is one target.
    pub fn facts_by_pid_into<'p>(
        &self,
        out: &mut FactsByPid,
        fold: &impl Fn(&str) -> Option<&'p str>,
    ) {
        for ((target_type, how), by_target) in &self.entries {
            let evidence = how.evidence();
            for (target, e) in by_target {
                let prefix = match target_type {
                    TargetType::File if super::environ_of_other(target) => {
                        Some(super::ENVIRON_GROUP)
                    }
                    TargetType::File => fold(target),
                    TargetType::Env | TargetType::Host => None,
                };
                // A host request names an interface, `*` or `uname`: the call says what
                // it asked (`rtm_getlink *`: every interface's MAC address).
                let shown = match target_type {
                    TargetType::Host => format!("{} {target}", how.name()),
                    TargetType::Env | TargetType::File => target.clone(),
                };
                for pid in &e.pids {
                    let facts = out.entry(*pid).or_default();
                    for &c in &e.categories {
                        facts.entry((c, evidence)).or_default().add(&shown, prefix);
                    }
                }
            }
        }
    }

    /// Adds rows per category index to `acc`, one per (type, target), with every
    /// operation seen. `offset_ms` turns a kernel time into the report's offset.
    pub fn summaries_into(&self, acc: &mut SummaryRows, offset_ms: &impl Fn(u64) -> f64) {
        for ((target_type, how), by_target) in &self.entries {
            for (target, e) in by_target {
                for &c in &e.categories {
                    let s = acc
                        .entry(c)
                        .or_default()
                        .entry((*target_type, target.clone()))
                        .or_insert_with(|| ProbeSummary {
                            target_type: *target_type,
                            target: target.clone(),
                            how: Vec::new(),
                            evidence: Vec::new(),
                            count: 0,
                            distinct_targets: None,
                            pids: Vec::new(),
                            first_offset_ms: offset_ms(e.first_ns),
                        });
                    s.count += e.count;
                    if !s.how.contains(how) {
                        s.how.push(*how);
                    }
                    if !s.evidence.contains(&how.evidence()) {
                        s.evidence.push(how.evidence());
                    }
                    s.first_offset_ms = s.first_offset_ms.min(offset_ms(e.first_ns));
                    for pid in &e.pids {
                        // The report names at most 64 processes per row.
                        if s.pids.len() < 64 && !s.pids.contains(pid) {
                            s.pids.push(*pid);
                        }
                    }
                }
            }
        }
    }

    /// Whether `pid` made this probe (type, operation, target).
    pub fn made_by(
        &self,
        target_type: TargetType,
        how: crate::ops::How,
        target: &str,
        pid: u32,
    ) -> bool {
        self.entries
            .get(&(target_type, how))
            .and_then(|t| t.get(target))
            .is_some_and(|e| e.pids.contains(&pid))
    }

    /// Whether this (type, operation, target) is already in the table.
    pub fn contains(&self, target_type: TargetType, how: crate::ops::How, target: &str) -> bool {
        self.entries
            .get(&(target_type, how))
            .is_some_and(|t| t.contains_key(target))
    }
}

/// Targets of one (category, evidence) of one process: the first `MAX_FACT_TARGETS`
/// in name order are named, the rest counted; files under a policy prefix fold into
/// `prefix**` past `FOLD_AFTER`, as connection records fold them.
#[derive(Debug, Default, Clone)]
pub struct FactTargets {
    targets: std::collections::BTreeSet<String>,
    /// Per fold prefix: its first targets and how many distinct ones there were.
    groups: BTreeMap<String, Group>,
    /// Targets past the first `MAX_FACT_TARGETS`, told apart by hash (so that the
    /// same name past the bound in two processes of a CLI is one more, not two).
    more: Group,
}

/// Targets under one fold prefix. Counted distinct: the same file read by two
/// processes of a CLI (or by open and openat) is one file.
#[derive(Debug, Default, Clone)]
struct Group {
    first: Vec<String>,
    /// Hashes of the distinct targets, up to `MAX_GROUP_DISTINCT`.
    seen: HashSet<u64>,
    /// Targets past that bound, counted without telling repeats apart.
    unseen: u64,
}

/// Distinct targets told apart per fold prefix; past it they are counted as new.
const MAX_GROUP_DISTINCT: usize = 4_096;

impl Group {
    /// Notes a target by its hash; whether it was new.
    fn note(&mut self, hash: u64) -> bool {
        if self.seen.contains(&hash) {
            return false;
        }
        if self.seen.len() < MAX_GROUP_DISTINCT {
            self.seen.insert(hash);
        } else {
            self.unseen += 1;
        }
        true
    }

    fn keep_first(&mut self, target: &str) {
        if self.first.len() < super::fold::FOLD_AFTER && !self.first.iter().any(|f| f == target) {
            self.first.push(target.to_owned());
        }
    }

    fn count(&self) -> u64 {
        self.seen.len() as u64 + self.unseen
    }
}

fn hash_of(target: &str) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(target)
}

/// Targets named per process, category and evidence in the report's summary.
pub const MAX_FACT_TARGETS: usize = 16;

impl FactTargets {
    fn add(&mut self, target: &str, prefix: Option<&str>) {
        if let Some(prefix) = prefix {
            if let Some(group) = self.groups.get_mut(prefix) {
                if group.note(hash_of(target)) {
                    group.keep_first(target);
                }
                return;
            }
            if self.groups.len() < MAX_FACT_TARGETS {
                let mut group = Group::default();
                group.note(hash_of(target));
                group.keep_first(target);
                self.groups.insert(prefix.to_owned(), group);
                return;
            }
        }
        if self.targets.contains(target) {
            return;
        }
        if self.targets.len() < MAX_FACT_TARGETS && !self.more.seen.contains(&hash_of(target)) {
            self.targets.insert(target.to_owned());
        } else {
            self.more.note(hash_of(target));
        }
    }

    /// Notes a target past the bound, known by its hash only.
    fn add_more(&mut self, hash: u64) {
        if !self.targets.iter().any(|t| hash_of(t) == hash) {
            self.more.note(hash);
        }
    }

    /// Merges another process's targets into these (one CLI, several processes).
    pub fn merge(&mut self, other: &FactTargets) {
        for (prefix, theirs) in &other.groups {
            if !self.groups.contains_key(prefix) && self.groups.len() >= MAX_FACT_TARGETS {
                // No room for the group: its first targets are named, the rest counted.
                for t in &theirs.first {
                    self.add(t, None);
                }
                self.more.unseen += theirs.count().saturating_sub(theirs.first.len() as u64);
                continue;
            }
            let ours = self.groups.entry(prefix.clone()).or_default();
            for &h in &theirs.seen {
                ours.note(h);
            }
            ours.unseen += theirs.unseen;
            for t in &theirs.first {
                ours.keep_first(t);
            }
        }
        for t in &other.targets {
            self.add(t, None);
        }
        for &h in &other.more.seen {
            self.add_more(h);
        }
        self.more.unseen += other.more.unseen;
    }

    /// The targets as the report names them (`/usr/share/zoneinfo/** (600 files)`),
    /// and how many more there were.
    pub fn named(&self) -> (Vec<String>, u64) {
        let mut out: Vec<String> = self.targets.iter().cloned().collect();
        for (prefix, group) in &self.groups {
            let count = group.count();
            if prefix == super::ENVIRON_GROUP && count > 1 {
                out.push(format!("{prefix} ({count} processes)"));
            } else if count as usize > super::fold::FOLD_AFTER {
                out.push(format!(
                    "{} ({count} files)",
                    super::fold::folded_target(prefix)
                ));
            } else {
                out.extend(group.first.iter().cloned());
            }
        }
        out.sort();
        out.dedup();
        (out, self.more.count())
    }
}

/// Per process: (category index, evidence) -> targets.
pub type FactsByPid = HashMap<u32, BTreeMap<(usize, crate::ops::Evidence), FactTargets>>;

/// Summary rows being gathered: category index -> (type, target) -> row.
pub type SummaryRows = BTreeMap<usize, BTreeMap<(TargetType, String), ProbeSummary>>;

/// The gathered rows per category index, operations sorted.
pub fn finish_summaries(acc: SummaryRows) -> BTreeMap<usize, Vec<ProbeSummary>> {
    acc.into_iter()
        .map(|(c, rows)| {
            let mut rows: Vec<ProbeSummary> = rows.into_values().collect();
            for r in &mut rows {
                r.how.sort_unstable();
                r.evidence.sort_unstable();
                r.pids.sort_unstable();
            }
            (c, rows)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::FactTargets;

    const ZONES: &str = "/usr/share/zoneinfo/";

    fn read(files: impl IntoIterator<Item = String>) -> FactTargets {
        let mut t = FactTargets::default();
        for f in files {
            t.add(&f, Some(ZONES));
        }
        t
    }

    #[test]
    fn the_same_file_read_by_two_processes_of_a_cli_counts_once() {
        let zone = |i: u32| format!("{ZONES}Zone{i}");
        // A CLI and its child each read the same three zone files: three files.
        let mut cli = read((0..3).map(zone));
        cli.merge(&read((0..3).map(zone)));
        let (named, more) = cli.named();
        assert_eq!(named, (0..3).map(zone).collect::<Vec<_>>());
        assert_eq!(more, 0);
        // Overlapping bursts: 0..400 and 200..600 are 600 distinct files.
        let mut cli = read((0..400).map(zone));
        cli.merge(&read((200..600).map(zone)));
        assert_eq!(cli.named().0, [format!("{ZONES}** (600 files)")]);
        // Two processes reading one other process's environment: one target.
        let environ = |pid: u32| {
            let mut t = FactTargets::default();
            t.add(
                &format!("/proc/{pid}/environ"),
                Some(super::super::ENVIRON_GROUP),
            );
            t
        };
        let mut cli = environ(1);
        cli.merge(&environ(1));
        assert_eq!(cli.named().0, ["/proc/1/environ"]);
        cli.merge(&environ(2));
        assert_eq!(cli.named().0, ["/proc/*/environ (2 processes)"]);
    }

    #[test]
    fn names_past_the_bound_in_two_processes_are_counted_once() {
        let names = |range: std::ops::Range<usize>| {
            let mut t = FactTargets::default();
            for i in range {
                t.add(&format!("NAME_{i:02}"), None);
            }
            t
        };
        // A CLI and its child both had the same 20 names: 16 named, 4 more.
        let mut cli = names(0..20);
        cli.merge(&names(0..20));
        let (named, more) = cli.named();
        assert_eq!((named.len(), more), (super::MAX_FACT_TARGETS, 4));
        // A third process with 2 other names: 6 more.
        cli.merge(&names(20..22));
        assert_eq!(cli.named().1, 6);
    }
}
