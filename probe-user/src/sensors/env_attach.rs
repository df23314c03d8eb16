//! Lazy attach of the env uprobes: after a watched process execs, the libcs it maps
//! (and its node binary) get the getenv uprobes, once per file, within the bounds of
//! `env_objects`, and lose them when no watched process maps them any more.
//!
//! Every file is opened once (`libc::open_mapped`: the mapped inode itself, never a
//! name its owner could redirect, non-blocking, a regular file), checked with
//! bounded reads (`elf`), and attached through `/proc/self/fd/N` of that same
//! descriptor, so the kernel places the uprobe on the inode that was checked.
//! Detaching a uprobe waits for an RCU grace period (about 70 ms each), so released
//! links are dropped on a thread of their own, not on the event loop.

use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeLink, UProbeLinkId, UProbeScope};

use super::env_objects::{EnvObjectCounts, Known, Object, Refusal};
use super::proc_maps::{self, FileKey};
use super::programs::ENV_UPROBES;
use super::{AttachStatus, Family, Sensors, elf, libc};
use crate::escape::escape_bytes;

/// A lazily attached uprobe: its program and link.
pub(super) type EnvLink = (&'static str, UProbeLinkId);

/// What a file is checked and attached as.
#[derive(Clone, Copy)]
enum Target {
    Libc,
    Node,
    /// The program or a library (LD_PRELOAD) that defines getenv itself: calls
    /// resolve to it, never reaching libc's.
    Interposer,
}

const NODE_UPROBES: [(&str, &str); 1] = [("uv_os_environ", "uv_os_environ")];

impl Target {
    fn uprobes(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Target::Libc | Target::Interposer => &ENV_UPROBES,
            Target::Node => &NODE_UPROBES,
        }
    }

    /// The symbol without which the file is not attached at all.
    fn required(self) -> &'static str {
        self.uprobes()[0].1
    }

    fn symbols(self) -> Vec<&'static str> {
        let mut symbols: Vec<&'static str> = self.uprobes().iter().map(|(_, s)| *s).collect();
        symbols.dedup();
        symbols
    }

    fn verb(self) -> &'static str {
        match self {
            Target::Libc => "mapped",
            Target::Node => "run",
            Target::Interposer => "mapped, defining getenv outside libc,",
        }
    }
}

/// Drops released links on a thread of its own (each waits for a grace period).
#[derive(Default)]
pub(super) struct Reaper(Option<std::sync::mpsc::Sender<UProbeLink>>);

impl Reaper {
    fn drop_later(&mut self, link: UProbeLink) {
        if self.0.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<UProbeLink>();
            let spawned = std::thread::Builder::new()
                .name("probectl-detach".into())
                .spawn(move || rx.into_iter().for_each(drop));
            if spawned.is_ok() {
                self.0 = Some(tx);
            }
        }
        match &self.0 {
            Some(tx) => {
                if let Err(returned) = tx.send(link) {
                    drop(returned.0);
                }
            }
            None => drop(link),
        }
    }
}

/// What one scan of a process's maps found.
pub struct Scanned {
    /// The listing has a libc.
    pub libc: bool,
    /// Which of the asked-for files the listing has.
    pub listed: Vec<FileKey>,
}

/// The lazily attached files and the counts, for `status`.
#[derive(Debug, serde::Serialize)]
pub struct EnvObjectsStatus {
    /// At most this many files at once.
    pub limit: usize,
    /// Each attached file (escaped) and how many watched processes map it.
    pub attached: Vec<(String, usize)>,
    #[serde(flatten)]
    pub counts: EnvObjectCounts,
}

