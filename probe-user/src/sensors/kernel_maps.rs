//! Writing what the kernel programs read: tracepoint field offsets found in tracefs,
//! struct member offsets found in BTF (the policy maps are written by `reload.rs`).

use aya::maps::Array;
use probe_common::{
    MAP_KERNEL_OFFSETS, MAP_TP_OFFSETS, TP_EXEC_FILENAME, TP_EXEC_OLD_PID, TP_EXIT_GROUP_DEAD,
    TP_NEWTASK_CLONE_FLAGS, TP_NEWTASK_PID, TP_SOCK_DADDR, TP_SOCK_DADDR_V6, TP_SOCK_DPORT,
    TP_SOCK_FAMILY, TP_SOCK_NEWSTATE, TP_SOCK_OLDSTATE, TP_SOCK_SKADDR,
};

use super::{SensorError, Sensors, tracefs};

impl Sensors {
    pub(super) fn write_tp_offsets(&mut self, root: &std::path::Path) -> Result<(), SensorError> {
        // (slot, category, event, field, required)
        let offsets = [
            (TP_NEWTASK_PID, "task", "task_newtask", "pid", true),
            (
                TP_NEWTASK_CLONE_FLAGS,
                "task",
                "task_newtask",
                "clone_flags",
                true,
            ),
            (
                TP_EXEC_FILENAME,
                "sched",
                "sched_process_exec",
                "filename",
                true,
            ),
            (
                TP_EXEC_OLD_PID,
                "sched",
                "sched_process_exec",
                "old_pid",
                true,
            ),
            // Older kernels lack it; the kernel side then treats the leader's exit as
            // the group's.
            (
                TP_EXIT_GROUP_DEAD,
                "sched",
                "sched_process_exit",
                "group_dead",
                false,
            ),
            // Without these, non-blocking connects keep their in_progress result.
            (
                TP_SOCK_SKADDR,
                "sock",
                "inet_sock_set_state",
                "skaddr",
                false,
            ),
            (
                TP_SOCK_OLDSTATE,
                "sock",
                "inet_sock_set_state",
                "oldstate",
                false,
            ),
            (
                TP_SOCK_NEWSTATE,
                "sock",
                "inet_sock_set_state",
                "newstate",
                false,
            ),
            (TP_SOCK_DPORT, "sock", "inet_sock_set_state", "dport", false),
            (
                TP_SOCK_FAMILY,
                "sock",
                "inet_sock_set_state",
                "family",
                false,
            ),
            (TP_SOCK_DADDR, "sock", "inet_sock_set_state", "daddr", false),
            (
                TP_SOCK_DADDR_V6,
                "sock",
                "inet_sock_set_state",
                "daddr_v6",
                false,
            ),
        ];
        let map = self
            .ebpf
            .map_mut(MAP_TP_OFFSETS)
            .ok_or(SensorError::MissingMap(MAP_TP_OFFSETS))?;
        let mut array: Array<_, u32> = Array::try_from(map).map_err(|source| SensorError::Map {
            map: MAP_TP_OFFSETS,
            source,
        })?;
        for (slot, category, event, field, required) in offsets {
            let offset = match tracefs::field_offset(root, category, event, field) {
                Ok(offset) => offset,
                Err(err) if !required => {
                    tracing::info!("optional tracepoint field absent: {err}");
                    continue;
                }
                Err(err) => return Err(err),
            };
            array
                .set(slot, offset, 0)
                .map_err(|source| SensorError::Map {
                    map: MAP_TP_OFFSETS,
                    source,
                })?;
        }
        Ok(())
    }
}

impl Sensors {
    /// Writes `KERNEL_OFFSETS` slots from the kernel's BTF: each `(slot, [(struct,
    /// member), ...])` is the sum of the path's member offsets (a member of an
    /// embedded struct: its offset in the outer struct, then in the inner one).
    /// Nothing is written unless every slot is found.
    pub(super) fn write_btf_offsets(
        &mut self,
        types: &super::btf::KernelTypes,
        slots: &[(u32, &[(&str, &str)])],
    ) -> Result<(), String> {
        let kbtf = types
            .offsets
            .as_ref()
            .map_err(|e| format!("kernel BTF: {e}"))?;
        let offsets = slots
            .iter()
            .map(|(slot, path)| {
                path.iter()
                    .map(|(strukt, member)| kbtf.member_offset(strukt, member))
                    .sum::<Result<u32, _>>()
                    .map(|offset| (*slot, offset))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("kernel BTF: {e}"))?;
        let map_failed = |e: &dyn std::fmt::Display| format!("{MAP_KERNEL_OFFSETS}: {e}");
        let map = self.map(MAP_KERNEL_OFFSETS).map_err(|e| map_failed(&e))?;
        let mut array: Array<_, u32> = Array::try_from(map).map_err(|e| map_failed(&e))?;
        for (slot, offset) in offsets {
            array.set(slot, offset, 0).map_err(|e| map_failed(&e))?;
        }
        Ok(())
    }
}
