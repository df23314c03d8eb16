//! Writing what the kernel programs read: tracepoint field offsets found in tracefs,
//! and the compiled policy (env names, paths, settings, selected program names).

use aya::maps::{Array, HashMap, LpmTrie, lpm_trie::Key};
use probe_common::{
    EnvNameKey, MAP_ENV_NAMES, MAP_ENV_PREFIXES, MAP_PATHS, MAP_SELECT_COMMS, MAP_SETTINGS,
    MAP_TP_OFFSETS, PATH_LEN, PolicyRef, SETTING_ENV_PREFIXES, SETTING_PROC_ENVIRON,
    SETTING_SELECTION, TP_EXEC_FILENAME, TP_EXEC_OLD_PID, TP_EXIT_GROUP_DEAD,
    TP_NEWTASK_CLONE_FLAGS, TP_NEWTASK_PID, TP_SOCK_DADDR, TP_SOCK_DADDR_V6, TP_SOCK_DPORT,
    TP_SOCK_FAMILY, TP_SOCK_NEWSTATE, TP_SOCK_OLDSTATE, TP_SOCK_SKADDR,
};

use super::{SensorError, Sensors, tracefs};
use crate::policy::CompiledPolicy;

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

    pub(super) fn write_policy(&mut self, policy: &CompiledPolicy) -> Result<(), SensorError> {
        let map = self
            .ebpf
            .map_mut(MAP_SETTINGS)
            .ok_or(SensorError::MissingMap(MAP_SETTINGS))?;
        let mut settings: Array<_, u32> =
            Array::try_from(map).map_err(|source| SensorError::Map {
                map: MAP_SETTINGS,
                source,
            })?;
        settings
            .set(
                SETTING_PROC_ENVIRON,
                u32::from(policy.kernel.proc_environ),
                0,
            )
            .map_err(|source| SensorError::Map {
                map: MAP_SETTINGS,
                source,
            })?;
        settings
            .set(
                SETTING_SELECTION,
                u32::from(!policy.kernel.select_comms.is_empty()),
                0,
            )
            .map_err(|source| SensorError::Map {
                map: MAP_SETTINGS,
                source,
            })?;
        settings
            .set(
                SETTING_ENV_PREFIXES,
                u32::from(!policy.kernel.env_prefixes.is_empty()),
                0,
            )
            .map_err(|source| SensorError::Map {
                map: MAP_SETTINGS,
                source,
            })?;
        let map = self
            .ebpf
            .map_mut(MAP_SELECT_COMMS)
            .ok_or(SensorError::MissingMap(MAP_SELECT_COMMS))?;
        let mut comms: HashMap<_, probe_common::CommKey, u32> =
            HashMap::try_from(map).map_err(|source| SensorError::Map {
                map: MAP_SELECT_COMMS,
                source,
            })?;
        for key in &policy.kernel.select_comms {
            comms.insert(key, 1, 0).map_err(|source| SensorError::Map {
                map: MAP_SELECT_COMMS,
                source,
            })?;
        }
        let map = self
            .ebpf
            .map_mut(MAP_ENV_NAMES)
            .ok_or(SensorError::MissingMap(MAP_ENV_NAMES))?;
        let mut env: HashMap<_, EnvNameKey, PolicyRef> =
            HashMap::try_from(map).map_err(|source| SensorError::Map {
                map: MAP_ENV_NAMES,
                source,
            })?;
        for (key, value) in &policy.kernel.env_names {
            env.insert(key, value, 0)
                .map_err(|source| SensorError::Map {
                    map: MAP_ENV_NAMES,
                    source,
                })?;
        }
        let map = self
            .ebpf
            .map_mut(MAP_ENV_PREFIXES)
            .ok_or(SensorError::MissingMap(MAP_ENV_PREFIXES))?;
        let mut prefixes: LpmTrie<_, EnvNameKey, PolicyRef> =
            LpmTrie::try_from(map).map_err(|source| SensorError::Map {
                map: MAP_ENV_PREFIXES,
                source,
            })?;
        for (bits, data, value) in &policy.kernel.env_prefixes {
            prefixes
                .insert(&Key::new(*bits, *data), value, 0)
                .map_err(|source| SensorError::Map {
                    map: MAP_ENV_PREFIXES,
                    source,
                })?;
        }
        let map = self
            .ebpf
            .map_mut(MAP_PATHS)
            .ok_or(SensorError::MissingMap(MAP_PATHS))?;
        let mut paths: LpmTrie<_, [u8; PATH_LEN], PolicyRef> =
            LpmTrie::try_from(map).map_err(|source| SensorError::Map {
                map: MAP_PATHS,
                source,
            })?;
        for (bits, data, value) in &policy.kernel.paths {
            paths
                .insert(&Key::new(*bits, *data), value, 0)
                .map_err(|source| SensorError::Map {
                    map: MAP_PATHS,
                    source,
                })?;
        }
        Ok(())
    }
}
