//! Proxy and relay bypass: a process that read HTTPS_PROXY, ALL_PROXY or a `*_BASE_URL`
//! and got a value, then connected somewhere that is neither that proxy nor that relay.
//! Qoder CLI sent its API calls through the proxy it read, and also called a hard-coded
//! IP directly: the second connection is what this flags.
//!
//! What counts:
//! * the process itself read the setting with getenv and it had a value in the
//!   environment it was started with (the value probectl shows, `capture_value_prefix`);
//! * the destination is an IP address (unix sockets are local IPC) and not port 53 (a
//!   resolver asks its DNS server whatever the proxy);
//! * the destination is not the proxy or relay: not its address, and not an address
//!   whose DNS or /etc/hosts name is its host (`localhost` is the loopback addresses),
//!   on its port when the URL names one;
//! * not excused by a NO_PROXY/no_proxy value the process read (exact hosts, `.suffix`
//!   or `*.suffix` domains, IP addresses, `*`).

use std::net::IpAddr;

use crate::records::{Destination, Family, ProxyBypass};

/// Whether an env name is a proxy or relay setting whose value a bypass is judged
/// against.
pub fn is_route_setting(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    matches!(upper.as_str(), "HTTPS_PROXY" | "ALL_PROXY") || upper.ends_with("_BASE_URL")
}

/// Host and port of a proxy or base URL (`http://user:pw@proxy:3128/x`,
/// `socks5h://[::1]:1080`, `proxy:3128` without a scheme).
pub fn host_port(url: &str) -> Option<(String, Option<u16>)> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
        None => (None, url),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    // Cut at the capture limit (`…`) inside the host or port, or hidden whole by the
    // redaction of a cut value (`http://[redacted]…`): the host is not known.
    if authority.contains('…') {
        return None;
    }
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => match scheme.as_deref() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            Some("socks4" | "socks4a" | "socks5" | "socks5h" | "socks") => Some(1080),
            _ => None,
        },
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Whether `dest` (named `name` by DNS or /etc/hosts) is the host and port of `url`.
fn goes_to(url: &str, dest: &Destination, ip: &IpAddr, name: Option<&str>) -> bool {
    let Some((host, port)) = host_port(url) else {
        // A value we cannot parse (cut at the capture limit, say): never flag on it.
        return true;
    };
    if port.is_some_and(|p| p != dest.port) {
        return false;
    }
    match host.parse::<IpAddr>() {
        Ok(h) => h.to_canonical() == ip.to_canonical(),
        Err(_) if host == "localhost" => ip.to_canonical().is_loopback(),
        Err(_) => name.is_some_and(|n| n.eq_ignore_ascii_case(&host)),
    }
}

/// Whether a NO_PROXY value excuses the destination.
fn no_proxy_covers(no_proxy: &str, ip: &IpAddr, name: Option<&str>) -> bool {
    no_proxy.split(',').map(str::trim).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        // `host:port`, `[v6]:port`; a bare IPv6 address or CIDR (`::1`, `fd00::/8`)
        // has colons of its own.
        let host = if let Some(v6) = entry.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else if entry.contains('/') || entry.parse::<IpAddr>().is_ok() {
            entry.as_str()
        } else {
            entry.split(':').next().unwrap_or("")
        };
        if host == "*" {
            return true;
        }
        if let Ok(a) = host.parse::<IpAddr>() {
            return a.to_canonical() == ip.to_canonical();
        }
        if let Some(net) = host
            .contains('/')
            .then(|| crate::policy::rules::parse_cidr(host).ok())
            .flatten()
        {
            return crate::policy::rules::cidr_contains(&net, ip);
        }
        let suffix = host.trim_start_matches('*').trim_start_matches('.');
        if suffix.is_empty() {
            return false;
        }
        match name {
            Some(n) => {
                let n = n.to_ascii_lowercase();
                n == suffix || n.ends_with(&format!(".{suffix}"))
            }
            None => suffix == "localhost" && ip.to_canonical().is_loopback(),
        }
    })
}

