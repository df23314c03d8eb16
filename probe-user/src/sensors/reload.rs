//! Putting a prepared policy in force in the kernel maps, at start and on reload.
//!
//! `Sensors` keeps what it wrote (`PolicyMaps`). A new policy is checked against every
//! map's capacity before any map is touched; then each map goes from the old entries to
//! the new ones (`map_update`: leaving entries removed first, so old ∪ new never needs
//! more room than either); if a write fails, that map and every map already moved are
//! restored, so a refused policy leaves the kernel maps exactly as they were. No file
//! is read here: the file index comes prepared (`policy::prepare`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use aya::Pod;
use aya::maps::{Array, LpmTrie, MapData, MapError, lpm_trie::Key};
use probe_common::{
    BLOCK_ENTRY_NONE, BlockEntry, BlockNet, BlockRule, MAP_BLOCK_ADDRS, MAP_BLOCK_ENTRIES,
    MAP_BLOCK_NET4, MAP_BLOCK_NET6, MAP_BLOCK_RULES, MAP_BLOCK_WINDOWS, SETTING_BLOCK_RULES,
};
use probe_common::{
    BasenameKey, CommKey, EnvNameKey, InodeKey, InodeRef, MAP_BASENAMES, MAP_ENV_NAMES,
    MAP_ENV_PREFIXES, MAP_INODES, MAP_OWN_HOME_PATHS, MAP_PATHS, MAP_SELECT_COMMS, MAP_SELECT_UIDS,
    MAP_SETTINGS, PATH_LEN, PolicyRef, SETTING_BASENAMES, SETTING_ENV_PREFIXES,
    SETTING_EXEC_CANDIDATES, SETTING_HOST_CALLS, SETTING_INODES, SETTING_OWN_HOME,
    SETTING_PROC_ENVIRON, SETTING_SELECTION,
};

use super::map_update::{MapWrite, update};
use super::{SensorError, Sensors, map_err};
use crate::policy::{FileIndex, KernelCapacity, PreparedPolicy};

impl PolicyMaps {
    /// Whether the block rules of `other` differ from these.
    fn block_differs(&self, other: &PolicyMaps) -> bool {
        self.block_entries != other.block_entries
            || self.block_rules != other.block_rules
            || self.block_windows != other.block_windows
            || self.block_net4 != other.block_net4
            || self.block_net6 != other.block_net6
    }
}

/// What probectl wrote into the policy maps: the keys and values of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyMaps {
    pub settings: HashMap<u32, u32>,
    pub comms: HashMap<CommKey, u32>,
    pub uids: HashMap<u32, u32>,
    pub env_names: HashMap<EnvNameKey, PolicyRef>,
    pub env_prefixes: HashMap<(u32, EnvNameKey), PolicyRef>,
    pub paths: HashMap<(u32, [u8; PATH_LEN]), PolicyRef>,
    pub own_home_paths: HashMap<(u32, [u8; PATH_LEN]), PolicyRef>,
    pub inodes: HashMap<InodeKey, InodeRef>,
    pub basenames: HashMap<BasenameKey, PolicyRef>,
    /// The block maps (`policy::block`): per entry id, per rule index, per slot, and
    /// the two LPM tries of the rules' networks.
    pub block_entries: HashMap<u32, BlockEntry>,
    pub block_rules: HashMap<u32, BlockRule>,
    pub block_windows: HashMap<u32, u64>,
    pub block_net4: HashMap<(u32, [u8; 4]), BlockNet>,
    pub block_net6: HashMap<(u32, [u8; 16]), BlockNet>,
}

