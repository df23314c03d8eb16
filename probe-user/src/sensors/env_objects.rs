//! The files (libcs, node binaries) that carry lazily attached env uprobes, which
//! watched processes use each one, and what was refused. Each attachment holds file
//! descriptors and kernel memory, and the files come from processes that anyone
//! may start, so both are bounded:
//!
//! - at most `MAX_ENV_OBJECTS` files at once; a further one is counted
//!   (`over_limit`) and not attached;
//! - a file is released once no watched process that mapped it is left (exit, or
//!   an exec into an image without it); a fork's child counts as a user too;
//! - files that are not ELF objects for this machine, or do not define getenv,
//!   are remembered (up to `MAX_REMEMBERED`) and counted, not attached.
//!
//! The libc probectl itself maps is attached at start for every process and is
//! never released. This module is bookkeeping only; `env_attach` does the attaching.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::proc_maps::FileKey;

/// Files with lazily attached env uprobes at once.
pub const MAX_ENV_OBJECTS: usize = 64;
/// Node binaries whose uprobe is kept after their last watched user exits (`sticky`):
/// a uprobe on a file covers every process that runs it from its first instruction,
/// so the next short-lived node is seen whole instead of waiting for a new attach.
pub const MAX_STICKY: usize = 16;
/// Refused files remembered so that they are not opened again at every exec; when
/// full, the memory starts over (a file is then checked, and counted, again).
const MAX_REMEMBERED: usize = 4096;

/// Why a file got no uprobes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an ELF shared object or executable for this machine, or malformed.
    NotElf,
    /// An ELF object that does not define getenv (or, for node, uv_os_environ).
    NoSymbol,
    /// Could not be opened safely (gone, not a regular file, not the mapped file).
    Unreadable,
    /// It had every symbol, but no uprobe attached.
    AttachFailed,
}

/// Counters, for status and reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EnvObjectCounts {
    /// Files released after their last watched user went.
    pub released: u64,
    /// Distinct files not attached because `MAX_ENV_OBJECTS` were attached.
    pub over_limit: u64,
    pub not_elf: u64,
    pub no_getenv: u64,
    pub unreadable: u64,
    pub attach_failed: u64,
}

/// One attached file.
pub struct Object<L> {
    /// For status lines, escaped.
    pub name: String,
    pub links: Vec<L>,
    /// The attach results streamed when it was attached (for `unattached`).
    pub statuses: Vec<super::AttachStatus>,
    users: HashSet<u32>,
    /// Kept without users (a node binary, `MAX_STICKY`), released only to make room.
    sticky: bool,
}

pub struct EnvObjects<L> {
    attached: HashMap<FileKey, Object<L>>,
    /// Attached at start for every process; never released.
    permanent: HashSet<FileKey>,
    /// The files each watched process is known to map.
    uses: HashMap<u32, Vec<FileKey>>,
    refused: HashMap<FileKey, Refusal>,
    /// Code files checked for a getenv of their own that have none (not counted:
    /// most libraries are these). Bounded like `refused`.
    plain: HashSet<FileKey>,
    over_limit_seen: HashSet<FileKey>,
    limit: usize,
    pub counts: EnvObjectCounts,
}

/// Where a file stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Known {
    Permanent,
    Attached,
    Refused,
    /// A libc that found no room; checked again once one is released.
    OverLimit,
    New,
}

impl<L> Default for EnvObjects<L> {
    fn default() -> Self {
        Self::with_limit(MAX_ENV_OBJECTS)
    }
}

