//! Names of network calls beyond the connect: what a connection's first bytes named
//! (TLS server name, HTTP request), joined to the kept connection as a TCP outcome
//! is (by process and destination, in constant time), and the DNS queries each
//! process sent, for the per-CLI summary.

use std::collections::HashMap;

use probe_common::FirstBytesEvent;

use super::Correlator;
use super::first_bytes::{self, FirstBytes};
use super::rules::NetCall;
use crate::policy::rules::NetworkEvent;
use crate::process::ProcessTable;
use crate::records::*;

/// Connections held for their first bytes (a connection that never sends leaves
/// its entry until the bound pushes it out).
pub(super) const MAX_AWAITING_FIRST_BYTES: usize = 16_384;
/// Sockets connected to port 53 whose server is remembered, for queries sent on them
/// without an address (glibc's send, Go's write). Past it, the map starts over.
const MAX_DNS_SOCKETS: usize = 4_096;
/// DNS servers listed per process in the summary.
const MAX_DNS_SERVERS_PER_PID: usize = 16;

/// What `Correlator` keeps for this module.
#[derive(Debug)]
pub(super) struct NetNames {
    /// Kept connections waiting for their first bytes: their number among all
    /// connections and their offset.
    awaiting: super::pending::Pending<(u32, Destination), (u64, f64)>,
    /// (tgid, fd) of a socket connected to port 53 -> the server.
    dns_sockets: HashMap<(u32, i32), Destination>,
    /// Per process: each DNS server it queried, with the names it asked.
    pub(super) asked: HashMap<u32, Vec<ContactedDestination>>,
    /// Per process: the rules its DNS queries matched (each once; a policy has few).
    pub(super) query_rules: HashMap<u32, Vec<String>>,
    /// First bytes that were neither a TLS handshake nor an HTTP request.
    pub unrecognised: u64,
}

impl Default for NetNames {
    fn default() -> Self {
        Self {
            awaiting: super::pending::Pending::with_capacity(MAX_AWAITING_FIRST_BYTES),
            dns_sockets: HashMap::new(),
            asked: HashMap::new(),
            query_rules: HashMap::new(),
            unrecognised: 0,
        }
    }
}

impl NetNames {
    /// A connection was kept as number `number`: it may send first bytes.
    pub(super) fn await_first_bytes(
        &mut self,
        tgid: u32,
        dest: &Destination,
        result: ConnectResult,
        number: u64,
        offset_ms: f64,
    ) {
        let ip = matches!(dest.family, Family::Ipv4 | Family::Ipv6);
        if !ip || !matches!(result, ConnectResult::Ok | ConnectResult::InProgress) {
            return;
        }
        if dest.port == 53 {
            return;
        }
        self.awaiting
            .push((tgid, dest.clone()), (number, offset_ms));
    }

    /// A connect to port 53 on `fd`: queries sent on it without an address go there.
    pub(super) fn note_dns_socket(&mut self, tgid: u32, fd: i32, dest: &Destination) {
        if dest.port != 53 {
            self.dns_sockets.remove(&(tgid, fd));
            return;
        }
        if self.dns_sockets.len() >= MAX_DNS_SOCKETS {
            self.dns_sockets.clear();
        }
        self.dns_sockets.insert((tgid, fd), dest.clone());
    }

    /// The server a query on `fd` went to, when it named none.
    pub(super) fn dns_server_of(&self, tgid: u32, fd: i32) -> Option<Destination> {
        self.dns_sockets.get(&(tgid, fd)).cloned()
    }

    /// A process asked `server` for `names`: listed once per server in its summary.
    pub(super) fn note_query(&mut self, tgid: u32, server: &Destination, names: &[String]) {
        let servers = self.asked.entry(tgid).or_default();
        let i = match servers.iter().position(|d| d.destination == *server) {
            Some(i) => i,
            None if servers.len() < MAX_DNS_SERVERS_PER_PID => {
                servers.push(ContactedDestination {
                    destination: server.clone(),
                    domain: None,
                    dns_names: Vec::new(),
                    tls_server_name: None,
                    http: None,
                    blocked: false,
                });
                servers.len() - 1
            }
            None => return,
        };
        let listed = &mut servers[i].dns_names;
        for n in names {
            if listed.len() < MAX_SUMMARY_DNS_NAMES && !listed.contains(n) {
                listed.push(n.clone());
            }
        }
    }

    /// A query of `tgid` matched these rules: listed in its CLI's summary.
    pub(super) fn note_query_rules(&mut self, tgid: u32, matched: &[RuleMatch]) {
        if matched.is_empty() {
            return;
        }
        let rules = self.query_rules.entry(tgid).or_default();
        for m in matched {
            if !rules.contains(&m.rule) {
                rules.push(m.rule.clone());
            }
        }
    }

