//! Node binaries to put the `uv_os_environ` uprobe on at start (`env_attach`): the
//! `node` and `nodejs` in each directory of probectl's PATH, the usual system places,
//! and the versions that nvm, volta, fnm and asdf keep in each home. A uprobe on a file
//! covers every process that runs it, from its first instruction, so a node started
//! later, however short-lived, has its environment enumeration seen.
//!
//! Bounded: at most `MAX_AT_START` distinct files, `MAX_CANDIDATES` paths looked at,
//! `MAX_VERSIONS` entries read per version directory. Each file is opened as an
//! `O_PATH` handle first (no FIFO waits, no device driver runs), checked to be a
//! regular file, then reopened non-blocking through that handle, so the file checked
//! is the file attached.

use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::proc_maps::FileKey;

/// Most node binaries attached at start.
pub const MAX_AT_START: usize = 8;
/// Most candidate paths looked at.
const MAX_CANDIDATES: usize = 256;
/// Most entries read in one version manager's directory.
const MAX_VERSIONS: usize = 32;

/// Version managers' directories under a home, and where node is below each entry.
const MANAGERS: [(&str, &str); 4] = [
    (".nvm/versions/node", "bin/node"),
    (".volta/tools/image/node", "bin/node"),
    (".local/share/fnm/node-versions", "installation/bin/node"),
    (".asdf/installs/nodejs", "bin/node"),
];

/// The node binaries found, opened, each once (by device and inode).
pub fn at_start() -> Vec<(PathBuf, std::fs::File, FileKey)> {
    let mut out: Vec<(PathBuf, std::fs::File, FileKey)> = Vec::new();
    for path in candidates().into_iter().take(MAX_CANDIDATES) {
        if out.len() >= MAX_AT_START {
            break;
        }
        let Some((file, key)) = open_regular(&path) else {
            continue;
        };
        if !out.iter().any(|(_, _, k)| *k == key) {
            out.push((path, file, key));
        }
    }
    out
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .filter(|d| d.is_absolute())
        .chain(["/usr/local/bin", "/usr/bin"].map(PathBuf::from));
    for dir in dirs {
        out.push(dir.join("node"));
        out.push(dir.join("nodejs"));
    }
    for home in crate::policy::home_dirs() {
        for (under, bin) in MANAGERS {
            let Ok(entries) = std::fs::read_dir(Path::new(&home).join(under)) else {
                continue;
            };
            out.extend(
                entries
                    .take(MAX_VERSIONS)
                    .flatten()
                    .map(|e| e.path().join(bin)),
            );
        }
    }
    out
}

/// `path` opened for reading if it is a regular file (see the module comment).
fn open_regular(path: &Path) -> Option<(std::fs::File, FileKey)> {
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let meta = handle.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&handle)
        ))
        .ok()?;
    Some((file, (meta.dev(), meta.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_file_once_and_never_opens_a_fifo() {
        let dir = std::env::temp_dir().join(format!("probectl-node-bins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("node");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        // A FIFO named node: an open for reading would wait for a writer forever.
        assert!(open_regular(&fifo).is_none());
        let found = at_start();
        let mut keys: Vec<FileKey> = found.iter().map(|(_, _, k)| *k).collect();
        keys.dedup();
        assert_eq!(keys.len(), found.len());
        assert!(found.len() <= MAX_AT_START);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