impl PolicyMaps {
    /// The maps' contents for `prepared`; `INODES` only when matching by inode is on.
    fn of(prepared: &PreparedPolicy, by_inode: bool) -> Self {
        let k = &prepared.policy.kernel;
        let index: &FileIndex = &prepared.file_index;
        let settings = [
            (SETTING_PROC_ENVIRON, k.proc_environ),
            (
                SETTING_SELECTION,
                !k.select_comms.is_empty() || !k.select_uids.is_empty() || k.exec_candidates,
            ),
            (SETTING_EXEC_CANDIDATES, k.exec_candidates),
            (SETTING_ENV_PREFIXES, !k.env_prefixes.is_empty()),
            (SETTING_INODES, by_inode),
            (SETTING_BASENAMES, !index.basenames.is_empty()),
            (SETTING_OWN_HOME, !k.own_home_paths.is_empty()),
        ];
        let mut settings: HashMap<u32, u32> = settings
            .into_iter()
            .map(|(slot, on)| (slot, u32::from(on)))
            .collect();
        settings.insert(SETTING_HOST_CALLS, k.host_calls);
        let block = &prepared.policy.block;
        settings.insert(SETTING_BLOCK_RULES, block.rules.len() as u32);
        let index_of = |i: usize| i as u32;
        Self {
            // The policy entries' and the indexed files' (`block_files`): one map.
            block_entries: block
                .entries
                .iter()
                .chain(&prepared.block_files.entries)
                .map(|(k, v)| (*k, *v))
                .collect(),
            block_rules: block
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| (index_of(i), *r))
                .collect(),
            block_windows: block
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| (index_of(i), s.within_ns))
                .collect(),
            block_net4: block.net4.clone(),
            block_net6: block.net6.clone(),
            settings,
            comms: k.select_comms.iter().map(|c| (*c, 1)).collect(),
            uids: k.select_uids.iter().map(|u| (*u, 1)).collect(),
            env_names: k.env_names.iter().copied().collect(),
            env_prefixes: k
                .env_prefixes
                .iter()
                .map(|(bits, key, value)| ((*bits, *key), *value))
                .collect(),
            paths: k
                .paths
                .iter()
                .map(|(bits, key, value)| ((*bits, *key), *value))
                .collect(),
            own_home_paths: k
                .own_home_paths
                .iter()
                .map(|(bits, key, value)| ((*bits, *key), *value))
                .collect(),
            inodes: if by_inode {
                index
                    .inodes
                    .iter()
                    .map(|(key, id)| {
                        let value = InodeRef {
                            entry_id: *id,
                            block_entry: prepared
                                .block_files
                                .of_file
                                .get(id)
                                .copied()
                                .unwrap_or(BLOCK_ENTRY_NONE),
                        };
                        (*key, value)
                    })
                    .collect()
            } else {
                HashMap::new()
            },
            basenames: index
                .basenames
                .iter()
                .map(|key| (*key, PolicyRef::default()))
                .collect(),
        }
    }
}

/// The maps in the order they are moved. Settings last: a switch turns on only once
/// its map is filled (and block rules are switched off first while their maps
/// change, see `apply_policy`).
const ORDER: [&str; 14] = [
    MAP_SELECT_COMMS,
    MAP_SELECT_UIDS,
    MAP_ENV_NAMES,
    MAP_ENV_PREFIXES,
    MAP_PATHS,
    MAP_OWN_HOME_PATHS,
    MAP_INODES,
    MAP_BASENAMES,
    MAP_BLOCK_ENTRIES,
    MAP_BLOCK_RULES,
    MAP_BLOCK_WINDOWS,
    MAP_BLOCK_NET4,
    MAP_BLOCK_NET6,
    MAP_SETTINGS,
];

/// A `HashMap` view of a kernel map.
struct Hashed<'a, K, V>(aya::maps::HashMap<&'a mut MapData, K, V>);
/// An `LpmTrie` view, keyed by (prefix length in bits, data).
struct Trie<'a, K, V>(LpmTrie<&'a mut MapData, K, V>);
/// The `SETTINGS` array: removing a slot turns it off.
struct Slots<'a>(Array<&'a mut MapData, u32>);

