use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn globs() -> Vec<HostGlob> {
    vec![
        HostGlob {
            pattern: "blocked.test".into(),
            bit: 1 << 0,
            except: false,
        },
        HostGlob {
            pattern: "*.allowed.test".into(),
            bit: 1 << 1,
            except: true,
        },
        HostGlob {
            pattern: "allowed.test".into(),
            bit: 1 << 1,
            except: true,
        },
        HostGlob {
            pattern: "*.test".into(),
            bit: 1 << 2,
            except: false,
        },
    ]
}

#[test]
fn a_name_gets_the_bits_of_every_glob_that_matches_it() {
    let g = globs();
    let bits = |name| {
        let n = bits_of(&g, name);
        (n.rules, n.except)
    };
    assert_eq!(bits("blocked.test"), (0b101, 0));
    // Case and a trailing dot do not matter.
    assert_eq!(bits("BLOCKED.Test."), (0b101, 0));
    assert_eq!(bits("allowed.test"), (0b100, 0b10));
    assert_eq!(bits("api.allowed.test"), (0b100, 0b10));
    // `*` spans dots; a near miss gets nothing.
    assert_eq!(bits("a.b.allowed.test"), (0b100, 0b10));
    assert_eq!(bits("allowed.test.evil.example"), (0, 0));
    assert_eq!(bits("notblocked.example"), (0, 0));
    assert_eq!(bits(""), (0, 0));
}

#[test]
fn ttls_are_clamped() {
    assert_eq!(clamp_ttl(0), MIN_TTL);
    assert_eq!(clamp_ttl(1), MIN_TTL);
    assert_eq!(clamp_ttl(5), Duration::from_secs(5));
    assert_eq!(clamp_ttl(300), Duration::from_secs(300));
    assert_eq!(clamp_ttl(3600), MAX_TTL);
    assert_eq!(clamp_ttl(u32::MAX), MAX_TTL);
}

#[test]
fn keys_put_mapped_ipv6_with_ipv4() {
    let v4 = key_of(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    assert_eq!(v4.family, u32::from(AF_INET));
    assert_eq!(&v4.addr[..4], &[10, 1, 2, 3]);
    assert!(v4.addr[4..].iter().all(|&b| b == 0));
    let mapped = key_of(IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()));
    assert_eq!(mapped, v4);
    let v6 = key_of(IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(v6.family, u32::from(AF_INET6));
    assert_eq!(v6.addr, Ipv6Addr::LOCALHOST.octets());
}

#[test]
fn only_names_a_rule_wants_are_stored_and_they_expire() {
    let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
    let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
    let mut l = LearnedAddrs::default();
    // No host rule yet: remembered, nothing written.
    assert!(l.learn(a, "blocked.test", 100, 0).is_empty());
    let (old, new) = l.recompute(globs(), &[], 0);
    assert!(old.is_empty());
    // The reload computes the entry from what was learned before it.
    assert_eq!(new.len(), 1);
    assert_eq!(new[&key_of(a)].net.rules, 0b101);
    assert_eq!(new[&key_of(a)].expires_ns, 100);
    // A name no glob matches is not stored.
    assert!(l.learn(b, "other.example", 100, 0).is_empty());
    // A second name of the same address adds its bits; the entry lasts as long as
    // the longest of them.
    let w = l.learn(a, "x.allowed.test", 200, 0);
    assert_eq!(w.len(), 1);
    let AddrWrite::Put(_, v) = w[0] else {
        panic!("{w:?}")
    };
    assert_eq!(
        (v.net.rules, v.net.except, v.expires_ns),
        (0b101, 0b10, 200)
    );
    // Once `blocked.test` expired, relearning the other name drops its bits.
    let w = l.learn(a, "x.allowed.test", 300, 150);
    let AddrWrite::Put(_, v) = w[0] else {
        panic!("{w:?}")
    };
    assert_eq!(
        (v.net.rules, v.net.except, v.expires_ns),
        (0b100, 0b10, 300)
    );
    // A policy without host rules empties the map.
    let (old, new) = l.recompute(Vec::new(), &[], 150);
    assert_eq!(old.len(), 1);
    assert!(new.is_empty());
}

#[test]
fn hosts_file_names_never_expire_and_a_reload_rereads_them() {
    let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let hosts =
        parse_hosts("# c\n10.0.0.1 intranet blocked.test # alias\nbad line\n::1 localhost\n");
    assert_eq!(
        hosts,
        [
            (a, "intranet".to_owned()),
            (a, "blocked.test".to_owned()),
            (IpAddr::V6(Ipv6Addr::LOCALHOST), "localhost".to_owned()),
        ]
    );
    let mut l = LearnedAddrs::default();
    let (_, new) = l.recompute(globs(), &hosts, 0);
    assert_eq!(new[&key_of(a)].expires_ns, u64::MAX);
    // The entry is gone from /etc/hosts at the next reload.
    let (_, new) = l.recompute(globs(), &[], 10);
    assert!(new.is_empty());
}

#[test]
fn a_full_map_counts_what_it_could_not_store() {
    let mut l = LearnedAddrs::default();
    l.recompute(globs(), &[], 0);
    for i in 0..MAX_BLOCK_ADDRS {
        let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert_eq!(l.learn(addr, "blocked.test", 10, 0).len(), 1);
    }
    let extra = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert!(l.learn(extra, "blocked.test", 10, 0).is_empty());
    assert_eq!(l.not_stored, 1);
    // Once the others expired, they make room (removed from the map too).
    let w = l.learn(extra, "blocked.test", 100, 20);
    assert_eq!(w.len(), MAX_BLOCK_ADDRS as usize + 1);
    assert!(matches!(w.last(), Some(AddrWrite::Put(..))));
}

#[test]
fn a_hosts_file_is_read_bounded_and_only_if_regular() {
    let dir = std::env::temp_dir().join(format!("probectl-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A FIFO with no writer: refused at once, not waited on.
    assert!(read_hosts_file(&fifo).is_empty());
    // Over the bound: read up to it, the cut line dropped.
    let big = dir.join("hosts");
    let line = "10.0.0.1 abcdefgh.test\n";
    let lines = MAX_HOSTS_FILE as usize / line.len() + 10;
    std::fs::write(&big, line.repeat(lines)).unwrap();
    let read = read_hosts_file(&big);
    assert_eq!(read.len(), MAX_HOSTS_FILE as usize / line.len());
    assert!(read.iter().all(|(_, n)| n == "abcdefgh.test"));
    std::fs::remove_dir_all(&dir).unwrap();
}
