//! The human format. Every string in a record is already escaped.

use std::fmt::Write as _;

use crate::records::{Body, ConnectionRecord, Family, Record, RunReport, SeenAt};

pub fn render(record: &Record) -> String {
    let mut s = String::new();
    let offset = record.header.offset_ms.unwrap_or(0.0);
    let pid = record.header.pid.unwrap_or(0);
    match &record.body {
        Body::Exec(e) => {
            let _ = writeln!(
                s,
                "{:>9}  [{}] exec    {}{}  argv: {}{}{}",
                secs(offset),
                pid,
                e.exe,
                if e.exe_truncated { " (truncated)" } else { "" },
                shell_words(&e.argv),
                if e.argv_incomplete {
                    " …(more arguments)"
                } else {
                    ""
                },
                if e.argv_lost {
                    " (arguments lost, counted)"
                } else if e.argv_truncated.is_empty() {
                    ""
                } else {
                    " (some arguments truncated)"
                }
            );
        }
        Body::Probe(p) => {
            let _ = writeln!(
                s,
                "{:>9}  [{}] probe   {:<10} {:<9} {}{}{} -> {}  ({})",
                secs(offset),
                pid,
                p.categories.join(","),
                p.how,
                p.target,
                if p.truncated { " (truncated)" } else { "" },
                match (&p.given_path, p.resolved_by) {
                    (Some(given), Some(by)) => format!(
                        " (as {given}, {})",
                        if by == crate::records::ResolvedBy::KernelInode {
                            "same file, matched by inode"
                        } else {
                            "resolved by probectl"
                        }
                    ),
                    _ => String::new(),
                },
                match (&p.value_prefix, p.folded) {
                    (_, true) => format!(
                        "{} (a burst: further probes under this prefix are counted in the report)",
                        p.result
                    ),
                    (Some(v), false) => format!("{} = {v}", p.result),
                    (None, false) => p.result.to_string(),
                },
                p.process
            );
        }
        Body::Connect(c) => {
            let _ = writeln!(
                s,
                "{:>9}  [{}] connect {}  ({})",
                secs(offset),
                pid,
                dest_line(c),
                c.process
            );
            if c.probes_before.is_empty() {
                let _ = writeln!(s, "{:>9}           no policy probes before it", "");
            } else {
                let cats: Vec<&str> = c
                    .probes_before
                    .iter()
                    .map(|p| p.category.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let _ = writeln!(s, "{:>9}           after probing: {}", "", cats.join(", "));
            }
            rule_lines(&mut s, &c.matched_rules, &format!("{:>9}           ", ""));
        }
        Body::RuleMatch(m) => {
            let target = match &m.destination {
                Some(d) => d.to_string(),
                None => m.names.join(","),
            };
            let _ = writeln!(
                s,
                "{:>9}  [{}] ALERT   rule {} [{}]: {} probed {} then {} {target}",
                secs(offset),
                pid,
                m.matched.rule,
                m.matched.severity.as_str(),
                m.process,
                m.matched.categories.join(", "),
                m.event.as_str(),
            );
        }
        Body::ConnectOutcome(o) => {
            let _ = writeln!(
                s,
                "{:>9}  [{}] connect {} {} ({:.1} ms after connect)",
                secs(offset),
                pid,
                o.destination,
                o.outcome,
                o.ms_after_connect
            );
        }
        Body::DnsQuery(q) => {
            let server = q
                .server
                .as_ref()
                .map(|d| format!(" to {d}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "{:>9}  [{}] dns     query {} {}{server}  ({})",
                secs(offset),
                pid,
                q.names.join(","),
                q.types.join(","),
                q.process
            );
            rule_lines(&mut s, &q.matched_rules, &format!("{:>9}           ", ""));
        }
        Body::FirstBytes(f) => {
            let _ = writeln!(
                s,
                "{:>9}  [{}] {:<7} {}{}  ({})",
                secs(offset),
                pid,
                match f.protocol {
                    crate::records::AppProtocol::Tls => "tls",
                    crate::records::AppProtocol::Http => "http",
                },
                super::route::named_route(
                    f.tls_server_name.as_deref(),
                    f.http.as_ref(),
                    &f.destination
                ),
                // An HTTP route names its destination; a TLS one by name only.
                match (&f.tls_server_name, &f.http) {
                    (Some(_), None) => format!(" at {}", f.destination),
                    _ => String::new(),
                },
                f.process
            );
            rule_lines(&mut s, &f.matched_rules, &format!("{:>9}           ", ""));
        }
        Body::DnsAnswer(a) => {
            let _ = writeln!(
                s,
                "{:>9}  [{}] dns     {} -> {}",
                secs(offset),
                pid,
                a.name,
                if a.addresses.is_empty() {
                    "(no address)".to_owned()
                } else {
                    a.addresses.join(", ")
                }
            );
        }
        Body::Sensor(a) => {
            let verdict = if a.attached {
                "attached".to_owned()
            } else {
                format!("NOT attached: {}", a.error.as_deref().unwrap_or("?"))
            };
            let _ = writeln!(s, "{:>9}  sensor  {} {verdict}", "", a.attach_point);
        }
        Body::Repeated(r) => {
            let _ = writeln!(
                s,
                "{:>9}  repeated {} more {} like: {} (tree {}, {} to {})",
                "",
                r.count,
                r.record_type.name(),
                r.like,
                record.header.tree.unwrap_or(0),
                r.first_time.rfc3339(),
                r.last_time.rfc3339()
            );
        }
        Body::Loss(l) => {
            let parts: Vec<String> = l
                .losses
                .iter()
                .map(|c| format!("{} {} (total {})", c.source, c.count, c.total))
                .collect();
            let _ = writeln!(s, "{:>9}  LOST    {}", "", parts.join(", "));
        }
        Body::Exit(e) => {
            let code = e
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "unknown (no exit_group)".into());
            let _ = writeln!(s, "{:>9}  [{}] exit    code {code}", secs(offset), pid);
        }
        Body::Watching(w) => {
            let roots: Vec<String> = w.roots.iter().map(u32::to_string).collect();
            let _ = writeln!(
                s,
                "probectl: watching pid {} and its descendants ({} processes now; policy {}); Ctrl-C stops and reports",
                roots.join(", "),
                w.pids.len(),
                w.policy
            );
        }
        Body::PolicyReload(p) => {
            let _ = match (&p.error, p.ok) {
                (_, true) => writeln!(
                    s,
                    "{:>9}  policy  reloaded: {} ({}) is in force",
                    "", p.policy, p.source
                ),
                (Some(err), false) => writeln!(
                    s,
                    "{:>9}  policy  reload REFUSED, {} stays in force: {err}",
                    "", p.policy
                ),
                (None, false) => writeln!(s, "{:>9}  policy  reload refused", ""),
            };
        }
        Body::Report(r) => render_report(&mut s, r),
    }
    s
}

fn rule_lines(s: &mut String, rules: &[crate::records::RuleMatch], indent: &str) {
    for m in rules {
        let _ = writeln!(
            s,
            "{indent}rule {} [{}] matched: probed {}{}",
            m.rule,
            m.severity.as_str(),
            m.categories.join(", "),
            if m.suppressed {
                " (repeat, suppressed)"
            } else {
                ""
            }
        );
    }
}

/// ANSI colour of a record's lines: probes yellow, connections cyan, alerts and
/// refused reloads red, execs and exits dim. Applied per line, so a line never
/// carries a colour into the next.
pub fn paint(record: &Record, text: &str) -> String {
    let code = match &record.body {
        Body::Probe(_) => "33",
        Body::Connect(c) if c.matched_rules.is_empty() => "36",
        Body::Connect(_) | Body::RuleMatch(_) => "1;31",
        Body::PolicyReload(p) if !p.ok => "1;31",
        Body::Exec(_) | Body::Exit(_) | Body::Sensor(_) => "2",
        Body::DnsQuery(_) | Body::DnsAnswer(_) | Body::ConnectOutcome(_) | Body::FirstBytes(_) => {
            "36"
        }
        _ => return text.to_owned(),
    };
    text.lines()
        .map(|line| format!("\x1b[{code}m{line}\x1b[0m\n"))
        .collect()
}

fn secs(ms: f64) -> String {
    format!("+{:.3}s", ms / 1000.0)
}

fn dest_line(c: &ConnectionRecord) -> String {
    let outcome = c
        .outcome
        .as_ref()
        .map(|o| format!(", {o}"))
        .unwrap_or_default();
    if c.destination.family == Family::Unix {
        return format!("{} -> {}{outcome}", c.destination, c.result);
    }
    let domain = c
        .domain
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    let via = if c.seen_at == SeenAt::CgroupHook {
        " (not by a connect/send syscall: io_uring; seen by the cgroup hook)"
    } else {
        ""
    };
    let route = if c.tls_server_name.is_some() || c.http.is_some() {
        format!(
            "; {}",
            super::route::named_route(
                c.tls_server_name.as_deref(),
                c.http.as_ref(),
                &c.destination
            )
        )
    } else {
        String::new()
    };
    format!(
        "{}{domain} -> {}{outcome}{via}{route}",
        c.destination, c.result
    )
}

fn render_report(s: &mut String, r: &RunReport) {
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
            let _ = writeln!(
                s,
                "    {kind} {:<28} via {:<18} x{:<4} first at {}  pid {}",
                target,
                p.how.iter().map(|h| h.name()).collect::<Vec<_>>().join(","),
                p.count,
                secs(p.first_offset_ms),
                pids.join(",")
            );
        }
    }
    let _ = writeln!(s, "\nConnections:");
    if r.connections.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for kept in &r.connections {
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
        if c.probes_before.is_empty() {
            let _ = writeln!(s, "    no policy probes before it");
        }
        for p in &c.probes_before {
            let _ = writeln!(
                s,
                "    before it: {:<10} {:<10} {:<28} x{:<4} {:.1} ms before",
                p.category, p.how, p.target, p.count, p.first_ms_before
            );
        }
        rule_lines(s, &c.matched_rules, "    ");
    }
    if !r.rules.is_empty() {
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
        }
    }
    if !r.clis.is_empty() {
        let _ = writeln!(s, "\nPer CLI:");
    }
    for c in &r.clis {
        let pids: Vec<String> = c.pids.iter().map(u32::to_string).collect();
        let what = match (&c.script, &c.package) {
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
            _ => c.exe.clone(),
        };
        let _ = writeln!(s, "  {what} (pid {})", pids.join(", "));
        let none = || "(none)".to_owned();
        let _ = writeln!(
            s,
            "    probed:    {}",
            if c.categories.is_empty() {
                none()
            } else {
                c.categories.join(", ")
            }
        );
        let dests: Vec<String> = c.destinations.iter().map(super::route::contacted).collect();
        let _ = writeln!(
            s,
            "    contacted: {}",
            if dests.is_empty() {
                none()
            } else {
                dests.join(", ")
            }
        );
        if !c.rules.is_empty() {
            let _ = writeln!(s, "    rules:     {}", c.rules.join(", "));
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Sensors in use:");
    for c in &r.sensors {
        let family = c.family.as_str();
        let fallback = if c.passed_over.is_empty() {
            ""
        } else {
            " (fallback; `probectl doctor` says why)"
        };
        let _ = writeln!(s, "  {family:<8} {}{fallback}", c.chosen);
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
        let _ = writeln!(s, "Sensors: all attached.");
    }
    if r.drops.is_empty() {
        let _ = writeln!(s, "Lost events: none.");
    } else {
        let _ = writeln!(s, "LOST EVENTS:");
        for d in &r.drops {
            let _ = writeln!(s, "  {}: {}", d.reason, d.count);
        }
    }
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
    if !r.truncated.is_empty() {
        let _ = writeln!(s, "Cut at the capture limit:");
        for d in &r.truncated {
            let _ = writeln!(s, "  {}: {}", d.reason, d.count);
        }
    }
    if !r.filtered.is_empty() {
        let _ = writeln!(s, "Matched in the kernel but not reported:");
        for d in &r.filtered {
            let _ = writeln!(s, "  {}: {}", d.reason, d.count);
        }
    }
    let _ = writeln!(s, "Not covered by this build:");
    for note in &r.coverage_notes {
        let _ = writeln!(s, "  - {note}");
    }
    let _ = writeln!(s, "Command exit code: {}", r.exit_code);
}

/// Joins arguments so their boundaries stay visible: an argument with a space, a
/// quote or nothing in it is single-quoted, shell style.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && !a.contains([' ', '\'', '"', '\t']) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    #[test]
    fn colours_wrap_each_line_and_always_reset() {
        let record = crate::records::Record {
            header: crate::records::Header {
                offset_ms: Some(1.0),
                pid: Some(7),
                ..crate::records::Header::now()
            },
            body: crate::records::Body::Exit(crate::records::ExitRecord { exit_code: Some(0) }),
        };
        let plain = super::render(&record);
        let painted = super::paint(&record, &plain);
        assert_eq!(painted.lines().count(), plain.lines().count());
        assert!(
            painted
                .lines()
                .all(|l| l.starts_with("\x1b[2m") && l.ends_with("\x1b[0m")),
            "{painted:?}"
        );
        assert!(!crate::output::use_color(true, false), "--no-color");
        assert!(!crate::output::use_color(false, true), "never into a file");
    }

    #[test]
    fn argument_boundaries_stay_visible() {
        let argv = ["node", "my cli.js", "", "it's"].map(String::from);
        assert_eq!(shell_words(&argv), r#"node 'my cli.js' '' 'it'\''s'"#);
    }
}
