//! The kernel's `WATCH_HINT` bytes: one per tgid, set before the tgid enters the
//! watched set, so that every hook can tell an unwatched process by one array byte
//! instead of a hash lookup (`probe-ebpf/src/maps.rs` says why and who writes).
//!
//! Userspace writes through the map's shared mapping (`BPF_F_MMAPABLE`), one byte per
//! tgid, because a map update writes a whole 64-byte element: it could undo a byte
//! the kernel stored meanwhile for another tgid of the same element (a child forked
//! at that moment), and that child would go unseen.

use std::os::fd::{AsFd as _, AsRawFd as _};
use std::ptr::NonNull;

use probe_common::{WATCH_HINT_BLOCK, WATCH_HINT_MAX_BLOCKS};

/// Where the kernel says how high tgids go.
const PID_MAX: &str = "/proc/sys/kernel/pid_max";

/// The map's size for this kernel: enough blocks for every tgid below `pid_max`. A
/// tgid above (pid_max raised later) is looked up in `WATCHED` by the kernel.
pub fn blocks_for_this_kernel() -> u32 {
    let pid_max = std::fs::read_to_string(PID_MAX)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    blocks_for(pid_max)
}

/// `blocks_for_this_kernel` for a given `pid_max` (the object's maximum when unknown).
fn blocks_for(pid_max: Option<u64>) -> u32 {
    match pid_max {
        Some(n) => {
            let blocks = n.div_ceil(WATCH_HINT_BLOCK as u64);
            u32::try_from(blocks)
                .unwrap_or(WATCH_HINT_MAX_BLOCKS)
                .clamp(1, WATCH_HINT_MAX_BLOCKS)
        }
        None => WATCH_HINT_MAX_BLOCKS,
    }
}

/// The map's bytes, mapped into probectl.
#[derive(Debug)]
pub struct WatchHint {
    bytes: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; its bytes are only
// stored to (single volatile byte stores), never referenced.
unsafe impl Send for WatchHint {}
// SAFETY: as above; concurrent single-byte stores are what the kernel does too.
unsafe impl Sync for WatchHint {}

impl WatchHint {
    /// Maps the `WATCH_HINT` array of `blocks` elements.
    pub fn map(map: &aya::maps::MapData, blocks: u32) -> std::io::Result<Self> {
        let len = blocks as usize * WATCH_HINT_BLOCK;
        // SAFETY: a shared, writable mapping of a BPF_F_MMAPABLE array of exactly
        // `len` bytes of data; the result is checked before use.
        let ptr = unsafe {
            ::libc::mmap(
                std::ptr::null_mut(),
                len,
                ::libc::PROT_READ | ::libc::PROT_WRITE,
                ::libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == ::libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let bytes = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(WatchHint { bytes, len })
    }

    /// Sets `tgid`'s byte; call before the tgid enters `WATCHED`. A tgid beyond the
    /// map needs none (the kernel looks it up in `WATCHED`).
    pub fn mark(&self, tgid: u32) {
        let i = tgid as usize;
        if i < self.len {
            // SAFETY: `i` is within the mapping, which lives as long as `self`.
            unsafe { self.bytes.as_ptr().add(i).write_volatile(1) };
        }
    }

    /// Whether `tgid`'s byte is set (tests and diagnostics).
    pub fn is_marked(&self, tgid: u32) -> bool {
        let i = tgid as usize;
        // SAFETY: as in `mark`.
        i >= self.len || unsafe { self.bytes.as_ptr().add(i).read_volatile() != 0 }
    }
}

impl Drop for WatchHint {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { ::libc::munmap(self.bytes.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_to_pid_max_within_the_objects_maximum() {
        assert_eq!(blocks_for(Some(32_768)), 512);
        assert_eq!(blocks_for(Some(32_769)), 513);
        assert_eq!(blocks_for(Some(4_194_304)), WATCH_HINT_MAX_BLOCKS);
        assert_eq!(blocks_for(Some(u64::MAX)), WATCH_HINT_MAX_BLOCKS);
        assert_eq!(blocks_for(Some(0)), 1);
        assert_eq!(blocks_for(None), WATCH_HINT_MAX_BLOCKS);
    }
}
