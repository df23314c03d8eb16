//! Finding the libcs to put getenv uprobes on: the one probectl maps (the system
//! glibc, attached at start) and every other one a watched process maps (a container's
//! or a Nix store's glibc, musl), attached when first seen at an exec. A uprobe is
//! placed on a file's inode, so each distinct file is attached once.
//!
//! The files are opened the way a hostile owner cannot redirect: through
//! `/proc/<pid>/map_files/<range>`, a link the kernel resolves to the very file the
//! process mapped (whatever its name says now, deleted or renamed, FIFO or symlink
//! planted in its place), or, where that is not allowed, by path under
//! `/proc/<pid>/root` with `O_NOFOLLOW` and the result checked to be the mapped inode.
//! Always `O_NONBLOCK` and checked to be a regular file before anything is read.

use std::fs::File;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

use super::proc_maps::{self, FileKey, Listing, Mapping};

/// glibc (`libc.so.6`, `libc-2.31.so`) and musl (`libc.musl-x86_64.so.1`,
/// `ld-musl-x86_64.so.1`, which is musl's libc too).
pub fn is_libc_file_name(name: &[u8]) -> bool {
    name.starts_with(b"libc.so")
        || (name.starts_with(b"libc-") && name.ends_with(b".so"))
        || name.starts_with(b"libc.musl-")
        || name.starts_with(b"ld-musl-")
}

/// Path and key of the libc mapped by the current process.
pub fn own_libc() -> Option<(PathBuf, FileKey)> {
    let listing = proc_maps::read(None).ok()?;
    let libc = candidates(&listing).into_iter().next()?;
    Some((
        PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&libc.path)),
        libc.key(),
    ))
}

/// The mappings of libc-named files, one per file.
pub fn candidates(listing: &Listing) -> Vec<&Mapping> {
    let mut out: Vec<&Mapping> = Vec::new();
    for m in &listing.mappings {
        if is_libc_file_name(m.file_name()) && !out.iter().any(|o| o.key() == m.key()) {
            out.push(m);
        }
    }
    out
}

/// Code mappings of other files, one per file, at most `MAX_INTERPOSER_CHECKS`: the
/// program itself and its libraries (an LD_PRELOAD one among them), any of which may
/// define its own `getenv` that calls resolve to instead of libc's. The dynamic
/// loader is left out (it defines none).
pub fn interposer_candidates(listing: &Listing) -> Vec<&Mapping> {
    let mut out: Vec<&Mapping> = Vec::new();
    for m in listing.mappings.iter().filter(|m| m.executable) {
        let name = m.file_name();
        if is_libc_file_name(name) || name.starts_with(b"ld-linux") {
            continue;
        }
        if !out.iter().any(|o| o.key() == m.key()) {
            out.push(m);
            if out.len() == MAX_INTERPOSER_CHECKS {
                break;
            }
        }
    }
    out
}

/// Objects checked for a getenv of their own per scan: a program maps tens of
/// libraries; each file is checked once (`EnvObjects::plain` remembers the rest).
pub const MAX_INTERPOSER_CHECKS: usize = 128;

fn open_flags() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC);
    options
}

/// The file `pid` maps at `mapping`, opened so that its owner cannot substitute
/// another: a regular file with the mapped inode, or an error.
pub fn open_mapped(pid: u32, mapping: &Mapping) -> std::io::Result<File> {
    let by_range = format!("/proc/{pid}/map_files/{}", mapping.map_files_name());
    let (file, by_path) = match open_flags().open(&by_range) {
        Ok(file) => (file, false),
        // map_files needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE): the path under
        // the process's root, the last component not followed, the inode checked.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !mapping.deleted => {
            let mut path = PathBuf::from(format!("/proc/{pid}/root"));
            path.push(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                    mapping.path.strip_prefix(b"/").unwrap_or(&mapping.path),
                ),
            );
            let file = open_flags()
                .custom_flags(
                    libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                )
                .open(path)?;
            (file, true)
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    // map_files is the mapped file itself (its device may read differently through
    // overlayfs); a path could lead anywhere, so there both numbers must agree.
    let same = if by_path {
        (meta.dev(), meta.ino()) == mapping.key()
    } else {
        meta.ino() == mapping.inode
    };
    if !same {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not the file the process maps",
        ));
    }
    Ok(file)
}

/// The executable `pid` runs (`/proc/<pid>/exe`, resolved by the kernel), a regular
/// file, with its key.
pub fn open_exe(pid: u32) -> std::io::Result<(File, FileKey)> {
    let file = open_flags().open(format!("/proc/{pid}/exe"))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, (meta.dev(), meta.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_glibc_and_musl_in_a_maps_listing() {
        let maps = b"7f00-7f01 r--p 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f01-7f02 r-xp 00001000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f03-7f04 r-xp 00001000 08:01 124 /lib/ld-musl-x86_64.so.1\n\
                    7f05-7f06 r-xp 00001000 08:01 125 /usr/lib/libcrypto.so.3\n\
                    7f06-7f07 r-xp 00001000 08:01 126 /tmp/x y/libc.so.6\n\
                    7f07-7f08 rw-p 00000000 00:00 0 [heap]\n";
        let listing = Listing {
            mappings: proc_maps::parse(maps),
            truncated: false,
        };
        let found: Vec<&[u8]> = candidates(&listing)
            .into_iter()
            .map(|m| m.path.as_slice())
            .collect();
        assert_eq!(
            found,
            [
                &b"/usr/lib/x86_64-linux-gnu/libc.so.6"[..],
                b"/lib/ld-musl-x86_64.so.1",
                b"/tmp/x y/libc.so.6"
            ]
        );
        assert!(!is_libc_file_name(b"libcap.so.2"));
        assert!(is_libc_file_name(b"libc-2.31.so"));
    }

    #[test]
    fn this_process_opens_its_own_libc_through_map_files_and_not_a_fifo() {
        let listing = proc_maps::read(None).unwrap();
        let libc = candidates(&listing)[0].clone();
        let me = std::process::id();
        let file = open_mapped(me, &libc).expect("own libc");
        assert_eq!(file.metadata().unwrap().ino(), libc.inode);
        // A mapping whose inode is not the file's is refused (here: the right range,
        // a wrong inode), and a FIFO is never opened for reading (it would block).
        let mut wrong = libc.clone();
        wrong.inode += 1;
        assert!(open_mapped(me, &wrong).is_err());
        let dir = std::env::temp_dir().join(format!("probectl-libc-{me}"));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("libc.so.6");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let opened = open_flags().open(&fifo).unwrap();
        assert!(!opened.metadata().unwrap().file_type().is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
