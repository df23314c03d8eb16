//! A file sink with size- and time-based rotation and a retention count:
//! `events.jsonl` is renamed to `events.jsonl.1` (older ones shift to `.2`, ...,
//! the one past `keep` is deleted) when the next record would pass `max_bytes`, or
//! when the file is older than `every`. Each record is one `write` to a file opened
//! with O_APPEND, so a reader tailing it never sees half a line.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::Writer;
use crate::daemon::config::RotateConfig;
use crate::ship::Envelope;

pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    opened: SystemTime,
    rotate: Option<RotateConfig>,
    /// Files rotated away so far.
    pub rotations: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, rotate: Option<RotateConfig>) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;
        Ok(Self {
            path: path.to_owned(),
            size: meta.len(),
            // A file kept from before a restart is as old as its last change.
            opened: meta.modified().unwrap_or_else(|_| SystemTime::now()),
            file,
            rotate,
            rotations: 0,
        })
    }

    /// Appends one line, rotating first if it is due at `now`.
    pub fn append(&mut self, line: &[u8], now: SystemTime) -> std::io::Result<()> {
        if let Some(r) = &self.rotate {
            let too_big = r
                .max_bytes
                .is_some_and(|max| self.size > 0 && self.size + line.len() as u64 > max);
            let too_old = r.every.is_some_and(|every| {
                self.size > 0 && now.duration_since(self.opened).unwrap_or(Duration::ZERO) >= every
            });
            if too_big || too_old {
                self.rotate_now(r.keep, now)?;
            }
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate_now(&mut self, keep: usize, now: SystemTime) -> std::io::Result<()> {
        let numbered = |n: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(keep));
            for n in (1..keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        self.opened = now;
        self.rotations += 1;
        Ok(())
    }
}

impl Writer for RotatingFile {
    fn write_record(
        &mut self,
        _: &Envelope,
        text: &str,
        _: &std::sync::atomic::AtomicBool,
    ) -> std::io::Result<super::Delivery> {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        self.append(&line, SystemTime::now())
            .map(|()| super::Delivery::Sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("probectl-rotate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn files_rotate_by_size_and_keep_only_the_newest() {
        let d = dir("size");
        let path = d.join("events.jsonl");
        let rotate = RotateConfig {
            max_bytes: Some(20),
            every: None,
            keep: 2,
        };
        let mut f = RotatingFile::open(&path, Some(rotate)).unwrap();
        let now = SystemTime::now();
        for i in 0..7 {
            f.append(format!("record-{i}\n").as_bytes(), now).unwrap();
        }
        // 9 bytes each, 2 per file: 0-1, 2-3, 4-5 rotated away (0-1 deleted), 6 current.
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "record-6\n");
        assert_eq!(read(&d.join("events.jsonl.1")), "record-4\nrecord-5\n");
        assert_eq!(read(&d.join("events.jsonl.2")), "record-2\nrecord-3\n");
        assert!(
            !d.join("events.jsonl.3").exists(),
            "past the retention count"
        );
        assert_eq!(f.rotations, 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn files_rotate_by_age() {
        let d = dir("age");
        let path = d.join("events.jsonl");
        let rotate = RotateConfig {
            max_bytes: None,
            every: Some(Duration::from_secs(3600)),
            keep: 3,
        };
        let mut f = RotatingFile::open(&path, Some(rotate)).unwrap();
        let start = SystemTime::now();
        f.append(b"a\n", start).unwrap();
        f.append(b"b\n", start + Duration::from_secs(3599)).unwrap();
        assert_eq!(f.rotations, 0);
        f.append(b"c\n", start + Duration::from_secs(3600)).unwrap();
        assert_eq!(f.rotations, 1);
        assert_eq!(
            std::fs::read_to_string(d.join("events.jsonl.1")).unwrap(),
            "a\nb\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\n");
        let _ = std::fs::remove_dir_all(&d);
    }
}
