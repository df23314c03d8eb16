//! The readable end-of-run report. By default it fits a screen: one summary per CLI
//! (what it read, by category and kind of evidence, with the values the policy shows;
//! where it connected; its local IPC; the rules it matched), children that only
//! inherited the environment folded into one line, the rules with who read what, and
//! one line each for sensors, losses and coverage. `--details` adds every probe and
//! every connection with the probes before it (folded: a connection with the same
//! probes as the one before says so; `/proc/N/environ` rows fold by reader). Every
//! category, destination and rule is in both; `--json` and the sinks keep everything.

use std::fmt::Write as _;

use super::human::{secs, shell_words};
use super::report_details;
use crate::ops::Evidence;
use crate::records::{CliSummary, ConnectionRecord, Family, RunReport};

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
    blocks(s, r, details);
    if details {
        report_details::probes_by_category(s, r);
        report_details::connections(s, r);
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
        // A CLI whose reads cannot be seen (static, a runtime that copies the
        // environment) keeps its own entry and note.
        && c.notes.is_empty()
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
        for note in &c.notes {
            let mark = if c.partial { "PARTIAL: " } else { "" };
            let _ = writeln!(s, "    {:<11} {mark}{note}", "note");
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
    let datagram = c.event == crate::policy::rules::NetworkEvent::UdpSend;
    match c.result {
        crate::records::ConnectResult::Sent => format!("sent to {target}"),
        // Refused before it left: by a block rule, or by another cgroup or LSM policy.
        crate::records::ConnectResult::Failed(r) if r == -libc::EPERM && datagram => {
            format!("tried to send to {target} (refused)")
        }
        crate::records::ConnectResult::Dropped => format!("tried to send to {target} (dropped)"),
        crate::records::ConnectResult::Failed(r) if r == -libc::EPERM => {
            format!("tried to connect to {target} (refused)")
        }
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
            match rule.action {
                crate::policy::rules::Action::Log => "log",
                crate::policy::rules::Action::Alert => "alert",
                crate::policy::rules::Action::Block => "block",
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

/// Block rules: the mode, the rules, and each call they refused or would refuse,
/// with who read what.
fn blocks(s: &mut String, r: &RunReport, details: bool) {
    let Some(e) = &r.enforcement else {
        return;
    };
    let mode = if e.enforcing {
        "enforcing: matching calls are refused with EPERM"
    } else {
        "observing: matching calls go through, reported as would-block; `--enforce` or the daemon's `enforce: true` refuses them"
    };
    let _ = writeln!(s, "\nBlock rules ({mode}): {}", e.block_rules.join(", "));
    if let Some(gap) = &e.not_judged {
        let _ = writeln!(s, "  {gap}");
    }
    if let Some(dns) = &e.dns {
        dns_trust(s, dns);
    }
    if r.blocks.is_empty() {
        let _ = writeln!(s, "  no call matched them");
        return;
    }
    // Identical calls (same verdict, rule, sentence) fold into one line with a count:
    // a CLI's resolver retries are one fact.
    let mut lines: Vec<(String, f64, f64, usize)> = Vec::new();
    for b in &r.blocks {
        let record = &b.record;
        let pid = record.header.pid.unwrap_or(0);
        let line = format!(
            "{} [{}] {}",
            if b.enforced { "BLOCKED" } else { "WOULD BLOCK" },
            record.body.matched.rule,
            record.body.sentence(pid, b.enforced)
        );
        let at = record.header.offset_ms.unwrap_or(0.0);
        match lines.iter_mut().find(|(l, ..)| *l == line) {
            Some((_, _, last, n)) => {
                *last = at;
                *n += 1;
            }
            None => lines.push((line, at, at, 1)),
        }
    }
    let shown = if details { lines.len() } else { 10 };
    for (line, first, last, n) in lines.iter().take(shown) {
        let when = if *n > 1 {
            format!("x{n} {}..{}", secs(*first), secs(*last))
        } else {
            secs(*first)
        };
        let _ = writeln!(s, "  {when} {line}");
    }
    if lines.len() > shown {
        let _ = writeln!(
            s,
            "  ... {} more (`--details` lists them)",
            lines.len() - shown
        );
    }
}

/// Which resolvers' answers name host-rule addresses, and the answers that did not.
fn dns_trust(s: &mut String, dns: &crate::records::DnsTrustReport) {
    use crate::policy::dns_trust::TrustSource;
    let from = match dns.trusted_from {
        TrustSource::ResolvConf => "/etc/resolv.conf",
        TrustSource::Configured => "configured",
    };
    let list = if dns.trusted.is_empty() {
        "none".to_owned()
    } else {
        dns.trusted.join(", ")
    };
    let _ = writeln!(
        s,
        "  host names learned from the DNS answers of: {list} ({from})"
    );
    for u in &dns.untrusted {
        let _ = writeln!(
            s,
            "  {} DNS answer{} from {} not trusted for block rules (not learned)",
            u.answers,
            if u.answers == 1 { "" } else { "s" },
            u.server
        );
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
    for why in &r.partial_reasons {
        let _ = writeln!(s, "PARTIAL: {why}");
    }
    if !r.unattached_sensors.is_empty() {
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
        report_details::timeline(s, r);
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
