//! Block slots for the policy's files as this host has them (`FileIndex`).
//!
//! The kernel matches a file syscall by the path string (`PATHS`, whose entries have
//! their own `BLOCK_ENTRIES` keys) or, when the string names no policy path, by the
//! file it reached (`INODES`: `cd /etc && cat localtime`, `../../etc/localtime`, a
//! symlink planted in /tmp, an io_uring open seen by a file hook). Those matches
//! must feed block rules too, or a CLI could read the time zone through a relative
//! path and then phone home unrefused. Each indexed file gets the slots of the
//! categories its path falls under; files with the same slots share one
//! `BLOCK_ENTRIES` key (`BLOCK_ENTRY_FILES + k`), so the thousands of zoneinfo files
//! cost one entry.

use std::collections::HashMap;

use probe_common::{
    BLOCK_ENTRY_FILES, BLOCK_OP_GETENV, BLOCK_OPS, BlockEntry, MAX_BLOCK_FILE_ENTRIES,
};

use super::block::{BlockTables, how_of_op, slot_mask};
use super::{Classifier, FileIndex};

/// The files' block entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockFiles {
    /// Per file-index id: its `BLOCK_ENTRIES` key (absent: no block rule counts it).
    pub of_file: HashMap<u32, u32>,
    /// The distinct entries, keyed `BLOCK_ENTRY_FILES + k`.
    pub entries: HashMap<u32, BlockEntry>,
    /// Files a block rule counts that got no entry: more than
    /// `MAX_BLOCK_FILE_ENTRIES` distinct sets of slots were needed. They are still
    /// matched and reported, and fed by their path string, just not by inode.
    pub not_fed: usize,
}

/// The entries for `index`'s files under the block rules of `tables`.
pub fn compile(tables: &BlockTables, classifier: &Classifier, index: &FileIndex) -> BlockFiles {
    let mut out = BlockFiles::default();
    if tables.is_empty() {
        return out;
    }
    let mut keys: HashMap<[u32; BLOCK_OPS], u32> = HashMap::new();
    for (id, path) in index.files.iter().enumerate() {
        let cats: Vec<(usize, bool)> = classifier
            .path_categories(path)
            .into_iter()
            .map(|c| (c, false))
            .collect();
        if cats.is_empty() {
            continue;
        }
        let mut entry = BlockEntry::default();
        // The file operations only (`FILE_OP_*`, below the env ones).
        for (op, mask) in entry.slots.iter_mut().enumerate().take(BLOCK_OP_GETENV) {
            if let Some(how) = how_of_op(op) {
                *mask = slot_mask(&tables.slots, &cats, how, classifier);
            }
        }
        if entry.slots.iter().all(|m| *m == 0) {
            continue;
        }
        let key = match keys.get(&entry.slots) {
            Some(key) => *key,
            None if keys.len() < MAX_BLOCK_FILE_ENTRIES as usize => {
                let key = BLOCK_ENTRY_FILES + keys.len() as u32;
                keys.insert(entry.slots, key);
                out.entries.insert(key, entry);
                key
            }
            None => {
                out.not_fed += 1;
                continue;
            }
        };
        out.of_file.insert(id as u32, key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoneinfo_files_share_one_entry_and_unrelated_files_get_none() {
        let tmp = std::env::temp_dir().join(format!("probectl-blockfiles-{}", std::process::id()));
        let zones = tmp.join("zoneinfo/Europe");
        std::fs::create_dir_all(&zones).unwrap();
        for name in ["Paris", "Berlin", "Rome"] {
            std::fs::write(zones.join(name), b"TZif").unwrap();
        }
        std::fs::write(tmp.join("hostname"), b"box\n").unwrap();
        let yaml = format!(
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {{name: t}}\n\
             categories:\n\
             \x20 - name: timezone\n    path_prefixes: [{0}/zoneinfo/]\n\
             \x20 - name: host_identity\n    paths: [{0}/hostname]\n\
             rules:\n\
             \x20 - name: tz-then-out\n    probed: {{all_of: [timezone]}}\n    then: [connect]\n    within: 60s\n    action: block\n",
            tmp.display()
        );
        let policy = crate::policy::parse(&yaml, "t.yaml").unwrap();
        let index = FileIndex::build(&policy.classifier);
        let files = compile(&policy.block, &policy.classifier, &index);
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(files.entries.len(), 1, "{files:?}");
        assert_eq!(files.not_fed, 0);
        let paris = index
            .files
            .iter()
            .position(|f| f.ends_with("Europe/Paris"))
            .unwrap() as u32;
        let key = files.of_file[&paris];
        assert_eq!(key, BLOCK_ENTRY_FILES);
        // An open feeds the rule's one slot; the host-identity file no rule counts.
        assert_eq!(
            files.entries[&key].slots[probe_common::FILE_OP_OPENAT as usize],
            1
        );
        let hostname = index
            .files
            .iter()
            .position(|f| f.ends_with("/hostname"))
            .unwrap() as u32;
        assert!(!files.of_file.contains_key(&hostname));
    }

    #[test]
    fn no_block_rule_no_entries() {
        let policy = crate::policy::load_default().unwrap();
        let index = FileIndex::build(&policy.classifier);
        assert_eq!(
            compile(&policy.block, &policy.classifier, &index),
            BlockFiles::default()
        );
    }
}