/// Deleting a key that is not there leaves the map as wanted.
fn absent_is_fine(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

impl<K: Pod, V: Pod> MapWrite<K, V> for Hashed<'_, K, V> {
    type Error = MapError;
    fn insert(&mut self, key: &K, value: &V) -> Result<(), MapError> {
        self.0.insert(key, value, 0)
    }
    fn remove(&mut self, key: &K) -> Result<(), MapError> {
        absent_is_fine(self.0.remove(key))
    }
}

impl<K: Pod, V: Pod> MapWrite<(u32, K), V> for Trie<'_, K, V> {
    type Error = MapError;
    fn insert(&mut self, key: &(u32, K), value: &V) -> Result<(), MapError> {
        self.0.insert(&Key::new(key.0, key.1), value, 0)
    }
    fn remove(&mut self, key: &(u32, K)) -> Result<(), MapError> {
        absent_is_fine(self.0.remove(&Key::new(key.0, key.1)))
    }
}

/// An array map of structs: removing an index writes the default value.
struct Rows<'a, V: Pod>(Array<&'a mut MapData, V>);

impl<V: Pod + Default> MapWrite<u32, V> for Rows<'_, V> {
    type Error = MapError;
    fn insert(&mut self, index: &u32, value: &V) -> Result<(), MapError> {
        self.0.set(*index, value, 0)
    }
    fn remove(&mut self, index: &u32) -> Result<(), MapError> {
        self.0.set(*index, V::default(), 0)
    }
}

impl MapWrite<u32, u32> for Slots<'_> {
    type Error = MapError;
    fn insert(&mut self, slot: &u32, value: &u32) -> Result<(), MapError> {
        self.0.set(*slot, value, 0)
    }
    fn remove(&mut self, slot: &u32) -> Result<(), MapError> {
        self.0.set(*slot, 0, 0)
    }
}

/// A map update's error, and whether undoing it worked (boxed: errors are rare and
/// the pair is large).
type Failed = Box<super::map_update::Failure<SensorError>>;

fn moved<K, V, M>(
    map: &mut M,
    from: &HashMap<K, V>,
    to: &HashMap<K, V>,
    name: &'static str,
) -> Result<(), Failed>
where
    K: Eq + Hash + Clone,
    V: PartialEq + Clone,
    M: MapWrite<K, V, Error = MapError>,
{
    let as_sensor = |source| SensorError::Map { map: name, source };
    update(map, from, to)
        .map_err(|(err, restored)| Box::new((as_sensor(err), restored.map_err(as_sensor))))
}