    /// Lets go of what exited processes left.
    pub(super) fn retain_pids(&mut self, live: impl Fn(u32) -> bool) {
        self.awaiting.retain_keys(|(pid, _)| live(*pid));
        self.dns_sockets.retain(|(pid, _), _| live(*pid));
        self.asked.retain(|pid, _| live(*pid));
        self.query_rules.retain(|pid, _| live(*pid));
    }
}

impl Correlator {
    /// A connection's first bytes: what they name goes on its kept record and into a
    /// streamed `first_bytes` record; rules whose destination hosts match the name
    /// now known are evaluated again (see `match_named`).
    pub(super) fn on_first_bytes(
        &mut self,
        e: &FirstBytesEvent,
        procs: &ProcessTable,
    ) -> Option<Record> {
        let Some(found) = first_bytes::parse(e.payload_bytes()) else {
            self.net_names.unrecognised += 1;
            return None;
        };
        let destination = Destination::of_sockaddr(e.dest.family, &e.dest.addr, e.dest.port);
        let (protocol, tls_server_name, http) = match found {
            FirstBytes::Tls { server_name } => (AppProtocol::Tls, server_name, None),
            FirstBytes::Http(h) => (AppProtocol::Http, None, Some(h)),
        };
        let key = (e.header.tgid, destination.clone());
        let kept = self.net_names.awaiting.take_latest(&key);
        let mut ms_after_connect = None;
        let mut already: Vec<String> = Vec::new();
        let mut bypassed = false;
        if let Some((number, connect_ms)) = kept {
            ms_after_connect = Some(self.offset_ms(e.header.ktime_ns) - connect_ms);
            if let Some(conn) = number
                .checked_sub(self.connections_first)
                .and_then(|i| self.connections.get_mut(i as usize))
            {
                conn.body.tls_server_name = tls_server_name.clone();
                conn.body.http = http.clone();
                already = conn
                    .body
                    .matched_rules
                    .iter()
                    .map(|m| m.rule.clone())
                    .collect();
                bypassed = conn.body.bypassed.is_some();
            }
        }
        // A Host header may carry a port (`api.example.test:8080`); host globs are
        // about the name.
        let names: Vec<String> = tls_server_name
            .iter()
            .cloned()
            .chain(http.as_ref().and_then(|h| h.host.as_deref()).map(host_name))
            .collect();
        let matched_rules =
            self.match_named(&e.header, &destination, &names, &already, bypassed, procs);
        if let Some((number, _)) = kept
            && let Some(conn) = number
                .checked_sub(self.connections_first)
                .and_then(|i| self.connections.get_mut(i as usize))
        {
            conn.body
                .matched_rules
                .extend(matched_rules.iter().cloned());
        }
        let body = Body::FirstBytes(FirstBytesRecord {
            process: procs
                .get(e.header.tgid)
                .map(|p| p.name().to_owned())
                .unwrap_or_default(),
            destination,
            protocol,
            tls_server_name,
            http,
            ms_after_connect,
            matched_rules,
        });
        Some(self.record(e.header.ktime_ns, e.header.tgid, procs, body))
    }

    /// Rules are evaluated at the connect, when the name in the first bytes is not
    /// known yet. Once it is, the rules that name destination hosts are evaluated
    /// again against it (as a `connect`, at the time of the bytes), except those the
    /// connection already matched. A rule that matched at the connect and whose
    /// `except` hosts now match the name is not taken back: its record was streamed.
    fn match_named(
        &mut self,
        header: &probe_common::EventHeader,
        destination: &Destination,
        names: &[String],
        already: &[String],
        bypassed: bool,
        procs: &ProcessTable,
    ) -> Vec<RuleMatch> {
        if names.is_empty() || self.rules.is_empty() {
            return Vec::new();
        }
        let tree = procs.tree_of(header.tgid);
        let call = NetCall {
            kind: NetworkEvent::Connect,
            tree,
            at_ns: header.ktime_ns,
            destination: Some(destination),
            names,
            bypassed,
        };
        let prior: &dyn super::prior::PriorView = match self.timelines.tree(tree) {
            Some(t) => &t.prior,
            None => &super::prior::NoProbes,
        };
        let mut matches = self
            .rules
            .evaluate_named(&call, prior, &self.category_names, |name| {
                !already.iter().any(|a| a == name)
            });
        if matches.is_empty() {
            return matches;
        }
        // Who made the reads, as a rule match at the connect names them.
        let mut rows = self
            .timelines
            .tree(tree)
            .map(|t| t.prior.listed(header.ktime_ns, &self.category_rank).0)
            .unwrap_or_default();
        super::attribution::attribute_rows(&mut rows, procs, header.tgid);
        super::attribution::attribute_matches(&mut matches, &rows);
        self.queue_alerts(
            header,
            NetworkEvent::Connect,
            Some(destination),
            names,
            &matches,
            procs,
        );
        matches
    }
}

