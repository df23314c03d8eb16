//! Writing what the kernel programs read: tracepoint field offsets found in tracefs,
//! and the compiled policy (env names, paths, settings, selected program names).

use aya::maps::{Array, HashMap, LpmTrie, lpm_trie::Key};
use probe_common::{
    EnvNameKey, MAP_ENV_NAMES, MAP_ENV_PREFIXES, MAP_PATHS, MAP_SELECT_COMMS, MAP_SELECT_UIDS,
    MAP_SETTINGS, MAP_TP_OFFSETS, PATH_LEN, PolicyRef, SETTING_ENV_PREFIXES,
    SETTING_EXEC_CANDIDATES, SETTING_PROC_ENVIRON, SETTING_SELECTION, TP_EXEC_FILENAME,
    TP_EXEC_OLD_PID, TP_EXIT_GROUP_DEAD, TP_NEWTASK_CLONE_FLAGS, TP_NEWTASK_PID, TP_SOCK_DADDR,
    TP_SOCK_DADDR_V6, TP_SOCK_DPORT, TP_SOCK_FAMILY, TP_SOCK_NEWSTATE, TP_SOCK_OLDSTATE,
    TP_SOCK_SKADDR,
};

use super::{SensorError, Sensors, map_err, tracefs};
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
        let k = &policy.kernel;
        let mut settings: Array<_, u32> =
            Array::try_from(self.map(MAP_SETTINGS)?).map_err(map_err(MAP_SETTINGS))?;
        for (slot, on) in [
            (SETTING_PROC_ENVIRON, k.proc_environ),
            (
                SETTING_SELECTION,
                !k.select_comms.is_empty() || !k.select_uids.is_empty() || k.exec_candidates,
            ),
            (SETTING_EXEC_CANDIDATES, k.exec_candidates),
            (SETTING_ENV_PREFIXES, !k.env_prefixes.is_empty()),
        ] {
            settings
                .set(slot, u32::from(on), 0)
                .map_err(map_err(MAP_SETTINGS))?;
        }
        let mut comms: HashMap<_, probe_common::CommKey, u32> =
            HashMap::try_from(self.map(MAP_SELECT_COMMS)?).map_err(map_err(MAP_SELECT_COMMS))?;
        for key in &k.select_comms {
            comms.insert(key, 1, 0).map_err(map_err(MAP_SELECT_COMMS))?;
        }
        let mut uids: HashMap<_, u32, u32> =
            HashMap::try_from(self.map(MAP_SELECT_UIDS)?).map_err(map_err(MAP_SELECT_UIDS))?;
        for uid in &k.select_uids {
            uids.insert(uid, 1, 0).map_err(map_err(MAP_SELECT_UIDS))?;
        }
        let mut env: HashMap<_, EnvNameKey, PolicyRef> =
            HashMap::try_from(self.map(MAP_ENV_NAMES)?).map_err(map_err(MAP_ENV_NAMES))?;
        for (key, value) in &k.env_names {
            env.insert(key, value, 0).map_err(map_err(MAP_ENV_NAMES))?;
        }
        let mut prefixes: LpmTrie<_, EnvNameKey, PolicyRef> =
            LpmTrie::try_from(self.map(MAP_ENV_PREFIXES)?).map_err(map_err(MAP_ENV_PREFIXES))?;
        for (bits, data, value) in &k.env_prefixes {
            prefixes
                .insert(&Key::new(*bits, *data), value, 0)
                .map_err(map_err(MAP_ENV_PREFIXES))?;
        }
        let mut paths: LpmTrie<_, [u8; PATH_LEN], PolicyRef> =
            LpmTrie::try_from(self.map(MAP_PATHS)?).map_err(map_err(MAP_PATHS))?;
        for (bits, data, value) in &k.paths {
            paths
                .insert(&Key::new(*bits, *data), value, 0)
                .map_err(map_err(MAP_PATHS))?;
        }
        Ok(())
    }
}
