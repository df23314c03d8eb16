//! The enforcement switch and the block state of the kernel (`probe_common::block`).
//! The block rules themselves move with the other policy maps (`reload`).
//!
//! Lifecycle: the cgroup programs that judge are attached through links this process
//! owns (never pinned), so when probectl stops, or is killed, the kernel detaches
//! them: blocking fails open, and no machine is left refusing calls with nothing to
//! report or undo it. (aya attaches cgroup programs through a `bpf_link` from kernel
//! 5.7 on; before that a program attached without a link would outlive probectl.)

use aya::maps::{Array, HashMap, MapData};
use probe_common::{
    BLOCK_SLOTS, BlockTreeState, MAP_BLOCK_LATE, MAP_BLOCK_STATE, MAP_BLOCK_TREES, MAP_SETTINGS,
    SETTING_BLOCK_RULES, SETTING_ENFORCE,
};

use super::{AttachStatus, SensorError, Sensors, map_err};

impl Sensors {
    /// Turns enforcement on (block rules refuse calls) or off (they are reported as
    /// "would block"). Not part of the policy: a reload keeps it.
    pub fn set_enforce(&mut self, on: bool) -> Result<(), SensorError> {
        self.set_setting(SETTING_ENFORCE, u32::from(on))
    }

    /// Whether the kernel enforces, and how many block rules it judges.
    pub fn enforcement(&mut self) -> Result<(bool, u32), SensorError> {
        let settings: Array<&mut MapData, u32> = self
            .map(MAP_SETTINGS)?
            .try_into()
            .map_err(map_err(MAP_SETTINGS))?;
        let get = |slot| settings.get(&slot, 0).map_err(map_err(MAP_SETTINGS));
        Ok((get(SETTING_ENFORCE)? != 0, get(SETTING_BLOCK_RULES)?))
    }

    pub(super) fn set_setting(&mut self, slot: u32, value: u32) -> Result<(), SensorError> {
        let mut settings: Array<&mut MapData, u32> = self
            .map(MAP_SETTINGS)?
            .try_into()
            .map_err(map_err(MAP_SETTINGS))?;
        settings.set(slot, value, 0).map_err(map_err(MAP_SETTINGS))
    }

    /// Forgets every tree's read times (a new slot numbering). Best effort: an entry
    /// left behind can only be older than its window or be fed again.
    pub(super) fn clear_block_state(&mut self) {
        for name in [MAP_BLOCK_STATE, MAP_BLOCK_LATE] {
            let Ok(map) = self.map(name) else {
                continue;
            };
            let Ok(mut state) = HashMap::<&mut MapData, u32, BlockTreeState>::try_from(map) else {
                continue;
            };
            let trees: Vec<u32> = state.keys().filter_map(Result::ok).collect();
            for tree in trees {
                if let Err(err) = state.remove(&tree) {
                    tracing::debug!("clearing the block state of tree {tree}: {err}");
                }
            }
        }
    }

    /// Feeds `slots` of `pid`'s tree at `ktime_ns` (boot time), for a read only
    /// userspace could decide (`correlate::block::LateFeed`). Written to
    /// `BLOCK_LATE`, which only this process writes, so no time the kernel wrote is
    /// overwritten. Two map lookups and an update; a failure is counted
    /// (`userspace:block_late_feed_failed`).
    pub fn feed_block_late(&mut self, pid: u32, slots: u32, ktime_ns: u64) {
        if let Err(err) = self.try_feed_block_late(pid, slots, ktime_ns) {
            tracing::debug!("feeding block slots {slots:#x} of pid {pid}: {err}");
            self.block_late_failed += 1;
        }
    }

    fn try_feed_block_late(
        &mut self,
        pid: u32,
        slots: u32,
        ktime_ns: u64,
    ) -> Result<(), SensorError> {
        let tree = {
            let trees: HashMap<&mut MapData, u32, u32> = self
                .map(MAP_BLOCK_TREES)?
                .try_into()
                .map_err(map_err(MAP_BLOCK_TREES))?;
            // A process without an entry is its own tree (as in the kernel's
            // `tree_of`).
            trees.get(&pid, 0).unwrap_or(pid)
        };
        let mut late: HashMap<&mut MapData, u32, BlockTreeState> = self
            .map(MAP_BLOCK_LATE)?
            .try_into()
            .map_err(map_err(MAP_BLOCK_LATE))?;
        let mut state = late.get(&tree, 0).unwrap_or(BlockTreeState {
            fed_ns: [0; BLOCK_SLOTS],
        });
        for (slot, fed) in state.fed_ns.iter_mut().enumerate() {
            if slots & (1 << slot) != 0 && ktime_ns > *fed {
                *fed = ktime_ns;
            }
        }
        late.insert(tree, state, 0).map_err(map_err(MAP_BLOCK_LATE))
    }

