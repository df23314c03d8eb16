//! Which DNS servers' answers may name addresses for block rules' host globs. A
//! watched process chooses where its queries go: an answer from a server it controls
//! could otherwise make any address count as an allowlisted name (`except.host`) or
//! fill `BLOCK_ADDRS`. Only *trusted resolvers* are learned from: the `nameserver`
//! lines of /etc/resolv.conf (read at start and at each policy reload), or the list
//! the daemon's `trusted_resolvers` / `--trusted-resolver` gives instead. Answers from
//! any other server are counted per server, never learned.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

/// Where the system's resolvers are listed.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// /etc/resolv.conf is read up to this size (a real one is a few lines).
pub const MAX_RESOLV_CONF: u64 = 64 * 1024;
/// Distinct untrusted servers counted by name; answers from more are summed apart.
pub const MAX_UNTRUSTED_SERVERS: usize = 64;

/// A DNS server: an address and a port (53 unless written `ADDR:PORT`, `[V6]:PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resolver {
    pub addr: IpAddr,
    pub port: u16,
}

impl Resolver {
    /// `addr` (IPv4-mapped IPv6 as IPv4, so that either spelling compares equal).
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Self {
            addr: addr.to_canonical(),
            port,
        }
    }
}

impl fmt::Display for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.addr, self.port))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a DNS server address (ADDR, ADDR:PORT or [IPV6]:PORT)")]
pub struct BadResolver(String);

impl FromStr for Resolver {
    type Err = BadResolver;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Self::new(addr, 53));
        }
        match s.parse::<SocketAddr>() {
            Ok(sa) if sa.port() != 0 => Ok(Self::new(sa.ip(), sa.port())),
            _ => Err(BadResolver(s.to_owned())),
        }
    }
}

impl serde::Serialize for Resolver {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Resolver {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The `nameserver` lines of a resolv.conf (port 53), read bounded, non-blocking
/// and only from a regular file (a symlink is followed: /etc/resolv.conf often is
/// one, into /run; what it points to must still be a regular file). A missing or
/// unreadable file names no resolver, so no DNS answer is learned (warned).
pub fn read_resolv_conf(path: &Path) -> Vec<Resolver> {
    match super::block_hosts::read_bounded(path, MAX_RESOLV_CONF) {
        Ok(bytes) => parse_resolv_conf(&String::from_utf8_lossy(&bytes)),
        Err(err) => {
            tracing::warn!(
                "{}: {err}: no DNS answer is trusted for block rules' host names",
                path.display()
            );
            Vec::new()
        }
    }
}

fn parse_resolv_conf(text: &str) -> Vec<Resolver> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // A link-local IPv6 server carries its zone (`fe80::1%eth0`): the address
        // is compared without it.
        let Some(Ok(addr)) = words
            .next()
            .map(|w| w.split('%').next().unwrap_or(w).parse::<IpAddr>())
        else {
            continue;
        };
        let r = Resolver::new(addr, 53);
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Where the trusted resolvers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrustSource {
    /// The `nameserver` lines of /etc/resolv.conf.
    ResolvConf,
    /// `trusted_resolvers` in the daemon's config, or `--trusted-resolver`.
    Configured,
}

/// Answers from servers that are not trusted, from one server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct UntrustedAnswers {
    /// `ADDR:PORT`; `unknown` when probectl did not see where the query went;
    /// `other` for servers past the first 64.
    pub server: String,
    pub answers: u64,
}

/// The trusted resolvers and the count of answers refused.
#[derive(Debug, Default)]
pub struct DnsTrust {
    configured: Option<Vec<Resolver>>,
    resolv_conf: Vec<Resolver>,
    untrusted: BTreeMap<Resolver, u64>,
    /// Answers whose server was not known (a connected socket whose connect was not
    /// seen) or past `MAX_UNTRUSTED_SERVERS`.
    unknown: u64,
    other: u64,
}

impl DnsTrust {
    /// An explicit list replaces /etc/resolv.conf (`None`: the file's).
    pub fn set_configured(&mut self, list: Option<Vec<Resolver>>) {
        self.configured = list;
    }

    /// /etc/resolv.conf as read now (at start and at each reload).
    pub fn set_resolv_conf(&mut self, list: Vec<Resolver>) {
        self.resolv_conf = list;
    }

    pub fn resolv_conf(&self) -> &[Resolver] {
        &self.resolv_conf
    }

    pub fn source(&self) -> TrustSource {
        match self.configured {
            Some(_) => TrustSource::Configured,
            None => TrustSource::ResolvConf,
        }
    }

    pub fn trusted(&self) -> &[Resolver] {
        self.configured.as_deref().unwrap_or(&self.resolv_conf)
    }

    /// Whether an answer from `server` (`None`: not known) may be learned; one that
    /// may not is counted.
    pub fn admit(&mut self, server: Option<Resolver>) -> bool {
        let Some(server) = server.map(|s| Resolver::new(s.addr, s.port)) else {
            self.unknown += 1;
            return false;
        };
        if self.trusted().contains(&server) {
            return true;
        }
        if let Some(n) = self.untrusted.get_mut(&server) {
            *n += 1;
        } else if self.untrusted.len() < MAX_UNTRUSTED_SERVERS {
            self.untrusted.insert(server, 1);
        } else {
            self.other += 1;
        }
        false
    }

