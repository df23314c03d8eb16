//! Network events: connections (IP, unix), their outcomes, UDP destinations and DNS.

use probe_common::{
    AF_INET, AF_INET6, ConnectOutcomeEvent, DnsAnswerEvent, EventHeader, UDP_DEST_GIVEN, UDP_DNS,
    UDP_OUTSIDE_SYSCALL, UdpSendEvent,
};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::records::*;
use super::rules::{NetCall, RuleMatch};
use super::{Correlator, dns, errno_name};
use crate::output::escape::escape_bytes;
use crate::policy::rules::{Action, NetworkEvent};
use crate::process::ProcessTable;

/// `on_connect`'s result code for a datagram sent to a destination (not a syscall
/// result: no errno is that large).
const UDP_SENT: i32 = i32::MIN;
/// `on_connect`'s result code for a connect the cgroup hook saw outside connect(2)
/// (io_uring): it was issued; its result is not known there.
pub(super) const CONNECT_ISSUED: i32 = i32::MIN + 1;

/// Results whose TCP outcome comes later, from the socket's state changes.
fn awaits_outcome(result: &str) -> bool {
    result == "in_progress" || result == "issued"
}

/// TCP outcomes held for a connect record that has not arrived yet.
pub(super) const MAX_EARLY_OUTCOMES: usize = 1_024;
/// Non-blocking connects held for their outcome (a SYN that is never answered ends in
/// a timeout, so these do end; the bound is for what was lost on the way).
pub(super) const MAX_AWAITING_OUTCOMES: usize = 16_384;

/// (process, destination) pairs whose first datagram was reported; later ones are
/// not. When full, the set starts over.
const MAX_UDP_SEEN: usize = 65_536;

impl Correlator {
    /// Marks the matching in-progress connect with its outcome and streams it. A
    /// blocking connect already reported its result; its state change is ignored.
    pub(super) fn on_outcome(&mut self, e: &ConnectOutcomeEvent) -> Option<Record> {
        let dest = destination(e.family, &e.addr, e.port);
        let outcome = if e.established != 0 {
            "established"
        } else {
            "failed"
        };
        let key = (e.header.tgid, dest);
        let Some((number, connect_ms)) = self.awaiting_outcome.take_latest(&key) else {
            // On loopback the handshake can end inside connect(2), before its exit
            // event: keep the outcome for the connect record that follows (bounded:
            // an outcome whose connect never shows up must not accumulate).
            self.early_outcomes.push(key, outcome);
            return None;
        };
        let dest = key.1;
        // The kept record (if it is still among the report's) gets the outcome too.
        if let Some(conn) = number
            .checked_sub(self.connections_first)
            .and_then(|i| self.connections.get_mut(i as usize))
        {
            conn.outcome = Some(outcome.to_owned());
        }
        let offset_ms = self.offset_ms(e.header.ktime_ns);
        Some(Record::ConnectOutcome(ConnectOutcomeRecord {
            time: self.clock.rfc3339(e.header.ktime_ns),
            offset_ms,
            pid: e.header.tgid,
            destination: dest,
            outcome: outcome.to_owned(),
            ms_after_connect: offset_ms - connect_ms,
        }))
    }

    pub(super) fn on_connect(
        &mut self,
        header: &EventHeader,
        destination: Destination,
        ret: i32,
        procs: &ProcessTable,
    ) -> ConnectionRecord {
        let result = match ret {
            UDP_SENT => "sent".to_owned(),
            CONNECT_ISSUED => "issued".to_owned(),
            0 => "ok".to_owned(),
            -115 => "in_progress".to_owned(),
            r => errno_name(r),
        };
        // Earlier probes of the same process tree count, wherever in the tree.
        let tree = procs.tree_of(header.tgid);
        let prior = self.take_prior(tree, header.ktime_ns);
        let outcome = self.take_early_outcome(header.tgid, &destination, &result);
        let named = destination
            .address
            .parse::<std::net::IpAddr>()
            .ok()
            // An IPv6 socket connecting to ::ffff:a.b.c.d reaches the IPv4 address an A
            // record gave.
            .map(|ip| ip.to_canonical())
            .and_then(|ip| {
                self.names
                    .name_of(&ip)
                    .map(|(n, src)| (escape_bytes(n.as_bytes()), src.as_str()))
            });
        let (domain, domain_source) = named.map_or((None, None), |(n, s)| (Some(n), Some(s)));
        let kind = if ret == UDP_SENT {
            NetworkEvent::UdpSend
        } else if destination.family == "unix" {
            NetworkEvent::UnixConnect
        } else {
            NetworkEvent::Connect
        };
        let names: Vec<String> = domain.iter().cloned().collect();
        let matched_rules =
            self.match_rules(header, kind, Some(&destination), &names, &prior.rows, procs);
        let (probes_before, probes_before_not_listed) = prior.listed(header.ktime_ns);
        self.put_prior(tree, prior);
        let record = ConnectionRecord {
            time: self.clock.rfc3339(header.ktime_ns),
            offset_ms: self.offset_ms(header.ktime_ns),
            pid: header.tgid,
            tid: header.tid,
            process: procs
                .get(header.tgid)
                .map(|p| p.name().to_owned())
                .unwrap_or_default(),
            lineage: procs.lineage(header.tgid),
            destination,
            outcome,
            domain,
            domain_source,
            seen_at: if ret == CONNECT_ISSUED {
                SEEN_AT_CGROUP_HOOK
            } else {
                SEEN_AT_SYSCALL
            },
            result,
            probes_before,
            probes_before_not_listed,
            cli: CliIdentity::of(procs, header.tgid),
            matched_rules,
        };
        if self.connections.len() >= super::MAX_KEPT_CONNECTIONS {
            self.connections.pop_front();
            self.connections_first += 1;
            self.connections_not_kept += 1;
        }
        let number = self.connections_first + self.connections.len() as u64;
        if record.outcome.is_none() && awaits_outcome(&record.result) {
            self.awaiting_outcome.push(
                (header.tgid, record.destination.clone()),
                (number, record.offset_ms),
            );
        }
        self.connections.push_back(record.clone());
        record
    }

