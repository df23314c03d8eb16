//! Network events: connections (IP, unix), their outcomes, UDP destinations and DNS.

use probe_common::{
    ConnectOutcomeEvent, DNS_FROM_ADDR, DNS_FROM_NONE, DnsAnswerEvent, EventHeader,
    UDP_DEST_FROM_USER, UDP_DEST_GIVEN, UDP_DNS, UDP_OUTSIDE_SYSCALL, UdpSendEvent,
};

use super::rules::NetCall;
use super::{Correlator, LearnedAnswer, attribution, bypass, dns};
use crate::escape::escape_bytes;
use crate::policy::dns_trust::Resolver;
use crate::policy::rules::{Action, NetworkEvent};
use crate::process::ProcessTable;
use crate::records::*;

/// A network event as the rules see it.
struct Call<'a> {
    kind: NetworkEvent,
    destination: Option<&'a Destination>,
    names: &'a [String],
    /// The connection bypassed a proxy or relay the process read.
    bypassed: bool,
}

/// TCP outcomes held for a connect record that has not arrived yet.
pub(super) const MAX_EARLY_OUTCOMES: usize = 1_024;
/// Non-blocking connects held for their outcome (a SYN that is never answered ends in
/// a timeout, so these do end; the bound is for what was lost on the way).
pub(super) const MAX_AWAITING_OUTCOMES: usize = 16_384;

/// (process, destination) pairs whose first datagram was reported; later ones are
/// not. When full, the set starts over.
const MAX_UDP_SEEN: usize = 65_536;
/// Dropped sends awaiting their syscall's exit (`note_dropped_send`).
const MAX_DROPPED_SENDS: usize = 4_096;
/// A drop and its send's exit are one syscall apart; a noted drop older than this
/// belongs to a send whose exit was lost.
const DROPPED_SEND_WINDOW_NS: u64 = 1_000_000_000;

impl Correlator {
    /// Marks the matching in-progress connect with its outcome and streams it. A
    /// blocking connect already reported its result; its state change is ignored.
    pub(super) fn on_outcome(
        &mut self,
        e: &ConnectOutcomeEvent,
        procs: &ProcessTable,
    ) -> Option<Record> {
        let dest = Destination::of_sockaddr(e.family, &e.addr, e.port);
        let outcome = if e.established != 0 {
            TcpOutcome::Established
        } else {
            TcpOutcome::Failed
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
            conn.body.outcome = Some(outcome);
        }
        let offset_ms = self.offset_ms(e.header.ktime_ns);
        let body = Body::ConnectOutcome(ConnectOutcomeRecord {
            destination: dest,
            outcome,
            ms_after_connect: offset_ms - connect_ms,
        });
        Some(self.record(e.header.ktime_ns, e.header.tgid, procs, body))
    }

