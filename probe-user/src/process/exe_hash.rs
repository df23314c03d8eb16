//! The sha256 of a native executable, the fingerprint a behaviour profile keys a CLI
//! without a package on (docs/usage.md, "Profiles and `probectl diff`"). Hashed off
//! the event loop, on a thread of its own, and only when a profile is asked for.
//!
//! The file hashed is the one the process runs: `/proc/PID/exe` opened while it
//! lives, which is the executed inode even if its path was replaced since. A process
//! that exited first is hashed from its recorded path instead, and the answer says so
//! (the file may have changed in between). Every read is of a file the watched user
//! may control: opened non-blocking, regular files only, at most `MAX_BYTES`; a file
//! over the cap gets a note instead of a hash. A read that stalls (a FUSE file system
//! that never answers) stalls only this thread: the run waits for it a bounded time
//! (`ProcessTable::finish_exe_hashes`), and the CLI's profile says it was not hashed.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Largest executable hashed (a native build of a Node CLI is about 200 MiB).
pub const MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Requests queued before further ones are skipped (with a note).
const QUEUE: usize = 256;
/// Distinct executables whose hash is kept for the processes that run them again.
const CACHE: usize = 4096;

/// What hashing an executable gave: its sha256, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExeHash {
    /// Lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// How it was hashed when not from the running process, or why it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ExeHash {
    fn noted(note: impl Into<String>) -> Self {
        Self {
            sha256: None,
            note: Some(note.into()),
        }
    }
}

/// Hashes an open file, reading at most `cap` bytes: a regular file only.
pub fn hash_file(file: &mut File, cap: u64) -> ExeHash {
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(err) => return ExeHash::noted(format!("not hashed: {err}")),
    };
    if !meta.file_type().is_file() {
        return ExeHash::noted("not hashed: not a regular file");
    }
    if meta.len() > cap {
        return ExeHash::noted(format!(
            "not hashed: {} bytes, over the {cap}-byte cap",
            meta.len()
        ));
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                // It grew while being read: bounded all the same.
                if total > cap {
                    return ExeHash::noted(format!("not hashed: over the {cap}-byte cap"));
                }
                ctx.update(&buf[..n]);
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return ExeHash::noted(format!("not hashed: {err}")),
        }
    }
    let digest = ctx.finish();
    let hex = digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
    ExeHash {
        sha256: Some(hex),
        note: None,
    }
}

fn open_nonblocking(path: &str, nofollow: bool) -> std::io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}

/// Opens `path` for reading only if it is a regular file, never following a symlink
/// in its last component: an `O_PATH` handle first (it opens nothing: no FIFO
/// reader appears, no device driver's open runs), checked, then reopened through that
/// handle so the file checked is the file read. The path of an exited process is the
/// watched user's to replace (by a FIFO, or a directory symlink into /dev).
fn open_regular_nofollow(path: &str) -> std::io::Result<File> {
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if !handle.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    open_nonblocking(
        &format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&handle)),
        false,
    )
}

/// The worker's cache key: the same file, unchanged.
type FileKey = (u64, u64, u64, i64, i64);

