//! The process table: what userspace knows of each watched process (lineage, exe,
//! argv, uid), built from exec/fork/exit events and seeded from /proc for roots.

pub mod identity;

use std::collections::{HashMap, HashSet};

use crate::output::escape::escape_bytes;
use identity::PackageInfo;

#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: Option<u32>,
    /// Executable path (escaped for display).
    pub exe: String,
    /// argv (each entry escaped for display).
    pub argv: Vec<String>,
    /// More argv entries existed than the kernel captured.
    pub argv_incomplete: bool,
    pub exit_code: Option<i32>,
    pub exited: bool,
    /// Working directory at exec (escaped), if the process still existed to ask.
    pub cwd: Option<String>,
    /// Container id, from the cgroup paths.
    pub container: Option<String>,
    /// For interpreters: the package the script belongs to.
    pub package: Option<PackageInfo>,
}

impl ProcessInfo {
    /// Reads the working directory, container and script package of a live process
    /// (once per exec or seed).
    fn add_context(&mut self) {
        self.cwd = identity::cwd_of(self.pid);
        self.container = identity::container_of(self.pid);
        self.package = self
            .script()
            .and_then(|s| identity::package_of(s, self.cwd.as_deref()));
    }

    /// A short name for output: the basename of the exe, or of argv[0].
    pub fn name(&self) -> &str {
        let full = if self.exe.is_empty() {
            self.argv.first().map(String::as_str).unwrap_or("?")
        } else {
            &self.exe
        };
        full.rsplit('/').next().unwrap_or(full)
    }

    /// For interpreters, the script or package they run (first argument that is not
    /// an option), which is what identifies the CLI; `None` for native programs.
    pub fn script(&self) -> Option<&str> {
        const INTERPRETERS: &[&str] = &[
            "node", "nodejs", "python", "python3", "bun", "deno", "ruby", "perl", "sh", "bash",
        ];
        let name = self.name();
        let is_interpreter = INTERPRETERS.iter().any(|i| {
            name == *i
                || (name.starts_with(i)
                    && name[i.len()..]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.'))
        });
        if !is_interpreter {
            return None;
        }
        self.argv
            .iter()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .map(String::as_str)
    }
}

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

    /// Adds a root from /proc (best effort: it may have exited already).
    pub fn seed_from_proc(&mut self, pid: u32) {
        let info = read_proc(pid).unwrap_or(ProcessInfo {
            pid,
            ..Default::default()
        });
        self.procs.insert(pid, info);
    }

    /// Seeds a process that already runs and all its existing descendants from
    /// /proc (for `watch <pid>`), plus its ancestors for lineage. Returns the tree's
    /// pids, root first, for the caller to watch in the kernel (and to wait for, with
    /// `mark_live`, if it should); empty when `root` does not exist. Processes forked while the scan runs are caught by the
    /// kernel's inheritance once their parent is watched, except a child forked
    /// between the scan and the watch, which is why the caller scans again.
    pub fn seed_tree(&mut self, root: u32) -> Vec<u32> {
        let Some(root_info) = read_proc(root) else {
            return Vec::new();
        };
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, ppid) in all_parents() {
            children.entry(ppid).or_default().push(pid);
        }
        let mut ancestor = root_info.ppid;
        self.procs.insert(root, root_info);
        self.roots.insert(root);
        // Ancestors: known for lineage, not watched.
        while ancestor > 1 && !self.procs.contains_key(&ancestor) {
            let Some(info) = read_proc(ancestor) else {
                break;
            };
            let next = info.ppid;
            self.procs.insert(ancestor, info);
            ancestor = next;
        }
        let mut tree = vec![root];
        let mut i = 0;
        while i < tree.len() {
            for &child in children.get(&tree[i]).into_iter().flatten() {
                if !tree.contains(&child)
                    && let Some(info) = read_proc(child)
                {
                    self.procs.insert(child, info);
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
        let info = self.procs.entry(pid).or_insert_with(|| ProcessInfo {
            pid,
            ..Default::default()
        });
        info.uid = Some(uid);
        info.exe = escape_bytes(&absolute_exe(pid, exe));
        info.argv = argv;
        info.argv_incomplete = argv_incomplete;
        info.add_context();
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

/// The kernel reports the pathname as passed to execve, which may be relative
/// (`./cli`). Exec is rare enough to afford one readlink of /proc/<pid>/exe to make it
/// absolute; if the process is already gone, the relative name is kept.
fn absolute_exe(pid: u32, exe: &[u8]) -> Vec<u8> {
    if exe.first() == Some(&b'/') {
        return exe.to_vec();
    }
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.into_os_string().into_encoded_bytes())
        .unwrap_or_else(|_| exe.to_vec())
}

/// Every pid in /proc now (empty if /proc is unreadable).
fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Processes running now that the kernel's selectors would have picked at their exec:
/// program name (`comm`, as zero-padded kernel keys) in `comms`, or real uid in
/// `uids`. probectl itself is never one of them.
pub fn pids_selected(comms: &[[u8; 16]], uids: &[u32]) -> Vec<u32> {
    if comms.is_empty() && uids.is_empty() {
        return Vec::new();
    }
    let own = std::process::id();
    proc_pids()
        .filter(|&pid| pid != own)
        .filter(|pid| {
            let by_comm = || {
                let Ok(comm) = std::fs::read(format!("/proc/{pid}/comm")) else {
                    return false;
                };
                let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
                comms.iter().any(|key| {
                    let len = key.iter().position(|&b| b == 0).unwrap_or(key.len());
                    &key[..len] == comm
                })
            };
            let by_uid =
                || !uids.is_empty() && read_proc_uid(*pid).is_some_and(|uid| uids.contains(&uid));
            by_comm() || by_uid()
        })
        .collect()
}

fn read_proc_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// (pid, ppid) of every process in /proc, from `stat` (whose 4th field is the
/// parent; the comm before it is parenthesised and may contain anything).
fn all_parents() -> Vec<(u32, u32)> {
    proc_pids()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

fn read_proc(pid: u32) -> Option<ProcessInfo> {
    let base = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let exe = std::fs::read_link(format!("{base}/exe"))
        .map(|p| escape_bytes(p.as_os_str().as_encoded_bytes()))
        .unwrap_or_default();
    let argv = std::fs::read(format!("{base}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(escape_bytes)
                .collect()
        })
        .unwrap_or_default();
    let mut info = ProcessInfo {
        pid,
        ppid: field("PPid:")?,
        uid: field("Uid:"),
        exe,
        argv,
        ..Default::default()
    };
    info.add_context();
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_are_identified_by_their_script() {
        let node = ProcessInfo {
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
        let py = ProcessInfo {
            exe: "/usr/bin/python3.11".into(),
            argv: vec!["python3".into(), "x.py".into()],
            ..Default::default()
        };
        assert_eq!(py.script(), Some("x.py"));
        let native = ProcessInfo {
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
