//! DNS attribution: names for the addresses a process connects to, from the DNS
//! answers it received during the run, or else from /etc/hosts. Decoding is done by
//! `simple-dns` on the bytes the kernel captured; a datagram that does not parse is
//! counted, not guessed at.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::{Packet, rdata::RData};

pub use crate::records::NameSource;

#[derive(Debug, Default)]
pub struct NameBook {
    from_dns: HashMap<IpAddr, String>,
    from_hosts: HashMap<IpAddr, String>,
    /// Captured DNS datagrams that did not parse.
    pub unparsed: u64,
    /// Answers dropped to stay within `MAX_DNS_NAMES`.
    pub forgotten: u64,
    /// Queries sent and not yet answered, the only answers accepted.
    pending: PendingQueries,
    /// Answers refused: no query of that process, socket and transaction id was
    /// pending, or the answer came from another address than the query went to.
    pub unsolicited: u64,
}

/// Queries waiting for their answer, keyed by (tgid, fd, transaction id).
#[derive(Debug, Default)]
struct PendingQueries {
    by_key: HashMap<QueryKey, Option<Server>>,
    /// Insertion order, for the bound: the oldest is forgotten first.
    order: VecDeque<QueryKey>,
}

type QueryKey = (u32, i32, u16);

/// Where a query went, or where an answer came from: (address, port).
pub type Server = (IpAddr, u16);

/// An accepted DNS answer, for block rules' host globs: the name, each address with
/// its TTL (seconds), and the server it came from (`None`: not known).
#[derive(Debug, Clone)]
pub struct LearnedAnswer {
    pub name: String,
    pub addrs: Vec<(IpAddr, u32)>,
    pub server: Option<crate::policy::dns_trust::Resolver>,
}

/// What the kernel says about an answer's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerSource {
    /// recvfrom asked for no source address: a connected socket, whose peer the
    /// kernel enforces (or a program that does not care).
    NotAsked,
    /// The source recvfrom wrote.
    Addr(Server),
    /// A source address was asked for but could not be read.
    Unreadable,
}

/// Queries kept waiting for an answer; past it, the oldest is forgotten (its late
/// answer is then refused).
pub const MAX_PENDING_QUERIES: usize = 4_096;

/// The transaction id of a DNS message (its first two bytes).
pub fn transaction_id(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]))
}

/// Addresses whose DNS name is kept; past it, an old one is forgotten (counted).
pub const MAX_DNS_NAMES: usize = 65_536;

/// The questions of a query: (name, type).
pub fn parse_query(payload: &[u8]) -> Option<Vec<(String, String)>> {
    let packet = Packet::parse(payload).ok()?;
    Some(
        packet
            .questions
            .iter()
            .map(|q| (q.qname.to_string(), format!("{:?}", q.qtype)))
            .collect(),
    )
}

/// The question name of an answer and the addresses it resolved to.
pub fn parse_answer(payload: &[u8]) -> Option<(String, Vec<IpAddr>)> {
    let (name, addrs) = parse_answer_ttls(payload)?;
    Some((name, addrs.into_iter().map(|(a, _)| a).collect()))
}

/// The question name of an answer and the addresses it resolved to, each with its
/// record's TTL (seconds).
pub fn parse_answer_ttls(payload: &[u8]) -> Option<(String, Vec<(IpAddr, u32)>)> {
    let packet = Packet::parse(payload).ok()?;
    let name = packet.questions.first()?.qname.to_string();
    let addrs = packet
        .answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::A(a) => Some((IpAddr::V4(Ipv4Addr::from(a.address)), rr.ttl)),
            RData::AAAA(a) => Some((IpAddr::V6(Ipv6Addr::from(a.address)), rr.ttl)),
            _ => None,
        })
        .collect();
    Some((name, addrs))
}

impl NameBook {
    /// Reads /etc/hosts once, at start; a missing or unreadable file gives no names.
    pub fn with_hosts_file(path: &str) -> Self {
        let mut book = NameBook::default();
        if let Ok(text) = std::fs::read_to_string(path) {
            book.from_hosts = parse_hosts(&text);
        }
        book
    }

