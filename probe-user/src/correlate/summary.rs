//! The end-of-run summary per CLI: each distinct program (exe, script, package) that
//! probed or connected, with the categories it probed, the destinations it contacted
//! and the rules its connections matched.

use std::collections::BTreeMap;

use super::Correlator;
use crate::process::ProcessTable;
use crate::records::{CliSummary, ContactedDestination};

impl Correlator {
    /// One entry per CLI that probed or connected, in order of first appearance (pid),
    /// over every tree or only `tree`'s.
    pub fn cli_summaries(&self, procs: &ProcessTable, tree: Option<u32>) -> Vec<CliSummary> {
        let by_pid = self.timelines.categories_by_pid();
        let mut pids: Vec<u32> = by_pid.keys().copied().collect();
        // One pass over the kept connections, not one per process.
        let mut conns_of: std::collections::HashMap<u32, Vec<&crate::records::ConnectionRecord>> =
            std::collections::HashMap::new();
        for c in &self.connections {
            if let Some(pid) = c.header.pid {
                conns_of.entry(pid).or_default().push(&c.body);
            }
        }
        pids.extend(conns_of.keys().copied());
        if let Some(tree) = tree {
            pids.retain(|&p| procs.tree_of(p) == tree);
        }
        pids.sort_unstable();
        pids.dedup();
        // Keyed by what identifies a CLI, in first-pid order.
        let mut order: Vec<(String, Option<String>, Option<String>)> = Vec::new();
        let mut out: BTreeMap<usize, CliSummary> = BTreeMap::new();
        let mut seen: std::collections::HashSet<(usize, ContactedDestination)> =
            std::collections::HashSet::new();
        for pid in pids {
            let info = procs.get(pid).cloned().unwrap_or_default();
            let key = (
                info.image.exe.clone(),
                info.script().map(str::to_owned),
                info.image.package.as_ref().map(|p| p.name.clone()),
            );
            let slot = match order.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    order.push(key);
                    order.len() - 1
                }
            };
            let s = out.entry(slot).or_insert_with(|| CliSummary {
                name: info.name().to_owned(),
                exe: info.image.exe.clone(),
                script: info.script().map(str::to_owned),
                package: info.image.package.clone(),
                pids: Vec::new(),
                categories: Vec::new(),
                destinations: Vec::new(),
                rules: Vec::new(),
                notes: Vec::new(),
                partial: false,
            });
            s.pids.push(pid);
            add_blind_spots(s, &info.image);
            for c in by_pid.get(&pid).into_iter().flatten() {
                let name = &self.category_names[*c];
                if !s.categories.contains(name) {
                    s.categories.push(name.clone());
                }
            }
            for conn in conns_of.get(&pid).into_iter().flatten() {
                let d = ContactedDestination {
                    destination: conn.destination.clone(),
                    domain: conn.domain.clone(),
                };
                if seen.insert((slot, d.clone())) {
                    s.destinations.push(d);
                }
                for m in &conn.matched_rules {
                    if !s.rules.contains(&m.rule) {
                        s.rules.push(m.rule.clone());
                    }
                }
            }
        }
        let mut list: Vec<CliSummary> = out.into_values().collect();
        for s in &mut list {
            let rank = |c: &String| self.category_names.iter().position(|n| n == c);
            s.categories.sort_by_key(rank);
        }
        list
    }
}

/// The CLI's blind spots from its executable (`exe_facts`), each noted once: a static
/// executable makes its summary partial.
fn add_blind_spots(s: &mut CliSummary, image: &crate::process::Image) {
    if let Some(note) = image.linkage.note() {
        s.partial = true;
        if !s.notes.iter().any(|n| n == note) {
            s.notes.push(note.to_owned());
        }
    }
    if let Some(runtime) = image.runtime {
        let note = runtime.note();
        if !s.notes.contains(&note) {
            s.notes.push(note);
        }
    }
}

/// `partial_reasons` of a report: each partial CLI, its pids and its notes that
/// make it so.
pub fn partial_reasons(clis: &[CliSummary]) -> Vec<String> {
    clis.iter()
        .filter(|c| c.partial)
        .map(|c| {
            let pids: Vec<String> = c.pids.iter().map(u32::to_string).collect();
            let why = c
                .notes
                .iter()
                .filter(|n| n.starts_with("statically linked"))
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            format!("{} (pid {}): {why}", c.name, pids.join(", "))
        })
        .collect()
}
