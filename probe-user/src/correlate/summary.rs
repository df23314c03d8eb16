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
                destinations: Vec::new(),
                rules: Vec::new(),
            });
            s.pids.push(pid);
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
                    dns_names: Vec::new(),
                    tls_server_name: conn.tls_server_name.clone(),
                    http: conn.http.clone(),
                };
                let key = ContactedDestination {
                    http: d.http.as_ref().map(|h| crate::records::HttpRequestLine {
                        method: String::new(),
                        host: h.host.clone(),
                        path: String::new(),
                    }),
                    ..d.clone()
                };
                if seen.insert((slot, key)) {
                    s.destinations.push(d);
                }
                for m in &conn.matched_rules {
                    if !s.rules.contains(&m.rule) {
                        s.rules.push(m.rule.clone());
                    }
                }
            }
            self.add_dns_servers(s, pid);
        }
        let mut list: Vec<CliSummary> = out.into_values().collect();
        for s in &mut list {
            let rank = |c: &String| self.category_names.iter().position(|n| n == c);
            s.categories.sort_by_key(rank);
        }
        list
    }
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
