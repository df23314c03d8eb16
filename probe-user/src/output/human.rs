//! The human format. Every string in a record is already escaped.

use std::fmt::Write as _;

use crate::records::{Body, ConnectionRecord, Family, Record, SeenAt};

pub fn render(record: &Record) -> String {
    render_with(record, false)
}

/// `details`: the end-of-run report lists every probe and connection (`--details`).
pub fn render_with(record: &Record, details: bool) -> String {
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
        // An exposure its parent had too: the environment passed down unchanged, in
        // every child. `--json` keeps it; the readable stream does not repeat it.
        Body::Probe(p) if p.inherited => {}
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
            if c.destination.family == Family::Unix {
                // Local IPC (nscd, D-Bus): not a network call; the report lists it
                // apart, without the probes before it.
            } else if c.probes_before.is_empty() {
                let _ = writeln!(s, "{:>9}           no policy probes before it", "");
            } else {
                let _ = writeln!(
                    s,
                    "{:>9}           after probing: {}",
                    "",
                    after_probing(&c.probes_before)
                );
            }
            if let Some(b) = &c.bypassed {
                let _ = writeln!(
                    s,
                    "{:>9}           BYPASSED the configured proxy/relay: {}",
                    "",
                    b.settings.join(", ")
                );
            }
            rule_lines(&mut s, &c.matched_rules, &format!("{:>9}           ", ""));
        }
        Body::Blocked(b) | Body::WouldBlock(b) => {
            let enforced = matches!(record.body, Body::Blocked(_));
            let (word, what) = if enforced {
                ("BLOCKED", "refused")
            } else {
                ("WOULD BLOCK", "would refuse (not enforcing)")
            };
            let _ = writeln!(
                s,
                "{:>9}  [{}] {word} rule {} [{}], {what}: {}",
                secs(offset),
                pid,
                b.matched.rule,
                b.matched.severity.as_str(),
                b.sentence(pid, enforced),
            );
        }
        Body::RuleMatch(m) => {
            let target = match &m.destination {
                Some(d) => d.to_string(),
                None => m.names.join(","),
            };
            let verb = match m.event {
                crate::policy::rules::NetworkEvent::DnsQuery => format!("asked DNS for {target}"),
                crate::policy::rules::NetworkEvent::UdpSend => format!("sent to {target}"),
                _ => format!("connected to {target}"),
            };
            let _ = writeln!(
                s,
                "{:>9}  [{}] ALERT   rule {} [{}]: {}",
                secs(offset),
                pid,
                m.matched.rule,
                m.matched.severity.as_str(),
                m.matched.sentence(&m.process, pid, &verb),
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
        Body::Report(r) => super::report::render_report(&mut s, r, details),
    }
    s
}

/// `timezone (self, parent node 10), api-relay (exposed)`: each category before a
/// connection, and who read it. An exposure counts only when it is the caller's own or
/// an ancestor's (the environment it was given), and is marked as such; a category only
/// checked (stat, access) is marked too.
fn after_probing(rows: &[crate::records::PriorProbe]) -> String {
    use crate::ops::Evidence;
    use crate::records::Relation;
    // Per category: who read it, and the weakest kinds seen otherwise.
    let mut cats: Vec<(&str, Vec<String>, bool, bool)> = Vec::new();
    for p in rows {
        let own_env = p.by.iter().any(|a| {
            matches!(
                a.relation,
                Relation::Itself | Relation::Parent | Relation::Ancestor
            )
        });
        if p.evidence == Evidence::Exposed && !own_env {
            continue;
        }
        let i = match cats.iter().position(|(c, ..)| *c == p.category) {
            Some(i) => i,
            None => {
                cats.push((&p.category, Vec::new(), false, false));
                cats.len() - 1
            }
        };
        let entry = &mut cats[i];
        match p.evidence {
            Evidence::Exposed => entry.2 = true,
            Evidence::Checked => entry.3 = true,
            Evidence::Read | Evidence::Enumerated => {
                for a in &p.by {
                    let who = match a.relation {
                        Relation::Itself => "self".to_owned(),
                        rel => format!("{} {} {}", rel.name(), a.process, a.pid),
                    };
                    if !entry.1.contains(&who) && entry.1.len() < 3 {
                        entry.1.push(who);
                    }
                }
            }
        }
    }
    cats.iter()
        .map(
            |(c, who, exposed, checked)| match (who.is_empty(), exposed, checked) {
                (false, ..) => format!("{c} ({})", who.join(", ")),
                (true, true, _) => format!("{c} (exposed only)"),
                (true, false, true) => format!("{c} (checked only)"),
                (true, false, false) => (*c).to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn rule_lines(s: &mut String, rules: &[crate::records::RuleMatch], indent: &str) {
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
        Body::Connect(_) | Body::RuleMatch(_) | Body::Blocked(_) | Body::WouldBlock(_) => "1;31",
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

pub(super) fn secs(ms: f64) -> String {
    format!("+{:.3}s", ms / 1000.0)
}

pub(super) fn dest_line(c: &ConnectionRecord) -> String {
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

/// Joins arguments so their boundaries stay visible: an argument with a space, a
/// quote or nothing in it is single-quoted, shell style.
pub(super) fn shell_words(argv: &[String]) -> String {
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
