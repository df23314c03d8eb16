//! The process table: what userspace knows of each watched process (lineage, image,
//! uid), built from exec/fork/exit events and seeded from /proc for roots.

pub mod exe_facts;
pub mod exe_hash;
pub mod identity;
mod image;
pub mod lookup;
pub mod procfs;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::escape::escape_bytes;
pub use image::{Image, ProcessInfo};
pub use procfs::pids_selected;

#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcessInfo>,
    /// Watched processes not yet seen to exit.
    live: HashSet<u32>,
    /// Processes watched as the top of a tree (the run's command, a `watch` pid, a
    /// program selected by the policy); see `tree_of`.
    roots: HashSet<u32>,
    /// Trees whose processes have all exited, since when (`expire_trees`).
    dead_since: HashMap<u32, u64>,
    /// Processes a policy selector picked (in the kernel at exec, in userspace, or
    /// found running at start): they and their descendants are watched on the
    /// policy's account, whoever else asked for them.
    selected: HashSet<u32>,
    /// Package lookups, on their own thread (started at the first one).
    lookups: Option<lookup::Lookups>,
    /// Hashes of native executables, for a run that writes a profile
    /// (`hash_executables`); none otherwise.
    hasher: Option<exe_hash::Hasher>,
    /// Each process's executable hash, with the exec it is of.
    exe_hashes: HashMap<u32, (u64, exe_hash::ExeHash)>,
}

/// What `expire_trees` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExpiredTrees {
    /// Trees seen with no live process for the first time.
    pub newly_exited: Vec<u32>,
    /// Trees whose grace period is over: their exited processes are forgotten.
    pub forgotten: Vec<u32>,
}