impl Sensors {
    /// Puts a prepared policy in force in the kernel maps (at start, and on reload).
    /// Fast: no file is read. A policy over some map's capacity is refused before any
    /// map is touched; a write that fails midway is undone in every map. Either way an
    /// error leaves the maps exactly as they were (the error says if undoing failed).
    pub fn apply_policy(&mut self, prepared: &PreparedPolicy) -> Result<(), SensorError> {
        for used in KernelCapacity::of(&prepared.policy, Some(&prepared.file_index)).0 {
            if used.used > used.capacity {
                return Err(SensorError::OverCapacity {
                    map: used.map,
                    used: used.used,
                    capacity: used.capacity,
                });
            }
        }
        let by_inode = self.file_resolution.as_ref().is_some_and(|r| r.by_inode);
        let new = PolicyMaps::of(prepared, by_inode);
        let old = std::mem::take(&mut self.in_force);
        // Block rules are judged from five maps and a slot numbering: while they move,
        // a mix of two policies could refuse a call neither would. They are off
        // (calls allowed) from here until `SETTINGS` is moved, last; a refused policy
        // puts the old count back. The trees' read times are slot-numbered: a new
        // numbering starts them over (forgetting reads only ever lets calls through).
        let block_changes = old.block_differs(&new);
        if block_changes {
            self.set_setting(SETTING_BLOCK_RULES, 0)?;
        }
        let mut moved_so_far: Vec<&'static str> = Vec::new();
        let mut addrs_before = None;
        for name in ORDER {
            // The learned addresses carry rule bits: they move with the block maps,
            // before `SETTINGS` turns the new rules on.
            let step = if name == MAP_SETTINGS {
                self.move_block_addrs(prepared)
                    .map_err(|e| Box::new((e, Ok(()))))
                    .and_then(|before| {
                        addrs_before = Some(before);
                        self.move_map(name, &old, &new)
                    })
            } else {
                self.move_map(name, &old, &new)
            };
            if let Err(failed) = step {
                let (source, restored) = *failed;
                // Back to the old policy in every map already moved, newest first.
                let mut restored = restored.map_err(|e| e.to_string());
                if let Some(before) = addrs_before.take()
                    && let Err(err) = self.restore_block_addrs(before)
                {
                    tracing::error!("restoring the policy map {MAP_BLOCK_ADDRS}: {err}");
                    restored = restored.and(Err(err.to_string()));
                }
                for done in moved_so_far.iter().rev() {
                    if let Err(failed) = self.move_map(done, &new, &old) {
                        let err = failed.0;
                        tracing::error!("restoring the policy map {done}: {err}");
                        restored = restored.and(Err(err.to_string()));
                    }
                }
                if block_changes
                    && let Some(&count) = old.settings.get(&SETTING_BLOCK_RULES)
                    && let Err(err) = self.set_setting(SETTING_BLOCK_RULES, count)
                {
                    restored = restored.and(Err(err.to_string()));
                }
                self.in_force = old;
                return Err(SensorError::PolicyUpdate {
                    map: name,
                    source: Box::new(source),
                    restored: restored.err(),
                });
            }
            moved_so_far.push(name);
            if name == MAP_BLOCK_WINDOWS && block_changes {
                self.clear_block_state();
            }
        }
        self.in_force = new;
        self.sync_raw_judges();
        self.file_index = Arc::clone(&prepared.file_index);
        if let Some(r) = &mut self.file_resolution {
            r.indexed_files = prepared.file_index.files.len();
            r.not_indexed = prepared.file_index.not_indexed;
            r.basenames = prepared.file_index.basenames.len();
        }
        Ok(())
    }

    /// Moves map `name` from `from` to `to`.
    fn move_map(
        &mut self,
        name: &'static str,
        from: &PolicyMaps,
        to: &PolicyMaps,
    ) -> Result<(), Failed> {
        let untouched = |source| Box::new((source, Ok(())));
        let map = self.map(name).map_err(untouched)?;
        let view = |source| untouched(SensorError::Map { map: name, source });
        match name {
            MAP_SELECT_COMMS => moved(
                &mut Hashed(map.try_into().map_err(view)?),
                &from.comms,
                &to.comms,
                name,
            ),
            MAP_SELECT_UIDS => moved(
                &mut Hashed(map.try_into().map_err(view)?),
                &from.uids,
                &to.uids,
                name,
            ),
            MAP_ENV_NAMES => moved(
                &mut Hashed(map.try_into().map_err(view)?),
                &from.env_names,
                &to.env_names,
                name,
            ),
            MAP_ENV_PREFIXES => moved(
                &mut Trie(map.try_into().map_err(view)?),
                &from.env_prefixes,
                &to.env_prefixes,
                name,
            ),
            MAP_PATHS => moved(
                &mut Trie(map.try_into().map_err(view)?),
                &from.paths,
                &to.paths,
                name,
            ),
            MAP_OWN_HOME_PATHS => moved(
                &mut Trie(map.try_into().map_err(view)?),
                &from.own_home_paths,
                &to.own_home_paths,
                name,
            ),
            MAP_INODES => moved(
                &mut Hashed(map.try_into().map_err(view)?),
                &from.inodes,
                &to.inodes,
                name,
            ),
            MAP_BASENAMES => moved(
                &mut Hashed(map.try_into().map_err(view)?),
                &from.basenames,
                &to.basenames,
                name,
            ),
            MAP_BLOCK_ENTRIES => moved(
                &mut Hashed(map.try_into().map_err(view)?),
                &from.block_entries,
                &to.block_entries,
                name,
            ),
            MAP_BLOCK_RULES => moved(
                &mut Rows(map.try_into().map_err(view)?),
                &from.block_rules,
                &to.block_rules,
                name,
            ),
            MAP_BLOCK_WINDOWS => moved(
                &mut Rows(map.try_into().map_err(view)?),
                &from.block_windows,
                &to.block_windows,
                name,
            ),
            MAP_BLOCK_NET4 => moved(
                &mut Trie(map.try_into().map_err(view)?),
                &from.block_net4,
                &to.block_net4,
                name,
            ),
            MAP_BLOCK_NET6 => moved(
                &mut Trie(map.try_into().map_err(view)?),
                &from.block_net6,
                &to.block_net6,
                name,
            ),
            _ => moved(
                &mut Slots(map.try_into().map_err(view)?),
                &from.settings,
                &to.settings,
                name,
            ),
        }
    }

