//! An on-disk spool for a network sink: while the server is unreachable, messages
//! are appended to `spool` (each as a 4-byte length and the bytes) and delivered in
//! order once it is back; the position of the next one to send is kept in `cursor`,
//! so a daemon restart resumes where the last one stopped. The spool file is capped:
//! a message that does not fit is dropped and counted, and the count reaches every
//! sink as a `loss` record.

use std::ffi::OsStr;
use std::path::Path;

use crate::private_file::{Access, Dir, RecordFile, StateFile};

pub struct Spool {
    file: RecordFile,
    cursor_file: StateFile,
    /// Offset of the next message to deliver.
    cursor: u64,
    cap: u64,
    /// Messages waiting.
    pub backlog: u64,
    /// Messages dropped because the spool was full.
    pub dropped: u64,
}

impl Spool {
    /// Opens (or creates, 0700/0600, never through another user's link) the spool in
    /// `dir`, with what an earlier run left in it.
    pub fn open(dir: &Path, cap: u64) -> std::io::Result<Self> {
        let dir = Dir::open(dir, true)?;
        let mut file = RecordFile::open_in(&dir, OsStr::new("spool"), Access::ReadAppend)?;
        let len = file.len();
        let mut cursor_file = StateFile::open(&dir, OsStr::new("cursor"))?;
        let cursor = cursor_file.read().filter(|c| *c <= len).unwrap_or(0);
        // Count what is waiting (a torn last message, from a crash mid-write, is cut).
        let mut backlog = 0;
        let mut at = cursor;
        let mut header = [0u8; 4];
        while at + 4 <= len {
            file.read_exact_at(&mut header, at)?;
            let next = at + 4 + u64::from(u32::from_le_bytes(header));
            if next > len {
                break;
            }
            backlog += 1;
            at = next;
        }
        if at < len {
            file.truncate(at)?;
        }
        Ok(Self {
            file,
            cursor_file,
            cursor,
            cap,
            backlog,
            dropped: 0,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.backlog == 0
    }

    /// Appends a message (whole, or not at all on a full disk); false (and counted)
    /// when the cap leaves no room.
    pub fn push(&mut self, message: &[u8]) -> std::io::Result<bool> {
        let size = 4 + message.len() as u64;
        if self.file.len() + size > self.cap {
            self.dropped += 1;
            return Ok(false);
        }
        let mut record = Vec::with_capacity(size as usize);
        record.extend_from_slice(&(message.len() as u32).to_le_bytes());
        record.extend_from_slice(message);
        self.file.append(&record)?;
        self.backlog += 1;
        Ok(true)
    }

    /// The oldest waiting message.
    pub fn peek(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.backlog == 0 {
            return Ok(None);
        }
        let mut header = [0u8; 4];
        self.file.read_exact_at(&mut header, self.cursor)?;
        let mut message = vec![0u8; u32::from_le_bytes(header) as usize];
        self.file.read_exact_at(&mut message, self.cursor + 4)?;
        Ok(Some(message))
    }

    /// The oldest message was delivered: move past it (and empty the file once all
    /// are), and remember the position (rewritten in place: no space needed).
    pub fn pop(&mut self, delivered_len: usize) -> std::io::Result<()> {
        self.cursor += 4 + delivered_len as u64;
        self.backlog = self.backlog.saturating_sub(1);
        if self.backlog == 0 {
            self.file.truncate(0)?;
            self.cursor = 0;
        }
        self.cursor_file.write(self.cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_back_in_order_across_a_reopen_and_the_cap_counts_drops() {
        let dir = std::env::temp_dir().join(format!("probectl-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, 30).unwrap();
        assert!(s.push(b"one").unwrap());
        assert!(s.push(b"two").unwrap());
        assert!(s.push(b"three").unwrap());
        assert!(!s.push(b"four, too long for the cap").unwrap());
        assert_eq!((s.backlog, s.dropped), (3, 1));
        let first = s.peek().unwrap().unwrap();
        assert_eq!(first, b"one");
        s.pop(first.len()).unwrap();
        drop(s);
        // A restart: the rest, in order.
        let mut s = Spool::open(&dir, 30).unwrap();
        assert_eq!(s.backlog, 2);
        for expected in [&b"two"[..], b"three"] {
            let m = s.peek().unwrap().unwrap();
            assert_eq!(m, expected);
            s.pop(m.len()).unwrap();
        }
        assert!(s.is_empty() && s.peek().unwrap().is_none());
        assert_eq!(
            std::fs::metadata(dir.join("spool")).unwrap().len(),
            0,
            "emptied once delivered"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
