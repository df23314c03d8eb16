//! Who probed: each probe listed before a network call names the processes that made
//! it and how they are related to the caller (self, parent, child, sibling...), and a
//! rule's match names who made the reads it counted. A connect by `curl` after its
//! parent `node` read the proxy must read "node read it; its child curl connected",
//! never "curl probed".

use crate::process::ProcessTable;
use crate::records::{MAX_ACTORS, PriorProbe, ProbeActor, ProbedBy, Relation, RuleMatch};

/// How `pid` is related to `caller`, from the process table's lineage (bounded by
/// `MAX_PARENTS`).
pub fn relation(procs: &ProcessTable, pid: u32, caller: u32) -> Relation {
    if pid == caller {
        return Relation::Itself;
    }
    let up = procs.lineage(caller);
    if let Some(i) = up.iter().position(|&p| p == pid) {
        return if i == 1 {
            Relation::Parent
        } else {
            Relation::Ancestor
        };
    }
    let theirs = procs.lineage(pid);
    if let Some(i) = theirs.iter().position(|&p| p == caller) {
        return if i == 1 {
            Relation::Child
        } else {
            Relation::Descendant
        };
    }
    match (up.get(1), theirs.get(1)) {
        (Some(a), Some(b)) if a == b => Relation::Sibling,
        _ => Relation::Relative,
    }
}

fn actor(procs: &ProcessTable, pid: u32, caller: u32) -> ProbeActor {
    ProbeActor {
        pid,
        process: procs
            .get(pid)
            .map(|p| p.name().to_owned())
            .unwrap_or_default(),
        relation: relation(procs, pid, caller),
    }
}

/// Fills each row's `by` with its first `MAX_ACTORS` processes.
pub fn attribute_rows(rows: &mut [PriorProbe], procs: &ProcessTable, caller: u32) {
    for row in rows {
        row.by = row
            .pids
            .iter()
            .take(MAX_ACTORS)
            .map(|&pid| actor(procs, pid, caller))
            .collect();
    }
}

/// Fills each match's `probed_by` from the rows that made it: the rule's categories,
/// the kinds of evidence it counts, inside its window.
pub fn attribute_matches(matches: &mut [RuleMatch], rows: &[PriorProbe]) {
    for m in matches {
        m.probed_by = m
            .categories
            .iter()
            .map(|category| {
                let mut by: Vec<ProbeActor> = Vec::new();
                for row in rows.iter().filter(|r| {
                    &r.category == category
                        && m.counted.contains(r.evidence)
                        && r.last_ms_before <= m.within_ms
                }) {
                    for a in &row.by {
                        if by.len() < MAX_ACTORS && !by.iter().any(|b| b.pid == a.pid) {
                            by.push(a.clone());
                        }
                    }
                }
                ProbedBy {
                    category: category.clone(),
                    by,
                }
            })
            .collect();
    }
}
