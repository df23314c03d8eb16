//! `~/` prefixes and globs under a watched process's own `HOME` and
//! `XDG_CONFIG_HOME`. `PATHS` holds the policy's `~/` entries expanded for the passwd
//! homes only; a CLI run with `HOME=/tmp/ci` reads `/tmp/ci/.ssh/config`, which is
//! `~/.ssh/` for that process. The exec-time env scan keeps the length of the
//! process's home values in its `WatchEntry` (passed on at fork); here the part of an
//! absolute path after that many bytes is looked up in `OWN_HOME_PATHS`, which holds
//! the `~/` prefixes and the literal directories of the `~/` globs, relative to the
//! home. A hit is only a candidate: the kernel compares no home bytes, userspace
//! checks the path against the values the process got at exec. So a process is
//! covered from its first instruction, with no userspace round trip and nothing to
//! add to a map when a new home shows up.

use aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes;
use probe_common::{OWN_HOME_UNDER_CONFIG, OWN_HOME_UNDER_HOME, PATH_LEN, SETTING_OWN_HOME};

use crate::maps::{OWN_HOME_PATHS, OWN_HOME_SCRATCH, PATH_SCRATCH, SETTINGS, WATCHED};

/// The `OWN_HOME_PATHS` entry the path in `PATH_SCRATCH` (`path_len` bytes) is under,
/// relative to the process's `HOME`, else to its `XDG_CONFIG_HOME`.
#[inline(always)]
pub fn by_own_home(tgid: u32, path_len: usize) -> Option<u32> {
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
    under(OWN_HOME_UNDER_HOME, watch.home_len as usize, path_len)
        .or_else(|| under(OWN_HOME_UNDER_CONFIG, watch.config_len as usize, path_len))
}

/// The entry for what follows the first `home_len` bytes of the path, keyed with
/// `marker` first.
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
    // Only the bytes just written take part in the match: what follows is stale.
    key.prefix_len = ((1 + rest.len()) * 8) as u32;
    OWN_HOME_PATHS.get(key).map(|policy| policy.entry_id)
}