/// The settings a connection bypassed, given the (name, value) pairs the process read
/// and got: `None` when it went to one of them, or none applies.
pub fn check(read: &[(&str, &str)], dest: &Destination, name: Option<&str>) -> Option<ProxyBypass> {
    if dest.family == Family::Unix || dest.port == 53 {
        return None;
    }
    let ip: IpAddr = dest.address.parse().ok()?;
    let routes: Vec<&(&str, &str)> = read.iter().filter(|(n, _)| is_route_setting(n)).collect();
    if routes.is_empty() {
        return None;
    }
    if routes.iter().any(|(_, url)| goes_to(url, dest, &ip, name)) {
        return None;
    }
    if read
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("NO_PROXY"))
        .any(|(_, v)| no_proxy_covers(v, &ip, name))
    {
        return None;
    }
    Some(ProxyBypass {
        settings: routes.iter().map(|(n, v)| format!("{n}={v}")).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(address: &str, port: u16) -> Destination {
        Destination {
            family: if address.contains(':') {
                Family::Ipv6
            } else {
                Family::Ipv4
            },
            address: address.into(),
            port,
        }
    }

    #[test]
    fn urls_give_their_host_and_port() {
        assert_eq!(
            host_port("http://u:p@Proxy.Example:3128/x"),
            Some(("proxy.example".into(), Some(3128)))
        );
        assert_eq!(
            host_port("socks5h://[::1]:1080"),
            Some(("::1".into(), Some(1080)))
        );
        assert_eq!(
            host_port("https://relay.example"),
            Some(("relay.example".into(), Some(443)))
        );
        assert_eq!(host_port("proxy:8080"), Some(("proxy".into(), Some(8080))));
        assert_eq!(host_port("http://:80"), None);
        assert_eq!(host_port("http://h:notaport"), None);
        // Values cut at the capture limit inside the authority name no host.
        assert_eq!(host_port("http://proxy.corp.exa…"), None);
        assert_eq!(host_port("http://[redacted]…"), None);
        assert_eq!(host_port("http://10.0.0.…"), None);
        // Cut in the path: the host and port are whole.
        assert_eq!(
            host_port("https://relay.example/v1/lo…"),
            Some(("relay.example".into(), Some(443)))
        );
    }

    #[test]
    fn a_direct_call_elsewhere_is_a_bypass_and_the_proxy_itself_is_not() {
        let read = [("HTTPS_PROXY", "http://127.0.0.1:3128")];
        let it = || &read[..];
        assert!(check(it(), &dest("127.0.0.1", 3128), None).is_none());
        let b = check(it(), &dest("203.0.113.7", 80), None).expect("bypass");
        assert_eq!(b.settings, ["HTTPS_PROXY=http://127.0.0.1:3128"]);
        // Same address, another port: not the proxy.
        assert!(check(it(), &dest("127.0.0.1", 9), None).is_some());
        // DNS and unix sockets are never a bypass.
        assert!(check(it(), &dest("203.0.113.7", 53), None).is_none());
        let unix = Destination {
            family: Family::Unix,
            address: "/run/x".into(),
            port: 0,
        };
        assert!(check(it(), &unix, None).is_none());
        // Nothing read: nothing to bypass.
        assert!(check(&[], &dest("203.0.113.7", 80), None).is_none());
        // A settings that is not a route (TZ) is not judged.
        let tz = [("TZ", "UTC")];
        assert!(check(&tz, &dest("203.0.113.7", 80), None).is_none());
    }

    #[test]
    fn names_relays_and_no_proxy_are_honoured() {
        let read = [
            ("ANTHROPIC_BASE_URL", "https://relay.example/v1"),
            ("NO_PROXY", "localhost,.corp.example,10.0.0.0/8"),
        ];
        let it = || &read[..];
        assert!(check(it(), &dest("192.0.2.5", 443), Some("RELAY.example")).is_none());
        assert!(check(it(), &dest("192.0.2.5", 443), Some("api.other.example")).is_some());
        assert!(check(it(), &dest("192.0.2.9", 443), Some("git.corp.example")).is_none());
        assert!(check(it(), &dest("10.1.2.3", 443), None).is_none());
        assert!(
            check(it(), &dest("127.0.0.1", 8080), None).is_none(),
            "localhost"
        );
        // A value cut inside its host (a long host name, or a long password whose
        // authority was hidden whole) cannot say where the proxy is: never a bypass.
        for cut in ["http://proxy.corp.exa…", "http://[redacted]…"] {
            let read = [("HTTPS_PROXY", cut)];
            assert!(
                check(&read, &dest("192.0.2.5", 3128), None).is_none(),
                "{cut}"
            );
        }
        // IPv6 entries, bare, bracketed with a port, or as a CIDR.
        let v6 = [
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            ("no_proxy", "::1,[fd00::7]:8080,fd01::/16"),
        ];
        for to in ["::1", "fd00::7", "fd01::9"] {
            assert!(check(&v6, &dest(to, 8080), None).is_none(), "{to}");
        }
        assert!(check(&v6, &dest("fd02::1", 8080), None).is_some());
        let local = [("HTTPS_PROXY", "http://localhost:3128")];
        let it = || &local[..];
        assert!(check(it(), &dest("::1", 3128), None).is_none());
    }
}