    /// Late block feeds that could not be written.
    pub fn block_late_failed(&self) -> u64 {
        self.block_late_failed
    }
}

/// The cgroup programs that judge block rules (`probe-ebpf/src/cgroup_net.rs`).
const JUDGES: [&str; 4] = ["cg_connect4", "cg_connect6", "cg_sendmsg4", "cg_sendmsg6"];

/// The pair that judges ICMP (ping socket) and raw-socket sends, which the sendmsg
/// hooks never see (`probe-ebpf/src/raw_send.rs`).
pub(super) const RAW_JUDGES: [&str; 2] = ["cg_sock_create", "cg_raw_egress"];

/// Whether block rules can refuse calls on this kernel, for `probectl doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockCapability {
    /// Every judging program attached.
    pub possible: bool,
    /// ICMP echo on ping sockets and raw-socket sends are judged too (the
    /// `RAW_JUDGES` attached). False: such sends leave unjudged, as `detail` says.
    pub raw_sends: bool,
    pub detail: String,
}

impl Sensors {
    /// What block rules cannot judge here although the main judges attached: ICMP
    /// and raw-socket sends when their programs did not attach (for `status`,
    /// `doctor` and the report). None when they are judged.
    pub fn raw_sends_not_judged(&self) -> Option<String> {
        raw_sends_not_judged(&self.status)
    }

    /// Whether the programs that judge block rules attached here, and what a stop
    /// does to blocking.
    pub fn block_capability(&self) -> BlockCapability {
        block_capability(&self.status)
    }
}

/// `name: why` for each of `programs` that did not attach.
fn unattached_of(status: &[AttachStatus], programs: &[&str]) -> Vec<String> {
    programs
        .iter()
        .filter(|name| !status.iter().any(|s| s.program == **name && s.attached))
        .map(|name| {
            let why = status
                .iter()
                .find(|s| s.program == *name)
                .and_then(|s| s.error.clone())
                .unwrap_or_else(|| "not loaded".to_owned());
            format!("{name}: {why}")
        })
        .collect()
}

fn raw_sends_not_judged(status: &[AttachStatus]) -> Option<String> {
    let missing = unattached_of(status, &RAW_JUDGES);
    (!missing.is_empty()).then(|| {
        format!(
            "ICMP echo on ping sockets and raw-socket sends are NOT judged by block rules here (they leave even when a rule holds): {}",
            missing.join("; ")
        )
    })
}

fn block_capability(status: &[AttachStatus]) -> BlockCapability {
    let missing = unattached_of(status, &JUDGES);
    if !missing.is_empty() {
        return BlockCapability {
            possible: false,
            raw_sends: false,
            detail: format!(
                "block rules cannot be judged here (no blocked or would_block records): {}",
                missing.join("; ")
            ),
        };
    }
    let raw = raw_sends_not_judged(status);
    let mut detail = "block rules can refuse connects and datagrams here (cgroup v2 connect4/6 and sendmsg4/6, io_uring included".to_owned();
    if raw.is_none() {
        detail.push_str(
            "; ICMP echo on ping sockets and raw-socket sends through cgroup sock_create and skb egress, attached only while a block rule that names udp_send is in force",
        );
    }
    detail.push_str("), when enforcing; the programs are attached through links this probectl holds, never pinned: when it stops or dies, blocking stops (fails open)");
    if let Some(raw) = &raw {
        detail.push_str("; ");
        detail.push_str(raw);
    }
    BlockCapability {
        possible: true,
        raw_sends: raw.is_none(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::Family;

    fn status(program: &str, attached: bool) -> AttachStatus {
        AttachStatus {
            program: program.to_owned(),
            family: Family::Net,
            attach_point: format!("cgroup {program}"),
            attached,
            error: (!attached).then(|| "attach: Invalid argument".to_owned()),
        }
    }

    #[test]
    fn a_missing_raw_send_judge_is_said_never_silent() {
        let mut all: Vec<AttachStatus> = JUDGES
            .iter()
            .chain(&RAW_JUDGES)
            .map(|p| status(p, true))
            .collect();
        let full = block_capability(&all);
        assert!(full.possible && full.raw_sends, "{full:?}");
        assert!(full.detail.contains("ICMP echo"), "{full:?}");
        assert!(raw_sends_not_judged(&all).is_none());

        all.retain(|s| s.program != "cg_raw_egress");
        all.push(status("cg_raw_egress", false));
        let partial = block_capability(&all);
        assert!(partial.possible && !partial.raw_sends, "{partial:?}");
        assert!(
            partial.detail.contains("NOT judged")
                && partial
                    .detail
                    .contains("cg_raw_egress: attach: Invalid argument"),
            "{partial:?}"
        );
        let gap = raw_sends_not_judged(&all).expect("said");
        assert!(gap.contains("raw-socket sends are NOT judged"), "{gap}");
    }
}
