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
    BlockTreeState, MAP_BLOCK_STATE, MAP_SETTINGS, SETTING_BLOCK_RULES, SETTING_ENFORCE,
};

use super::{SensorError, Sensors, map_err};

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
        let Ok(map) = self.map(MAP_BLOCK_STATE) else {
            return;
        };
        let Ok(mut state) = HashMap::<&mut MapData, u32, BlockTreeState>::try_from(map) else {
            return;
        };
        let trees: Vec<u32> = state.keys().filter_map(Result::ok).collect();
        for tree in trees {
            if let Err(err) = state.remove(&tree) {
                tracing::debug!("clearing the block state of tree {tree}: {err}");
            }
        }
    }
}

/// The cgroup programs that judge block rules (`probe-ebpf/src/cgroup_net.rs`).
const JUDGES: [&str; 4] = ["cg_connect4", "cg_connect6", "cg_sendmsg4", "cg_sendmsg6"];

/// Whether block rules can refuse calls on this kernel, for `probectl doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockCapability {
    /// Every judging program attached.
    pub possible: bool,
    pub detail: String,
}

impl Sensors {
    /// Whether the programs that judge block rules attached here, and what a stop
    /// does to blocking.
    pub fn block_capability(&self) -> BlockCapability {
        let missing: Vec<String> = JUDGES
            .iter()
            .filter(|name| {
                !self
                    .status
                    .iter()
                    .any(|s| s.program == **name && s.attached)
            })
            .map(|name| {
                let why = self
                    .status
                    .iter()
                    .find(|s| s.program == *name)
                    .and_then(|s| s.error.clone())
                    .unwrap_or_else(|| "not loaded".to_owned());
                format!("{name}: {why}")
            })
            .collect();
        if missing.is_empty() {
            BlockCapability {
                possible: true,
                detail: "block rules can refuse connects and datagrams here (cgroup v2 connect4/6 and sendmsg4/6, io_uring included), when enforcing; the programs are attached through links this probectl holds, never pinned: when it stops or dies, blocking stops (fails open)".to_owned(),
            }
        } else {
            BlockCapability {
                possible: false,
                detail: format!(
                    "block rules cannot be judged here (no blocked or would_block records): {}",
                    missing.join("; ")
                ),
            }
        }
    }
}
