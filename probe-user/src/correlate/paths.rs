//! Turning what a file event named into the policy path it reached.
//!
//! * `FILE_MATCH_PATH`: the string is the path.
//! * `FILE_MATCH_INODE`: the kernel matched the file itself; the policy path comes
//!   from the file index.
//! * `FILE_MATCH_HOOK`: a kernel file hook matched the file by inode; the string is
//!   only its last component, the policy path comes from the file index.
//! * `FILE_MATCH_BASENAME`: the kernel could not decide (readlink, access, a failed
//!   call); the string is joined to its base directory (named by inode from the
//!   index, else read from `/proc/<pid>/cwd` or `/proc/<pid>/fd/<dirfd>` while the
//!   process lives), normalised, and matched here.

use std::path::{Component, Path, PathBuf};

use probe_common::{
    FILE_MATCH_BASENAME, FILE_MATCH_HOOK, FILE_MATCH_INODE, FILE_MATCH_OWN_HOME, FILE_OP_LSTAT,
    FILE_OP_READLINK, FILE_OP_READLINKAT, FileEvent, InodeKey,
};

use crate::policy::own_home::ExecHomes;
use crate::policy::{Classifier, FileIndex};

const AT_FDCWD: i32 = -100;

use crate::records::ResolvedBy;

/// The policy path an event reached, and how that was decided (`None` when the
/// string itself was the path).
pub struct Resolved {
    pub path: String,
    pub resolved_by: Option<ResolvedBy>,
}

/// Outcome of resolving one event.
pub enum Resolution {
    Found(Resolved),
    /// The path does not reach a policy file (a same-named file elsewhere).
    NoMatch,
    /// The base directory could not be named: the process is gone.
    Unresolvable,
}

pub fn resolve(
    e: &FileEvent,
    given: &str,
    index: &FileIndex,
    classifier: &Classifier,
    homes: &ExecHomes,
) -> Resolution {
    match e.matched_by {
        FILE_MATCH_INODE | FILE_MATCH_HOOK => match index.file(e.entry_id) {
            Some(path) => Resolution::Found(Resolved {
                path: path.to_owned(),
                resolved_by: Some(ResolvedBy::KernelInode),
            }),
            None => Resolution::NoMatch,
        },
        // A candidate under the process's own home is checked like a basename one:
        // against the classifier, with the homes it got at exec.
        FILE_MATCH_BASENAME | FILE_MATCH_OWN_HOME => {
            by_basename(e, given, index, classifier, homes)
        }
        _ => Resolution::Found(Resolved {
            path: given.to_owned(),
            resolved_by: None,
        }),
    }
}

fn by_basename(
    e: &FileEvent,
    given: &str,
    index: &FileIndex,
    classifier: &Classifier,
    homes: &ExecHomes,
) -> Resolution {
    let joined = if given.starts_with('/') {
        PathBuf::from(given)
    } else {
        let base_key = InodeKey {
            dev: e.base_dev,
            ino: e.base_ino,
        };
        let base = index.dirs.get(&base_key).map(PathBuf::from).or_else(|| {
            let link = if e.dfd == AT_FDCWD {
                format!("/proc/{}/cwd", e.header.tgid)
            } else {
                format!("/proc/{}/fd/{}", e.header.tgid, e.dfd)
            };
            std::fs::read_link(link).ok()
        });
        match base {
            Some(base) => base.join(given),
            None => return Resolution::Unresolvable,
        }
    };
    let normal = strip_proc_root(&normalize(&joined));
    let follows_last = !matches!(e.op, FILE_OP_READLINK | FILE_OP_READLINKAT | FILE_OP_LSTAT);
    // The lexical answer, then through symlinked directories, then (for calls that
    // follow it) through a symlink at the end.
    let mut candidates = vec![normal.clone()];
    if let (Some(parent), Some(name)) = (normal.parent(), normal.file_name())
        && let Ok(real_parent) = std::fs::canonicalize(parent)
    {
        candidates.push(real_parent.join(name));
    }
    if follows_last && let Ok(real) = std::fs::canonicalize(&normal) {
        candidates.push(real);
    }
    for candidate in candidates {
        let path = candidate.to_string_lossy();
        if !classifier.path_categories_for(&path, homes).is_empty() {
            return Resolution::Found(Resolved {
                path: path.into_owned(),
                resolved_by: Some(ResolvedBy::Userspace),
            });
        }
    }
    Resolution::NoMatch
}

/// `a/./b/../c` -> `a/c`, without touching the filesystem (`..` of `/` is `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `/proc/self/root/etc/x`, `/proc/<pid>/root/etc/x` -> `/etc/x` (watched processes
/// share probectl's root; a container's do not, see docs/architecture.md).
pub fn strip_proc_root(path: &Path) -> PathBuf {
    let mut parts = path.components().skip(1);
    let (Some(proc_), Some(who), Some(root)) = (parts.next(), parts.next(), parts.next()) else {
        return path.to_owned();
    };
    let who = who.as_os_str().to_string_lossy();
    let is_task = who == "self"
        || who == "thread-self"
        || (!who.is_empty() && who.bytes().all(|b| b.is_ascii_digit()));
    if proc_.as_os_str() == "proc" && is_task && root.as_os_str() == "root" {
        let rest: PathBuf = parts.collect();
        return Path::new("/").join(rest);
    }
    path.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_dot_dot_and_proc_root() {
        assert_eq!(
            normalize(Path::new("/tmp/../etc/./localtime")),
            Path::new("/etc/localtime")
        );
        assert_eq!(normalize(Path::new("/../../etc")), Path::new("/etc"));
        assert_eq!(
            strip_proc_root(Path::new("/proc/self/root/etc/localtime")),
            Path::new("/etc/localtime")
        );
        assert_eq!(
            strip_proc_root(Path::new("/proc/1234/root/etc/timezone")),
            Path::new("/etc/timezone")
        );
        assert_eq!(
            strip_proc_root(Path::new("/proc/self/environ")),
            Path::new("/proc/self/environ")
        );
        assert_eq!(
            strip_proc_root(Path::new("/proc/sys/root/x")),
            Path::new("/proc/sys/root/x")
        );
    }
}
