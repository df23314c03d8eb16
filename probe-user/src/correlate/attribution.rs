//! Who probed: each probe listed before a network call names the processes that made
//! it and how they are related to the caller (self, parent, child, sibling...), and a
//! rule's match names who made the reads it counted. A connect by `curl` after its
//! parent `node` read the proxy must read "node read it; its child curl connected",
//! never "curl probed".

use crate::process::ProcessTable;
use crate::records::{MAX_ACTORS, PriorProbe, ProbeActor, ProbedBy, Relation, RuleMatch};

/// How `pid` is related to the caller, whose lineage (itself first) is `up`, from the
/// process table's lineage (bounded by `MAX_PARENTS`).
fn relation(procs: &ProcessTable, pid: u32, up: &[u32]) -> Relation {
    let Some(&caller) = up.first() else {
        return Relation::Relative;
    };
    if pid == caller {
        return Relation::Itself;
    }
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

/// Fills each row's `by` with its first `MAX_ACTORS` processes. The caller's lineage is
/// walked once, and each process's actor once, however many rows name it (a record
/// lists up to 100 rows, mostly by the same few processes).
pub fn attribute_rows(rows: &mut [PriorProbe], procs: &ProcessTable, caller: u32) {
    let up = procs.lineage(caller);
    let mut known: std::collections::HashMap<u32, ProbeActor> = std::collections::HashMap::new();
    for row in rows {
        row.by = row
            .pids
            .iter()
            .take(MAX_ACTORS)
            .map(|&pid| {
                known
                    .entry(pid)
                    .or_insert_with(|| ProbeActor {
                        pid,
                        process: procs
                            .get(pid)
                            .map(|p| p.name().to_owned())
                            .unwrap_or_default(),
                        relation: relation(procs, pid, &up),
                    })
                    .clone()
            })
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
