//! Which watched processes need their maps scanned for a libc to put the getenv
//! uprobes on, and until when.
//!
//! Two moments make a scan worth it: an exec (the dynamic loader maps the libc just
//! after it, so the scan repeats until a libc shows), and an executable mapping after
//! that (`EVENT_EXEC_MAPPED`: dlopen, dlmopen, a libc copy loaded by hand), which
//! repeats until the mapped file shows in the listing. One scan per process per
//! step serves every reason it is pending for.

use std::collections::HashMap;

use crate::sensors::{FileKey, Scanned};

/// Scans before giving up on a process (at `LIBC_SCAN_EVERY`, or per batch).
const SCAN_LIMIT: u32 = 100;
/// Scans for an executable mapping whose file the kernel could not name: the mmap
/// is done within microseconds of the event, so a few scans see it.
const UNNAMED_SCAN_LIMIT: u32 = 3;
/// Mapped files waited for per process; more mappings before a scan are served by
/// the scan anyway (it attaches to every libc it lists).
const MAX_WANTED: usize = 16;

#[derive(Debug, Default)]
struct Pending {
    scans: u32,
    /// Scanning until some libc is listed (after an exec).
    until_libc: bool,
    /// Scanning until these files are listed (executable mappings).
    wanted: Vec<FileKey>,
    /// Scans left for a mapping the kernel could not name.
    unnamed: u32,
}

/// The pending scans, by pid.
#[derive(Debug, Default)]
pub(super) struct LibcScans(HashMap<u32, Pending>);

impl LibcScans {
    pub(super) fn exec(&mut self, pid: u32) {
        // A new program: what the old one waited for is moot.
        self.0.insert(
            pid,
            Pending {
                until_libc: true,
                ..Pending::default()
            },
        );
    }

    /// An executable mapping of the file `key` (dev and ino zero: unnamed).
    pub(super) fn mapped(&mut self, pid: u32, key: FileKey) {
        let p = self.0.entry(pid).or_default();
        p.scans = 0;
        if key == (0, 0) {
            p.unnamed = UNNAMED_SCAN_LIMIT;
        } else if !p.wanted.contains(&key) && p.wanted.len() < MAX_WANTED {
            p.wanted.push(key);
        }
    }

    pub(super) fn exited(&mut self, pid: u32) {
        self.0.remove(&pid);
    }

    pub(super) fn pending(&self) -> bool {
        !self.0.is_empty()
    }

    /// Scans every pending process once with `scan(pid, wanted)`, and forgets those
    /// whose wait is over.
    pub(super) fn run(&mut self, mut scan: impl FnMut(u32, &[FileKey]) -> Scanned) {
        self.0.retain(|&pid, p| {
            let found = scan(pid, &p.wanted);
            p.scans += 1;
            if found.libc {
                p.until_libc = false;
            }
            p.wanted.retain(|k| !found.listed.contains(k));
            p.unnamed = p.unnamed.saturating_sub(1);
            let waiting = p.until_libc || !p.wanted.is_empty() || p.unnamed > 0;
            waiting && p.scans < SCAN_LIMIT
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(libc: bool, listed: &[FileKey]) -> Scanned {
        Scanned {
            libc,
            listed: listed.to_vec(),
        }
    }

    #[test]
    fn an_exec_waits_for_a_libc_and_a_mapping_for_its_file() {
        let mut s = LibcScans::default();
        s.exec(1);
        s.run(|_, _| scanned(false, &[]));
        assert!(s.pending(), "no libc yet: scan again");
        s.run(|_, _| scanned(true, &[]));
        assert!(!s.pending(), "the libc is mapped");

        s.mapped(1, (8, 42));
        s.run(|_, wanted| {
            assert_eq!(wanted, [(8, 42)]);
            scanned(true, &[])
        });
        assert!(s.pending(), "the mapped file is not listed yet");
        s.run(|_, _| scanned(true, &[(8, 42)]));
        assert!(!s.pending());
    }

    #[test]
    fn an_unnamed_mapping_gets_a_few_scans_and_every_wait_is_bounded() {
        let mut s = LibcScans::default();
        s.mapped(2, (0, 0));
        let mut scans = 0;
        while s.pending() {
            s.run(|_, _| scanned(true, &[]));
            scans += 1;
        }
        assert_eq!(scans, UNNAMED_SCAN_LIMIT);

        s.exec(3);
        for k in 0..100 {
            s.mapped(3, (9, k));
        }
        let mut scans = 0;
        while s.pending() {
            s.run(|_, wanted| {
                assert!(wanted.len() <= MAX_WANTED);
                scanned(false, &[])
            });
            scans += 1;
        }
        assert_eq!(
            scans, SCAN_LIMIT,
            "a file that never shows is not waited for forever"
        );
        s.mapped(4, (1, 1));
        s.exited(4);
        assert!(!s.pending());
    }
}