impl<L> EnvObjects<L> {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            attached: HashMap::new(),
            permanent: HashSet::new(),
            uses: HashMap::new(),
            refused: HashMap::new(),
            plain: HashSet::new(),
            over_limit_seen: HashSet::new(),
            limit,
            counts: EnvObjectCounts::default(),
        }
    }

    pub fn add_permanent(&mut self, key: FileKey) {
        self.permanent.insert(key);
    }

    pub fn known(&self, key: FileKey) -> Known {
        if self.permanent.contains(&key) {
            Known::Permanent
        } else if self.attached.contains_key(&key) {
            Known::Attached
        } else if self.refused.contains_key(&key) {
            Known::Refused
        } else if self.over_limit_seen.contains(&key) {
            Known::OverLimit
        } else {
            Known::New
        }
    }

    pub fn has_room(&self) -> bool {
        self.attached.len() < self.limit
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Counts a file (checked: it would have been attached) that found no room, once
    /// per file.
    pub fn over_limit(&mut self, key: FileKey) {
        if self.over_limit_seen.len() >= MAX_REMEMBERED {
            self.over_limit_seen.clear();
        }
        if self.over_limit_seen.insert(key) {
            self.counts.over_limit += 1;
        }
    }

    /// Checked before: a code file without a getenv of its own. (Only the getenv
    /// check skips it: the same file may still be a node binary to attach to.)
    pub fn is_plain(&self, key: FileKey) -> bool {
        self.plain.contains(&key)
    }

    /// A code file without a getenv of its own: not looked at again.
    pub fn plain(&mut self, key: FileKey) {
        if self.plain.len() >= MAX_REMEMBERED {
            self.plain.clear();
        }
        self.plain.insert(key);
    }

    pub fn refuse(&mut self, key: FileKey, why: Refusal) {
        if self.refused.len() >= MAX_REMEMBERED {
            self.refused.clear();
        }
        if self.refused.insert(key, why).is_none() {
            let counter = match why {
                Refusal::NotElf => &mut self.counts.not_elf,
                Refusal::NoSymbol => &mut self.counts.no_getenv,
                Refusal::Unreadable => &mut self.counts.unreadable,
                Refusal::AttachFailed => &mut self.counts.attach_failed,
            };
            *counter += 1;
        }
    }

    pub fn insert(
        &mut self,
        key: FileKey,
        name: String,
        links: Vec<L>,
        statuses: Vec<super::AttachStatus>,
    ) {
        self.attached.insert(
            key,
            Object {
                name,
                links,
                statuses,
                users: HashSet::new(),
                sticky: false,
            },
        );
    }

    /// Keeps `key`'s uprobes after its last user is gone, while fewer than
    /// `MAX_STICKY` are kept so. Returns whether it is kept.
    pub fn make_sticky(&mut self, key: FileKey) -> bool {
        let kept = self.attached.values().filter(|o| o.sticky).count();
        match self.attached.get_mut(&key) {
            Some(object) if object.sticky => true,
            Some(object) if kept < MAX_STICKY => {
                object.sticky = true;
                true
            }
            _ => false,
        }
    }

    /// Sticky files no watched process uses, released to make room for another file.
    pub fn release_unused_sticky(&mut self) -> Vec<Object<L>> {
        let unused: Vec<FileKey> = self
            .attached
            .iter()
            .filter(|(_, o)| o.sticky && o.users.is_empty())
            .map(|(k, _)| *k)
            .collect();
        let released: Vec<Object<L>> = unused
            .iter()
            .filter_map(|k| self.attached.remove(k))
            .collect();
        self.counts.released += released.len() as u64;
        released
    }

    /// `pid` maps exactly `keys` now (of those that matter: attached ones). Returns
    /// the files left without a user.
    pub fn set_uses(&mut self, pid: u32, keys: &[FileKey]) -> Vec<Object<L>> {
        let now: Vec<FileKey> = keys
            .iter()
            .copied()
            .filter(|k| self.attached.contains_key(k))
            .collect();
        for key in &now {
            if let Some(object) = self.attached.get_mut(key) {
                object.users.insert(pid);
            }
        }
        let before = if now.is_empty() {
            self.uses.remove(&pid)
        } else {
            self.uses.insert(pid, now.clone())
        };
        let gone: Vec<FileKey> = before
            .unwrap_or_default()
            .into_iter()
            .filter(|k| !now.contains(k))
            .collect();
        self.drop_user(pid, &gone)
    }

    /// A fork: the child maps what its parent maps.
    pub fn forked(&mut self, parent: u32, child: u32) {
        let Some(keys) = self.uses.get(&parent).cloned() else {
            return;
        };
        for key in &keys {
            if let Some(object) = self.attached.get_mut(key) {
                object.users.insert(child);
            }
        }
        self.uses.insert(child, keys);
    }

    /// `pid` is gone. Returns the files left without a user.
    pub fn exited(&mut self, pid: u32) -> Vec<Object<L>> {
        let keys = self.uses.remove(&pid).unwrap_or_default();
        self.drop_user(pid, &keys)
    }

    /// Forgets users that `alive` says are gone (their exit was not seen). Returns
    /// the files left without a user.
    pub fn sweep(&mut self, alive: impl Fn(u32) -> bool) -> Vec<Object<L>> {
        let dead: Vec<u32> = self.uses.keys().copied().filter(|&p| !alive(p)).collect();
        dead.into_iter().flat_map(|pid| self.exited(pid)).collect()
    }

    fn drop_user(&mut self, pid: u32, keys: &[FileKey]) -> Vec<Object<L>> {
        let mut released = Vec::new();
        for key in keys {
            let unused = self.attached.get_mut(key).is_some_and(|object| {
                object.users.remove(&pid);
                object.users.is_empty() && !object.sticky
            });
            if unused && let Some(object) = self.attached.remove(key) {
                released.push(object);
            }
        }
        if !released.is_empty() {
            self.counts.released += released.len() as u64;
            // Room again: files that found none are checked at their next exec.
            self.over_limit_seen.clear();
        }
        released
    }

    pub fn objects(&self) -> impl Iterator<Item = &Object<L>> {
        self.attached.values()
    }
}

