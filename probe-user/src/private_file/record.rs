//! Whole-record files and small state files (see the module notes in `mod.rs`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use super::{Access, Dir, PrivateFileError, Result, split};

/// A file of whole records: each `append` lands entirely or not at all.
#[derive(Debug)]
pub struct RecordFile {
    file: File,
    /// Bytes of whole records in the file.
    len: u64,
    /// A regular file (not `/dev/null`): a torn record can be cut back.
    regular: bool,
}

impl RecordFile {
    /// Opens `name` in `dir` (`Append`, `ReadAppend` or `Replace`).
    pub fn open_in(dir: &Dir, name: &OsStr, access: Access) -> Result<Self> {
        let file = dir.open_file(name, access)?;
        let meta = file.metadata().map_err(|e| PrivateFileError::Io {
            path: dir.path.join(name).display().to_string(),
            op: "stat",
            source: e,
        })?;
        let regular = meta.is_file();
        Ok(Self {
            file,
            len: if regular { meta.len() } else { 0 },
            regular,
        })
    }

    /// Opens the file at `path`.
    pub fn open(path: &Path, access: Access) -> Result<Self> {
        let (dir, name) = split(path)?;
        Self::open_in(&Dir::open(dir, false)?, name, access)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes` whole: a write that fails part-way is cut back to where it
    /// began, so the file never holds a torn record.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(err) => {
                // Shrinking needs no space, so this works on a full disk too.
                if self.regular
                    && let Err(cut) = self.file.set_len(self.len)
                {
                    tracing::warn!("cannot cut a torn record back: {cut}");
                }
                Err(err)
            }
        }
    }

    /// Cuts a last line that has no newline (left by a crash mid-write) so that the
    /// next record starts on a line of its own. Returns the bytes cut.
    pub fn cut_torn_line(&mut self) -> std::io::Result<u64> {
        const CHUNK: u64 = 64 * 1024;
        if !self.regular {
            return Ok(0);
        }
        let mut end = self.len;
        let mut buf = vec![0u8; CHUNK as usize];
        while end > 0 {
            let start = end.saturating_sub(CHUNK);
            let chunk = &mut buf[..(end - start) as usize];
            self.file.read_exact_at(chunk, start)?;
            if end == self.len && chunk.last() == Some(&b'\n') {
                return Ok(0);
            }
            if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
                end = start + i as u64 + 1;
                break;
            }
            end = start;
        }
        let cut = self.len - end;
        self.file.set_len(end)?;
        self.len = end;
        Ok(cut)
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Cuts the file to `len` bytes.
    pub fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        if !self.regular {
            return Ok(());
        }
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }
}

/// Each `write` is one whole record (as `Printer` writes them).
impl Write for RecordFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.append(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A small state file rewritten in place (no temporary file and rename, which need
/// free space): the value is written at offset 0, padded to a fixed width, and synced.
#[derive(Debug)]
pub struct StateFile {
    file: File,
}

/// Width of a state value: any `u64` in decimal, and a newline.
const STATE_WIDTH: usize = 21;

impl StateFile {
    pub fn open(dir: &Dir, name: &OsStr) -> Result<Self> {
        Ok(Self {
            file: dir.open_file(name, Access::ReadWrite)?,
        })
    }

    /// The number the file holds, if it holds one.
    pub fn read(&mut self) -> Option<u64> {
        let mut text = String::new();
        self.file.seek(SeekFrom::Start(0)).ok()?;
        (&self.file).take(64).read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }

    /// Writes `value` in place.
    pub fn write(&mut self, value: u64) -> std::io::Result<()> {
        let text = format!("{value:<width$}\n", width = STATE_WIDTH - 1);
        self.file.write_all_at(text.as_bytes(), 0)
    }

    /// Waits until what was written is on disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::PathBuf;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("probectl-record-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_failed_append_leaves_whole_records_and_a_torn_tail_is_cut() {
        let d = dir("records");
        let path = d.join("r.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        let mut f = RecordFile::open(&path, Access::ReadAppend).unwrap();
        assert_eq!(f.cut_torn_line().unwrap(), 5);
        f.append(b"{\"c\":3}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"c\":3}\n"
        );
        assert_eq!(f.cut_torn_line().unwrap(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn dev_null_is_written_as_it_is() {
        let mut f = RecordFile::open(Path::new("/dev/null"), Access::Replace).unwrap();
        f.append(b"{}\n").unwrap();
        f.truncate(0).unwrap();
        assert_eq!(mode(Path::new("/dev/null")), 0o666, "left alone");
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn state_values_are_rewritten_in_place() {
        let d = dir("state");
        let dir = Dir::open(&d, false).unwrap();
        let mut s = StateFile::open(&dir, OsStr::new("seq")).unwrap();
        assert_eq!(s.read(), None);
        s.write(123_456).unwrap();
        s.write(7).unwrap();
        assert_eq!(s.read(), Some(7));
        assert_eq!(
            std::fs::metadata(d.join("seq")).unwrap().len(),
            STATE_WIDTH as u64
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
