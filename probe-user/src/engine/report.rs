//! The end-of-run report, built from the engine's state: for the whole session (`run`,
//! `watch`) or for one process tree (a daemon subscriber's).

use crate::records::{CliIdentity, DropCount, RunReport};

use super::Engine;
use super::losses::Losses;

/// Which part of the engine's state a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportScope {
    /// Everything the engine saw (a standalone `run` or `watch`).
    All,
    /// One process tree: the records of `root`'s tree only (losses and sensors stay
    /// the engine's, since they cannot be split by tree).
    Tree,
}

impl Engine {
    /// Whether block rules refuse calls, which do, and for host names whose DNS
    /// answers count (report and `status`); `None` without block rules.
    pub fn enforcement(&self) -> Option<crate::records::Enforcement> {
        let mut e = self.correlator.enforcement(self.enforce)?;
        e.not_judged = self.sensors.raw_sends_not_judged();
        if !self.policy.block.hosts.is_empty() {
            let (from, trusted) = self.sensors.trusted_resolvers();
            e.dns = Some(crate::records::DnsTrustReport {
                trusted_from: from,
                trusted: trusted.iter().map(ToString::to_string).collect(),
                untrusted: self.sensors.untrusted_dns_answers(),
            });
        }
        Some(e)
    }

    /// The report of `root` (its identity heads the report) with `exit_code`.
    /// `losses` are the counters to show (the engine's own, plus the caller's, such as
    /// a printer's write errors).
    pub fn report(
        &self,
        root: u32,
        exit_code: i32,
        scope: ReportScope,
        losses: &Losses,
    ) -> RunReport {
        let tree = (scope == ReportScope::Tree).then(|| self.procs.tree_of(root));
        let c = &self.correlator;
        let clis = c.cli_summaries(&self.procs, tree);
        let partial_reasons = crate::correlate::partial_reasons(&clis);
        RunReport {
            policy: self.policy.name.clone(),
            cli: CliIdentity::of(&self.procs, root),
            probes: c.summarize(tree),
            rules: c.rule_summaries(tree.map(|t| (t, &self.procs))),
            clis,
            connections: match tree {
                Some(t) => c.connections_of(t, &self.procs).cloned().collect(),
                None => c.connections.iter().cloned().collect(),
            },
            timeline: c.timeline_usage(),
            sensors: self.sensors.choices.clone(),
            partial: self.sensors.unattached().next().is_some() || !partial_reasons.is_empty(),
            partial_reasons,
            unattached_sensors: self.sensors.unattached().cloned().collect(),
            drops: losses.nonzero_losses(),
            truncated: c
                .truncated
                .iter()
                .map(|(reason, count)| DropCount {
                    reason: (*reason).to_owned(),
                    count: *count,
                })
                .chain((c.connections_not_kept > 0).then(|| DropCount {
                    // Streamed when they happened; only the report's list is cut.
                    reason: "report_connections".to_owned(),
                    count: c.connections_not_kept,
                }))
                .chain((c.blocks_not_kept > 0).then(|| DropCount {
                    reason: "report_blocks".to_owned(),
                    count: c.blocks_not_kept,
                }))
                .collect(),
            filtered: losses.nonzero_filtered(),
            coverage_notes: self.sensors.coverage_notes(),
            enforcement: self.enforcement(),
            blocks: c.blocks_of(tree, &self.procs),
            exit_code,
        }
    }
}