    /// A DNS query is reported as such; another datagram with a destination is
    /// reported like a connection the first time a process sends to that destination.
    pub(super) fn on_udp_send(&mut self, e: &UdpSendEvent, procs: &ProcessTable) -> Option<Record> {
        let server =
            (e.flags & UDP_DEST_GIVEN != 0).then(|| destination(e.family, &e.addr, e.port));
        if e.flags & UDP_DNS != 0 {
            let Some(questions) = dns::parse_query(&e.payload[..e.captured_len as usize]) else {
                self.names.unparsed += 1;
                return None;
            };
            let names: Vec<String> = questions
                .iter()
                .map(|(n, _)| escape_bytes(n.as_bytes()))
                .collect();
            let tree = procs.tree_of(e.header.tgid);
            let prior = self.take_prior(tree, e.header.ktime_ns);
            let matched_rules = self.match_rules(
                &e.header,
                NetworkEvent::DnsQuery,
                server.as_ref(),
                &names,
                &prior.rows,
                procs,
            );
            self.put_prior(tree, prior);
            return Some(Record::DnsQuery(DnsQueryRecord {
                time: self.clock.rfc3339(e.header.ktime_ns),
                offset_ms: self.offset_ms(e.header.ktime_ns),
                pid: e.header.tgid,
                process: procs
                    .get(e.header.tgid)
                    .map(|p| p.name().to_owned())
                    .unwrap_or_default(),
                server,
                names,
                types: questions.into_iter().map(|(_, t)| t).collect(),
                matched_rules,
            }));
        }
        let dest = server?;
        if self.udp_seen.len() >= MAX_UDP_SEEN {
            // Bounded: a program spraying datagrams at a million addresses must not
            // grow this without end. Forgetting only repeats a record later.
            self.udp_seen.clear();
        }
        if !self.udp_seen.insert((e.header.tgid, dest.clone())) {
            return None;
        }
        let mut record = self.on_connect(&e.header, dest, UDP_SENT, procs);
        if e.flags & UDP_OUTSIDE_SYSCALL != 0 {
            record.seen_at = SEEN_AT_CGROUP_HOOK;
            if let Some(last) = self.connections.back_mut() {
                last.seen_at = SEEN_AT_CGROUP_HOOK;
            }
        }
        Some(Record::Connect(record))
    }

    /// The rules this network event completes; `alert` matches that are not repeats
    /// are also queued as `rule_match` records.
    fn match_rules(
        &mut self,
        header: &EventHeader,
        kind: NetworkEvent,
        destination: Option<&Destination>,
        names: &[String],
        prior: &[PriorProbe],
        procs: &ProcessTable,
    ) -> Vec<RuleMatch> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let call = NetCall {
            kind,
            tree: procs.tree_of(header.tgid),
            at_ns: header.ktime_ns,
            destination,
            names,
        };
        let matches = self.rules.evaluate(&call, prior, &self.category_names);
        for m in matches
            .iter()
            .filter(|m| m.action == Action::Alert && !m.suppressed)
        {
            self.pending.push(Record::RuleMatch(RuleMatchRecord {
                time: self.clock.rfc3339(header.ktime_ns),
                offset_ms: self.offset_ms(header.ktime_ns),
                pid: header.tgid,
                process: procs
                    .get(header.tgid)
                    .map(|p| p.name().to_owned())
                    .unwrap_or_default(),
                event: kind,
                destination: destination.cloned(),
                names: names.to_vec(),
                matched: m.clone(),
            }));
        }
        matches
    }

    pub(super) fn on_dns_answer(&mut self, e: &DnsAnswerEvent) -> Option<Record> {
        let Some((name, addrs)) = dns::parse_answer(&e.payload[..e.captured_len as usize]) else {
            self.names.unparsed += 1;
            return None;
        };
        self.names.learn(&name, &addrs);
        Some(Record::DnsAnswer(DnsAnswerRecord {
            time: self.clock.rfc3339(e.header.ktime_ns),
            offset_ms: self.offset_ms(e.header.ktime_ns),
            pid: e.header.tgid,
            name: escape_bytes(name.as_bytes()),
            addresses: addrs.iter().map(ToString::to_string).collect(),
        }))
    }

    fn take_early_outcome(
        &mut self,
        tgid: u32,
        dest: &Destination,
        result: &str,
    ) -> Option<String> {
        // A blocking connect's handshake also ends before its exit event: its outcome
        // is consumed here too (its result already says it), so none is left behind.
        let outcome = self.early_outcomes.take_oldest(&(tgid, dest.clone()))?;
        awaits_outcome(result).then(|| outcome.to_owned())
    }
}

pub(super) fn destination(family: u16, addr: &[u8; 16], port: u16) -> Destination {
    match family {
        AF_INET => Destination {
            family: "ipv4",
            address: Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string(),
            port,
        },
        AF_INET6 => Destination {
            family: "ipv6",
            address: Ipv6Addr::from(*addr).to_string(),
            port,
        },
        other => Destination {
            family: "unknown",
            address: format!("family {other}"),
            port,
        },
    }
}