    /// Answers not learned, per server (most first).
    pub fn untrusted(&self) -> Vec<UntrustedAnswers> {
        let mut out: Vec<UntrustedAnswers> = self
            .untrusted
            .iter()
            .map(|(s, &n)| UntrustedAnswers {
                server: s.to_string(),
                answers: n,
            })
            .collect();
        out.sort_by_key(|u| std::cmp::Reverse(u.answers));
        for (server, answers) in [("unknown", self.unknown), ("other", self.other)] {
            if answers > 0 {
                out.push(UntrustedAnswers {
                    server: server.to_owned(),
                    answers,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers_parse_with_and_without_a_port() {
        let r: Resolver = "127.0.0.53".parse().unwrap();
        assert_eq!(r.to_string(), "127.0.0.53:53");
        assert_eq!(
            "127.0.0.1:5353".parse::<Resolver>().unwrap().to_string(),
            "127.0.0.1:5353"
        );
        assert_eq!(
            "[::1]:53".parse::<Resolver>().unwrap(),
            "::1".parse().unwrap()
        );
        // IPv4-mapped is the IPv4 server.
        assert_eq!(
            "::ffff:10.0.0.1".parse::<Resolver>().unwrap(),
            "10.0.0.1".parse().unwrap()
        );
        for bad in ["", "resolver", "10.0.0.1:0", "10.0.0.1:99999", "10.0.0.0/8"] {
            assert!(bad.parse::<Resolver>().is_err(), "{bad}");
        }
    }

    #[test]
    fn resolv_conf_nameservers_are_read_and_the_rest_ignored() {
        let text = "# generated\nsearch example.test\nnameserver 10.0.0.2\n\
                    nameserver   fe80::1%eth0 # link-local\n;nameserver 10.9.9.9\n\
                    nameserver 10.0.0.2\nnameserver bogus\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(text),
            ["10.0.0.2".parse().unwrap(), "fe80::1".parse().unwrap()]
        );
    }

    #[test]
    fn a_resolv_conf_is_read_bounded_and_only_if_regular() {
        let dir = std::env::temp_dir().join(format!("probectl-resolv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A FIFO (even through a symlink) would block a plain read: nothing is read.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(read_resolv_conf(&fifo).is_empty());
        assert!(read_resolv_conf(&link).is_empty());
        assert!(read_resolv_conf(&dir.join("missing")).is_empty());
        // A regular file through a symlink (as systemd-resolved sets it up) is read.
        let real = dir.join("stub-resolv.conf");
        std::fs::write(&real, "nameserver 127.0.0.53\n").unwrap();
        let link2 = dir.join("resolv.conf");
        std::os::unix::fs::symlink(&real, &link2).unwrap();
        assert_eq!(read_resolv_conf(&link2), ["127.0.0.53".parse().unwrap()]);
        // Past the bound, the rest is not read.
        let big = dir.join("big");
        let mut text = "nameserver 10.0.0.1\n".to_owned();
        text.push_str(&"#".repeat(MAX_RESOLV_CONF as usize));
        text.push_str("\nnameserver 10.0.0.9\n");
        std::fs::write(&big, text).unwrap();
        assert_eq!(read_resolv_conf(&big), ["10.0.0.1".parse().unwrap()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_trusted_servers_are_admitted_and_the_others_are_counted() {
        let mut trust = DnsTrust::default();
        trust.set_resolv_conf(vec!["10.0.0.2".parse().unwrap()]);
        let ok = "10.0.0.2".parse().ok();
        let evil: Option<Resolver> = "198.51.100.7".parse().ok();
        assert!(trust.admit(ok));
        // The same address on another port is another server.
        assert!(!trust.admit("10.0.0.2:5353".parse().ok()));
        assert!(!trust.admit(evil));
        assert!(!trust.admit(evil));
        assert!(!trust.admit(None));
        assert_eq!(
            trust.untrusted(),
            [
                UntrustedAnswers {
                    server: "198.51.100.7:53".into(),
                    answers: 2
                },
                UntrustedAnswers {
                    server: "10.0.0.2:5353".into(),
                    answers: 1
                },
                UntrustedAnswers {
                    server: "unknown".into(),
                    answers: 1
                },
            ]
        );
        // An explicit list replaces the file's.
        trust.set_configured(Some(vec!["198.51.100.7".parse().unwrap()]));
        assert_eq!(trust.source(), TrustSource::Configured);
        assert!(trust.admit(evil));
        assert!(!trust.admit(ok));
        // Bounded: servers past the first 64 are summed as `other`.
        for i in 0..=MAX_UNTRUSTED_SERVERS as u8 {
            trust.admit(Some(Resolver::new(IpAddr::from([192, 0, 2, i]), 53)));
        }
        let listed = trust.untrusted();
        assert_eq!(listed.len(), MAX_UNTRUSTED_SERVERS + 2);
        assert!(listed.iter().any(|u| u.server == "other"));
    }
}
