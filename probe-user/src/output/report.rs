//! The readable end-of-run report. By default it fits a screen: one summary per CLI
//! (what it read, by category and kind of evidence, with the values the policy shows;
//! where it connected; its local IPC; the rules it matched), children that only
//! inherited the environment folded into one line, the rules with who read what, and
//! one line each for sensors, losses and coverage. `--details` adds every probe and
//! every connection with the probes before it (folded: a connection with the same
//! probes as the one before says so; `/proc/N/environ` rows fold by reader). Every
//! category, destination and rule is in both; `--json` and the sinks keep everything.

use std::fmt::Write as _;

use super::human::{dest_line, secs, shell_words};
use crate::ops::Evidence;
use crate::records::{CliSummary, ConnectionRecord, Family, PriorProbe, RunReport, Stamped};

/// Targets named per category on a summary line; the rest are counted.
const SUMMARY_TARGETS: usize = 4;
/// Destinations named per CLI on the summary; the rest are counted.
const SUMMARY_DESTINATIONS: usize = 6;
/// Programs named on the "only inherited" line.
const INHERITED_NAMES: usize = 8;

pub fn render_report(s: &mut String, r: &RunReport, details: bool) {
    header(s, r);
    clis(s, r);
    rules(s, r);
    if details {
        probes_by_category(s, r);
        connections(s, r);
    } else {
        connection_counts(s, r);
    }
    footer(s, r, details);
}

fn header(s: &mut String, r: &RunReport) {
    let _ = writeln!(s, "\n== probectl report (policy: {}) ==", r.policy);
    let cli = &r.cli;
    let _ = writeln!(
        s,
        "CLI      {} (pid {}{})",
        cli.name,
        cli.pid,
        cli.uid.map(|u| format!(", uid {u}")).unwrap_or_default()
    );
    let _ = writeln!(s, "  exe    {}", cli.image.exe);
    if let Some(script) = &cli.script {
        let _ = writeln!(s, "  script {script}");
    }
    if let Some(pkg) = &cli.image.package {
        let _ = writeln!(
            s,
            "  package {}{} ({})",
            pkg.name,
            pkg.version
                .as_deref()
                .map(|v| format!("@{v}"))
                .unwrap_or_default(),
            pkg.manifest
        );
    }
    let _ = writeln!(s, "  argv   {}", shell_words(&cli.image.argv));
    if let Some(cwd) = &cli.image.cwd {
        let _ = writeln!(s, "  cwd    {cwd}");
    }
    if let Some(container) = &cli.image.container {
        let _ = writeln!(s, "  container {container}");
    }
}

/// A CLI that only had policy names in its environment: no read, check or
/// enumeration, no connection.
fn only_inherited(c: &CliSummary) -> bool {
    c.categories.is_empty()
        && c.checked.is_empty()
        && c.destinations.is_empty()
        && c.local_ipc.is_empty()
        && c.facts.iter().all(|f| f.evidence == Evidence::Exposed)
}

/// Characters of a script (or `-c` program) shown in a CLI's title.
const TITLE_SCRIPT: usize = 60;

fn cli_title(c: &CliSummary) -> String {
    let script = c.script.as_ref().map(|s| {
        if s.chars().count() > TITLE_SCRIPT {
            format!("{}…", s.chars().take(TITLE_SCRIPT).collect::<String>())
        } else {
            s.clone()
        }
    });
    let what = match (&script, &c.package) {
        (Some(script), Some(pkg)) => format!(
            "{} {script} ({}{})",
            c.name,
            pkg.name,
            pkg.version
                .as_deref()
                .map(|v| format!("@{v}"))
                .unwrap_or_default()
        ),
        (Some(script), None) => format!("{} {script}", c.name),
        (None, Some(pkg)) => format!(
            "{} ({}{})",
            c.exe,
            pkg.name,
            pkg.version
                .as_deref()
                .map(|v| format!("@{v}"))
                .unwrap_or_default()
        ),
        _ => c.exe.clone(),
    };
    let pids = match c.pids.as_slice() {
        [one] => format!("pid {one}"),
        [first, rest @ ..] => format!("pid {first} and {} more", rest.len()),
        [] => String::new(),
    };
    format!("{what} ({pids})")
}