fn key_of(file: &File) -> Option<FileKey> {
    let m = file.metadata().ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

fn hash_of_process(pid: u32, exe: &str, cache: &mut HashMap<FileKey, ExeHash>) -> ExeHash {
    // /proc/PID/exe is the kernel's link to the executed file: following it is the
    // point (it reaches the inode even when the path now names another file).
    let (mut file, from_path) = match open_nonblocking(&format!("/proc/{pid}/exe"), false) {
        Ok(f) => (f, false),
        Err(_) => {
            // Gone already. Escaped paths (`\xNN`) are not the file's real name.
            if !exe.starts_with('/') || exe.contains('\\') {
                return ExeHash::noted("not hashed: the process exited first");
            }
            match open_regular_nofollow(exe) {
                Ok(f) => (f, true),
                Err(err) => {
                    return ExeHash::noted(format!(
                        "not hashed: the process exited first and {exe} cannot be opened: {err}"
                    ));
                }
            }
        }
    };
    let key = key_of(&file);
    let mut hash = match key.and_then(|k| cache.get(&k)) {
        Some(cached) => cached.clone(),
        None => {
            let h = hash_file(&mut file, MAX_BYTES);
            if let Some(k) = key
                && h.sha256.is_some()
            {
                if cache.len() >= CACHE {
                    cache.clear();
                }
                cache.insert(k, h.clone());
            }
            h
        }
    };
    if from_path && hash.sha256.is_some() {
        hash.note = Some(
            "hashed from its path after the process exited: the file may have changed since it ran"
                .into(),
        );
    }
    hash
}

#[derive(Debug)]
struct Request {
    pid: u32,
    exec: u64,
    exe: String,
}

/// An answer for (pid, exec).
#[derive(Debug)]
pub struct Answer {
    pub pid: u32,
    pub exec: u64,
    pub hash: ExeHash,
}

#[derive(Debug)]
pub struct Hasher {
    tx: Option<SyncSender<Request>>,
    rx: Receiver<Answer>,
    /// Requests sent and not yet answered.
    pub in_flight: usize,
    /// Requests that did not fit the queue.
    pub skipped: u64,
}

impl Hasher {
    pub fn new() -> Self {
        let (tx, requests) = sync_channel::<Request>(QUEUE);
        // Unbounded in count only by `QUEUE` requests in flight: answers are small.
        let (answers, rx) = sync_channel::<Answer>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("exe hashes".into())
            .spawn(move || {
                let mut cache = HashMap::new();
                for r in requests {
                    let hash = hash_of_process(r.pid, &r.exe, &mut cache);
                    let answer = Answer {
                        pid: r.pid,
                        exec: r.exec,
                        hash,
                    };
                    if answers.send(answer).is_err() {
                        break;
                    }
                }
            });
        if let Err(err) = &spawned {
            tracing::warn!("cannot start the executable hashing thread: {err}");
        }
        Self {
            tx: spawned.ok().map(|_| tx),
            rx,
            in_flight: 0,
            skipped: 0,
        }
    }

    /// Asks for the hash of `pid`'s executable; never waits.
    pub fn ask(&mut self, pid: u32, exec: u64, exe: String) -> Result<(), ExeHash> {
        let Some(tx) = &self.tx else {
            return Err(ExeHash::noted("not hashed: no hashing thread"));
        };
        match tx.try_send(Request { pid, exec, exe }) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.skipped += 1;
                Err(ExeHash::noted("not hashed: too many executables queued"))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.tx = None;
                Err(ExeHash::noted("not hashed: no hashing thread"))
            }
        }
    }

    /// Answers that came, without waiting.
    pub fn poll(&mut self) -> Vec<Answer> {
        let mut out = Vec::new();
        while let Ok(answer) = self.rx.try_recv() {
            self.in_flight = self.in_flight.saturating_sub(1);
            out.push(answer);
        }
        out
    }

    /// Answers until none is in flight or `within` has passed.
    pub fn wait(&mut self, within: Duration) -> Vec<Answer> {
        let deadline = Instant::now() + within;
        let mut out = self.poll();
        while self.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(answer) => {
                    self.in_flight -= 1;
                    out.push(answer);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        out
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_and_one_over_the_cap_is_noted() {
        let dir = std::env::temp_dir().join(format!("probectl-exe-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"abc").unwrap();
        let h = hash_file(&mut File::open(&path).unwrap(), 1024);
        assert_eq!(
            h.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        let over = hash_file(&mut File::open(&path).unwrap(), 2);
        assert!(over.sha256.is_none());
        assert!(over.note.unwrap().contains("over the 2-byte cap"));
        // A directory is no executable.
        let d = hash_file(&mut File::open(&dir).unwrap(), 1024);
        assert!(d.note.unwrap().contains("not a regular file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn this_process_is_hashed_through_proc_and_a_gone_one_by_its_path() {
        let mut cache = HashMap::new();
        let me = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let live = hash_of_process(me, "/nonexistent", &mut cache);
        assert!(live.sha256.is_some() && live.note.is_none(), "{live:?}");
        // No such pid: the path, and the answer says so.
        let gone = hash_of_process(u32::MAX - 1, exe.to_str().unwrap(), &mut cache);
        assert_eq!(gone.sha256, live.sha256);
        assert!(gone.note.unwrap().contains("may have changed"));
        let unknown = hash_of_process(u32::MAX - 1, "relative\\x01", &mut cache);
        assert!(unknown.sha256.is_none());
    }

    #[test]
    fn a_gone_process_whose_path_is_now_a_fifo_is_not_opened() {
        let dir = std::env::temp_dir().join(format!("probectl-exe-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("cli");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        // A writer blocks in open until some reader opens the FIFO: it tells whether
        // hashing opened it.
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let (tid_tx, tid) = std::sync::mpsc::channel();
        let writer_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            let f = std::fs::OpenOptions::new().write(true).open(&writer_path);
            let _ = opened_tx.send(());
            drop(f);
        });
        // Wait until the writer sleeps in its openat (its /proc syscall file names it).
        let tid = tid.recv().unwrap();
        let in_open = format!("{} ", libc::SYS_openat);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
            .is_ok_and(|s| s.starts_with(&in_open))
        {
            assert!(
                Instant::now() < deadline,
                "the writer never blocked in open"
            );
            std::thread::yield_now();
        }
        let mut cache = HashMap::new();
        let h = hash_of_process(u32::MAX - 1, fifo.to_str().unwrap(), &mut cache);
        assert!(h.sha256.is_none(), "{h:?}");
        let released = opened.recv_timeout(Duration::from_secs(1)).is_ok();
        if !released {
            // Let the writer go: open the FIFO for reading ourselves.
            let _ = open_nonblocking(fifo.to_str().unwrap(), true);
            let _ = opened.recv_timeout(Duration::from_secs(10));
        }
        writer.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!released, "hashing opened the FIFO for reading");
    }
}
