//! `BLOCK_ADDRS`: the addresses learned for block rules' host globs
//! (`policy::block_hosts`), written as DNS answers arrive and recomputed for each
//! policy put in force.

use std::collections::HashMap;
use std::net::IpAddr;

use aya::maps::MapData;
use probe_common::{BlockAddr, BlockAddrKey, MAP_BLOCK_ADDRS, MAP_BLOCK_DNS_DONE, MAP_BLOCK_TREES};

use super::map_update::update;
use super::{SensorError, Sensors, map_err};
use crate::policy::PreparedPolicy;
use crate::policy::block_hosts::{AddrWrite, clamp_ttl};
use crate::policy::dns_trust::{Resolver, TrustSource, UntrustedAnswers};

type AddrMap<'a> = aya::maps::HashMap<&'a mut MapData, BlockAddrKey, BlockAddr>;

/// `BLOCK_ADDRS` as a map the policy update can move (`map_update`).
struct Addrs<'a>(AddrMap<'a>);

impl super::map_update::MapWrite<BlockAddrKey, BlockAddr> for Addrs<'_> {
    type Error = aya::maps::MapError;
    fn insert(&mut self, key: &BlockAddrKey, value: &BlockAddr) -> Result<(), Self::Error> {
        self.0.insert(key, value, 0)
    }
    fn remove(&mut self, key: &BlockAddrKey) -> Result<(), Self::Error> {
        match self.0.remove(key) {
            // Gone already (LRU eviction): as wanted.
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            other => other,
        }
    }
}

impl Sensors {
    /// A DNS answer a watched process received from `server` (`None`: not known):
    /// `name` resolved to each address, with its TTL in seconds. From a trusted
    /// resolver only (`dns_trust`; another's answer is counted, not learned), the
    /// addresses a block rule's host glob names are written to the kernel at once
    /// (one map update each; nothing else waits).
    pub fn learn_block_addrs(
        &mut self,
        name: &str,
        addrs: &[(IpAddr, u32)],
        server: Option<Resolver>,
    ) {
        if addrs.is_empty() || !self.dns_trust.admit(server) {
            return;
        }
        let now = crate::time::boot_now_ns();
        let mut writes = Vec::new();
        for &(addr, ttl) in addrs {
            let expires =
                now.saturating_add(u64::try_from(clamp_ttl(ttl).as_nanos()).unwrap_or(u64::MAX));
            writes.extend(self.block_addrs.learn(addr, name, expires, now));
        }
        if writes.is_empty() {
            return;
        }
        if let Err(err) = self.write_block_addrs(&writes) {
            tracing::warn!("learning the addresses of {name:?} for block rules: {err}");
        }
    }

    fn write_block_addrs(&mut self, writes: &[AddrWrite]) -> Result<(), SensorError> {
        let mut map: AddrMap = self
            .map(MAP_BLOCK_ADDRS)?
            .try_into()
            .map_err(map_err(MAP_BLOCK_ADDRS))?;
        let mut failed = Vec::new();
        for w in writes {
            let result = match w {
                AddrWrite::Put(key, value) => map.insert(key, value, 0),
                AddrWrite::Remove(key) => map.remove(key),
            };
            if let Err(err) = result {
                tracing::debug!("BLOCK_ADDRS: {err}");
                if let AddrWrite::Put(key, _) = w {
                    failed.push(*key);
                }
            }
        }
        // Not in the kernel: a loss like a full map.
        self.block_addrs.not_stored += failed.len() as u64;
        for key in failed {
            self.block_addrs.stored.remove(&key);
        }
        Ok(())
    }

    /// Recomputes `BLOCK_ADDRS` for `prepared` (its host globs, its read of
    /// /etc/hosts) and moves the map there, make-before-break like the other policy
    /// maps. Returns what to hand `restore_block_addrs` if the policy is refused
    /// later.
    pub(super) fn move_block_addrs(
        &mut self,
        prepared: &PreparedPolicy,
    ) -> Result<AddrsBefore, SensorError> {
        let before_globs = self.block_addrs.globs().to_vec();
        let (old, new) = self.block_addrs.recompute(
            prepared.policy.block.hosts.clone(),
            &prepared.hosts_file,
            crate::time::boot_now_ns(),
        );
        let before = AddrsBefore {
            globs: before_globs,
            stored: old,
            resolv_conf: self.dns_trust.resolv_conf().to_vec(),
        };
        if let Err(err) = self.move_addrs(&before.stored, &new) {
            let stored = before.stored.clone();
            self.block_addrs.restore(before.globs, stored);
            return Err(err);
        }
        // Read with the policy: a reload re-reads /etc/resolv.conf.
        self.dns_trust
            .set_resolv_conf(prepared.resolv_conf.as_ref().clone());
        Ok(before)
    }

