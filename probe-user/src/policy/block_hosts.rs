//! Host names in block rules (`destination.host`, `except.host`). The kernel sees an
//! address only, so userspace learns which addresses the rules' host globs name (DNS
//! answers the watched processes received, /etc/hosts) and writes those into
//! `BLOCK_ADDRS` with the rules' bits and an expiry (`probe_common::BlockAddr`). This
//! module is the pure part: which bits a name gets, the TTL bound, what is learned
//! and what the kernel map should hold; `sensors::block_addrs` writes it.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

use probe_common::{AF_INET, AF_INET6, BlockAddr, BlockAddrKey, BlockNet, MAX_BLOCK_ADDRS};

use super::rules::glob_matches;

/// One host glob of a block rule: `bit` is the rule's bit (`1 << kernel index`),
/// `except` whether it is from `except.host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGlob {
    pub pattern: String,
    pub bit: u32,
    pub except: bool,
}

/// A DNS TTL is held to this range: a 0 s answer still names its address for the
/// connect that follows it, and a week-long one cannot pin an address that moved.
pub const MIN_TTL: Duration = Duration::from_secs(5);
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// /etc/hosts is read up to this size (root's file, but a huge one must not stall a
/// reload or fill memory).
pub const MAX_HOSTS_FILE: u64 = 1 << 20;

/// (address, name) pairs userspace remembers for a reload to recompute the map from
/// (names that match no rule today may match the next policy's). Past it, expired
/// ones go first, then the new pair is not remembered.
pub const MAX_LEARNED: usize = 4 * MAX_BLOCK_ADDRS as usize;

/// `ttl` (seconds, from a DNS answer) bounded to `MIN_TTL..=MAX_TTL`.
pub fn clamp_ttl(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL)
}

/// The rules' bits for an address learned under `name`: each glob that matches the
/// name (ASCII case-insensitively, a trailing dot ignored) sets its rule's bit.
pub fn bits_of(globs: &[HostGlob], name: &str) -> BlockNet {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut net = BlockNet::default();
    for g in globs.iter().filter(|g| glob_matches(&g.pattern, name)) {
        if g.except {
            net.except |= g.bit;
        } else {
            net.rules |= g.bit;
        }
    }
    net
}

fn is_empty(net: &BlockNet) -> bool {
    net.rules == 0 && net.except == 0
}

/// The `BLOCK_ADDRS` key of `addr` (IPv4-mapped IPv6 as IPv4, as the judge looks up).
pub fn key_of(addr: IpAddr) -> BlockAddrKey {
    let mut key = BlockAddrKey::default();
    match addr.to_canonical() {
        IpAddr::V4(a) => {
            key.family = u32::from(AF_INET);
            key.addr[..4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            key.family = u32::from(AF_INET6);
            key.addr = a.octets();
        }
    }
    key
}

/// Every (address, name) of a hosts file, aliases included. Bounded (`MAX_HOSTS_FILE`);
/// a missing or unreadable file names nothing.
pub fn read_hosts_file(path: &std::path::Path) -> Vec<(IpAddr, String)> {
    match read_bounded(path, MAX_HOSTS_FILE) {
        Ok(bytes) => parse_hosts(&String::from_utf8_lossy(&bytes)),
        Err(err) => {
            tracing::warn!("hosts file {}: {err}", path.display());
            Vec::new()
        }
    }
}

/// A system file (/etc/hosts, /etc/resolv.conf) up to `max` bytes, cut after its last
/// whole line when longer (the cut line could name a prefix of a name: it is
/// dropped, and a warning says so).
pub(super) fn read_bounded(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = Vec::new();
    // Non-blocking, and only a regular file is read: a FIFO or a device put there
    // (or that a symlink leads to) must not stall the reload that reads it.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .and_then(|f| {
            if !f.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            f.take(max + 1).read_to_end(&mut bytes)
        })?;
    if bytes.len() as u64 > max {
        tracing::warn!(
            "{} is over {max} bytes: the rest is not read",
            path.display()
        );
        bytes.truncate(max as usize);
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(end);
    }
    Ok(bytes)
}

fn parse_hosts(text: &str) -> Vec<(IpAddr, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(Ok(addr)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        out.extend(words.map(|name| (addr, name.to_owned())));
    }
    out
}

/// What userspace learned, and what it wrote to `BLOCK_ADDRS`.
#[derive(Debug, Default)]
pub struct LearnedAddrs {
    /// The block rules' host globs in force.
    globs: Vec<HostGlob>,
    /// Per address: each name it was learned under, with its expiry (boot-time ns;
    /// `u64::MAX` for /etc/hosts, replaced at each reload).
    learned: HashMap<IpAddr, Vec<(String, u64)>>,
    learned_pairs: usize,
    /// The kernel map's contents as written.
    pub stored: HashMap<BlockAddrKey, BlockAddr>,
    /// Addresses a block rule's host glob named that the kernel map had no room for
    /// (a loss: the rule does not see them).
    pub not_stored: u64,
    /// Pairs not remembered for a reload (`MAX_LEARNED`).
    pub not_remembered: u64,
}

/// A change to the kernel map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrWrite {
    Put(BlockAddrKey, BlockAddr),
    Remove(BlockAddrKey),
}

