//! Files the root process writes (`run --output`, `run --profile`, file sinks and their
//! rotations, the syslog spool, the sequence state): opened so that no other user can
//! redirect them, and private, because records hold command lines, which can hold
//! secrets.
//!
//! * The path is walked from `/` (or the working directory) one component at a time,
//!   each opened `O_PATH | O_NOFOLLOW` relative to the one before. A symbolic link on
//!   the way is followed only when root (or the effective user) owns it: a link that
//!   another user planted, in `/tmp` or in their own directory, is refused. A directory
//!   may belong to anyone; once opened, every later step is relative to its fd, so
//!   renaming things around it redirects nothing.
//! * The file itself is opened `O_NOFOLLOW | O_NONBLOCK` relative to its directory's
//!   fd (a FIFO planted there cannot block the open), then checked: a regular file,
//!   owned by the effective user, with one link (a hard link to `/etc/shadow` has two).
//!   `Replace` truncates only after these checks. A character device of root's
//!   (`/dev/null`; no other user can make one) is written as it is.
//! * New files are created 0600; an existing file with a looser mode is tightened to
//!   0600 (and logged).
//!
//! `RecordFile` adds whole-record appends: a write that fails part-way (a full disk)
//! is cut back, so a reader never sees half a JSON line.

mod record;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

pub use record::{RecordFile, StateFile};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

/// The mode of every file probectl creates.
pub const FILE_MODE: u32 = 0o600;
/// The mode of directories it creates (spool, state).
pub const DIR_MODE: u32 = 0o700;
/// Symbolic links followed while walking one path.
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{path}: {link} is a symbolic link owned by uid {owner}, not by root: probectl does not follow links other users can plant"
    )]
    ForeignLink {
        path: String,
        link: String,
        owner: u32,
    },
    #[error(
        "{path} is a symbolic link (owned by uid {owner}): probectl does not write through links; remove it or choose another path"
    )]
    FinalLink { path: String, owner: u32 },
    #[error("{path} is {kind}, not a regular file: probectl writes records only to regular files")]
    NotRegular { path: String, kind: &'static str },
    #[error(
        "{path} belongs to uid {owner}, not to uid {euid}: records hold command lines, so probectl writes only to its own files; remove it or choose another path"
    )]
    NotOurs { path: String, owner: u32, euid: u32 },
    #[error(
        "{path} has {links} hard links: probectl does not write to a file that is also reachable elsewhere"
    )]
    HardLinked { path: String, links: u64 },
    #[error("{path}: too many levels of symbolic links")]
    TooManyLinks { path: String },
    #[error("{path}: not a file name")]
    BadName { path: String },
}

impl From<PrivateFileError> for std::io::Error {
    fn from(e: PrivateFileError) -> Self {
        let kind = match &e {
            PrivateFileError::Io { source, .. } => source.kind(),
            _ => std::io::ErrorKind::PermissionDenied,
        };
        std::io::Error::new(kind, e)
    }
}

type Result<T> = std::result::Result<T, PrivateFileError>;

fn io(path: &Path, op: &'static str, errno: Errno) -> PrivateFileError {
    PrivateFileError::Io {
        path: path.display().to_string(),
        op,
        source: std::io::Error::from(errno),
    }
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Written at its end (records).
    Append,
    /// Read, and written at its end (the spool).
    ReadAppend,
    /// Read and written in place (state files).
    ReadWrite,
    /// Emptied once checked, then written (`--output`, `--profile`).
    Replace,
}