/// `timezone: TZ=Asia/Shanghai, /etc/localtime; api-relay: ANTHROPIC_BASE_URL=...`
fn facts_line(c: &CliSummary, kinds: &[Evidence]) -> Option<String> {
    let parts: Vec<String> = c
        .facts
        .iter()
        .filter(|f| kinds.contains(&f.evidence))
        .map(|f| {
            let shown: Vec<&str> = f
                .targets
                .iter()
                .take(SUMMARY_TARGETS)
                .map(String::as_str)
                .collect();
            let more = f.more + f.targets.len().saturating_sub(SUMMARY_TARGETS) as u64;
            let more = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            if f.evidence == Evidence::Enumerated {
                format!("{}: the whole environment", f.category)
            } else if shown.is_empty() {
                f.category.clone()
            } else {
                format!("{}: {}{more}", f.category, shown.join(", "))
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn clis(s: &mut String, r: &RunReport) {
    let _ = writeln!(s, "\nWhat each program read, and where it connected:");
    let (inherited, shown): (Vec<&CliSummary>, Vec<&CliSummary>) =
        r.clis.iter().partition(|c| only_inherited(c));
    if shown.is_empty() && inherited.is_empty() {
        let _ = writeln!(s, "  (no policy probe and no connection)");
    }
    for c in shown {
        let _ = writeln!(s, "  {}", cli_title(c));
        let rows = [
            ("read", facts_line(c, &[Evidence::Read])),
            ("listed env", facts_line(c, &[Evidence::Enumerated])),
            ("checked", facts_line(c, &[Evidence::Checked])),
            ("exposed", facts_line(c, &[Evidence::Exposed])),
        ];
        for (label, line) in rows {
            if let Some(line) = line {
                let _ = writeln!(s, "    {label:<11} {line}");
            }
        }
        let dests: Vec<String> = c
            .destinations
            .iter()
            .take(SUMMARY_DESTINATIONS)
            .map(super::route::contacted)
            .collect();
        let more = c.destinations.len().saturating_sub(SUMMARY_DESTINATIONS);
        let _ = writeln!(
            s,
            "    {:<11} {}{}",
            "connected",
            if dests.is_empty() {
                "(none)".to_owned()
            } else {
                dests.join(", ")
            },
            if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            }
        );
        if !c.local_ipc.is_empty() {
            let ipc: Vec<String> = c.local_ipc.iter().map(ToString::to_string).collect();
            let _ = writeln!(s, "    {:<11} {}", "local IPC", ipc.join(", "));
        }
        if c.bypasses > 0 {
            let _ = writeln!(
                s,
                "    {:<11} {} connection(s) went direct, past a proxy or relay it read",
                "BYPASSED", c.bypasses
            );
        }
        if !c.rules.is_empty() {
            let _ = writeln!(s, "    {:<11} {}", "rules", c.rules.join(", "));
        }
    }
    if !inherited.is_empty() {
        let mut names: Vec<(String, usize)> = Vec::new();
        let mut cats: Vec<&str> = Vec::new();
        let mut pids = 0;
        for c in &inherited {
            pids += c.pids.len();
            match names.iter_mut().find(|(n, _)| *n == c.name) {
                Some((_, k)) => *k += c.pids.len(),
                None => names.push((c.name.clone(), c.pids.len())),
            }
            for e in &c.exposed {
                if !cats.contains(&e.as_str()) {
                    cats.push(e);
                }
            }
        }
        let listed: Vec<String> = names
            .iter()
            .take(INHERITED_NAMES)
            .map(|(n, k)| {
                if *k > 1 {
                    format!("{n} x{k}")
                } else {
                    n.clone()
                }
            })
            .collect();
        let more = names.len().saturating_sub(INHERITED_NAMES);
        let _ = writeln!(
            s,
            "  {pids} more process(es) only inherited the environment ({}), read nothing and connected nowhere: {}{}",
            cats.join(", "),
            listed.join(", "),
            if more > 0 {
                format!(", +{more} more programs")
            } else {
                String::new()
            }
        );
    }
}

/// The verb for a connection in a rule sentence: `connected to 192.0.2.1:443`.
fn verb(c: &ConnectionRecord) -> String {
    let name = c.domain.as_deref();
    let target = c.destination.named(name);
    match c.result {
        crate::records::ConnectResult::Sent => format!("sent to {target}"),
        _ => format!("connected to {target}"),
    }
}

fn rules(s: &mut String, r: &RunReport) {
    if r.rules.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nRules matched:");
    for rule in &r.rules {
        let _ = writeln!(
            s,
            "  {} [{}, {}] x{}{} first at {}",
            rule.rule,
            rule.severity.as_str(),
            if rule.action == crate::policy::rules::Action::Alert {
                "alert"
            } else {
                "log"
            },
            rule.matches,
            if rule.suppressed > 0 {
                format!(" ({} repeats suppressed)", rule.suppressed)
            } else {
                String::new()
            },
            secs(rule.first_offset_ms)
        );
        // Its first match among the kept connections, as a sentence that names who read
        // and who connected.
        let first = r.connections.iter().find_map(|kept| {
            let m = kept
                .body
                .matched_rules
                .iter()
                .find(|m| m.rule == rule.rule)?;
            Some(m.sentence(
                &kept.body.process,
                kept.header.pid.unwrap_or(0),
                &verb(&kept.body),
            ))
        });
        if let Some(sentence) = first {
            let _ = writeln!(s, "    first: {sentence}");
        }
    }
}

fn probes_by_category(s: &mut String, r: &RunReport) {
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

use crate::correlate::environ_of_other;

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

fn connections(s: &mut String, r: &RunReport) {
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

fn connection_counts(s: &mut String, r: &RunReport) {
    let ipc = r
        .connections
        .iter()
        .filter(|k| k.body.destination.family == Family::Unix)
        .count();
    let bypassed = r
        .connections
        .iter()
        .filter(|k| k.body.bypassed.is_some())
        .count();
    let _ = writeln!(
        s,
        "\nConnections: {} network, {ipc} local IPC{}; `--details` lists each with the probes before it and who made them.",
        r.connections.len() - ipc,
        if bypassed > 0 {
            format!(", {bypassed} BYPASSED a proxy or relay")
        } else {
            String::new()
        }
    );
}

fn footer(s: &mut String, r: &RunReport, details: bool) {
    let _ = writeln!(s);
    if details {
        let _ = writeln!(s, "Sensors in use:");
        for c in &r.sensors {
            let fallback = if c.passed_over.is_empty() {
                ""
            } else {
                " (fallback; `probectl doctor` says why)"
            };
            let _ = writeln!(s, "  {:<8} {}{fallback}", c.family.as_str(), c.chosen);
        }
    }
    if r.partial {
        let _ = writeln!(
            s,
            "PARTIAL: these sensors did not attach, so what they watch is missing:"
        );
        for u in &r.unattached_sensors {
            let _ = writeln!(
                s,
                "  {} ({}): {}",
                u.program,
                u.attach_point,
                u.error.as_deref().unwrap_or("?")
            );
        }
    } else {
        let fallbacks: Vec<&str> = r
            .sensors
            .iter()
            .filter(|c| !c.passed_over.is_empty())
            .map(|c| c.family.as_str())
            .collect();
        let _ = writeln!(
            s,
            "Sensors: all attached{}.",
            if fallbacks.is_empty() || details {
                String::new()
            } else {
                format!(
                    " ({} on a fallback tier; `probectl doctor` says why)",
                    fallbacks.join(", ")
                )
            }
        );
    }
    if r.drops.is_empty() {
        let _ = writeln!(s, "Lost events: none.");
    } else {
        let _ = writeln!(s, "LOST EVENTS:");
        for d in &r.drops {
            let _ = writeln!(s, "  {}: {}", d.reason, d.count);
        }
    }
    if details {
        timeline(s, r);
    }
    if !r.truncated.is_empty() {
        let parts: Vec<String> = r
            .truncated
            .iter()
            .map(|d| format!("{} {}", d.reason, d.count))
            .collect();
        let _ = writeln!(s, "Cut at the capture limit: {}", parts.join(", "));
    }
    if !r.filtered.is_empty() {
        let parts: Vec<String> = r
            .filtered
            .iter()
            .map(|d| format!("{} {}", d.reason, d.count))
            .collect();
        let _ = writeln!(
            s,
            "Matched in the kernel but not reported: {}",
            parts.join(", ")
        );
    }
    if details {
        let _ = writeln!(s, "Not covered by this build:");
        for note in &r.coverage_notes {
            let _ = writeln!(s, "  - {note}");
        }
    } else {
        let _ = writeln!(
            s,
            "Not covered by this build: {} notes (`--details`, or `probectl doctor`).",
            r.coverage_notes.len()
        );
    }
    let _ = writeln!(s, "Command exit code: {}", r.exit_code);
}

fn timeline(s: &mut String, r: &RunReport) {
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
