//! Record ids and sequence numbers.
//!
//! Ids are UUIDv7 (RFC 9562), from the `uuid` crate: 48 bits of Unix milliseconds,
//! then bits that keep the ids one process makes in order, then random bits. Sorting
//! ids sorts records by creation; two hosts never collide.
//!
//! The per-host sequence number never repeats, also across restarts:
//! * blocks of `SEQ_BLOCK` numbers are reserved by writing the block's end to the
//!   state file (in place and synced: no temporary file, so a full disk does not stop
//!   it) before any number in the block is used;
//! * a start continues at the larger of that saved end + 1 and the wall clock in
//!   microseconds since the Unix epoch. The clock covers a reservation that could not
//!   be saved (a full disk on a copy-on-write file system, a read-only or missing state
//!   directory): a run cannot issue more numbers than the microseconds it lasts (that
//!   would be a million records a second), so the next start is past every number it
//!   used. The saved end covers a clock that was set back.
//!
//! The numbers a restart skips show as a jump downstream, never as duplicates.
//! A reservation that cannot be saved is counted (`state_errors`, in `status`) and
//! retried on the next number.

use std::path::{Path, PathBuf};

use crate::private_file::{Dir, StateFile, split};

/// Sequence numbers reserved per write of the state file.
pub const SEQ_BLOCK: u64 = 10_000;

#[derive(Debug)]
pub struct IdGen {
    next_seq: u64,
    /// The end of the last reservation that reached the disk.
    saved_until: u64,
    path: Option<PathBuf>,
    state: Option<StateFile>,
    /// Reservations that could not be saved (each failing block once).
    pub state_errors: u64,
    failing: bool,
}

impl IdGen {
    /// Sequence state in `state` (its directory and the file created if missing, 0600);
    /// `None` keeps it in memory only (the clock still orders restarts).
    pub fn new(state: Option<&Path>) -> Self {
        Self::starting_at(state, now_us())
    }

    /// `new`, with the wall clock given (microseconds since the epoch).
    fn starting_at(state: Option<&Path>, now_us: u64) -> Self {
        let mut ids = Self {
            next_seq: 0,
            saved_until: 0,
            path: state.map(Path::to_owned),
            state: None,
            state_errors: 0,
            failing: false,
        };
        let saved = ids.open_state().and_then(StateFile::read).unwrap_or(0);
        ids.next_seq = saved.saturating_add(1).max(now_us).max(1);
        ids.saved_until = ids.next_seq - 1;
        ids.reserve();
        ids
    }

    fn open_state(&mut self) -> Option<&mut StateFile> {
        if self.state.is_none()
            && let Some(path) = &self.path
        {
            let opened =
                split(path).and_then(|(dir, name)| StateFile::open(&Dir::open(dir, true)?, name));
            match opened {
                Ok(file) => self.state = Some(file),
                Err(err) => self.failed(&err),
            }
        }
        self.state.as_mut()
    }

    fn failed(&mut self, err: &dyn std::fmt::Display) {
        if !self.failing {
            self.failing = true;
            self.state_errors += 1;
            tracing::warn!(
                "cannot save the sequence reservation: {err}; numbers go on, and the next start continues past the wall clock so none repeats"
            );
        }
    }

    /// The number `next_seq` will give.
    pub fn peek_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next sequence number.
    pub fn next_seq(&mut self) -> u64 {
        if self.next_seq > self.saved_until {
            self.reserve();
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        seq
    }

    /// Saves the end of a new block starting at `next_seq`.
    fn reserve(&mut self) {
        let until = self.next_seq.saturating_sub(1).saturating_add(SEQ_BLOCK);
        let Some(file) = self.open_state() else {
            return;
        };
        match file.write(until).and_then(|()| file.sync()) {
            Ok(()) => {
                self.saved_until = until;
                self.failing = false;
            }
            Err(err) => {
                // A file that failed once is opened afresh next time.
                self.state = None;
                self.failed(&err);
            }
        }
    }

    /// A new UUIDv7, as text.
    pub fn next_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_unique_and_sorted() {
        let g = IdGen::new(None);
        let ids: Vec<String> = (0..5000).map(|_| g.next_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "7", "version 7: {id}");
            assert!(
                matches!(&id[19..20], "8" | "9" | "a" | "b"),
                "variant: {id}"
            );
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "made in order, sorted in order");
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("probectl-seq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_sequence_continues_after_a_restart_without_repeating() {
        let dir = temp("restart");
        let path = dir.join("sequence");
        // A clock far behind: only the saved reservation orders the restarts.
        let mut first = IdGen::starting_at(Some(&path), 0);
        let used: Vec<u64> = (0..3).map(|_| first.next_seq()).collect();
        assert_eq!(used, [1, 2, 3]);
        drop(first);
        // A restart (or crash) after 3: the next number is past the reserved block.
        let mut second = IdGen::starting_at(Some(&path), 0);
        assert_eq!(second.next_seq(), SEQ_BLOCK + 1);
        for _ in 0..SEQ_BLOCK {
            second.next_seq();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            (3 * SEQ_BLOCK).to_string(),
            "a new block is reserved before it is used"
        );
        assert_eq!(second.state_errors, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reservation_that_cannot_be_saved_is_counted_and_the_clock_orders_the_next_start() {
        // The state path's directory is a regular file: nothing can be saved.
        let dir = temp("unsaved");
        std::fs::create_dir_all(&dir).unwrap();
        let blocker = dir.join("not-a-dir");
        std::fs::write(&blocker, "x").unwrap();
        let path = blocker.join("sequence");
        let start_us = 1_795_573_518_000_000;
        let mut first = IdGen::starting_at(Some(&path), start_us);
        let used: Vec<u64> = (0..25_000).map(|_| first.next_seq()).collect();
        assert_eq!(used[0], start_us);
        assert_eq!(first.state_errors, 1, "counted once while it keeps failing");
        // The next start, even 30 ms later (25,000 numbers in 30 ms is far beyond the
        // daemon's rate): past everything the first one used.
        let second = IdGen::starting_at(Some(&path), start_us + 30_000);
        assert!(second.peek_seq() >= start_us + 30_000);
        assert!(used.iter().all(|&s| s < second.peek_seq()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
