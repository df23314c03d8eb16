//! A file sink with size- and time-based rotation and a retention count:
//! `events.jsonl` is renamed to `events.jsonl.1` (older ones shift to `.2`, ...,
//! the one past `keep` is deleted) when the next record would pass `max_bytes`, or
//! when the file is older than `every`.
//!
//! Files are opened through `private_file`: never through a link another user
//! planted, created 0600; renames and removals are relative to the directory's fd.
//! Each record is one `write` to a file opened with O_APPEND, and a write that fails
//! part-way (a full disk) is cut back, so a reader never sees half a line; a torn last
//! line left by a crash is cut when the file is opened again.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Writer;
use crate::private_file::{Access, Dir, RecordFile};
use crate::ship::Envelope;

/// `rotate:` of a `file` sink.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RotateConfig {
    /// Rotate before a record would make the file larger than this.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Rotate a file this old (`1h`, `1d` is `24h`).
    #[serde(default, with = "optional_duration_text")]
    pub every: Option<Duration>,
    /// Rotated files kept (`events.jsonl.1` ... `.keep`).
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_keep() -> usize {
    5
}

impl RotateConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.max_bytes.is_none() && self.every.is_none() {
            return Err(
                "a file sink's rotate needs max_bytes, every, or both (or use type: jsonl)".into(),
            );
        }
        Ok(())
    }
}

/// An optional duration, written as in policies (`30s`, `24h`).
mod optional_duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| crate::policy::rules::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

pub struct RotatingFile {
    dir: Dir,
    name: OsString,
    file: RecordFile,
    opened: SystemTime,
    rotate: Option<RotateConfig>,
    /// Files rotated away so far.
    pub rotations: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, rotate: Option<RotateConfig>) -> std::io::Result<Self> {
        let (dir, name) = crate::private_file::split(path)?;
        let dir = Dir::open(dir, false)?;
        // Read too: a torn last line is looked for.
        let mut file = RecordFile::open_in(&dir, name, Access::ReadAppend)?;
        let cut = file.cut_torn_line()?;
        if cut > 0 {
            tracing::warn!(
                "{}: cut {cut} bytes of a torn last line (a write interrupted by a crash)",
                path.display()
            );
        }
        let modified = file.file().metadata()?.modified();
        Ok(Self {
            dir,
            name: name.to_owned(),
            // A file kept from before a restart is as old as its last change.
            opened: modified.unwrap_or_else(|_| SystemTime::now()),
            file,
            rotate,
            rotations: 0,
        })
    }

    /// Appends one line (whole or not at all), rotating first if it is due at `now`.
    pub fn append(&mut self, line: &[u8], now: SystemTime) -> std::io::Result<()> {
        if let Some(r) = &self.rotate {
            let size = self.file.len();
            let too_big = r
                .max_bytes
                .is_some_and(|max| size > 0 && size + line.len() as u64 > max);
            let too_old = r.every.is_some_and(|every| {
                size > 0 && now.duration_since(self.opened).unwrap_or(Duration::ZERO) >= every
            });
            if too_big || too_old {
                self.rotate_now(r.keep, now)?;
            }
        }
        self.file.append(line)
    }

    fn rotate_now(&mut self, keep: usize, now: SystemTime) -> std::io::Result<()> {
        let numbered = |n: usize| {
            let mut p = self.name.clone();
            p.push(format!(".{n}"));
            p
        };
        if keep == 0 {
            self.dir.remove(&self.name)?;
        } else {
            self.dir.remove(&numbered(keep))?;
            for n in (1..keep).rev() {
                match self.dir.rename(&numbered(n), &numbered(n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            self.dir.rename(&self.name, &numbered(1))?;
        }
        self.file = RecordFile::open_in(&self.dir, OsStr::new(&self.name), Access::ReadAppend)?;
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

    use std::path::PathBuf;

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
