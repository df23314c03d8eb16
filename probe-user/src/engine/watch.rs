//! Which processes the engine watches: a command `run` starts, trees `watch` (or a
//! daemon subscriber) names, programs the policy selects that already run; and the
//! end of a watch that nobody needs any more.

use crate::records::{Body, Record};
use crate::sensors::SensorError;

use super::Engine;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("no process {0}")]
    NoSuchProcess(u32),
    #[error("process {0} exited before it could be watched")]
    Exited(u32),
    #[error("cannot add pid {0} to the watched set: {1}")]
    Watch(u32, SensorError),
}

impl Engine {
    /// A command started held before its exec (`run`): watched from its first
    /// instruction, a root of its own tree, waited for.
    pub fn watch_command(&mut self, pid: u32) -> Result<(), SensorError> {
        self.sensors.watch(pid)?;
        self.procs.add_root(pid, std::process::id());
        Ok(())
    }

    /// The files a held command will map first that may define getenv themselves:
    /// its program (found in `PATH` like exec would) and each LD_PRELOAD library.
    /// Those that do get the getenv uprobes before the command runs (reported as
    /// `sensor` records).
    pub fn attach_before_exec(
        &mut self,
        pid: u32,
        program: &std::ffi::OsStr,
        ld_preload: Option<&std::ffi::OsStr>,
    ) {
        let mut files: Vec<std::path::PathBuf> = which::which(program).into_iter().collect();
        if let Some(list) = ld_preload {
            // ld.so splits LD_PRELOAD on spaces and colons.
            files.extend(
                list.as_encoded_bytes()
                    .split(|&b| b == b' ' || b == b':')
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| std::str::from_utf8(s).ok())
                    .map(std::path::PathBuf::from),
            );
        }
        let attached = self.sensors.attach_interposer_files(pid, &files);
        self.records
            .extend(attached.into_iter().map(|s| Record::now(Body::Sensor(s))));
    }

    /// Programs the policy selects in the kernel (by name or uid) that already run:
    /// watched from now on, with their descendants and lineage from /proc (the kernel
    /// selects later execs). `wait` also waits for them (the daemon's liveness); a
    /// `run` does not wait for programs it did not start. Returns the pids that could
    /// not be watched, with the reason.
    pub fn watch_selected_running(&mut self, wait: bool) -> Vec<(u32, SensorError)> {
        let policy = &self.policy.kernel;
        let pids = crate::process::pids_selected(&policy.select_comms, &policy.select_uids);
        let mut failed = Vec::new();
        for pid in pids {
            self.procs.mark_selected(pid);
            for pid in self.procs.seed_tree(pid) {
                match self.sensors.watch(pid) {
                    Ok(()) if wait => self.procs.mark_live([pid]),
                    Ok(()) => {}
                    Err(err) => failed.push((pid, err)),
                }
            }
        }
        failed
    }

    /// Watches running trees (`watch`, a daemon subscriber): each root and every
    /// descendant it has now (from /proc), in the kernel, with lineage, waited for,
    /// and with the env uprobes on the libcs they map (reported as `sensor` records).
    /// Children forked between the /proc scan and the watch were not inherited, so a
    /// second scan, once every parent is watched, finds them. Returns every pid
    /// watched, roots first.
    pub fn watch_trees(&mut self, roots: &[u32]) -> Result<Vec<u32>, SeedError> {
        if let Some(&pid) = roots
            .iter()
            .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        {
            return Err(SeedError::NoSuchProcess(pid));
        }
        // probectl never watches itself: a watch of pid 1 includes this process, and
        // its own reads would feed its own ring.
        let own = std::process::id();
        let mut watched = Vec::new();
        for &root in roots {
            let mut tree = self.procs.seed_tree(root);
            if tree.is_empty() {
                return Err(SeedError::Exited(root));
            }
            tree.retain(|&p| p != own);
            for &pid in &tree {
                self.sensors
                    .watch(pid)
                    .map_err(|e| SeedError::Watch(pid, e))?;
            }
            watched.extend(tree);
        }
        let mut known: std::collections::HashSet<u32> = watched.iter().copied().collect();
        for &root in roots {
            for pid in self.procs.seed_tree(root) {
                if pid != own && known.insert(pid) {
                    let _ = self.sensors.watch(pid);
                    watched.push(pid);
                }
            }
        }
        self.procs.mark_live(watched.iter().copied());
        // Processes that run already have their libc mapped: attach to it now.
        for &pid in &watched {
            let (_, attached) = self.sensors.attach_env_for(pid, &[]);
            self.records
                .extend(attached.into_iter().map(|s| Record::now(Body::Sensor(s))));
        }
        Ok(watched)
    }

    /// Stops watching the live processes under `roots` that the policy does not
    /// select and that no other watcher still wants (`keep`: the roots of the other
    /// subscriptions): a subscription that ended must not leave its tree traced (root
    /// subscribing to pid 1 would otherwise trace the whole machine from then on).
    /// Returns how many processes were let go.
    pub fn unwatch_trees(&mut self, roots: &[u32], keep: &[u32]) -> usize {
        let pids: Vec<u32> = self
            .procs
            .live()
            .filter(|&p| self.procs.descends_from(p, roots))
            .filter(|&p| !self.procs.is_selected_tree(p) && !self.procs.descends_from(p, keep))
            .collect();
        let mut released = 0;
        for pid in pids {
            if self.sensors.unwatch(pid).is_ok() {
                released += 1;
            }
            self.procs.stop_following(pid);
        }
        released
    }
}
