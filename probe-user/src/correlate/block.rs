//! Block events from the kernel (`EVENT_BLOCK`) become `blocked` / `would_block`
//! records: the rule, the destination, and the reads that made it hold, each with
//! the processes that made them (from the tree's probes, like a rule match's).

use probe_common::{BLOCK_NET_DNS_PENDING, BLOCK_NET_UDP, BLOCK_VERDICT_BLOCKED, BlockEvent};

use super::{Correlator, attribution};
use crate::policy::block::BlockTables;
use crate::policy::rules::{CompiledRule, NetworkEvent};
use crate::process::ProcessTable;
use crate::records::{
    BlockRead, BlockRecord, Body, Destination, Enforcement, KeptBlock, Record, RuleMatch, Stamped,
};

/// Block records kept for the report; later ones are streamed and counted.
pub const MAX_KEPT_BLOCKS: usize = 256;

/// The block rules in force, as the kernel numbers them.
#[derive(Debug, Clone, Default)]
pub struct BlockRules {
    pub tables: BlockTables,
    /// Per kernel rule index, the rule.
    pub rules: Vec<CompiledRule>,
}

impl BlockRules {
    /// The rules as the report and `status` name them.
    pub fn names(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| match &r.id {
                Some(id) => format!("{} ({id})", r.name),
                None => r.name.clone(),
            })
            .collect()
    }

    pub fn of(policy: &crate::policy::CompiledPolicy) -> Self {
        Self {
            tables: policy.block.clone(),
            rules: policy
                .block
                .rule_of
                .iter()
                .map(|&i| policy.rules[i].clone())
                .collect(),
        }
    }
}

/// A read that fed no block slot in the kernel (decided in userspace: a basename or
/// own-home candidate, a case variant of an env name, process_vm_readv), with the
/// slots it feeds. The engine writes it into the tree's kernel state
/// (`Sensors::feed_block_late`): later calls are judged with it; a call the program
/// makes before userspace got there is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateFeed {
    pub pid: u32,
    pub slots: u32,
    pub ktime_ns: u64,
}

impl Correlator {
    /// The late feeds since the last call.
    pub fn take_late_feeds(&mut self) -> Vec<LateFeed> {
        std::mem::take(&mut self.late_feeds)
    }

    /// A probe of `cats` by `how` that the kernel did not count for block rules.
    pub(super) fn feed_late(
        &mut self,
        pid: u32,
        cats: &[usize],
        how: crate::ops::How,
        ktime_ns: u64,
    ) {
        if self.block.tables.is_empty() {
            return;
        }
        let slots =
            crate::policy::block::slots_fed(&self.block.tables.slots, cats, how, &self.classifier);
        if slots != 0 {
            self.late_feeds.push(LateFeed {
                pid,
                slots,
                ktime_ns,
            });
        }
    }

    pub(super) fn on_block(&mut self, e: &BlockEvent, procs: &ProcessTable) -> Option<Record> {
        let Some(rule) = self.block.rules.get(e.rule as usize) else {
            // A rule of a policy reloaded since: counted, not guessed.
            self.block_unknown_rule += 1;
            return None;
        };
        let at = e.header.ktime_ns;
        let mut categories = Vec::new();
        let mut reads = Vec::new();
        for (i, slot) in self.block.tables.slots.iter().enumerate() {
            if e.held & (1 << i) == 0 {
                continue;
            }
            let Some(name) = self.category_names.get(slot.category) else {
                continue;
            };
            categories.push(name.clone());
            reads.push(BlockRead {
                category: name.clone(),
                ms_before: at.saturating_sub(e.fed_ns[i]) as f64 / 1e6,
            });
        }
        categories.sort();
        categories.dedup();
        let mut matched = [RuleMatch::of(rule, categories, false)];
        // Who made the reads: the tree's probes before the call, as a connection
        // record lists them.
        let tree = procs.tree_of(e.header.tgid);
        let mut rows = self
            .timelines
            .tree(tree)
            .map(|t| t.prior.listed(at, &self.category_rank).0)
            .unwrap_or_default();
        attribution::attribute_rows(&mut rows, procs, e.header.tgid);
        attribution::attribute_matches(&mut matched, &rows);
        let [matched] = matched;
        let record = BlockRecord {
            process: procs
                .get(e.header.tgid)
                .map(|p| p.name().to_owned())
                .unwrap_or_default(),
            event: if e.net & !BLOCK_NET_DNS_PENDING == BLOCK_NET_UDP {
                NetworkEvent::UdpSend
            } else {
                NetworkEvent::Connect
            },
            destination: Destination::of_sockaddr(e.family, &e.addr, e.port),
            matched,
            reads,
            dns_pending: e.net & BLOCK_NET_DNS_PENDING != 0,
        };
        let enforced = e.verdict == BLOCK_VERDICT_BLOCKED;
        if enforced && record.event == NetworkEvent::UdpSend && e.port == 0 {
            // An ICMP or raw send, dropped at the egress hook inside the sendto whose
            // exit comes next.
            self.note_dropped_send(e.header.tgid, &record.destination, at);
        }
        let header = self.header(at, e.header.tgid, procs);
        if self.kept_blocks.len() < MAX_KEPT_BLOCKS {
            self.kept_blocks.push(KeptBlock {
                enforced,
                record: Stamped {
                    header,
                    body: record.clone(),
                },
            });
        } else {
            self.blocks_not_kept += 1;
        }
        let body = if enforced {
            Body::Blocked(record)
        } else {
            Body::WouldBlock(record)
        };
        Some(Record { header, body })
    }

    /// Whether the kernel enforces (`enforcing`, the engine's switch) and the block
    /// rules in force; `None` without block rules.
    pub fn enforcement(&self, enforcing: bool) -> Option<Enforcement> {
        (!self.block.rules.is_empty()).then(|| Enforcement {
            enforcing,
            block_rules: self.block.names(),
            dns: None,
            not_judged: None,
        })
    }

    /// The kept block records, of one tree or all.
    pub fn blocks_of(&self, tree: Option<u32>, procs: &ProcessTable) -> Vec<KeptBlock> {
        self.kept_blocks
            .iter()
            .filter(|b| {
                tree.is_none()
                    || b.record
                        .header
                        .tree
                        .or_else(|| b.record.header.pid.map(|p| procs.tree_of(p)))
                        == tree
            })
            .cloned()
            .collect()
    }
}
