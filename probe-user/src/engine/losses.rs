//! Every counter of something lost (or filtered) in one type. The report's `drops`
//! and `filtered`, `status`'s `drops` and the daemon's `loss` records are all rendered
//! from a `Losses`, so the three can no longer list different counters.

use std::collections::BTreeMap;

use crate::records::{DropCount, LossCount};

use super::Engine;

/// A loss userspace itself counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UserspaceLoss {
    /// A ring-buffer record could not be decoded (kernel and userspace builds differ,
    /// or corruption).
    DecodeError,
    /// A probe of a new target did not fit in the bounded timelines.
    TimelineOverflow,
    /// A record could not be written to the run's output.
    OutputWriteError,
    /// A relative path ending in a policy basename whose base directory could not be
    /// named (the process was gone before userspace could ask /proc).
    RelativePathUnresolved,
    /// A daemon subscriber fell so far behind that it was disconnected.
    SubscriberLagging,
    /// A package or identity lookup did not finish in its time bound (a file on a
    /// stalled filesystem, say): the record lacks that identity.
    IdentityLookupTimeout,
    /// A libc a watched process mapped got no getenv uprobes: the bound on lazily
    /// attached files was reached.
    EnvObjectLimit,
    /// A mapped libc could not be opened safely (gone, not a regular file).
    EnvObjectUnreadable,
    /// A mapped libc had getenv, but no uprobe attached to it.
    EnvObjectAttachFailed,
    /// A process's `HOME` or `XDG_CONFIG_HOME` at exec could not place its `~/`
    /// (relative, with `..`, or longer than the value captured): `~/` paths under it
    /// are matched only against the passwd homes.
    HomeUnusable,
    /// A value the policy shows (`capture_value_prefix`) was not kept: 16,384 (process,
    /// name) pairs were: the report lacks it next to its name and the proxy-bypass check
    /// cannot use it.
    ShownValueNotKept,
    /// A block event named a rule the policy in force no longer has (a reload came
    /// between the kernel's verdict and its record): its `blocked` record is lost.
    BlockRuleReloaded,
    /// An address a block rule's host glob named (a DNS answer, /etc/hosts) found
    /// the kernel's address map full: the rule does not see it (`except.host`: a
    /// call to it is refused; `destination.host`: let through).
    BlockAddrNotStored,
    /// An (address, name) pair learned past the 32,768 remembered ones, that no block
    /// rule in force names: a later reload whose host globs name it cannot judge it
    /// until it is learned again.
    BlockAddrNotRemembered,
    /// A DNS answer handled whose "done" could not be written to the kernel
    /// (`BLOCK_DNS_DONE`): a `dns_pending: block` rule kept its tree's unknown
    /// addresses refused until the 2 s bound.
    BlockDnsDoneNotWritten,
    /// A read only userspace could decide (a basename or own-home candidate, a case
    /// variant, process_vm_readv) could not be written into the kernel's block state:
    /// block rules do not count it.
    BlockLateFeedFailed,
}

impl UserspaceLoss {
    pub fn name(self) -> &'static str {
        match self {
            UserspaceLoss::DecodeError => "decode_error",
            UserspaceLoss::TimelineOverflow => "timeline_overflow",
            UserspaceLoss::OutputWriteError => "output_write_error",
            UserspaceLoss::RelativePathUnresolved => "relative_path_unresolved",
            UserspaceLoss::SubscriberLagging => "subscriber_lagging",
            UserspaceLoss::IdentityLookupTimeout => "identity_lookup_timeout",
            UserspaceLoss::EnvObjectLimit => "env_object_limit",
            UserspaceLoss::EnvObjectUnreadable => "env_object_unreadable",
            UserspaceLoss::EnvObjectAttachFailed => "env_object_attach_failed",
            UserspaceLoss::HomeUnusable => "home_unusable",
            UserspaceLoss::ShownValueNotKept => "shown_value_not_kept",
            UserspaceLoss::BlockRuleReloaded => "block_rule_reloaded",
            UserspaceLoss::BlockAddrNotStored => "block_addr_not_stored",
            UserspaceLoss::BlockAddrNotRemembered => "block_addr_not_remembered",
            UserspaceLoss::BlockDnsDoneNotWritten => "block_dns_done_not_written",
            UserspaceLoss::BlockLateFeedFailed => "block_late_feed_failed",
        }
    }
}