/// A directory reached without following links other users own.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens `path` (see the module notes); `create`: missing directories are made
    /// (0700).
    pub fn open(path: &Path, create: bool) -> Result<Self> {
        let euid = nix::unistd::geteuid().as_raw();
        // A relative path is walked from `/` through the working directory's own
        // (canonical) path, so `..` can leave it.
        let absolute = if path.is_absolute() {
            path.to_owned()
        } else {
            std::env::current_dir()
                .map_err(|source| PrivateFileError::Io {
                    path: path.display().to_string(),
                    op: "find the working directory",
                    source,
                })?
                .join(path)
        };
        let root = || open_path(nix::fcntl::AT_FDCWD, OsStr::new("/"), path);
        let mut stack: Vec<OwnedFd> = vec![root()?];
        // Components still to walk, last one first; links push their targets' parts.
        let mut todo: Vec<OsString> = parts(&absolute);
        let mut links = 0;
        while let Some(part) = todo.pop() {
            match part.as_bytes() {
                b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let here = stack.last().expect("never empty: the start stays");
            let fd = match open_path(here, &part, path) {
                Err(PrivateFileError::Io { source, .. })
                    if create && source.kind() == std::io::ErrorKind::NotFound =>
                {
                    match nix::sys::stat::mkdirat(
                        here,
                        part.as_os_str(),
                        Mode::from_bits_truncate(DIR_MODE),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io(path, "create directory", e)),
                    }
                    open_path(here, &part, path)?
                }
                other => other?,
            };
            let st = fstat(&fd).map_err(|e| io(path, "stat", e))?;
            match kind(&st) {
                SFlag::S_IFDIR => stack.push(fd),
                SFlag::S_IFLNK => {
                    if st.st_uid != 0 && st.st_uid != euid {
                        return Err(PrivateFileError::ForeignLink {
                            path: path.display().to_string(),
                            link: part.to_string_lossy().into_owned(),
                            owner: st.st_uid,
                        });
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(PrivateFileError::TooManyLinks {
                            path: path.display().to_string(),
                        });
                    }
                    let target =
                        nix::fcntl::readlinkat(&fd, "").map_err(|e| io(path, "read link", e))?;
                    let target = Path::new(&target);
                    if target.is_absolute() {
                        stack.truncate(1);
                    }
                    todo.extend(parts(target));
                }
                _ => return Err(io(path, "open directory", Errno::ENOTDIR)),
            }
        }
        let fd = stack.pop().expect("never empty");
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating, 0600) the file `name` in this directory: not through a link,
    /// a regular file of the effective user with one link, tightened to 0600.
    pub fn open_file(&self, name: &OsStr, access: Access) -> Result<File> {
        let path = self.path.join(name);
        if name.is_empty() || name.as_bytes().contains(&b'/') || name == ".." || name == "." {
            return Err(PrivateFileError::BadName {
                path: path.display().to_string(),
            });
        }
        let flags = OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            // A FIFO planted at the path fails the open at once instead of blocking it
            // (no effect on regular files).
            | OFlag::O_NONBLOCK
            | match access {
                Access::Append => OFlag::O_WRONLY | OFlag::O_APPEND,
                Access::ReadAppend => OFlag::O_RDWR | OFlag::O_APPEND,
                Access::ReadWrite => OFlag::O_RDWR,
                Access::Replace => OFlag::O_WRONLY,
            };
        let fd = match openat(&self.fd, name, flags, Mode::from_bits_truncate(FILE_MODE)) {
            Ok(fd) => fd,
            Err(e) => {
                // Say what is in the way: a link fails with ELOOP (or EACCES, in a
                // sticky directory, from newer kernels), a FIFO without a reader with
                // ENXIO.
                let found = fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
                return Err(match found.map(|st| (kind(&st), st.st_uid)) {
                    Some((SFlag::S_IFLNK, owner)) => PrivateFileError::FinalLink {
                        path: path.display().to_string(),
                        owner,
                    },
                    Some((k, _)) if k != SFlag::S_IFREG && k != SFlag::S_IFDIR => {
                        PrivateFileError::NotRegular {
                            path: path.display().to_string(),
                            kind: kind_name(k),
                        }
                    }
                    _ => io(&path, "open", e),
                });
            }
        };
        let st = fstat(&fd).map_err(|e| io(&path, "stat", e))?;
        let k = kind(&st);
        if k == SFlag::S_IFCHR && st.st_uid == 0 {
            // A device only root can make (`--output /dev/null`, a terminal): written
            // as it is, its mode left alone.
            return Ok(File::from(fd));
        }
        if k != SFlag::S_IFREG {
            return Err(PrivateFileError::NotRegular {
                path: path.display().to_string(),
                kind: kind_name(k),
            });
        }
        let euid = nix::unistd::geteuid().as_raw();
        if st.st_uid != euid {
            return Err(PrivateFileError::NotOurs {
                path: path.display().to_string(),
                owner: st.st_uid,
                euid,
            });
        }
        if st.st_nlink > 1 {
            return Err(PrivateFileError::HardLinked {
                path: path.display().to_string(),
                links: st.st_nlink as u64,
            });
        }
        if st.st_mode & 0o077 != 0 {
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(FILE_MODE))
                .map_err(|e| io(&path, "tighten the mode", e))?;
            tracing::warn!(
                "{} was mode {:o}; tightened to {FILE_MODE:o}: records hold command lines",
                path.display(),
                st.st_mode & 0o7777
            );
        }
        if access == Access::Replace {
            nix::unistd::ftruncate(&fd, 0).map_err(|e| io(&path, "truncate", e))?;
        }
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` within this directory (links are renamed, not followed).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
        nix::fcntl::renameat(&self.fd, from, &self.fd, to).map_err(std::io::Error::from)
    }

    /// Removes the entry `name` (a link is removed, not followed); a missing one is
    /// no error.
    pub fn remove(&self, name: &OsStr) -> std::io::Result<()> {
        match nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Opens the file at `path` (see `Dir::open_file`); its directory must exist.
pub fn open(path: &Path, access: Access) -> Result<File> {
    let (dir, name) = split(path)?;
    Dir::open(dir, false)?.open_file(name, access)
}

/// `path`'s directory and file name.
pub fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name,
        _ => {
            return Err(PrivateFileError::BadName {
                path: path.display().to_string(),
            });
        }
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

fn open_path(dir: impl AsFd, name: &OsStr, whole: &Path) -> Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(whole, "open", e))
}

/// The components of `path` in reverse order (a stack: the first one last).
fn parts(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .rev()
        .collect()
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn kind_name(k: SFlag) -> &'static str {
    match k {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "not a regular file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("probectl-private-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn files_are_created_0600_and_looser_ones_are_tightened() {
        let d = dir("mode");
        let path = d.join("out.jsonl");
        drop(open(&path, Access::Append).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open(&path, Access::Append).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "tightened");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_link_at_the_file_or_a_fifo_or_a_second_hard_link_is_refused() {
        let d = dir("links");
        let target = d.join("target");
        std::fs::write(&target, "keep\n").unwrap();
        std::os::unix::fs::symlink(&target, d.join("link")).unwrap();
        // The effective user's own link at the final component is refused too: a
        // file is never written through a link.
        let err = open(&d.join("link"), Access::Append).unwrap_err();
        assert!(matches!(err, PrivateFileError::FinalLink { .. }), "{err}");
        std::fs::hard_link(&target, d.join("hard")).unwrap();
        let err = open(&d.join("hard"), Access::Replace).unwrap_err();
        assert!(
            matches!(err, PrivateFileError::HardLinked { links: 2, .. }),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
        nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let err = open(&d.join("fifo"), Access::Append).unwrap_err();
        assert!(matches!(err, PrivateFileError::NotRegular { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn own_links_on_the_way_are_followed_and_dot_dot_works() {
        let d = dir("walk");
        std::fs::create_dir_all(d.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("real", d.join("alias")).unwrap();
        let path = d.join("alias/sub/../sub/x.jsonl");
        drop(open(&path, Access::Append).unwrap());
        assert!(d.join("real/sub/x.jsonl").exists());
        let made = Dir::open(&d.join("alias/new/deeper"), true).unwrap();
        drop(made.open_file(OsStr::new("s"), Access::ReadWrite).unwrap());
        assert!(d.join("real/new/deeper/s").exists());
        let mode = std::fs::metadata(d.join("real/new"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, DIR_MODE);
        let _ = std::fs::remove_dir_all(&d);
    }
}