    pub fn learn(&mut self, name: &str, addrs: &[IpAddr]) {
        for addr in addrs {
            if self.from_dns.len() >= MAX_DNS_NAMES && !self.from_dns.contains_key(addr) {
                // A daemon runs for weeks: an arbitrary old answer makes room.
                if let Some(old) = self.from_dns.keys().next().copied() {
                    self.from_dns.remove(&old);
                    self.forgotten += 1;
                }
            }
            self.from_dns.insert(*addr, name.to_owned());
        }
    }

    /// A query was sent: its answer will be accepted once.
    pub fn expect_answer(&mut self, tgid: u32, fd: i32, txid: u16, server: Option<Server>) {
        let key = (tgid, fd, txid);
        let p = &mut self.pending;
        if p.by_key.insert(key, server).is_none() {
            p.order.push_back(key);
        }
        while p.by_key.len() > MAX_PENDING_QUERIES {
            let Some(old) = p.order.pop_front() else {
                break;
            };
            p.by_key.remove(&old);
        }
        // Answered keys leave `order` lazily; keep it bounded too.
        if p.order.len() > 2 * MAX_PENDING_QUERIES {
            let live = &p.by_key;
            p.order.retain(|k| live.contains_key(k));
        }
    }

    /// Whether an answer may name addresses: it answers a pending query of the same
    /// process and socket with its transaction id, from the address the query went
    /// to. An accepted answer takes its query off the list and gives the server it
    /// came from when known (`Some(None)`: a connected socket's, with no source asked:
    /// the socket's connect named it); a refused one is counted (`None`).
    pub fn accept_answer(
        &mut self,
        tgid: u32,
        fd: i32,
        txid: u16,
        source: AnswerSource,
    ) -> Option<Option<Server>> {
        let key = (tgid, fd, txid);
        let accepted = match self.pending.by_key.get(&key) {
            None => None,
            // Sent with an explicit destination on an unconnected socket: anyone can
            // send to it, so the source must be known and be that destination.
            Some(Some(server)) => match source {
                AnswerSource::Addr(from)
                    if from.0.to_canonical() == server.0.to_canonical() && from.1 == server.1 =>
                {
                    Some(Some(*server))
                }
                _ => None,
            },
            // Sent on a connected socket: the kernel only delivers the peer's datagrams.
            Some(None) => match source {
                AnswerSource::Unreadable => None,
                AnswerSource::Addr(from) => Some(Some(from)),
                AnswerSource::NotAsked => Some(None),
            },
        };
        if accepted.is_some() {
            self.pending.by_key.remove(&key);
        } else {
            self.unsolicited += 1;
        }
        accepted
    }

    /// Addresses named by DNS answers now.
    pub fn len(&self) -> usize {
        self.from_dns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.from_dns.is_empty()
    }

    /// The name a process would have used for `addr`: a DNS answer seen in this run
    /// first, /etc/hosts second.
    pub fn name_of(&self, addr: &IpAddr) -> Option<(&str, NameSource)> {
        if let Some(n) = self.from_dns.get(addr) {
            return Some((n, NameSource::Dns));
        }
        self.from_hosts
            .get(addr)
            .map(|n| (n.as_str(), NameSource::EtcHosts))
    }
}