impl Sensors {
    /// Attaches the env uprobes to every libc `pid` maps that none is attached to yet
    /// (a container's glibc, musl, a copy under another path, one loaded by dlmopen
    /// after exec), and to its node binary. Returns whether `pid` maps any libc yet
    /// (right after exec only the dynamic loader does, so callers scan again until
    /// it does), which of the `wanted` files it maps, and the attach results. Reads
    /// /proc/<pid>/maps (bounded): called after an exec or an executable mapping,
    /// once per process per step, never per event.
    pub fn attach_env_for(&mut self, pid: u32, wanted: &[FileKey]) -> (Scanned, Vec<AttachStatus>) {
        let Ok(listing) = proc_maps::read(Some(pid)) else {
            let gone = Scanned {
                libc: false,
                listed: Vec::new(),
            };
            return (gone, Vec::new());
        };
        let listed: Vec<FileKey> = wanted
            .iter()
            .copied()
            .filter(|k| listing.mappings.iter().any(|m| m.key() == *k))
            .collect();
        if listing.truncated {
            tracing::debug!(
                "pid {pid} maps more than {} bytes of listing; the rest is not scanned",
                proc_maps::MAX_MAPS_BYTES
            );
        }
        let candidates = libc::candidates(&listing);
        let mut statuses = Vec::new();
        let mut keys = Vec::new();
        for mapping in &candidates {
            let key = mapping.key();
            keys.push(key);
            if self.env_objects.known(key) != Known::New {
                continue;
            }
            // Checked even without room, so that what is counted as missed for the
            // limit is a libc, not any file named like one.
            let opened = libc::open_mapped(pid, mapping);
            statuses.extend(self.attach_object(pid, key, &mapping.path, opened, Target::Libc));
        }
        let (interposers, attached) = self.attach_interposers_for(pid, &listing);
        keys.extend(interposers);
        statuses.extend(attached);
        if let Some((key, attached)) = self.attach_node_for(pid) {
            keys.push(key);
            statuses.extend(attached);
        }
        if !keys.is_empty() {
            let released = self.env_objects.set_uses(pid, &keys);
            self.release(released);
        }
        let scanned = Scanned {
            libc: !candidates.is_empty(),
            listed,
        };
        (scanned, statuses)
    }

    /// A getenv defined outside libc, by the program itself (bash has one) or by a
    /// library loaded before libc (LD_PRELOAD), takes every call: the libc uprobe
    /// never sees them. Each code file a watched process maps is checked once for an
    /// exported getenv (bounded reads); one that has it gets the same uprobes as a
    /// libc, and its attach record names it. Returns the keys of such files the
    /// process maps, and the attach results.
    fn attach_interposers_for(
        &mut self,
        pid: u32,
        listing: &proc_maps::Listing,
    ) -> (Vec<FileKey>, Vec<AttachStatus>) {
        let mut keys = Vec::new();
        let mut statuses = Vec::new();
        for mapping in libc::interposer_candidates(listing) {
            let key = mapping.key();
            match self.env_objects.known(key) {
                Known::Attached => keys.push(key),
                Known::New if !self.env_objects.is_plain(key) => {
                    let defines_getenv = libc::open_mapped(pid, mapping).ok().and_then(|file| {
                        let found = elf::exported_functions(&file, &["getenv"]).ok()?;
                        found[0].map(|_| file)
                    });
                    match defines_getenv {
                        Some(file) => {
                            keys.push(key);
                            statuses.extend(self.attach_object(
                                pid,
                                key,
                                &mapping.path,
                                Ok(file),
                                Target::Interposer,
                            ));
                        }
                        // Not an ELF object, unreadable, or no getenv of its own:
                        // nothing to attach, and not worth a count.
                        None => self.env_objects.plain(key),
                    }
                }
                Known::New | Known::Permanent | Known::Refused | Known::OverLimit => {}
            }
        }
        (keys, statuses)
    }

    /// Before a held command execs (`run`): its program and LD_PRELOAD libraries get
    /// the getenv uprobes now if they define getenv themselves, so that their first
    /// lookups are seen (the scan after exec would attach too late for those).
    /// Files are opened without blocking and checked to be regular; the uprobe goes on
    /// the inode just checked.
    pub fn attach_interposer_files(&mut self, pid: u32, files: &[PathBuf]) -> Vec<AttachStatus> {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let mut statuses = Vec::new();
        for path in files {
            let Ok(file) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(::libc::O_NONBLOCK | ::libc::O_NOCTTY | ::libc::O_CLOEXEC)
                .open(path)
            else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let key: FileKey = (meta.dev(), meta.ino());
            if self.env_objects.known(key) != Known::New || self.env_objects.is_plain(key) {
                continue;
            }
            let defines_getenv =
                elf::exported_functions(&file, &["getenv"]).is_ok_and(|found| found[0].is_some());
            if !defines_getenv {
                self.env_objects.plain(key);
                continue;
            }
            let shown = path.as_os_str().as_encoded_bytes().to_vec();
            statuses.extend(self.attach_object(pid, key, &shown, Ok(file), Target::Interposer));
        }
        statuses
    }

