//! Swapping the policy under running sensors. New entries are written first, then the
//! old policy's leftovers removed ("make before break"): a name or path in both
//! policies is never absent from the kernel maps, and the new one is fully in place
//! before the old one's own entries go.

use std::collections::HashSet;
use std::hash::Hash;

use aya::maps::{HashMap, LpmTrie, MapData, lpm_trie::Key};
use probe_common::{
    BasenameKey, CommKey, EnvNameKey, InodeKey, MAP_BASENAMES, MAP_ENV_NAMES, MAP_ENV_PREFIXES,
    MAP_INODES, MAP_PATHS, MAP_SELECT_COMMS, MAP_SELECT_UIDS, PATH_LEN, PolicyRef,
};

use super::{SensorError, Sensors, map_err};
use crate::policy::{CompiledPolicy, FileIndex};

/// Keys in `old` that are not in `new`.
fn stale<'a, K: Eq + Hash + 'a>(
    old: impl IntoIterator<Item = &'a K>,
    new: impl IntoIterator<Item = &'a K>,
) -> Vec<&'a K> {
    let keep: HashSet<&K> = new.into_iter().collect();
    old.into_iter().filter(|k| !keep.contains(k)).collect()
}

impl Sensors {
    /// Puts `new` in force in the kernel (from `old`, which is in force now) and
    /// rebuilds the file index for it.
    pub fn reload_policy(
        &mut self,
        old: &CompiledPolicy,
        new: &CompiledPolicy,
    ) -> Result<(), SensorError> {
        self.write_policy(new)?;
        let index = std::sync::Arc::new(FileIndex::build(&new.classifier));
        self.file_resolution = Some(self.write_file_maps(&index)?);
        let (ok, nk) = (&old.kernel, &new.kernel);

        let mut comms: HashMap<&mut MapData, CommKey, u32> =
            HashMap::try_from(self.map(MAP_SELECT_COMMS)?).map_err(map_err(MAP_SELECT_COMMS))?;
        for key in stale(&ok.select_comms, &nk.select_comms) {
            let _ = comms.remove(key);
        }
        let mut uids: HashMap<&mut MapData, u32, u32> =
            HashMap::try_from(self.map(MAP_SELECT_UIDS)?).map_err(map_err(MAP_SELECT_UIDS))?;
        for uid in stale(&ok.select_uids, &nk.select_uids) {
            let _ = uids.remove(uid);
        }
        let mut env: HashMap<&mut MapData, EnvNameKey, PolicyRef> =
            HashMap::try_from(self.map(MAP_ENV_NAMES)?).map_err(map_err(MAP_ENV_NAMES))?;
        for key in stale(
            ok.env_names.iter().map(|(k, _)| k),
            nk.env_names.iter().map(|(k, _)| k),
        ) {
            let _ = env.remove(key);
        }
        let old_prefixes: Vec<(u32, EnvNameKey)> =
            ok.env_prefixes.iter().map(|(b, k, _)| (*b, *k)).collect();
        let new_prefixes: Vec<(u32, EnvNameKey)> =
            nk.env_prefixes.iter().map(|(b, k, _)| (*b, *k)).collect();
        let mut prefixes: LpmTrie<&mut MapData, EnvNameKey, PolicyRef> =
            LpmTrie::try_from(self.map(MAP_ENV_PREFIXES)?).map_err(map_err(MAP_ENV_PREFIXES))?;
        for (bits, key) in stale(&old_prefixes, &new_prefixes) {
            let _ = prefixes.remove(&Key::new(*bits, *key));
        }
        let old_paths: Vec<(u32, [u8; PATH_LEN])> =
            ok.paths.iter().map(|(b, k, _)| (*b, *k)).collect();
        let new_paths: Vec<(u32, [u8; PATH_LEN])> =
            nk.paths.iter().map(|(b, k, _)| (*b, *k)).collect();
        let mut paths: LpmTrie<&mut MapData, [u8; PATH_LEN], PolicyRef> =
            LpmTrie::try_from(self.map(MAP_PATHS)?).map_err(map_err(MAP_PATHS))?;
        for (bits, key) in stale(&old_paths, &new_paths) {
            let _ = paths.remove(&Key::new(*bits, *key));
        }
        let old_index = std::mem::replace(&mut self.file_index, index);
        let new_index = self.file_index.clone();
        let stale_inodes: Vec<InodeKey> = stale(
            old_index.inodes.iter().map(|(k, _)| k),
            new_index.inodes.iter().map(|(k, _)| k),
        )
        .into_iter()
        .copied()
        .collect();
        let stale_basenames: Vec<BasenameKey> = stale(&old_index.basenames, &new_index.basenames)
            .into_iter()
            .copied()
            .collect();
        let mut inodes: HashMap<&mut MapData, InodeKey, PolicyRef> =
            HashMap::try_from(self.map(MAP_INODES)?).map_err(map_err(MAP_INODES))?;
        for key in &stale_inodes {
            let _ = inodes.remove(key);
        }
        let mut basenames: HashMap<&mut MapData, BasenameKey, PolicyRef> =
            HashMap::try_from(self.map(MAP_BASENAMES)?).map_err(map_err(MAP_BASENAMES))?;
        for key in &stale_basenames {
            let _ = basenames.remove(key);
        }
        Ok(())
    }
}