/// Something a sink could not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkLoss {
    /// Its queue was full: the record never reached it.
    QueueFull,
    /// It failed to write the record.
    Errors,
    /// Its on-disk spool was full.
    SpoolFull,
    /// Its format has no encoding for the record (OCSF and some kinds).
    NotEncodable,
    /// Longer than its destination accepts whole (syslog `max_message_bytes`).
    TooLarge,
}

impl SinkLoss {
    pub fn name(self) -> &'static str {
        match self {
            SinkLoss::QueueFull => "queue_full",
            SinkLoss::Errors => "errors",
            SinkLoss::SpoolFull => "spool_full",
            SinkLoss::NotEncodable => "not_encodable",
            SinkLoss::TooLarge => "too_large",
        }
    }
}

/// Why a kernel match was not reported (not a loss, but counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filtered {
    /// An env name whose letter case the policy's exact rule rejects.
    EnvNameCaseMismatch,
    /// A kernel path match that no category holds (a truncated path).
    PathUnclassified,
    /// An operation that no matching category counts (`operations:`).
    OperationNotCounted,
    /// A file named like a libc that is not an ELF object for this machine: no
    /// uprobes.
    EnvObjectNotElf,
    /// An ELF object named like a libc that does not define getenv: no uprobes.
    EnvObjectWithoutGetenv,
    /// A DNS answer that answers no pending query of that process and socket (by
    /// transaction id), or comes from another address than the query went to: it
    /// names nothing.
    DnsAnswerUnsolicited,
    /// A connection's first bytes were neither a TLS handshake nor an HTTP request
    /// (another protocol, or a write to a file that reused a closed socket's fd):
    /// they name nothing.
    FirstBytesUnrecognised,
}

impl Filtered {
    pub fn name(self) -> &'static str {
        match self {
            Filtered::EnvNameCaseMismatch => "env_name_case_mismatch",
            Filtered::PathUnclassified => "path_unclassified",
            Filtered::OperationNotCounted => "operation_not_counted",
            Filtered::EnvObjectNotElf => "env_object_not_elf",
            Filtered::EnvObjectWithoutGetenv => "env_object_without_getenv",
            Filtered::DnsAnswerUnsolicited => "dns_answer_unsolicited",
            Filtered::FirstBytesUnrecognised => "first_bytes_unrecognised",
        }
    }
}

/// Counters since start, by source (`kernel:ring_full_file`,
/// `userspace:decode_error`, `sink:<name>:queue_full`), zeros included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Losses {
    lost: BTreeMap<String, u64>,
    filtered: BTreeMap<Filtered, u64>,
}

impl Losses {
    pub fn kernel(&mut self, reason: &str, count: u64) {
        *self.lost.entry(format!("kernel:{reason}")).or_default() += count;
    }

    pub fn userspace(&mut self, loss: UserspaceLoss, count: u64) {
        *self
            .lost
            .entry(format!("userspace:{}", loss.name()))
            .or_default() += count;
    }

    pub fn sink(&mut self, sink: &str, loss: SinkLoss, count: u64) {
        *self
            .lost
            .entry(format!("sink:{sink}:{}", loss.name()))
            .or_default() += count;
    }

    pub fn filtered(&mut self, why: Filtered, count: u64) {
        *self.filtered.entry(why).or_default() += count;
    }

    /// Every loss counter, zeros included (for `status`).
    pub fn all(&self) -> Vec<DropCount> {
        self.lost
            .iter()
            .map(|(reason, &count)| DropCount {
                reason: reason.clone(),
                count,
            })
            .collect()
    }

    /// The loss counters that are not zero (for a report).
    pub fn nonzero_losses(&self) -> Vec<DropCount> {
        self.all().into_iter().filter(|d| d.count > 0).collect()
    }