impl ProcessTable {
    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.get(&pid)
    }

    /// Package lookups that did not finish in their time bound (counted as a loss).
    pub fn identity_timeouts(&self) -> u64 {
        self.lookups.as_ref().map_or(0, |l| l.timeouts)
    }

    /// Puts a process in the table and asks for its executable's facts and, for an
    /// interpreter, its script's package (answered now, or later through
    /// `apply_lookups`).
    fn insert(&mut self, mut info: ProcessInfo) {
        let pid = info.pid;
        info.exec_seq += 1;
        let request = lookup::Request {
            pid,
            exec: info.exec_seq,
            exe_name: info.image.name().to_owned(),
            exe_path: info.image.exe.clone(),
            script: info.image.script().map(str::to_owned),
            cwd: info.image.cwd.clone(),
        };
        self.procs.insert(pid, info);
        let lookups = self.lookups.get_or_insert_with(lookup::Lookups::new);
        if let Some(answer) = lookups.ask(request) {
            self.apply(answer);
        }
    }

    /// Package answers that came after their wait ended, and executable hashes.
    pub fn apply_lookups(&mut self) {
        if let Some(hasher) = &mut self.hasher {
            for a in hasher.poll() {
                self.exe_hashes.insert(a.pid, (a.exec, a.hash));
            }
        }
        let Some(lookups) = &mut self.lookups else {
            return;
        };
        for answer in lookups.poll() {
            self.apply(answer);
        }
    }

    /// Waits up to `within` for package and executable lookups still under way, and
    /// applies them (before a report).
    pub fn finish_lookups(&mut self, within: std::time::Duration) {
        let Some(lookups) = &mut self.lookups else {
            return;
        };
        for answer in lookups.wait(within) {
            self.apply(answer);
        }
    }

    /// From now on, each native executable a watched process runs is hashed, off the
    /// event loop (`exe_hash`): a behaviour profile keys a CLI without a package on it.
    pub fn hash_executables(&mut self) {
        self.hasher.get_or_insert_with(exe_hash::Hasher::new);
    }

    /// Waits up to `within` for the hashes still being computed; the ones that do not
    /// come are noted as such.
    pub fn finish_exe_hashes(&mut self, within: std::time::Duration) {
        let Some(hasher) = &mut self.hasher else {
            return;
        };
        for a in hasher.wait(within) {
            self.exe_hashes.insert(a.pid, (a.exec, a.hash));
        }
    }

    /// The hash of `pid`'s current executable, when hashing was asked for: an answer
    /// of a previous exec does not count, and one still being computed is noted.
    pub fn exe_hash(&self, pid: u32) -> Option<exe_hash::ExeHash> {
        self.hasher.as_ref()?;
        let exec = self.procs.get(&pid)?.exec_seq;
        match self.exe_hashes.get(&pid) {
            Some((e, h)) if *e == exec => Some(h.clone()),
            _ => Some(exe_hash::ExeHash {
                sha256: None,
                note: Some("not hashed: no answer in time".into()),
            }),
        }
    }

    fn apply(&mut self, answer: lookup::Answer) {
        if let Some(info) = self.procs.get_mut(&answer.pid)
            && info.exec_seq == answer.exec
        {
            let image = Arc::make_mut(&mut info.image);
            if answer.package.is_some() {
                image.package = answer.package;
            }
            image.linkage = answer.facts.linkage;
            image.runtime = answer.facts.runtime;
        }
    }

    /// Seeds a process that already runs and all its existing descendants from
    /// /proc (for `watch <pid>`), plus its ancestors for lineage. Returns the tree's
    /// pids, root first, for the caller to watch in the kernel (and to wait for, with
    /// `mark_live`, if it should); empty when `root` does not exist. Processes forked while the scan runs are caught by the
    /// kernel's inheritance once their parent is watched, except a child forked
    /// between the scan and the watch, which is why the caller scans again.
    pub fn seed_tree(&mut self, root: u32) -> Vec<u32> {
        let Some(root_info) = procfs::read_proc(root) else {
            return Vec::new();
        };
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, ppid) in procfs::all_parents() {
            children.entry(ppid).or_default().push(pid);
        }
        let mut ancestor = root_info.ppid;
        self.insert(root_info);
        self.roots.insert(root);
        // Ancestors: known for lineage, not watched.
        while ancestor > 1 && !self.procs.contains_key(&ancestor) {
            let Some(info) = procfs::read_proc(ancestor) else {
                break;
            };
            let next = info.ppid;
            self.insert(info);
            ancestor = next;
        }
        let mut tree = vec![root];
        let mut in_tree: HashSet<u32> = HashSet::from([root]);
        let mut i = 0;
        while i < tree.len() {
            for &child in children.get(&tree[i]).into_iter().flatten() {
                if !in_tree.contains(&child)
                    && let Some(info) = procfs::read_proc(child)
                {
                    self.insert(info);
                    in_tree.insert(child);
                    tree.push(child);
                }
            }
            i += 1;
        }
        tree
    }

    /// Processes to wait for (as roots): `watch <pid>` waits for the trees it seeded.
    pub fn mark_live(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.live.extend(pids);
    }

    /// Adds a root whose parent is known but whose image is not yet the final one
    /// (a gated child of `probectl run` before its exec).
    pub fn add_root(&mut self, pid: u32, ppid: u32) {
        self.procs.insert(
            pid,
            ProcessInfo {
                pid,
                ppid,
                ..Default::default()
            },
        );
        self.live.insert(pid);
        self.roots.insert(pid);
    }

    /// Notes that a policy selector picked `pid`.
    pub fn mark_selected(&mut self, pid: u32) {
        self.selected.insert(pid);
    }

    /// Whether `pid` or a known ancestor was picked by a policy selector.
    pub fn is_selected_tree(&self, pid: u32) -> bool {
        let mut cur = pid;
        for _ in 0..4096 {
            if self.selected.contains(&cur) {
                return true;
            }
            match self.procs.get(&cur) {
                Some(info) if info.ppid != 0 && info.ppid != cur => cur = info.ppid,
                _ => return false,
            }
        }
        false
    }

    /// A process that is no longer watched (its subscription ended): nothing more
    /// will be heard of it, so it counts as gone for liveness and tree expiry.
    pub fn stop_following(&mut self, pid: u32) {
        self.live.remove(&pid);
        if let Some(info) = self.procs.get_mut(&pid) {
            info.exited = true;
        }
    }

    /// Watched processes that have not exited yet.
    pub fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.live.iter().copied()
    }

    /// Forgets live processes that are gone (or zombies) although no exit event said
    /// so, which happens only when the event was lost (and counted). Called on a timer
    /// while waiting for descendants, never per event.
    pub fn prune_dead(&mut self) -> usize {
        let before = self.live.len();
        self.live.retain(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // The state follows the parenthesised comm, which may itself contain ')'.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        });
        before - self.live.len()
    }

    pub fn on_fork(&mut self, parent: u32, child: u32) {
        let mut info = self.procs.get(&parent).cloned().unwrap_or_default();
        info.pid = child;
        info.ppid = parent;
        info.exit_code = None;
        info.exited = false;
        self.procs.insert(child, info);
        self.live.insert(child);
    }

    pub fn on_exec(
        &mut self,
        pid: u32,
        uid: u32,
        exe: &[u8],
        argv: Vec<String>,
        argv_incomplete: bool,
    ) {
        let mut info = self.procs.remove(&pid).unwrap_or_else(|| ProcessInfo {
            pid,
            ..Default::default()
        });
        info.uid = Some(uid);
        // The new program's environment says anew where its home is (`set_homes`).
        info.homes = Default::default();
        let exe = escape_bytes(&procfs::absolute_exe(pid, exe));
        info.image = Arc::new(Image::of_live(pid, exe, argv, argv_incomplete));
        self.insert(info);
        // Interpreters are keyed by their script's package, not their binary.
        if let Some(hasher) = &mut self.hasher
            && let Some(info) = self.procs.get(&pid)
            && info.image.script().is_none()
        {
            let (exec, exe) = (info.exec_seq, info.image.exe.clone());
            if let Err(noted) = hasher.ask(pid, exec, exe) {
                self.exe_hashes.insert(pid, (exec, noted));
            }
        }
    }

    /// The homes `pid`'s environment at exec named.
    pub fn set_homes(&mut self, pid: u32, homes: crate::policy::own_home::ExecHomes) {
        if let Some(info) = self.procs.get_mut(&pid) {
            info.homes = homes;
        }
    }

    pub fn on_exit(&mut self, pid: u32, code: Option<i32>) {
        self.live.remove(&pid);
        if let Some(info) = self.procs.get_mut(&pid) {
            info.exited = true;
            info.exit_code = code;
        }
    }

    /// The tree `pid` belongs to: the outermost watched root among its ancestors, or
    /// the topmost ancestor the table knows when none is a root (a process seen
    /// first at its exec, or whose parent is unknown). No allocation: this runs for
    /// every probe and connection.
    pub fn tree_of(&self, pid: u32) -> u32 {
        let (mut cur, mut top, mut outermost_root) = (pid, pid, None);
        // Bounded: a pid reused as its own ancestor must not loop forever.
        for _ in 0..4096 {
            if self.roots.contains(&cur) {
                outermost_root = Some(cur);
            }
            top = cur;
            match self.procs.get(&cur) {
                Some(info)
                    if info.ppid != 0
                        && info.ppid != cur
                        && self.procs.contains_key(&info.ppid) =>
                {
                    cur = info.ppid
                }
                _ => break,
            }
        }
        outermost_root.unwrap_or(top)
    }

    /// Whether `pid` or one of its known ancestors is in `roots`. No allocation: the
    /// daemon asks this for every record and every subscriber.
    pub fn descends_from(&self, pid: u32, roots: &[u32]) -> bool {
        let mut cur = pid;
        for _ in 0..4096 {
            if roots.contains(&cur) {
                return true;
            }
            match self.procs.get(&cur) {
                Some(info) if info.ppid != 0 && info.ppid != cur => cur = info.ppid,
                _ => return false,
            }
        }
        false
    }

    /// For a long-running watcher (the daemon): notes trees whose processes have all
    /// exited, and forgets the exited processes of trees that have been so for
    /// `grace_ns`. Ancestors known only for lineage never exit here and stay. Called
    /// on a timer, never per event.
    pub fn expire_trees(&mut self, now_ns: u64, grace_ns: u64) -> ExpiredTrees {
        let live_trees: HashSet<u32> = self.live.iter().map(|&p| self.tree_of(p)).collect();
        self.dead_since.retain(|tree, _| !live_trees.contains(tree));
        let mut exited: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, info) in &self.procs {
            if info.exited {
                let tree = self.tree_of(*pid);
                if !live_trees.contains(&tree) {
                    exited.entry(tree).or_default().push(*pid);
                }
            }
        }
        let mut out = ExpiredTrees::default();
        for (tree, pids) in exited {
            let since = *self.dead_since.entry(tree).or_insert_with(|| {
                out.newly_exited.push(tree);
                now_ns
            });
            if now_ns.saturating_sub(since) >= grace_ns {
                for pid in pids {
                    self.procs.remove(&pid);
                    self.selected.remove(&pid);
                }
                self.roots.remove(&tree);
                self.dead_since.remove(&tree);
                out.forgotten.push(tree);
            }
        }
        out
    }

    /// Processes in the table (watched ones and ancestors known for lineage).
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// pid, then parent, grandparent... as far as the table knows.
    pub fn lineage(&self, pid: u32) -> Vec<u32> {
        let mut chain = vec![pid];
        let mut cur = pid;
        while let Some(info) = self.procs.get(&cur) {
            // Bounded: a fork chain thousands deep must not cost that much per record.
            if chain.len() > crate::records::MAX_PARENTS {
                break;
            }
            if info.ppid == 0 || chain.contains(&info.ppid) || !self.procs.contains_key(&info.ppid)
            {
                break;
            }
            chain.push(info.ppid);
            cur = info.ppid;
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_are_identified_by_their_script() {
        let node = Image {
            exe: "/usr/bin/node".into(),
            argv: vec![
                "node".into(),
                "--no-warnings".into(),
                "/opt/cli/cli.js".into(),
            ],
            ..Default::default()
        };
        assert_eq!(node.name(), "node");
        assert_eq!(node.script(), Some("/opt/cli/cli.js"));
        let py = Image {
            exe: "/usr/bin/python3.11".into(),
            argv: vec!["python3".into(), "x.py".into()],
            ..Default::default()
        };
        assert_eq!(py.script(), Some("x.py"));
        let native = Image {
            exe: "/usr/bin/curl".into(),
            argv: vec!["curl".into(), "x".into()],
            ..Default::default()
        };
        assert_eq!(native.script(), None);
    }

    #[test]
    fn seeding_finds_existing_descendants_and_ancestors() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .expect("spawn sh");
        let sh = child.id();
        // The grandchild appears once sh has forked and exec'd it: wait for that, with a
        // deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut t = ProcessTable::default();
        let tree = loop {
            let tree = t.seed_tree(sh);
            // Forked but not yet exec'd, the child is still a shell: wait for `sleep`.
            let exec_done = tree
                .get(1)
                .is_some_and(|&pid| t.get(pid).is_some_and(|p| p.name() == "sleep"));
            if exec_done || std::time::Instant::now() > deadline {
                break tree;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree[0], sh);
        assert!(tree.len() >= 2, "sh and its sleep: {tree:?}");
        let sleep = tree[1];
        assert_eq!(t.get(sleep).unwrap().name(), "sleep");
        let lineage = t.lineage(sleep);
        assert_eq!(
            &lineage[..3],
            &[sleep, sh, std::process::id()],
            "{lineage:?}"
        );
        assert!(t.seed_tree(u32::MAX - 1).is_empty(), "no such pid");
    }

    #[test]
    fn lineage_follows_forks_and_stops_at_unknown_parents() {
        let mut t = ProcessTable::default();
        t.add_root(10, 1);
        t.on_fork(10, 11);
        t.on_fork(11, 12);
        assert_eq!(t.lineage(12), [12, 11, 10]);
        t.on_exit(11, Some(0));
        let mut live: Vec<u32> = t.live().collect();
        live.sort_unstable();
        assert_eq!(live, [10, 12]);
    }

    #[test]
    fn a_tree_is_named_by_its_outermost_root() {
        let mut t = ProcessTable::default();
        t.add_root(10, 1);
        t.on_fork(10, 11);
        // A selected program inside the tree is also a root: the outer one names it.
        t.add_root(12, 11);
        t.on_fork(12, 13);
        assert_eq!(t.tree_of(13), 10);
        assert_eq!(t.tree_of(10), 10);
        // Seen first at its exec: its own tree.
        t.on_exec(50, 0, b"/bin/true", vec![], false);
        assert_eq!(t.tree_of(50), 50);
        assert!(t.descends_from(13, &[12]) && t.descends_from(13, &[10]));
        assert!(!t.descends_from(50, &[10]) && !t.descends_from(10, &[12]));
    }

    #[test]
    fn an_exited_tree_is_forgotten_after_its_grace_and_not_before() {
        let mut t = ProcessTable::default();
        t.add_root(10, 1);
        t.on_fork(10, 11);
        t.add_root(20, 1);
        t.on_exit(11, Some(0));
        // 10 still lives: nothing expires, however long.
        assert_eq!(t.expire_trees(1_000, 0), ExpiredTrees::default());
        t.on_exit(10, Some(0));
        let first = t.expire_trees(2_000, 500);
        assert_eq!(first.newly_exited, [10]);
        assert!(first.forgotten.is_empty());
        assert!(
            t.expire_trees(2_499, 500).forgotten.is_empty(),
            "inside the grace"
        );
        let later = t.expire_trees(2_500, 500);
        assert_eq!((later.newly_exited.len(), later.forgotten), (0, vec![10]));
        assert!(t.get(10).is_none() && t.get(11).is_none());
        assert!(t.get(20).is_some(), "another tree still lives");
    }
}