    /// Puts `BLOCK_ADDRS` back as it was before `move_block_addrs`.
    pub(super) fn restore_block_addrs(&mut self, before: AddrsBefore) -> Result<(), SensorError> {
        let now = self.block_addrs.stored.clone();
        self.move_addrs(&now, &before.stored)?;
        self.block_addrs.restore(before.globs, before.stored);
        self.dns_trust.set_resolv_conf(before.resolv_conf);
        Ok(())
    }

    fn move_addrs(
        &mut self,
        from: &HashMap<BlockAddrKey, BlockAddr>,
        to: &HashMap<BlockAddrKey, BlockAddr>,
    ) -> Result<(), SensorError> {
        if from == to {
            return Ok(());
        }
        let map: AddrMap = self
            .map(MAP_BLOCK_ADDRS)?
            .try_into()
            .map_err(map_err(MAP_BLOCK_ADDRS))?;
        update(&mut Addrs(map), from, to).map_err(|(source, _)| SensorError::Map {
            map: MAP_BLOCK_ADDRS,
            source,
        })
    }

    /// Addresses block rules' host globs named that `BLOCK_ADDRS` had no room for.
    pub fn block_addrs_not_stored(&self) -> u64 {
        self.block_addrs.not_stored
    }

    /// The DNS answer a watched process `tgid` received, whose event the kernel
    /// stamped `at_ns`, is handled (and what it named is in `BLOCK_ADDRS`): its tree's
    /// mark is no longer pending (`probe_common::BLOCK_DNS_PENDING_NS`). Called only
    /// while a rule has `dns_pending: block`.
    pub fn dns_answer_handled(&mut self, tgid: u32, at_ns: u64) {
        if let Err(err) = self.write_dns_done(tgid, at_ns) {
            self.block_dns_done_not_written += 1;
            tracing::debug!("BLOCK_DNS_DONE: {err}");
        }
    }

    fn write_dns_done(&mut self, tgid: u32, at_ns: u64) -> Result<(), SensorError> {
        // The tree as the kernel keys it: a forked process's root, else itself.
        let tree = {
            let trees: aya::maps::HashMap<&mut MapData, u32, u32> = self
                .map(MAP_BLOCK_TREES)?
                .try_into()
                .map_err(map_err(MAP_BLOCK_TREES))?;
            trees.get(&tgid, 0).unwrap_or(tgid)
        };
        let mut done: aya::maps::HashMap<&mut MapData, u32, u64> = self
            .map(MAP_BLOCK_DNS_DONE)?
            .try_into()
            .map_err(map_err(MAP_BLOCK_DNS_DONE))?;
        // Never backwards: answers of one tree handled out of their time order (two
        // CPUs) keep the latest.
        let at_ns = done.get(&tree, 0).map_or(at_ns, |d| d.max(at_ns));
        done.insert(tree, at_ns, 0)
            .map_err(map_err(MAP_BLOCK_DNS_DONE))
    }

    /// An explicit list of trusted resolvers (`None`: /etc/resolv.conf's).
    pub fn set_trusted_resolvers(&mut self, list: Option<Vec<Resolver>>) {
        self.dns_trust.set_configured(list);
    }

    /// The resolvers whose answers are learned, and where that list comes from.
    pub fn trusted_resolvers(&self) -> (TrustSource, Vec<Resolver>) {
        (self.dns_trust.source(), self.dns_trust.trusted().to_vec())
    }

    /// DNS answers not learned because their server is not trusted, per server.
    pub fn untrusted_dns_answers(&self) -> Vec<UntrustedAnswers> {
        self.dns_trust.untrusted()
    }

    /// Pairs learned past what is remembered for a reload (`LearnedAddrs`).
    pub fn block_addrs_not_remembered(&self) -> u64 {
        self.block_addrs.not_remembered
    }
}

/// The address map before a policy update, to undo it.
pub(super) struct AddrsBefore {
    globs: Vec<crate::policy::block_hosts::HostGlob>,
    stored: HashMap<BlockAddrKey, BlockAddr>,
    resolv_conf: Vec<Resolver>,
}
