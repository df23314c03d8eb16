//! Finding the libcs to put getenv uprobes on: the one probectl maps (the system
//! glibc, attached at start) and every other one a watched process maps (a container's
//! or a Nix store's glibc, musl), attached when first seen at an exec. A uprobe is
//! placed on a file's inode, so each distinct file is attached once.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// A file as the kernel identifies it: (device, inode).
pub type FileId = (u64, u64);

pub fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// glibc (`libc.so.6`, `libc-2.31.so`) and musl (`libc.musl-x86_64.so.1`,
/// `ld-musl-x86_64.so.1`, which is musl's libc too).
pub fn is_libc_file_name(name: &str) -> bool {
    name.starts_with("libc.so")
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || name.starts_with("libc.musl-")
        || name.starts_with("ld-musl-")
}

/// Path of the libc mapped by the current process, from /proc/self/maps.
pub fn own_libc() -> Option<PathBuf> {
    mapped_libcs_in(&std::fs::read_to_string("/proc/self/maps").ok()?)
        .into_iter()
        .next()
}

/// The libcs `pid` maps, as paths this process can open: through `/proc/<pid>/root`,
/// so a containerised process's own libc is found, not the host's file of that name.
pub fn mapped_libcs(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    mapped_libcs_in(&maps)
        .into_iter()
        .map(|p| Path::new(&format!("/proc/{pid}/root")).join(p.strip_prefix("/").unwrap_or(&p)))
        .collect()
}

fn mapped_libcs_in(maps: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or_default();
        if path.starts_with('/')
            && is_libc_file_name(name)
            && !out.iter().any(|p| p == Path::new(path))
        {
            out.push(PathBuf::from(path));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_glibc_and_musl_in_a_maps_listing() {
        let maps = "7f00-7f01 r--p 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f01-7f02 r-xp 00001000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f03-7f04 r-xp 00001000 08:01 124 /lib/ld-musl-x86_64.so.1\n\
                    7f05-7f06 r-xp 00001000 08:01 125 /usr/lib/libcrypto.so.3\n\
                    7f07-7f08 rw-p 00000000 00:00 0 [heap]\n";
        assert_eq!(
            mapped_libcs_in(maps),
            [
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/ld-musl-x86_64.so.1")
            ]
        );
        assert!(!is_libc_file_name("libcap.so.2"));
        assert!(is_libc_file_name("libc-2.31.so"));
    }
}
