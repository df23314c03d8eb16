//! Record ids and sequence numbers.
//!
//! Ids are UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter
//! that keeps ids made within one millisecond in order (method 1 of the RFC), then
//! 62 random bits. Sorting ids sorts records by creation; two hosts never collide.
//!
//! The per-host sequence number survives restarts without ever repeating: blocks of
//! `SEQ_BLOCK` numbers are reserved by writing the block's end to the state file
//! before any number in it is used. A restart continues after the reserved block, so
//! the numbers a crash never used show as a gap (a restart), never as duplicates.

use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Sequence numbers reserved per write of the state file.
pub const SEQ_BLOCK: u64 = 10_000;

#[derive(Debug)]
pub struct IdGen {
    last_ms: u64,
    counter: u16,
    rng: u64,
    next_seq: u64,
    reserved_until: u64,
    state: Option<PathBuf>,
    /// Writes of the state file that failed (the sequence continues in memory).
    pub state_errors: u64,
}

impl IdGen {
    /// Sequence state in `state` (created if missing); `None` keeps it in memory only,
    /// restarting at 1.
    pub fn new(state: Option<&Path>) -> Self {
        let mut seed = [0u8; 8];
        let seeded = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .is_ok();
        let mut rng = u64::from_ne_bytes(seed);
        if !seeded || rng == 0 {
            rng = u64::from(std::process::id()) << 32 | now_ms() & 0xffff_ffff | 1;
        }
        let start = state
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let mut ids = Self {
            last_ms: 0,
            counter: 0,
            rng,
            next_seq: start,
            reserved_until: start.saturating_sub(1),
            state: state.map(Path::to_owned),
            state_errors: 0,
        };
        ids.reserve();
        ids
    }

    /// The number `next_seq` will give.
    pub fn peek_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next sequence number.
    pub fn next_seq(&mut self) -> u64 {
        if self.next_seq > self.reserved_until {
            self.reserve();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn reserve(&mut self) {
        self.reserved_until = self.next_seq - 1 + SEQ_BLOCK;
        if let Some(path) = &self.state {
            let tmp = path.with_extension("tmp");
            let written = std::fs::write(&tmp, format!("{}\n", self.reserved_until))
                .and_then(|()| std::fs::rename(&tmp, path));
            if written.is_err() {
                self.state_errors += 1;
            }
        }
    }

    /// A new UUIDv7, as text.
    pub fn next_id(&mut self) -> String {
        let ms = now_ms();
        if ms > self.last_ms {
            self.last_ms = ms;
            self.counter = 0;
        } else {
            // Same millisecond (or the clock stepped back): keep counting on the last
            // one so ids stay ordered.
            self.counter = self.counter.wrapping_add(1) & 0x0fff;
            if self.counter == 0 {
                self.last_ms += 1;
            }
        }
        // xorshift64*: not for secrets, only for uniqueness across hosts.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let random = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let hi: u64 = (self.last_ms << 16) | 0x7000 | u64::from(self.counter);
        let lo: u64 = (random & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_unique_and_sorted() {
        let mut g = IdGen::new(None);
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

    #[test]
    fn the_sequence_continues_after_a_restart_without_repeating() {
        let path = std::env::temp_dir().join(format!("probectl-seq-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut first = IdGen::new(Some(&path));
        let used: Vec<u64> = (0..3).map(|_| first.next_seq()).collect();
        assert_eq!(used, [1, 2, 3]);
        drop(first);
        // A restart (or crash) after 3: the next number is past the reserved block.
        let mut second = IdGen::new(Some(&path));
        assert_eq!(second.next_seq(), SEQ_BLOCK + 1);
        for _ in 0..SEQ_BLOCK {
            second.next_seq();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            (3 * SEQ_BLOCK).to_string(),
            "a new block is reserved before it is used"
        );
        let _ = std::fs::remove_file(&path);
    }
}
