//! The end-of-run summary per CLI: each distinct program (exe, script, package) that
//! probed or connected, with the categories it probed, the destinations it contacted
//! and the rules its connections matched.

use std::collections::{BTreeMap, HashMap};

use super::Correlator;
use super::probes::FactTargets;
use crate::ops::Evidence;
use crate::process::ProcessTable;
use crate::records::{CliFact, CliSummary, ContactedDestination};

/// Local IPC endpoints named per CLI (each connection is still in the report's list).
const MAX_LISTED_IPC: usize = 64;

impl Correlator {
    /// One entry per CLI that probed or connected, in order of first appearance (pid),
    /// over every tree or only `tree`'s.
    pub fn cli_summaries(&self, procs: &ProcessTable, tree: Option<u32>) -> Vec<CliSummary> {
        let classifier = &self.classifier;
        let by_pid = self
            .timelines
            .facts_by_pid(&|target: &str| classifier.fold_prefix(target));
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
        // A process whose only network calls were DNS queries (sendto) is a CLI
        // that contacted its DNS server.
        pids.extend(self.net_names.asked.keys().copied());
        if let Some(tree) = tree {
            pids.retain(|&p| procs.tree_of(p) == tree);
        }
        pids.sort_unstable();
        pids.dedup();
        // Keyed by what identifies a CLI, in first-pid order.
        let mut order: Vec<(String, Option<String>, Option<String>)> = Vec::new();
        let mut out: BTreeMap<usize, CliSummary> = BTreeMap::new();
        let mut facts_of: HashMap<usize, BTreeMap<(usize, Evidence), FactTargets>> = HashMap::new();
        // One entry per (destination, name): the first request of a connection named
        // the same way stands for the rest (a chatty API client's paths would
        // otherwise each take a line).
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
                checked: Vec::new(),
                exposed: Vec::new(),
                facts: Vec::new(),
                destinations: Vec::new(),
                local_ipc: Vec::new(),
                bypasses: 0,
                rules: Vec::new(),
                exe_hash: None,
                notes: Vec::new(),
                partial: false,
            });
            s.pids.push(pid);
            add_blind_spots(s, &info.image);
            // The first of its processes with a hash (an early one may have exited
            // before it was hashed).
            if s.exe_hash.as_ref().is_none_or(|h| h.sha256.is_none()) {
                s.exe_hash = procs.exe_hash(pid).or(s.exe_hash.take());
            }
            let facts = facts_of.entry(slot).or_default();
            for (key, targets) in by_pid.get(&pid).into_iter().flatten() {
                facts.entry(*key).or_default().merge(targets);
            }
            for conn in conns_of.get(&pid).into_iter().flatten() {
                s.bypasses += u64::from(conn.bypassed.is_some());
                for m in &conn.matched_rules {
                    if !s.rules.contains(&m.rule) {
                        s.rules.push(m.rule.clone());
                    }
                }
                if conn.destination.family == crate::records::Family::Unix {
                    if s.local_ipc.len() < MAX_LISTED_IPC
                        && !s.local_ipc.contains(&conn.destination)
                    {
                        s.local_ipc.push(conn.destination.clone());
                    }
                    continue;
                }
                let d = ContactedDestination {
                    destination: conn.destination.clone(),
                    domain: conn.domain.clone(),
                    dns_names: Vec::new(),
                    tls_server_name: conn.tls_server_name.clone(),
                    http: conn.http.clone(),
                    blocked: (conn.result == crate::records::ConnectResult::Failed(-libc::EPERM)
                        || conn.result == crate::records::ConnectResult::Dropped)
                        && conn
                            .matched_rules
                            .iter()
                            .any(|m| m.action == crate::policy::rules::Action::Block),
                };
                // One entry per request kind: the method and the path without its
                // query (`HEAD /` and `POST /v1/messages` are both listed; a thousand
                // `GET /x?page=N` are one).
                let key = ContactedDestination {
                    http: d.http.as_ref().map(|h| crate::records::HttpRequestLine {
                        method: h.method.clone(),
                        host: h.host.clone(),
                        path: h.path.split('?').next().unwrap_or_default().to_owned(),
                    }),
                    ..d.clone()
                };
                if seen.insert((slot, key)) {
                    s.destinations.push(d);
                }
            }
            self.add_dns_servers(s, pid);
        }
        for (slot, s) in &mut out {
            // Policy order (the category index), then the kind of evidence.
            for ((c, evidence), targets) in facts_of.remove(slot).unwrap_or_default() {
                let name = &self.category_names[c];
                let list = match evidence {
                    Evidence::Read | Evidence::Enumerated => &mut s.categories,
                    Evidence::Checked => &mut s.checked,
                    Evidence::Exposed => &mut s.exposed,
                };
                if !list.contains(name) {
                    list.push(name.clone());
                }
                let (mut named, more) = targets.named();
                // The value the policy shows, next to its name (`TZ=Asia/Shanghai`):
                // the first process of the CLI that had one.
                for t in &mut named {
                    if let Some(v) = s.pids.iter().find_map(|p| self.values.get(*p, t)) {
                        *t = format!("{t}={v}");
                    }
                }
                s.facts.push(CliFact {
                    category: name.clone(),
                    evidence,
                    targets: named,
                    more,
                });
            }
            // A target read is not listed again as exposed or checked.
            let read_targets: Vec<(String, String)> = s
                .facts
                .iter()
                .filter(|f| matches!(f.evidence, Evidence::Read | Evidence::Enumerated))
                .flat_map(|f| f.targets.iter().map(|t| (f.category.clone(), t.clone())))
                .collect();
            for f in &mut s.facts {
                if matches!(f.evidence, Evidence::Exposed | Evidence::Checked) {
                    f.targets
                        .retain(|t| !read_targets.contains(&(f.category.clone(), t.clone())));
                }
            }
            s.facts.retain(|f| !f.targets.is_empty() || f.more > 0);
            // A category read is not also "only checked" or "only exposed".
            let read = s.categories.clone();
            s.checked.retain(|c| !read.contains(c));
            s.exposed
                .retain(|c| !read.contains(c) && !s.checked.contains(c));
        }
        out.into_values().collect()
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

impl Correlator {
    /// The DNS servers `pid` queried, with the names it asked, merged into its CLI's
    /// destinations (one entry per server), and the rules its queries matched.
    fn add_dns_servers(&self, s: &mut CliSummary, pid: u32) {
        for rule in self.net_names.query_rules.get(&pid).into_iter().flatten() {
            if !s.rules.contains(rule) {
                s.rules.push(rule.clone());
            }
        }
        for asked in self.net_names.asked.get(&pid).into_iter().flatten() {
            match s.destinations.iter_mut().find(|d| {
                d.destination == asked.destination
                    && d.tls_server_name.is_none()
                    && d.http.is_none()
            }) {
                Some(d) => {
                    for n in &asked.dns_names {
                        if d.dns_names.len() < crate::records::MAX_SUMMARY_DNS_NAMES
                            && !d.dns_names.contains(n)
                        {
                            d.dns_names.push(n.clone());
                        }
                    }
                }
                None => s.destinations.push(asked.clone()),
            }
        }
    }
}