    /// The filtered counters that are not zero (for a report).
    pub fn nonzero_filtered(&self) -> Vec<DropCount> {
        self.filtered
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(why, &count)| DropCount {
                reason: why.name().to_owned(),
                count,
            })
            .collect()
    }

    /// The counters that grew since `before`, with their totals (a `loss` record).
    pub fn grown_since(&self, before: &Losses) -> Vec<LossCount> {
        self.lost
            .iter()
            .filter_map(|(source, &total)| {
                let was = before.lost.get(source).copied().unwrap_or(0);
                (total > was).then(|| LossCount {
                    source: source.clone(),
                    count: total - was,
                    total,
                })
            })
            .collect()
    }

    /// One source's total (tests, status lines).
    pub fn get(&self, source: &str) -> u64 {
        self.lost.get(source).copied().unwrap_or(0)
    }
}

impl Engine {
    /// The engine's own loss and filter counters now: the kernel's drop slots, the
    /// ring reader's, the correlator's. Callers add their own (a printer's write
    /// errors, sinks, subscribers).
    pub fn losses(&self) -> Losses {
        let mut l = Losses::default();
        match self.sensors.drops() {
            Ok(drops) => {
                for (reason, n) in drops {
                    l.kernel(reason, n);
                }
            }
            Err(err) => tracing::warn!("cannot read the kernel's drop counters: {err}"),
        }
        let c = &self.correlator;
        l.kernel("exec_argv_lost", c.argv_lost);
        l.userspace(UserspaceLoss::DecodeError, self.reader.decode_errors);
        l.userspace(UserspaceLoss::TimelineOverflow, c.timelines.overflow);
        l.userspace(UserspaceLoss::RelativePathUnresolved, c.unresolved_paths);
        l.userspace(
            UserspaceLoss::IdentityLookupTimeout,
            self.procs.identity_timeouts(),
        );
        let env = self.sensors.env_object_counts();
        l.userspace(UserspaceLoss::EnvObjectLimit, env.over_limit);
        l.userspace(UserspaceLoss::EnvObjectUnreadable, env.unreadable);
        l.userspace(UserspaceLoss::EnvObjectAttachFailed, env.attach_failed);
        l.userspace(UserspaceLoss::HomeUnusable, c.homes_unusable);
        l.userspace(UserspaceLoss::ShownValueNotKept, c.values.not_kept);
        l.userspace(UserspaceLoss::BlockRuleReloaded, c.block_unknown_rule);
        l.userspace(
            UserspaceLoss::BlockAddrNotStored,
            self.sensors.block_addrs_not_stored(),
        );
        l.userspace(
            UserspaceLoss::BlockAddrNotRemembered,
            self.sensors.block_addrs_not_remembered(),
        );
        l.userspace(
            UserspaceLoss::BlockDnsDoneNotWritten,
            self.sensors.block_dns_done_not_written,
        );
        l.userspace(
            UserspaceLoss::BlockLateFeedFailed,
            self.sensors.block_late_failed(),
        );
        l.filtered(Filtered::EnvObjectNotElf, env.not_elf);
        l.filtered(Filtered::EnvObjectWithoutGetenv, env.no_getenv);
        l.filtered(Filtered::EnvNameCaseMismatch, c.case_mismatches);
        l.filtered(Filtered::PathUnclassified, c.unclassified_paths);
        l.filtered(Filtered::OperationNotCounted, c.operation_not_counted);
        l.filtered(Filtered::DnsAnswerUnsolicited, c.names.unsolicited);
        l.filtered(
            Filtered::FirstBytesUnrecognised,
            c.first_bytes_unrecognised(),
        );
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_type_renders_reports_status_and_loss_records_alike() {
        let mut before = Losses::default();
        before.kernel("ring_full_file", 2);
        before.userspace(UserspaceLoss::DecodeError, 0);
        let mut now = before.clone();
        now.kernel("ring_full_file", 3);
        now.sink("jsonl:/x", SinkLoss::QueueFull, 1);
        now.filtered(Filtered::PathUnclassified, 4);
        assert_eq!(now.all().len(), 3, "zeros too");
        let nonzero: Vec<String> = now.nonzero_losses().into_iter().map(|d| d.reason).collect();
        assert_eq!(
            nonzero,
            ["kernel:ring_full_file", "sink:jsonl:/x:queue_full"]
        );
        let grown = now.grown_since(&before);
        assert_eq!(grown.len(), 2);
        assert_eq!((grown[0].count, grown[0].total), (3, 5));
        assert_eq!(now.nonzero_filtered()[0].reason, "path_unclassified");
        assert_eq!(now.get("kernel:ring_full_file"), 5);
    }
}
