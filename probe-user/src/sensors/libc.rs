//! Finding the libc to put getenv uprobes on.
//!
//! For this slice: the libc that probectl itself maps (the system glibc), which is the
//! one dynamically linked CLIs on the host use. Per-process libcs (containers, Nix,
//! musl) come with the complete env sensor.

use std::path::PathBuf;

/// Path of the libc mapped by the current process, from /proc/self/maps.
pub fn own_libc() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let path = line.split_whitespace().nth(5)?;
        let file = path.rsplit('/').next()?;
        (file.starts_with("libc.so") || file.starts_with("libc-")).then(|| PathBuf::from(path))
    })
}
