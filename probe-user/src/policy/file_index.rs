//! The policy's files as this host has them: which (device, inode) each policy path
//! and everything under each policy prefix is, and which directories hold policy
//! files. The kernel matches a syscall by the file it reached (`INODES`), so
//! `cd /etc && cat localtime`, `/proc/self/root/etc/localtime`, `..` and a symlink
//! made in /tmp are all seen; userspace uses the directories to name the base of a
//! relative path without racing the process's exit.
//!
//! Built at start-up. A policy file created later is still matched by its path
//! string, just not by inode.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use probe_common::{BasenameKey, InodeKey, MAX_POLICY_INODES};

use super::Classifier;

/// How deep a prefix is walked (zoneinfo is three levels).
const MAX_DEPTH: usize = 8;
/// Most directory entries read while indexing, under every prefix and glob together
/// (the default policy reads about 1,400), so that a prefix such as `/usr/` or a glob
/// such as `/usr/**/x` costs a bounded walk, not the whole tree.
const MAX_WALKED: usize = 16_384;

#[derive(Debug, Default, Clone)]
pub struct FileIndex {
    /// `INODES` entries: the file, and the index of its path in `files`.
    pub inodes: Vec<(InodeKey, u32)>,
    /// The path each inode entry stands for: the policy path as written for exact
    /// entries, the real path under a prefix.
    pub files: Vec<String>,
    /// Directories that hold exact policy paths, by (dev, inode).
    pub dirs: HashMap<InodeKey, String>,
    /// `BASENAMES` keys: the last components of exact policy paths.
    pub basenames: Vec<BasenameKey>,
    /// Files under policy prefixes left out because `INODES` would overflow or the
    /// walk's budget was spent (a lower bound: the walk stops there).
    pub not_indexed: u64,
    /// The keys in `inodes`, for de-duplication while building.
    seen: std::collections::HashSet<InodeKey>,
}

/// The kernel's encoding of a device number (`MKDEV`), as in `super_block::s_dev`.
pub fn kernel_dev(user_dev: u64) -> u64 {
    let (major, minor) = (libc::major(user_dev) as u64, libc::minor(user_dev) as u64);
    (major << 20) | minor
}

fn key_of(meta: &std::fs::Metadata) -> InodeKey {
    InodeKey {
        dev: kernel_dev(meta.dev()),
        ino: meta.ino(),
    }
}

impl FileIndex {
    /// Stats the policy's exact paths and glob expansions and walks its prefixes: at
    /// most `MAX_POLICY_INODES` files are indexed and `MAX_WALKED` directory entries
    /// read (the rest is counted in `not_indexed` and still matched by
    /// path string).
    pub fn build(classifier: &Classifier) -> Self {
        let mut index = FileIndex {
            basenames: classifier.basenames(),
            ..FileIndex::default()
        };
        for path in classifier.exact_paths() {
            index.add_file(Path::new(path), path);
            let p = Path::new(path);
            if let Some(dir) = p.parent()
                && let Ok(meta) = std::fs::metadata(dir)
            {
                index
                    .dirs
                    .entry(key_of(&meta))
                    .or_insert_with(|| dir.to_string_lossy().into_owned());
            }
        }
        // One budget for every glob and prefix: indexing costs a bounded walk.
        let mut budget = MAX_WALKED;
        for pattern in classifier.globs() {
            for path in super::glob::expand(pattern, &mut budget) {
                index.add_file(&path, &path.to_string_lossy());
            }
        }
        for prefix in classifier.prefixes() {
            let dir = prefix.trim_end_matches('/');
            if prefix.ends_with('/') && !dir.is_empty() {
                index.add_file(Path::new(dir), dir);
                index.walk(Path::new(dir), 0, &mut budget);
            }
        }
        index
    }

    fn full(&self) -> bool {
        self.inodes.len() + 2 > MAX_POLICY_INODES as usize
    }

    /// Indexes `path` as the link itself and as what it points to: `open` follows
    /// symlinks, `lstat` and `readlinkat` do not.
    fn add_file(&mut self, path: &Path, name: &str) {
        if self.full() {
            self.not_indexed += 1;
            return;
        }
        let id = self.files.len() as u32;
        let mut added = false;
        for meta in [std::fs::symlink_metadata(path), std::fs::metadata(path)]
            .into_iter()
            .flatten()
        {
            let key = key_of(&meta);
            if self.seen.insert(key) {
                self.inodes.push((key, id));
                added = true;
            }
        }
        if added {
            self.files.push(name.to_owned());
        }
    }

    fn walk(&mut self, dir: &Path, depth: usize, budget: &mut usize) {
        if depth >= MAX_DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            // A full map or a spent budget ends the walk: reading on would only count.
            if *budget == 0 || self.full() {
                self.not_indexed += 1;
                return;
            }
            *budget -= 1;
            let path = entry.path();
            let name = path.to_string_lossy().into_owned();
            self.add_file(&path, &name);
            // Not through symlinked directories: they could lead anywhere.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if let Ok(meta) = entry.metadata() {
                    self.dirs.entry(key_of(&meta)).or_insert(name);
                }
                self.walk(&path, depth + 1, budget);
            }
        }
    }

    /// The path an `INODES` entry stands for.
    pub fn file(&self, entry_id: u32) -> Option<&str> {
        self.files.get(entry_id as usize).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::basename_key;
    use super::*;

    #[test]
    fn indexes_exact_paths_prefixes_and_their_directories() {
        let tmp = std::env::temp_dir().join(format!("probectl-index-{}", std::process::id()));
        let zones = tmp.join("zoneinfo/Europe");
        std::fs::create_dir_all(&zones).unwrap();
        std::fs::write(zones.join("Paris"), b"TZif").unwrap();
        std::fs::write(tmp.join("timezone"), b"Etc/UTC\n").unwrap();
        std::os::unix::fs::symlink(zones.join("Paris"), tmp.join("localtime")).unwrap();
        let yaml = format!(
            "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {{name: t}}\n\
             categories:\n  - name: timezone\n    paths: [{0}/localtime, {0}/timezone, {0}/missing]\n\
             \x20   path_prefixes: [{0}/zoneinfo/]\n",
            tmp.display()
        );
        let policy = crate::policy::parse(&yaml, "t.yaml").unwrap();
        let index = FileIndex::build(&policy.classifier);
        let localtime = tmp.join("localtime").display().to_string();
        // The link and its target both name `localtime`; the target is not indexed
        // again under the prefix.
        let paris = std::fs::metadata(zones.join("Paris")).unwrap();
        let id = index
            .inodes
            .iter()
            .find(|(k, _)| *k == key_of(&paris))
            .map(|(_, id)| *id)
            .unwrap();
        assert_eq!(index.file(id), Some(localtime.as_str()));
        let dir = std::fs::metadata(&tmp).unwrap();
        assert_eq!(
            index.dirs.get(&key_of(&dir)),
            Some(&tmp.display().to_string())
        );
        for name in ["localtime", "timezone", "missing"] {
            assert!(
                index.basenames.contains(&basename_key(name.as_bytes())),
                "{name}"
            );
        }
        let europe = std::fs::metadata(tmp.join("zoneinfo/Europe")).unwrap();
        assert!(index.inodes.iter().any(|(k, _)| *k == key_of(&europe)));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn kernel_dev_matches_mkdev() {
        // 8:1 (sda1) in the user encoding is 0x801; the kernel's is 8 << 20 | 1.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 70000)), (259 << 20) | 70000);
    }
}
