//! The readable report's details (`--details`): every probe by category, and every
//! connection with the probes before it and who made them, folded where rows repeat;
//! local IPC apart; the timeline's bounds.

use std::fmt::Write as _;

use super::human::{dest_line, secs};
use crate::correlate::environ_of_other;
use crate::ops::Evidence;
use crate::records::{ConnectionRecord, Family, PriorProbe, RunReport, Stamped};

pub(super) fn probes_by_category(s: &mut String, r: &RunReport) {
    let _ = writeln!(s, "\nProbes by category:");
    if r.probes.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for cat in &r.probes {
        let _ = writeln!(s, "  {}", cat.category);
        for p in &cat.probes {
            let kind = format!("{:<4}", p.target_type.name());
            let pids: Vec<String> = p.pids.iter().map(u32::to_string).collect();
            let target = match p.distinct_targets {
                Some(n) => format!("{} ({n} files)", p.target),
                None => p.target.clone(),
            };
            let evidence: Vec<&str> = p.evidence.iter().map(|e| e.name()).collect();
            let _ = writeln!(
                s,
                "    {kind} {:<28} {:<10} via {:<18} x{:<4} first at {}  pid {}",
                target,
                evidence.join(","),
                p.how.iter().map(|h| h.name()).collect::<Vec<_>>().join(","),
                p.count,
                secs(p.first_offset_ms),
                pids.join(",")
            );
        }
    }
}

/// The rows a connection lists, with `/proc/N/environ` reads folded per reader: each
/// row's text, and what it says apart from times (two connections whose rows say the
/// same fold into one).
fn folded_rows(rows: &[PriorProbe]) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut keys = Vec::new();
    let mut environ: Vec<(String, u64, u64, f64)> = Vec::new();
    use crate::records::Relation;
    for p in rows {
        // An exposure matters for the caller's own environment, which came from its
        // ancestors: other branches' exposures are in `--json`, not repeated here.
        if p.evidence == Evidence::Exposed
            && !p.by.iter().any(|a| {
                matches!(
                    a.relation,
                    Relation::Itself | Relation::Parent | Relation::Ancestor
                )
            })
        {
            continue;
        }
        let mut by =
            p.by.iter()
                .take(3)
                .map(|a| match a.relation {
                    Relation::Itself => format!("{} self", a.pid),
                    rel => format!("{} {} {}", a.process, a.pid, rel.name()),
                })
                .collect::<Vec<_>>()
                .join(", ");
        if p.pids.len() > 3 {
            let _ = write!(by, ", +{} more", p.pids.len() - 3);
        }
        if environ_of_other(&p.target) {
            match environ.iter_mut().find(|(b, ..)| *b == by) {
                Some((_, files, count, first)) => {
                    *files += 1;
                    *count += p.count;
                    *first = first.max(p.first_ms_before);
                }
                None => environ.push((by, 1, p.count, p.first_ms_before)),
            }
            continue;
        }
        out.push(format!(
            "{:<12} {:<10} {:<10} {:<28} x{:<4} {:.1} ms before  (by {by})",
            p.category, p.evidence, p.how, p.target, p.count, p.first_ms_before
        ));
        keys.push(format!(
            "{} {} {} {} {} {by}",
            p.category, p.evidence, p.how, p.target, p.count
        ));
    }
    for (by, files, count, first) in environ {
        keys.push(format!("environ {files} {count} {by}"));
        out.push(format!(
            "{:<12} {:<10} {:<10} {:<28} x{:<4} {first:.1} ms before  (by {by})",
            "environment",
            "read",
            "open",
            format!("/proc/*/environ ({files} processes)"),
            count
        ));
    }
    (out, keys)
}

pub(super) fn connections(s: &mut String, r: &RunReport) {
    let (ipc, net): (
        Vec<&Stamped<ConnectionRecord>>,
        Vec<&Stamped<ConnectionRecord>>,
    ) = r
        .connections
        .iter()
        .partition(|k| k.body.destination.family == Family::Unix);
    let _ = writeln!(s, "\nConnections:");
    if net.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    let mut previous: Option<Vec<String>> = None;
    for kept in net {
        let c = &kept.body;
        let lineage: Vec<String> = c.lineage.iter().map(u32::to_string).collect();
        let _ = writeln!(
            s,
            "  {} at {} by {} (pid {})",
            dest_line(c),
            secs(kept.header.offset_ms.unwrap_or(0.0)),
            c.process,
            lineage.join(" < ")
        );
        if let Some(b) = &c.bypassed {
            let _ = writeln!(
                s,
                "    BYPASSED the configured proxy/relay: {}",
                b.settings.join(", ")
            );
        }
        let (rows, keys) = folded_rows(&c.probes_before);
        if rows.is_empty() {
            let _ = writeln!(s, "    no policy probes before it");
        } else if previous.as_ref() == Some(&keys) {
            let _ = writeln!(
                s,
                "    before it: the same {} probe rows as the connection above",
                rows.len()
            );
        } else {
            for row in &rows {
                let _ = writeln!(s, "    before it: {row}");
            }
        }
        if c.probes_before_not_listed > 0 {
            let _ = writeln!(
                s,
                "    before it: {} more rows not listed",
                c.probes_before_not_listed
            );
        }
        super::human::rule_lines(s, &c.matched_rules, "    ");
        previous = Some(keys);
    }
    if !ipc.is_empty() {
        let _ = writeln!(s, "\nLocal IPC (unix sockets; not network calls):");
        // Folded by (endpoint and result, process): nscd is asked once per lookup.
        let mut folded: Vec<(String, String, u32, f64, usize)> = Vec::new();
        for kept in ipc {
            let c = &kept.body;
            let pid = kept.header.pid.unwrap_or(0);
            let line = dest_line(c);
            match folded
                .iter_mut()
                .find(|(l, _, p, ..)| *l == line && *p == pid)
            {
                Some((.., n)) => *n += 1,
                None => folded.push((
                    line,
                    c.process.clone(),
                    pid,
                    kept.header.offset_ms.unwrap_or(0.0),
                    1,
                )),
            }
            if !c.matched_rules.is_empty() {
                super::human::rule_lines(s, &c.matched_rules, "    ");
            }
        }
        for (line, process, pid, at, n) in folded {
            let times = if n > 1 {
                format!(" x{n}")
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {line}{times} first at {} by {process} (pid {pid})",
                secs(at)
            );
        }
    }
}

pub(super) fn timeline(s: &mut String, r: &RunReport) {
    let t = &r.timeline;
    let _ = writeln!(
        s,
        "Timeline: {} of {} distinct probes kept in {} process tree(s){}{}; connections kept up to {}{}.",
        t.distinct_probes,
        t.max_distinct_probes,
        t.trees,
        if t.trees_evicted_after_exit + t.trees_evicted_for_room > 0 {
            format!(
                " ({} trees let go after exit, {} to make room, with {} probes)",
                t.trees_evicted_after_exit, t.trees_evicted_for_room, t.probes_evicted
            )
        } else {
            String::new()
        },
        if t.probes_not_kept > 0 {
            format!(
                " ({} probes of new targets past the bound, counted above)",
                t.probes_not_kept
            )
        } else {
            String::new()
        },
        t.max_connections,
        if t.connections_not_kept > 0 {
            format!(
                " ({} earlier ones streamed, not listed)",
                t.connections_not_kept
            )
        } else {
            String::new()
        }
    );
}