    /// A connection (or a datagram to a new destination): its record, streamed, and
    /// kept for the report.
    pub(super) fn on_connect(
        &mut self,
        header: &EventHeader,
        destination: Destination,
        result: ConnectResult,
        seen_at: SeenAt,
        datagram: bool,
        procs: &ProcessTable,
    ) -> Record {
        // Earlier probes of the same process tree count, wherever in the tree.
        let tree = procs.tree_of(header.tgid);
        let outcome = self.take_early_outcome(header.tgid, &destination, result);
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
                    .map(|(n, src)| (escape_bytes(n.as_bytes()), src))
            });
        let (domain, domain_source) = named.map_or((None, None), |(n, s)| (Some(n), Some(s)));
        // A unix datagram is a unix event for the rules, not a UDP send to an address.
        let kind = if destination.family == Family::Unix {
            NetworkEvent::UnixConnect
        } else if datagram {
            NetworkEvent::UdpSend
        } else {
            NetworkEvent::Connect
        };
        let names: Vec<String> = domain.iter().cloned().collect();
        let bypassed = self.bypass_of(header.tgid, tree, &destination, domain.as_deref());
        let (mut probes_before, probes_before_not_listed) = self
            .timelines
            .tree(tree)
            .map(|t| t.prior.listed(header.ktime_ns, &self.category_rank))
            .unwrap_or_default();
        attribution::attribute_rows(&mut probes_before, procs, header.tgid);
        let matched_rules = self.match_rules(
            header,
            Call {
                kind,
                destination: Some(&destination),
                names: &names,
                bypassed: bypassed.is_some(),
            },
            Some(&probes_before),
            procs,
        );
        let body = ConnectionRecord {
            tid: header.tid,
            process: procs
                .get(header.tgid)
                .map(|p| p.name().to_owned())
                .unwrap_or_default(),
            lineage: procs.lineage(header.tgid),
            destination,
            event: kind,
            outcome,
            domain,
            domain_source,
            seen_at,
            result,
            probes_before,
            probes_before_not_listed,
            bypassed,
            cli: CliIdentity::of(procs, header.tgid),
            matched_rules,
            tls_server_name: None,
            http: None,
        };
        let kept = Stamped {
            header: self.header(header.ktime_ns, header.tgid, procs),
            body,
        };
        if self.connections.len() >= super::MAX_KEPT_CONNECTIONS {
            self.connections.pop_front();
            self.connections_first += 1;
            self.connections_not_kept += 1;
        }
        let number = self.connections_first + self.connections.len() as u64;
        self.net_names.await_first_bytes(
            header.tgid,
            &kept.body.destination,
            result,
            number,
            kept.header.offset_ms.unwrap_or(0.0),
        );
        if kept.body.outcome.is_none() && result.awaits_outcome() {
            self.awaiting_outcome.push(
                (header.tgid, kept.body.destination.clone()),
                (number, kept.header.offset_ms.unwrap_or(0.0)),
            );
        }
        self.connections.push_back(kept.clone());
        Record {
            header: kept.header,
            body: Body::Connect(kept.body),
        }
    }

    /// A DNS query is reported as such; another datagram with a destination is
    /// reported like a connection the first time a process sends to that destination.
    pub(super) fn on_udp_send(&mut self, e: &UdpSendEvent, procs: &ProcessTable) -> Option<Record> {
        let server = (e.flags & UDP_DEST_GIVEN != 0)
            .then(|| Destination::of_sockaddr(e.family, &e.addr, e.port));
        if e.flags & probe_common::UDP_TCP_FASTOPEN != 0 {
            // Not a datagram: a TCP connect made by a send (MSG_FASTOPEN). Its
            // handshake's outcome follows like a non-blocking connect's.
            let result = if e.ret < 0 {
                ConnectResult::of_syscall(e.ret)
            } else {
                ConnectResult::InProgress
            };
            let seen_at = SeenAt::SyscallAndCgroupHook;
            return Some(self.on_connect(&e.header, server?, result, seen_at, false, procs));
        }
        if e.flags & UDP_DNS != 0 {
            let payload = &e.payload[..e.captured_len as usize];
            let Some(questions) = dns::parse_query(payload) else {
                self.names.unparsed += 1;
                return None;
            };
            if let Some(txid) = dns::transaction_id(payload) {
                let to = server
                    .as_ref()
                    .and_then(|d| Some((d.address.parse().ok()?, d.port)));
                self.names.expect_answer(e.header.tgid, e.fd, txid, to);
            }
            let names: Vec<String> = questions
                .iter()
                .map(|(n, _)| escape_bytes(n.as_bytes()))
                .collect();
            // Sent without an address (glibc's send, Go's write): the socket's connect
            // named the server.
            let server = server.or_else(|| self.net_names.dns_server_of(e.header.tgid, e.fd));
            if let Some(s) = &server {
                self.net_names.note_query(e.header.tgid, s, &names);
            }
            let matched_rules = self.match_rules(
                &e.header,
                Call {
                    kind: NetworkEvent::DnsQuery,
                    destination: server.as_ref(),
                    names: &names,
                    bypassed: false,
                },
                None,
                procs,
            );
            self.net_names
                .note_query_rules(e.header.tgid, &matched_rules);
            let body = Body::DnsQuery(DnsQueryRecord {
                process: procs
                    .get(e.header.tgid)
                    .map(|p| p.name().to_owned())
                    .unwrap_or_default(),
                server,
                names,
                types: questions.into_iter().map(|(_, t)| t).collect(),
                matched_rules,
            });
            return Some(self.record(e.header.ktime_ns, e.header.tgid, procs, body));
        }
        let dest = server?;
        let dropped = self.take_dropped_send(e.header.tgid, &dest, e.header.ktime_ns);
        // A send the kernel refused (a block rule: EPERM) was not sent, nor one a
        // block rule dropped while the call returned success (IPv6 ping sockets).
        let result = if e.ret < 0 {
            ConnectResult::of_syscall(e.ret)
        } else if dropped {
            ConnectResult::Dropped
        } else {
            ConnectResult::Sent
        };
        if self.udp_seen.len() >= MAX_UDP_SEEN {
            // Bounded: a program spraying datagrams at a million addresses must not
            // grow this without end. Forgetting only repeats a record later.
            self.udp_seen.clear();
        }
        if !self
            .udp_seen
            .insert((e.header.tgid, dest.clone(), result.is_failure()))
        {
            return None;
        }
        let seen_at = if e.flags & UDP_OUTSIDE_SYSCALL != 0 {
            SeenAt::CgroupHook
        } else if e.flags & UDP_DEST_FROM_USER != 0 {
            SeenAt::Syscall
        } else {
            SeenAt::SyscallAndCgroupHook
        };
        Some(self.on_connect(&e.header, dest, result, seen_at, true, procs))
    }

    /// Notes a datagram a block rule dropped at the egress hook (port 0: ICMP or raw).
    pub(super) fn note_dropped_send(&mut self, tgid: u32, dest: &Destination, ktime_ns: u64) {
        if self.dropped_sends.len() >= MAX_DROPPED_SENDS {
            // Bounded; an entry is taken by its send's exit at once, so only sends
            // whose exit was lost pile up here.
            self.dropped_sends.clear();
        }
        self.dropped_sends
            .insert((tgid, dest.address.clone()), ktime_ns);
    }

    /// Whether a send to `dest` whose exit came at `ktime_ns` is one the egress hook
    /// dropped: a drop of the same process to the same address noted just before.
    fn take_dropped_send(&mut self, tgid: u32, dest: &Destination, ktime_ns: u64) -> bool {
        if dest.port != 0 {
            return false;
        }
        self.dropped_sends
            .remove(&(tgid, dest.address.clone()))
            .is_some_and(|at| at <= ktime_ns && ktime_ns - at < DROPPED_SEND_WINDOW_NS)
    }

    /// A datagram sent to a unix address (sendto/sendmsg naming a path): reported like
    /// a connection the first time a process sends to that address, as IP datagrams
    /// are; a failed send is reported with its error each time it is new.
    pub(super) fn on_unix_datagram(
        &mut self,
        header: &EventHeader,
        dest: Destination,
        ret: i32,
        procs: &ProcessTable,
    ) -> Option<Record> {
        if ret < 0 {
            let result = ConnectResult::of_syscall(ret);
            return Some(self.on_connect(header, dest, result, SeenAt::Syscall, true, procs));
        }
        if self.udp_seen.len() >= MAX_UDP_SEEN {
            self.udp_seen.clear();
        }
        if !self.udp_seen.insert((header.tgid, dest.clone(), false)) {
            return None;
        }
        Some(self.on_connect(
            header,
            dest,
            ConnectResult::Sent,
            SeenAt::Syscall,
            true,
            procs,
        ))
    }

    /// The rules this network event completes; `alert` matches that are not repeats
    /// are also queued as `rule_match` records.
    fn match_rules(
        &mut self,
        header: &EventHeader,
        Call {
            kind,
            destination,
            names,
            bypassed,
        }: Call<'_>,
        rows: Option<&[PriorProbe]>,
        procs: &ProcessTable,
    ) -> Vec<RuleMatch> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let tree = procs.tree_of(header.tgid);
        let call = NetCall {
            kind,
            tree,
            at_ns: header.ktime_ns,
            destination,
            names,
            bypassed,
        };
        // The tree's probes, as its table keeps them for exactly this question.
        let prior: &dyn super::prior::PriorView = match self.timelines.tree(tree) {
            Some(t) => &t.prior,
            None => &super::prior::NoProbes,
        };
        let mut matches = self.rules.evaluate(&call, prior, &self.category_names);
        if matches.is_empty() {
            return matches;
        }
        // Who made the reads: the record's rows, or (for a query, which lists none)
        // the tree's rows listed now.
        let listed;
        let rows = match rows {
            Some(rows) => rows,
            None => {
                let mut r = self
                    .timelines
                    .tree(tree)
                    .map(|t| t.prior.listed(header.ktime_ns, &self.category_rank).0)
                    .unwrap_or_default();
                attribution::attribute_rows(&mut r, procs, header.tgid);
                listed = r;
                &listed
            }
        };
        attribution::attribute_matches(&mut matches, rows);
        self.queue_alerts(header, kind, destination, names, &matches, procs);
        matches
    }

    /// Queues a `rule_match` record for each `alert` match that is not a repeat.
    pub(super) fn queue_alerts(
        &mut self,
        header: &EventHeader,
        kind: NetworkEvent,
        destination: Option<&Destination>,
        names: &[String],
        matches: &[RuleMatch],
        procs: &ProcessTable,
    ) {
        for m in matches
            .iter()
            .filter(|m| m.action == Action::Alert && !m.suppressed)
        {
            let body = Body::RuleMatch(RuleMatchRecord {
                process: procs
                    .get(header.tgid)
                    .map(|p| p.name().to_owned())
                    .unwrap_or_default(),
                event: kind,
                destination: destination.cloned(),
                names: names.to_vec(),
                matched: m.clone(),
            });
            let record = self.record(header.ktime_ns, header.tgid, procs, body);
            self.pending.push(record);
        }
    }

    pub(super) fn on_dns_answer(
        &mut self,
        e: &DnsAnswerEvent,
        procs: &ProcessTable,
    ) -> Option<Record> {
        let payload = &e.payload[..e.captured_len as usize];
        let Some((name, with_ttls)) = dns::parse_answer_ttls(payload) else {
            self.names.unparsed += 1;
            return None;
        };
        // A forged, unsolicited answer must not name anything: only an answer to a
        // query still pending, from where it went, on the same socket, is learnt.
        let source = match e.from_kind {
            DNS_FROM_NONE => dns::AnswerSource::NotAsked,
            DNS_FROM_ADDR => {
                let d = Destination::of_sockaddr(e.from.family, &e.from.addr, e.from.port);
                match d.address.parse() {
                    Ok(ip) => dns::AnswerSource::Addr((ip, d.port)),
                    Err(_) => dns::AnswerSource::Unreadable,
                }
            }
            _ => dns::AnswerSource::Unreadable,
        };
        let txid = dns::transaction_id(payload)?;
        let server = self
            .names
            .accept_answer(e.header.tgid, e.fd, txid, source)?;
        // Sent on a connected socket: its connect named the server.
        let server = server
            .or_else(|| {
                let d = self.net_names.dns_server_of(e.header.tgid, e.fd)?;
                Some((d.address.parse().ok()?, d.port))
            })
            .map(|(addr, port)| Resolver::new(addr, port));
        let addrs: Vec<std::net::IpAddr> = with_ttls.iter().map(|(a, _)| *a).collect();
        self.names.learn(&name, &addrs);
        // For block rules' host globs (the engine writes them to the kernel, if the
        // server is trusted).
        self.answers_learned.push(LearnedAnswer {
            name: name.clone(),
            addrs: with_ttls,
            server,
        });
        let body = Body::DnsAnswer(DnsAnswerRecord {
            name: escape_bytes(name.as_bytes()),
            addresses: addrs.iter().map(ToString::to_string).collect(),
        });
        Some(self.record(e.header.ktime_ns, e.header.tgid, procs, body))
    }

    /// The proxy or relay settings `pid` read (getenv, with a value at exec) and did
    /// not use for a connection to `dest`.
    fn bypass_of(
        &self,
        pid: u32,
        tree: u32,
        dest: &Destination,
        name: Option<&str>,
    ) -> Option<ProxyBypass> {
        let table = self.timelines.tree(tree)?;
        let read: Vec<(&str, &str)> = self
            .values
            .of(pid)
            .filter(|(n, _)| {
                [crate::ops::How::Getenv, crate::ops::How::SecureGetenv]
                    .into_iter()
                    .any(|how| table.made_by(TargetType::Env, how, n, pid))
            })
            .collect();
        bypass::check(&read, dest, name)
    }

    fn take_early_outcome(
        &mut self,
        tgid: u32,
        dest: &Destination,
        result: ConnectResult,
    ) -> Option<TcpOutcome> {
        // A blocking connect's handshake also ends before its exit event: its outcome
        // is consumed here too (its result already says it), so none is left behind.
        let outcome = self.early_outcomes.take_oldest(&(tgid, dest.clone()))?;
        result.awaits_outcome().then_some(outcome)
    }
}