    /// Node enumerates the environment through libuv's exported `uv_os_environ`
    /// without a getenv per name: a uprobe on each distinct node binary a watched
    /// process runs reports `Object.keys(process.env)` and the like.
    fn attach_node_for(&mut self, pid: u32) -> Option<(FileKey, Vec<AttachStatus>)> {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let name = exe.file_name()?.to_str()?;
        if !(name == "node" || name == "nodejs" || name.starts_with("node-")) {
            return None;
        }
        let (file, key) = libc::open_exe(pid).ok()?;
        match self.env_objects.known(key) {
            Known::Attached => return Some((key, Vec::new())),
            Known::Permanent | Known::Refused | Known::OverLimit => return None,
            Known::New => {}
        }
        let path = exe.as_os_str().as_encoded_bytes().to_vec();
        Some((
            key,
            self.attach_object(pid, key, &path, Ok(file), Target::Node),
        ))
    }

    /// At start: node binaries on PATH and in the usual version-manager places get the
    /// `uv_os_environ` uprobe now, kept (`sticky`), so that a node process started
    /// later is covered from its first instruction, not from the attach that follows
    /// its exec. Bounded (`node_bins::MAX_AT_START` files, each opened without blocking
    /// and checked to be a regular ELF file that exports the symbol); a failure is
    /// logged and counted, not a sensor failure (no watched process needed it yet).
    pub(super) fn attach_node_binaries_at_start(&mut self) {
        let started = std::time::Instant::now();
        let mut attached = 0;
        for (path, file, key) in super::node_bins::at_start() {
            if self.env_objects.known(key) != Known::New {
                continue;
            }
            let shown = path.as_os_str().as_encoded_bytes().to_vec();
            let statuses = self.attach_object(0, key, &shown, Ok(file), Target::Node);
            attached += statuses.iter().filter(|s| s.attached).count();
        }
        tracing::info!(
            "uv_os_environ uprobes on {attached} node binaries at start, in {:?}",
            started.elapsed()
        );
    }

    /// Frees slots held for processes whose exit was not seen, then node binaries
    /// kept without users; true if one is free.
    fn make_room(&mut self) -> bool {
        if !self.env_objects.has_room() {
            let released = self.env_objects.release_unused_sticky();
            self.release(released);
        }
        if !self.env_objects.has_room() {
            let released = self
                .env_objects
                .sweep(|pid| Path::new(&format!("/proc/{pid}")).exists());
            self.release(released);
        }
        self.env_objects.has_room()
    }