impl Correlator {
    /// First bytes that named nothing (the report's `filtered`).
    pub fn first_bytes_unrecognised(&self) -> u64 {
        self.net_names.unrecognised
    }
}

/// The name of a Host header's value: without its port, and without the brackets of
/// an IPv6 literal.
fn host_name(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
        _ => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use probe_common::{decode::Event, *};

    use super::super::Correlator;
    use crate::process::ProcessTable;
    use crate::records::Body;

    fn header(kind: u32, t: u64) -> EventHeader {
        EventHeader {
            kind,
            cpu: 0,
            tgid: 100,
            tid: 100,
            ktime_ns: t,
        }
    }

    fn dest() -> HookDest {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        HookDest {
            family: AF_INET,
            port: 8080,
            addr,
        }
    }

    fn connect(t: u64) -> Event {
        let d = dest();
        Event::Connect(ConnectEvent {
            header: header(EVENT_CONNECT, t),
            fd: 3,
            ret: 0,
            family: d.family,
            port: d.port,
            flags: 0,
            addr: d.addr,
        })
    }

    fn first(t: u64, bytes: &[u8]) -> Event {
        let mut e = FirstBytesEvent {
            header: header(EVENT_FIRST_BYTES, t),
            fd: 3,
            call: FIRST_CALL_WRITE,
            len: bytes.len() as u32,
            captured_len: bytes.len() as u32,
            dest: dest(),
            _pad0: 0,
            payload: [0; FIRST_BYTES_CAPTURE],
        };
        e.payload[..bytes.len()].copy_from_slice(bytes);
        Event::FirstBytes(Box::new(e))
    }

    #[test]
    fn first_bytes_name_the_kept_connection_and_the_summary_lists_each_name_once() {
        let policy = crate::policy::load_default().unwrap();
        let mut c = Correlator::new(&policy, 0);
        let mut procs = ProcessTable::default();
        procs.add_root(100, 1);
        let mut streamed = Vec::new();
        for (i, path) in ["/v1/a", "/v1/b"].iter().enumerate() {
            let t = 1_000_000 * (i as u64 + 1);
            assert!(matches!(
                c.handle(&connect(t), &mut procs).map(|r| r.body),
                Some(Body::Connect(_))
            ));
            let req = format!("POST {path} HTTP/1.1\r\nHost: relay.example\r\n\r\n");
            streamed.push(
                c.handle(&first(t + 500, req.as_bytes()), &mut procs)
                    .map(|r| r.body),
            );
        }
        assert!(
            matches!(&streamed[1], Some(Body::FirstBytes(f)) if f.http.as_ref().is_some_and(|h| h.path == "/v1/b"))
        );
        // Each kept connection has its own request.
        let paths: Vec<_> = c
            .connections
            .iter()
            .filter_map(|k| k.body.http.as_ref().map(|h| h.path.clone()))
            .collect();
        assert_eq!(paths, ["/v1/a", "/v1/b"]);
        // The summary names each request kind (method and path, its query ignored)
        // once: a third request to `/v1/a?page=2` adds nothing.
        c.handle(&connect(3_000_000), &mut procs);
        c.handle(
            &first(
                3_000_500,
                b"POST /v1/a?page=2 HTTP/1.1\r\nHost: relay.example\r\n\r\n",
            ),
            &mut procs,
        );
        let clis = c.cli_summaries(&procs, None);
        let d: Vec<_> = clis[0]
            .destinations
            .iter()
            .filter_map(|d| d.http.as_ref().map(|h| h.path.as_str()))
            .collect();
        assert_eq!(d, ["/v1/a", "/v1/b"]);
        // Bytes that are neither TLS nor HTTP name nothing, counted.
        c.handle(&connect(9_000_000), &mut procs);
        assert!(
            c.handle(&first(9_000_500, b"\x00\x01binary"), &mut procs)
                .is_none()
        );
        assert_eq!(c.first_bytes_unrecognised(), 1);
    }

    #[test]
    fn host_header_names_lose_their_port() {
        assert_eq!(
            super::host_name("api.example.test:8080"),
            "api.example.test"
        );
        assert_eq!(super::host_name("relay.example"), "relay.example");
        assert_eq!(super::host_name("[::1]:80"), "::1");
    }
}