    /// The policy maps' contents as the kernel holds them, read back (for tests and
    /// diagnostics: compare with `PolicyMaps` before and after a reload).
    pub fn read_policy_maps(&mut self) -> Result<PolicyMaps, SensorError> {
        let slots: Vec<u32> = self.in_force.settings.keys().copied().collect();
        let settings: Array<&mut MapData, u32> = self
            .map(MAP_SETTINGS)?
            .try_into()
            .map_err(map_err(MAP_SETTINGS))?;
        let settings = slots
            .iter()
            .map(|slot| Ok((*slot, settings.get(slot, 0)?)))
            .collect::<Result<_, MapError>>()
            .map_err(map_err(MAP_SETTINGS))?;
        Ok(PolicyMaps {
            settings,
            comms: self.read_hash(MAP_SELECT_COMMS)?,
            uids: self.read_hash(MAP_SELECT_UIDS)?,
            env_names: self.read_hash(MAP_ENV_NAMES)?,
            env_prefixes: self.read_trie(MAP_ENV_PREFIXES)?,
            paths: self.read_trie(MAP_PATHS)?,
            own_home_paths: self.read_trie(MAP_OWN_HOME_PATHS)?,
            inodes: self.read_hash(MAP_INODES)?,
            basenames: self.read_hash(MAP_BASENAMES)?,
            block_entries: self.read_hash(MAP_BLOCK_ENTRIES)?,
            block_rules: self.read_rows(MAP_BLOCK_RULES, |m| &m.block_rules)?,
            block_windows: self.read_rows(MAP_BLOCK_WINDOWS, |m| &m.block_windows)?,
            block_net4: self.read_trie(MAP_BLOCK_NET4)?,
            block_net6: self.read_trie(MAP_BLOCK_NET6)?,
        })
    }

    /// The rows of an array map at the indices the policy in force wrote.
    fn read_rows<V: Pod>(
        &mut self,
        name: &'static str,
        written: impl Fn(&PolicyMaps) -> &HashMap<u32, V>,
    ) -> Result<HashMap<u32, V>, SensorError> {
        let indices: Vec<u32> = written(&self.in_force).keys().copied().collect();
        let rows: Array<&mut MapData, V> = self.map(name)?.try_into().map_err(map_err(name))?;
        indices
            .into_iter()
            .map(|i| Ok((i, rows.get(&i, 0)?)))
            .collect::<Result<_, MapError>>()
            .map_err(map_err(name))
    }

    fn read_hash<K: Pod + Eq + Hash, V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<K, V>, SensorError> {
        let map: aya::maps::HashMap<&mut MapData, K, V> =
            self.map(name)?.try_into().map_err(map_err(name))?;
        map.iter().collect::<Result<_, _>>().map_err(map_err(name))
    }

    fn read_trie<K: Pod + Eq + Hash, V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<(u32, K), V>, SensorError> {
        let map: LpmTrie<&mut MapData, K, V> = self.map(name)?.try_into().map_err(map_err(name))?;
        map.iter()
            .map(|kv| kv.map(|(k, v)| ((k.prefix_len(), k.data()), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(name))
    }
}