    fn attach_object(
        &mut self,
        pid: u32,
        key: FileKey,
        path: &[u8],
        opened: std::io::Result<std::fs::File>,
        target: Target,
    ) -> Vec<AttachStatus> {
        let shown = escape_bytes(path);
        let file = match opened {
            Ok(file) => file,
            Err(err) => {
                tracing::debug!("not attaching to {shown} (pid {pid}): {err}");
                self.env_objects.refuse(key, Refusal::Unreadable);
                return Vec::new();
            }
        };
        let symbols = target.symbols();
        let offsets = match elf::exported_functions(&file, &symbols) {
            Ok(offsets) => offsets,
            Err(err) => {
                tracing::debug!("not attaching to {shown} (pid {pid}): {err}");
                self.env_objects.refuse(key, Refusal::NotElf);
                return Vec::new();
            }
        };
        let offset_of = |symbol: &str| {
            symbols
                .iter()
                .position(|s| *s == symbol)
                .and_then(|i| offsets[i])
        };
        if offset_of(target.required()).is_none() {
            tracing::debug!(
                "not attaching to {shown} (pid {pid}): it does not define {}",
                target.required()
            );
            self.env_objects.refuse(key, Refusal::NoSymbol);
            return Vec::new();
        }
        if !self.make_room() {
            self.env_objects.over_limit(key);
            return Vec::new();
        }
        // The kernel resolves this to the open file itself, the one just checked.
        let via = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let mut links = Vec::new();
        let mut statuses = Vec::new();
        for &(program, symbol) in target.uprobes() {
            // A libc without secure_getenv (older musl) has no such call to miss.
            let Some(offset) = offset_of(symbol) else {
                continue;
            };
            let result = self.attach_uprobe_at(program, offset, &via);
            let kind = if program.ends_with("_ret") {
                "uretprobe"
            } else {
                "uprobe"
            };
            let attach_point = if pid == 0 {
                format!("{kind} {shown}:{symbol} (at start)")
            } else {
                format!(
                    "{kind} {shown}:{symbol} (first {} by pid {pid})",
                    target.verb()
                )
            };
            let error = match result {
                Ok(link) => {
                    links.push((program, link));
                    None
                }
                Err(err) => {
                    tracing::warn!("sensor {program} not attached at {attach_point}: {err}");
                    Some(err)
                }
            };
            statuses.push(AttachStatus {
                program: program.to_owned(),
                family: Family::Env,
                attach_point,
                attached: error.is_none(),
                error,
            });
        }
        if links.is_empty() {
            self.env_objects.refuse(key, Refusal::AttachFailed);
        } else {
            self.env_objects.insert(key, shown, links, statuses.clone());
            if matches!(target, Target::Node) {
                // The next node that runs this file is covered from its exec.
                self.env_objects.make_sticky(key);
            }
        }
        statuses
    }

    fn attach_uprobe_at(
        &mut self,
        program: &str,
        offset: u64,
        target: &Path,
    ) -> Result<UProbeLinkId, String> {
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or("program missing from the object")?;
        let prog: &mut UProbe = prog.try_into().map_err(|e| format!("{e}"))?;
        // Lazily attached files reuse the loaded program.
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| super::load_error::load_error(program, &e))?;
        }
        prog.attach(offset, target, UProbeScope::AllProcesses)
            .map_err(|e| format!("attach: {e:#}"))
    }

    /// Detaches files no watched process maps any more (off the loop).
    fn release(&mut self, objects: Vec<Object<EnvLink>>) {
        for object in objects {
            tracing::info!(
                "env uprobes released from {}: no watched process maps it any more",
                object.name
            );
            for (program, id) in object.links {
                let Some(prog) = self.ebpf.program_mut(program) else {
                    continue;
                };
                let Ok(prog) = <&mut UProbe>::try_from(prog) else {
                    continue;
                };
                if let Ok(link) = prog.take_link(id) {
                    self.reaper.drop_later(link);
                }
            }
        }
    }

    /// A watched process forked: the child maps what the parent maps.
    pub fn env_users_forked(&mut self, parent: u32, child: u32) {
        self.env_objects.forked(parent, child);
    }

    /// A watched process exited: files only it mapped are released.
    pub fn env_users_exited(&mut self, pid: u32) {
        let released = self.env_objects.exited(pid);
        self.release(released);
    }

    /// The lazily attached files and what was refused, for `status`.
    pub fn env_objects_status(&self) -> EnvObjectsStatus {
        let mut attached: Vec<(String, usize)> = self
            .env_objects
            .objects()
            .map(|o| (o.name.clone(), o.users()))
            .collect();
        attached.sort();
        EnvObjectsStatus {
            limit: self.env_objects.limit(),
            attached,
            counts: self.env_objects.counts,
        }
    }

    /// What the lazy attach refused or missed, for the engine's loss counters.
    pub fn env_object_counts(&self) -> EnvObjectCounts {
        self.env_objects.counts
    }

    /// Lazily attached uprobes that failed (a symbol missing), for `unattached`.
    pub(super) fn env_unattached(&self) -> impl Iterator<Item = &AttachStatus> {
        self.env_objects
            .objects()
            .flat_map(|o| o.statuses.iter())
            .filter(|s| !s.attached)
    }
}
