//! `~/` prefixes and globs under a watched process's own `HOME` and
//! `XDG_CONFIG_HOME`. `PATHS` holds the policy's `~/` entries expanded for the passwd
//! homes only; a CLI run with `HOME=/tmp/ci` reads `/tmp/ci/.ssh/config`, which is
//! `~/.ssh/` for that process. The exec-time env scan keeps the length of the
//! process's home values in its `WatchEntry` (passed on at fork); here the part of an
//! absolute path after that many bytes is looked up in `OWN_HOME_PATHS`, which holds
//! the `~/` paths, prefixes and the literal directories of the `~/` globs, relative
//! to the home. So a process is covered from its first instruction, with no userspace
//! round trip and nothing to add to a map when a new home shows up.
//!
//! A hit is a candidate that userspace checks against the values the process got at
//! exec, and reports. It is also *verified* here when the path's first bytes hash
//! like the home value did at exec (`probe_common::home_hash`, kept in the
//! `WatchEntry`) and, for `HOME`, the rest does not go on under `/.config` while the
//! process has an `XDG_CONFIG_HOME` (which then stands for `~/.config`, as userspace
//! has it). A verified hit feeds block rules at once, through its entry's own
//! `BLOCK_ENTRIES` key: a CLI that reads `$HOME/.claude/settings.json` under a home
//! that is in no passwd entry and connects in the same millisecond is judged with
//! that read, where the late feed from userspace could come after the connect.

use aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes;
use probe_common::{
    HOME_HASH_BYTES, OWN_HOME_UNDER_CONFIG, OWN_HOME_UNDER_HOME, PATH_LEN, SETTING_OWN_HOME,
    home_hash,
};

use crate::{
    maps::{OWN_HOME_PATHS, OWN_HOME_SCRATCH, PATH_SCRATCH, SETTINGS, WATCHED},
    resolve::kread,
};

/// An `OWN_HOME_PATHS` hit.
pub struct OwnHomeHit {
    pub entry_id: u32,
    /// The path's front is the process's own home value, byte for byte (as far as
    /// the hash tells), so block rules may count the read without userspace.
    pub verified: bool,
}

/// The `OWN_HOME_PATHS` entry the path in `PATH_SCRATCH` (`path_len` bytes) is under,
/// relative to the process's `HOME`, else to its `XDG_CONFIG_HOME`.
#[inline(always)]
pub fn by_own_home(tgid: u32, path_len: usize) -> Option<OwnHomeHit> {
    if !SETTINGS.get(SETTING_OWN_HOME).is_some_and(|on| *on != 0) {
        return None;
    }
    // SAFETY: a plain value copied once.
    let watch = unsafe { *WATCHED.get_ptr(tgid)? };
    let path = PATH_SCRATCH.get_ptr(0)?;
    // SAFETY: per-CPU scratch filled by the exit program that runs this lookup.
    // Relative paths have no home in front of them.
    if unsafe { (*path).data[0] } != b'/' {
        return None;
    }
    let home_len = watch.home_len as usize;
    let by_home = under(OWN_HOME_UNDER_HOME, home_len, path_len).map(|entry_id| OwnHomeHit {
        entry_id,
        verified: same_home(watch.home_hash, home_len)
            && (watch.config_len == 0 || !dot_config_follows(home_len)),
    });
    if by_home.as_ref().is_some_and(|hit| hit.verified) {
        return by_home;
    }
    // Not (or not surely) under `HOME`: under `XDG_CONFIG_HOME`, which is often
    // `$HOME/.config` itself.
    let config_len = watch.config_len as usize;
    match under(OWN_HOME_UNDER_CONFIG, config_len, path_len) {
        Some(entry_id) => Some(OwnHomeHit {
            entry_id,
            verified: same_home(watch.config_hash, config_len),
        }),
        None => by_home,
    }
}

/// Whether the path's first `len` bytes hash as the home value did at exec.
#[inline(always)]
fn same_home(hash: u64, len: usize) -> bool {
    if hash == 0 || len >= HOME_HASH_BYTES {
        return false;
    }
    let Some(path) = PATH_SCRATCH.get_ptr(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch of PATH_LEN >= HOME_HASH_BYTES bytes, read in place.
    let front = unsafe { &*(*path).data.as_ptr().cast::<[u8; HOME_HASH_BYTES]>() };
    home_hash(front, len) == hash
}

/// Whether the path goes on with `/.config` (then `/` or its end) after the home.
#[inline(always)]
fn dot_config_follows(home_len: usize) -> bool {
    let Some(path) = PATH_SCRATCH.get_ptr(0) else {
        return false;
    };
    // Read through the helper, not indexed: older verifiers (6.1) carry impossible
    // bounds for `home_len` out of the hash's branches and refuse the indexing.
    // SAFETY: a fault-tolerant read inside the per-CPU PATH_LEN-byte scratch (the
    // offset is masked below HOME_HASH_BYTES, nine bytes follow).
    let src = unsafe { (*path).data.as_ptr().add(home_len & (HOME_HASH_BYTES - 1)) };
    let Ok(next) = kread::<[u8; 9]>(src as u64) else {
        return false;
    };
    next[..8] == DOT_CONFIG[..] && matches!(next[8], b'/' | 0)
}

const DOT_CONFIG: &[u8; 8] = b"/.config";

/// The entry for what follows the first `home_len` bytes of the path, keyed with
/// `marker` first. Exact entries end with the path's NUL, which the key includes.
#[inline(always)]
fn under(marker: u8, home_len: usize, path_len: usize) -> Option<u32> {
    if home_len == 0 || home_len >= path_len {
        return None;
    }
    let path = PATH_SCRATCH.get_ptr(0)?;
    let key = OWN_HOME_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let key = unsafe { &mut *key };
    key.data[0] = marker;
    // SAFETY: the offset is masked into the PATH_LEN-byte scratch, and the string
    // read stops at the NUL the scratch always has.
    let src = unsafe { (*path).data.as_ptr().add(home_len & (PATH_LEN - 1)) };
    let rest = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut key.data[1..]) }.ok()?;
    // The bytes just written and their NUL take part in the match: what follows is
    // stale. The helper always ends what it writes with a NUL inside the key.
    key.prefix_len = ((1 + rest.len() + 1).min(PATH_LEN) * 8) as u32;
    OWN_HOME_PATHS.get(key).map(|policy| policy.entry_id)
}