impl<L> Object<L> {
    pub fn users(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(objects: &mut EnvObjects<u32>, key: FileKey) {
        assert_eq!(objects.known(key), Known::New);
        assert!(objects.has_room());
        objects.insert(key, format!("{key:?}"), vec![1, 2], Vec::new());
    }

    #[test]
    fn a_file_is_released_when_its_last_watched_user_is_gone() {
        let mut objects = EnvObjects::<u32>::with_limit(2);
        let (a, b, c) = ((1, 1), (1, 2), (1, 3));
        attach(&mut objects, a);
        assert!(objects.set_uses(100, &[a]).is_empty());
        objects.forked(100, 101);
        assert!(objects.exited(100).is_empty(), "the child still maps it");
        // An exec into an image that maps b instead: a is released.
        attach(&mut objects, b);
        let released = objects.set_uses(101, &[b]);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].links, [1, 2]);
        assert_eq!(objects.known(a), Known::New);
        // At the limit, a third file is counted once however often it is seen.
        attach(&mut objects, a);
        objects.set_uses(102, &[a]);
        assert!(!objects.has_room());
        objects.over_limit(c);
        objects.over_limit(c);
        assert_eq!(objects.counts.over_limit, 1);
        assert_eq!(objects.known(c), Known::OverLimit);
        // A lost exit: the sweep finds the user gone.
        let released = objects.sweep(|pid| pid != 102);
        assert_eq!(released.len(), 1);
        assert!(objects.has_room());
        assert_eq!(
            objects.known(c),
            Known::New,
            "checked again now that there is room"
        );
        assert_eq!(objects.counts.released, 2);
        // The permanent libc is never a user's.
        objects.add_permanent(c);
        assert_eq!(objects.known(c), Known::Permanent);
        assert!(objects.set_uses(103, &[c]).is_empty());
    }

    #[test]
    fn a_sticky_node_binary_outlives_its_users_and_yields_only_to_make_room() {
        let mut objects = EnvObjects::<u32>::with_limit(MAX_STICKY + 2);
        let node = (2, 1);
        attach(&mut objects, node);
        assert!(objects.make_sticky(node));
        objects.set_uses(200, &[node]);
        assert!(objects.exited(200).is_empty(), "kept for the next node");
        assert_eq!(objects.known(node), Known::Attached);
        for i in 2..=MAX_STICKY as u64 {
            attach(&mut objects, (2, i));
            assert!(objects.make_sticky((2, i)));
        }
        attach(&mut objects, (2, 99));
        assert!(!objects.make_sticky((2, 99)), "at most MAX_STICKY");
        objects.set_uses(201, &[(2, 2)]);
        let released = objects.release_unused_sticky();
        assert_eq!(released.len(), MAX_STICKY - 1, "all but the one in use");
        assert_eq!(objects.known((2, 2)), Known::Attached);
        assert_eq!(
            objects.known((2, 99)),
            Known::Attached,
            "not sticky: kept by its own rule"
        );
    }

    #[test]
    fn refusals_are_counted_once_per_file() {
        let mut objects = EnvObjects::<u32>::default();
        objects.refuse((1, 1), Refusal::NotElf);
        objects.refuse((1, 1), Refusal::NotElf);
        objects.refuse((1, 2), Refusal::NoSymbol);
        objects.refuse((1, 3), Refusal::Unreadable);
        assert_eq!(objects.known((1, 1)), Known::Refused);
        assert_eq!(
            (
                objects.counts.not_elf,
                objects.counts.no_getenv,
                objects.counts.unreadable
            ),
            (1, 1, 1)
        );
    }
}
