//! Helpers shared by every sensor.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
};
use probe_common::{EventHeader, WATCH_HINT_BLOCK};

use aya_ebpf::maps::{HashMap, LruHashMap};

use crate::maps::{DROPS, ENV_PREFIXES, SETTINGS, TP_OFFSETS, WATCH_HINT, WATCHED};

/// (tgid, tid) of the current task.
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

/// The one check every hook makes first: an unwatched process costs the hint's
/// byte only (`maybe_watched`), a watched one also the `WATCHED` lookup.
#[inline(always)]
pub fn is_watched(tgid: u32) -> bool {
    maybe_watched(tgid) && WATCHED.get_ptr(tgid).is_some()
}

/// False when `tgid` is certainly not watched: its `WATCH_HINT` byte is clear. The
/// exits check this before looking for a parked entry: an entry is parked only for a
/// watched process, whose byte stays set until its group's exit.
#[inline(always)]
pub fn maybe_watched(tgid: u32) -> bool {
    let block = tgid / WATCH_HINT_BLOCK as u32;
    match WATCH_HINT.get(block) {
        Some(bytes) => {
            let i = (tgid % WATCH_HINT_BLOCK as u32) as usize;
            // SAFETY: in bounds (i < WATCH_HINT_BLOCK); a byte another CPU or
            // userspace may store at any time, read once.
            unsafe { core::ptr::read_volatile(&bytes[i]) != 0 }
        }
        // Beyond the map as userspace sized it (pid_max raised since).
        None => true,
    }
}

/// Sets (before a tgid enters `WATCHED`) or clears (after it left at its exit) the
/// tgid's `WATCH_HINT` byte.
#[inline(always)]
pub fn mark_watch_hint(tgid: u32, watched: bool) {
    let block = tgid / WATCH_HINT_BLOCK as u32;
    if let Some(bytes) = WATCH_HINT.get_ptr_mut(block) {
        let i = (tgid % WATCH_HINT_BLOCK as u32) as usize;
        // SAFETY: in bounds; a single byte store that no other writer shares.
        unsafe { core::ptr::write_volatile(&mut (*bytes)[i], u8::from(watched)) };
    }
}

#[inline(always)]
pub fn header(kind: u32, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind,
        // SAFETY: plain helper calls without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        tgid,
        tid,
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
    }
}

/// Counts one lost event or lost watch in this CPU's slot.
#[inline(always)]
pub fn count_drop(slot: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *counter += 1 };
    }
}

/// Offset of a sched tracepoint field, as userspace found it in tracefs.
#[inline(always)]
pub fn tp_offset(slot: u32) -> Option<usize> {
    match TP_OFFSETS.get(slot) {
        Some(&off) if off != 0 => Some(off as usize),
        _ => None,
    }
}

/// Argument `n` of a `syscalls:sys_enter_*` tracepoint. Those layouts are stable:
/// common fields (8 bytes), `__syscall_nr` (4 + 4 padding), then one 8-byte slot per
/// argument from offset 16.
pub const fn syscall_arg(n: usize) -> usize {
    16 + 8 * n
}
/// `__syscall_nr` of a `syscalls:sys_enter_*` tracepoint (an `int`).
pub const SYSCALL_NR: usize = 8;
/// `ret` of a `syscalls:sys_exit_*` tracepoint.
pub const SYSCALL_RET: usize = 16;

/// Takes (copies out and removes) what an entry program parked for this thread.
/// The exit side of every enter/exit pair starts here; a thread with nothing parked
/// (unwatched, or its entry ran before we attached) costs one lookup.
#[inline(always)]
pub fn take_parked<K, V: Copy>(map: &HashMap<K, V>, key: K) -> Option<V> {
    let value = map.get_ptr(&key)?;
    // SAFETY: value pointer from a successful lookup, copied before the remove.
    let value = unsafe { *value };
    let _ = map.remove(&key);
    Some(value)
}

/// `take_parked` for an LRU map (state kept per socket, not per syscall).
#[inline(always)]
pub fn take_lru<K, V: Copy>(map: &LruHashMap<K, V>, key: K) -> Option<V> {
    let value = map.get_ptr(&key)?;
    // SAFETY: value pointer from a successful lookup, copied before the remove.
    let value = unsafe { *value };
    let _ = map.remove(&key);
    Some(value)
}

/// Parks an entry for this thread's syscall; a full map is counted in `full_slot`.
#[inline(always)]
pub fn park_entry<V>(map: &HashMap<u32, V>, tid: u32, value: &V, full_slot: u32) {
    if map.insert(&tid, value, 0).is_err() {
        count_drop(full_slot);
    }
}

/// At a syscall exit that found no parked entry: a watched thread lost its entry
/// (the map was full at entry, or the entry ran before the sensors attached).
#[inline(always)]
pub fn count_missing_entry(tgid: u32, slot: u32) {
    if is_watched(tgid) {
        count_drop(slot);
    }
}

/// The policy entry of an env glob (`LC_*`) that the upper-cased name `key` matches,
/// when the policy has any (checked after the exact `ENV_NAMES` lookup missed).
#[inline(always)]
pub fn env_glob(
    key: &aya_ebpf::maps::lpm_trie::Key<probe_common::EnvNameKey>,
) -> Option<probe_common::PolicyRef> {
    if SETTINGS
        .get(probe_common::SETTING_ENV_PREFIXES)
        .is_none_or(|on| *on == 0)
    {
        return None;
    }
    ENV_PREFIXES.get(key).copied()
}