impl LearnedAddrs {
    /// Whether any block rule names a host (nothing is written otherwise).
    pub fn wanted(&self) -> bool {
        !self.globs.is_empty()
    }

    /// `addr` was named `name` until `expires_ns`: the writes that put it in the
    /// kernel map (none when no rule's glob matches any of its live names).
    pub fn learn(&mut self, addr: IpAddr, name: &str, expires_ns: u64, now: u64) -> Vec<AddrWrite> {
        let addr = addr.to_canonical();
        self.remember(addr, name, expires_ns, now);
        let mut writes = Vec::new();
        if self.wanted() {
            self.entry_for(addr, now, &mut writes);
        }
        writes
    }

    fn remember(&mut self, addr: IpAddr, name: &str, expires_ns: u64, now: u64) {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if let Some(names) = self.learned.get_mut(&addr)
            && let Some(known) = names.iter_mut().find(|(n, _)| *n == name)
        {
            known.1 = known.1.max(expires_ns);
            return;
        }
        if self.learned_pairs >= MAX_LEARNED {
            self.forget_expired(now);
        }
        if self.learned_pairs >= MAX_LEARNED {
            self.not_remembered += 1;
            // Still judged now if a rule wants it: only a later reload forgets it.
            if !is_empty(&bits_of(&self.globs, &name)) {
                self.learned
                    .entry(addr)
                    .or_default()
                    .push((name, expires_ns));
                self.learned_pairs += 1;
            }
            return;
        }
        self.learned
            .entry(addr)
            .or_default()
            .push((name, expires_ns));
        self.learned_pairs += 1;
    }

    fn forget_expired(&mut self, now: u64) {
        let mut pairs = 0;
        self.learned.retain(|_, names| {
            names.retain(|(_, exp)| *exp > now);
            pairs += names.len();
            !names.is_empty()
        });
        self.learned_pairs = pairs;
    }

    /// The writes that make the kernel entry of `addr` what its live names give.
    fn entry_for(&mut self, addr: IpAddr, now: u64, writes: &mut Vec<AddrWrite>) {
        let key = key_of(addr);
        let mut value = BlockAddr::default();
        for (name, exp) in self.learned.get(&addr).into_iter().flatten() {
            if *exp <= now {
                continue;
            }
            let bits = bits_of(&self.globs, name);
            if is_empty(&bits) {
                continue;
            }
            value.net.rules |= bits.rules;
            value.net.except |= bits.except;
            // One expiry for the entry: the latest of the names that give bits (an
            // address two matching names share keeps both rules' bits until then).
            value.expires_ns = value.expires_ns.max(*exp);
        }
        if is_empty(&value.net) {
            if self.stored.remove(&key).is_some() {
                writes.push(AddrWrite::Remove(key));
            }
            return;
        }
        if self.stored.get(&key) == Some(&value) {
            return;
        }
        let full = |stored: &HashMap<_, _>| {
            !stored.contains_key(&key) && stored.len() >= MAX_BLOCK_ADDRS as usize
        };
        if full(&self.stored) {
            // Make room from what expired (the judge ignores those already).
            self.stored.retain(|k, v| {
                let live = v.expires_ns > now;
                if !live {
                    writes.push(AddrWrite::Remove(*k));
                }
                live
            });
        }
        if full(&self.stored) {
            // Refused rather than evicting another: the map holds exactly what
            // userspace counts, and the loss is this address, counted.
            self.not_stored += 1;
            return;
        }
        self.stored.insert(key, value);
        writes.push(AddrWrite::Put(key, value));
    }

    /// A new policy (its host globs) and a fresh /etc/hosts: the kernel map's new
    /// contents, computed from everything remembered. Returns (old, new) for the
    /// caller to move the map from one to the other.
    pub fn recompute(
        &mut self,
        globs: Vec<HostGlob>,
        hosts_file: &[(IpAddr, String)],
        now: u64,
    ) -> (
        HashMap<BlockAddrKey, BlockAddr>,
        HashMap<BlockAddrKey, BlockAddr>,
    ) {
        self.globs = globs;
        // /etc/hosts as read now replaces what the last read said.
        self.learned.retain(|_, names| {
            names.retain(|(_, exp)| *exp != u64::MAX && *exp > now);
            !names.is_empty()
        });
        self.learned_pairs = self.learned.values().map(Vec::len).sum();
        for (addr, name) in hosts_file {
            self.remember(addr.to_canonical(), name, u64::MAX, now);
        }
        let old = std::mem::take(&mut self.stored);
        if self.wanted() {
            let addrs: Vec<IpAddr> = self.learned.keys().copied().collect();
            // Only `stored` is used: the caller moves the map from old to new.
            let mut writes = Vec::new();
            for addr in addrs {
                self.entry_for(addr, now, &mut writes);
            }
        }
        (old, self.stored.clone())
    }

    /// Undoes `recompute` after the policy it was for was refused.
    pub fn restore(&mut self, globs: Vec<HostGlob>, stored: HashMap<BlockAddrKey, BlockAddr>) {
        self.globs = globs;
        self.stored = stored;
    }

    pub fn globs(&self) -> &[HostGlob] {
        &self.globs
    }
}

#[cfg(test)]
mod tests;