/// `ADDRESS NAME [ALIASES...]` lines; the first name is the canonical one.
fn parse_hosts(text: &str) -> HashMap<IpAddr, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let (Some(addr), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if let Ok(addr) = addr.parse::<IpAddr>() {
            map.entry(addr).or_insert_with(|| name.to_owned());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{CLASS, Name, Question, ResourceRecord, TYPE, rdata::A};

    #[test]
    fn queries_and_answers_round_trip() {
        let mut q = Packet::new_query(7);
        q.questions.push(Question::new(
            Name::new_unchecked("api.example.test"),
            TYPE::A.into(),
            CLASS::IN.into(),
            false,
        ));
        let bytes = q.build_bytes_vec().unwrap();
        assert_eq!(
            parse_query(&bytes).unwrap(),
            [("api.example.test".to_owned(), "TYPE(A)".to_owned())]
        );

        let mut a = Packet::new_reply(7);
        a.questions.push(Question::new(
            Name::new_unchecked("api.example.test"),
            TYPE::A.into(),
            CLASS::IN.into(),
            false,
        ));
        a.answers.push(ResourceRecord::new(
            Name::new_unchecked("api.example.test"),
            CLASS::IN,
            60,
            RData::A(A {
                address: 0x7f00_0001,
            }),
        ));
        let (name, addrs) = parse_answer(&a.build_bytes_vec().unwrap()).unwrap();
        assert_eq!(name, "api.example.test");
        assert_eq!(addrs, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let (_, with_ttls) = parse_answer_ttls(&a.build_bytes_vec().unwrap()).unwrap();
        assert_eq!(with_ttls, [(IpAddr::V4(Ipv4Addr::LOCALHOST), 60)]);
        assert!(parse_answer(b"\x00\x01garbage").is_none());
    }

    #[test]
    fn only_answers_to_a_pending_query_from_its_server_are_accepted() {
        let server: Server = (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 53);
        let forger: Server = (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), 53);
        let mut book = NameBook::default();
        // Nothing asked: refused.
        assert!(
            book.accept_answer(1, 3, 7, AnswerSource::Addr(server))
                .is_none()
        );
        book.expect_answer(1, 3, 7, Some(server));
        // Wrong id, wrong socket, wrong process, wrong source, unknown source.
        assert!(
            book.accept_answer(1, 3, 8, AnswerSource::Addr(server))
                .is_none()
        );
        assert!(
            book.accept_answer(1, 4, 7, AnswerSource::Addr(server))
                .is_none()
        );
        assert!(
            book.accept_answer(2, 3, 7, AnswerSource::Addr(server))
                .is_none()
        );
        assert!(
            book.accept_answer(1, 3, 7, AnswerSource::Addr(forger))
                .is_none()
        );
        assert!(
            book.accept_answer(1, 3, 7, AnswerSource::NotAsked)
                .is_none()
        );
        assert_eq!(
            book.accept_answer(1, 3, 7, AnswerSource::Addr(server)),
            Some(Some(server))
        );
        // Once: a second answer with the same id is refused.
        assert!(
            book.accept_answer(1, 3, 7, AnswerSource::Addr(server))
                .is_none()
        );
        // A connected socket's query (no destination given): the kernel enforces
        // the peer, so an answer without a source address is accepted.
        book.expect_answer(1, 5, 9, None);
        assert!(
            book.accept_answer(1, 5, 9, AnswerSource::Unreadable)
                .is_none()
        );
        assert_eq!(
            book.accept_answer(1, 5, 9, AnswerSource::NotAsked),
            Some(None)
        );
        assert_eq!(book.unsolicited, 8);
        // Bounded: the oldest pending query is forgotten.
        for id in 0..=MAX_PENDING_QUERIES as u16 {
            book.expect_answer(9, 3, id, None);
        }
        assert!(
            book.accept_answer(9, 3, 0, AnswerSource::NotAsked)
                .is_none()
        );
        assert!(
            book.accept_answer(9, 3, 1, AnswerSource::NotAsked)
                .is_some()
        );
    }

    #[test]
    fn hosts_lines_name_addresses_and_dns_wins() {
        let mut book = NameBook {
            from_hosts: parse_hosts(
                "127.0.0.1 localhost loopback\n# c\n::1 ip6-localhost\n10.1.2.3 intranet # x\n",
            ),
            ..Default::default()
        };
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(book.name_of(&lo), Some(("localhost", NameSource::EtcHosts)));
        assert_eq!(
            book.name_of(&"10.1.2.3".parse().unwrap()),
            Some(("intranet", NameSource::EtcHosts))
        );
        book.learn("api.example.test", &[lo]);
        assert_eq!(
            book.name_of(&lo),
            Some(("api.example.test", NameSource::Dns))
        );
    }
}
