//! The environment present at exec: for each policy env name in the envp handed to
//! execve/execveat, one event with the name and, where the policy asks, a value
//! prefix. Runtimes that copy the environment at start (Bun, Python, Go) never call
//! getenv per lookup, so this is the only signal for them; it is reported as
//! "present at exec", never as "looked up".
//!
//! match-proto: syscalls:sys_enter_execve(filename, argv, envp)
//! match-proto: syscalls:sys_enter_execveat(fd, filename, argv, envp, flags)
//!
//! The scan runs in a `bpf_loop` callback (kernel 5.17+), so the verifier checks one
//! iteration instead of unrolling hundreds. Events are emitted at entry, before the
//! exec is known to succeed; userspace keeps them per process and attaches them to the
//! exec that follows (a failed attempt of a PATH search is simply replaced).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_str_bytes, generated::bpf_loop},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    DROP_ENV_SCAN_INCOMPLETE, DROP_RING_FULL_ENV_AT_EXEC, ENV_CAPTURE_VALUE, ENV_NAME_LEN,
    ENV_OWN_CONFIG, ENV_OWN_HOME, ENV_VALUE_PREFIX_LEN, EVENT_ENV_AT_EXEC, EXEC_ENV_MAX_ENTRIES,
    EXEC_ENV_VALUE_CAPTURED, EXEC_ENV_VALUE_TRUNCATED, ExecEnvEvent, home_hash,
};

use crate::{
    maps::{ENV_NAMES, ENV_SCAN_NEXT, ENV_SCAN_STATE, ENV_SCRATCH, EVENTS, WATCHED},
    util::{count_drop, current_ids, env_glob, header, syscall_arg},
};

/// What each loop iteration needs; lives on the caller's stack.
#[repr(C)]
pub(crate) struct Scan {
    envp: u64,
    tgid: u32,
    tid: u32,
    /// Set by the callback when it reached the end of envp.
    done: u32,
    /// The next entry, in the chained scan of old kernels (`scan_next`).
    next: u32,
    /// The chained scan's homes-seen mask (`EnvScratch::homes_seen` says what it is;
    /// the bpf_loop scan keeps it there, for its verifier's sake).
    homes_seen: u32,
    _pad: u32,
}

#[tracepoint]
pub fn sys_enter_execve_env(ctx: TracePointContext) -> u32 {
    scan(&ctx, syscall_arg(2));
    0
}

#[tracepoint]
pub fn sys_enter_execveat_env(ctx: TracePointContext) -> u32 {
    scan(&ctx, syscall_arg(3));
    0
}

/// The watched thread's envp, or `None` when there is nothing to scan.
#[inline(always)]
fn start(ctx: &TracePointContext, envp_at: usize) -> Option<Scan> {
    let (tgid, tid) = current_ids();
    if !crate::util::maybe_watched(tgid) {
        return None;
    }
    let watch = WATCHED.get_ptr_mut(tgid)?;
    // The new image's `~/` is what this envp says: unset until the scan finds it, and
    // in force only once the exec succeeds (`process::on_exec`).
    // SAFETY: field stores into this process's own entry.
    unsafe {
        (*watch).next_home_len = 0;
        (*watch).next_config_len = 0;
        (*watch).next_home_hash = 0;
        (*watch).next_config_hash = 0;
    }
    let envp = unsafe { ctx.read_at::<u64>(envp_at) }.ok()?;
    (envp != 0).then_some(Scan {
        envp,
        tgid,
        tid,
        done: 0,
        next: 0,
        homes_seen: 0,
        _pad: 0,
    })
}

/// The scan for kernels without `bpf_loop` (before 5.17). Each run of
/// `exec_env_next` scans `ENTRIES_PER_CALL` entries in a bounded loop, then tail-calls
/// itself for the next ones. The kernel allows 33 tail calls, so the chain could cover
/// 34 * 16 = 544 entries; it stops at `EXEC_ENV_MAX_ENTRIES` (512), like the bpf_loop
/// scan, and counts a longer envp as an incomplete scan. (16 entries per run load on
/// 5.10 since `visit` keeps its paths rejoining; before that, one entry per run was
/// all 5.10's verifier accepted, and only the first 34 entries were scanned.)
#[inline(always)]
pub(crate) fn scan_chained(ctx: &TracePointContext, envp_at: usize) {
    let Some(scan) = start(ctx, envp_at) else {
        return;
    };
    let Some(state) = ENV_SCAN_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU state, exclusively ours while this chain of programs runs.
    unsafe { *state = scan };
    scan_next(ctx);
}

/// Entries the chained scan visits per program (see `scan_chained`).
const ENTRIES_PER_CALL: u32 = 16;

/// `ENTRIES_PER_CALL` entries of the chained scan, then a tail call for the next.
#[inline(always)]
pub(crate) fn scan_next(ctx: &TracePointContext) {
    let Some(state) = ENV_SCAN_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU state written by `scan_chained` in this chain.
    let scan = unsafe { &mut *state };
    for _ in 0..ENTRIES_PER_CALL {
        let index = scan.next;
        if index >= EXEC_ENV_MAX_ENTRIES || visit(index, scan, false) != 0 {
            if scan.done == 0 {
                count_drop(DROP_ENV_SCAN_INCOMPLETE);
            }
            return;
        }
        scan.next = index + 1;
    }
    // SAFETY: slot 0 holds `exec_env_next` (userspace puts it there). It returns
    // only when the call fails: the chain's limit reached, or the slot empty.
    unsafe { ENV_SCAN_NEXT.tail_call(ctx, 0) };
    count_drop(DROP_ENV_SCAN_INCOMPLETE);
}

#[inline(always)]
fn scan(ctx: &TracePointContext, envp_at: usize) {
    let Some(mut scan) = start(ctx, envp_at) else {
        return;
    };
    let Some(scratch) = ENV_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this scan runs.
    unsafe { (*scratch).homes_seen = 0 };
    // SAFETY: `entry` is a static BPF subprogram with the callback signature bpf_loop
    // expects; `scan` outlives the call.
    unsafe {
        bpf_loop(
            EXEC_ENV_MAX_ENTRIES,
            entry as *mut c_void,
            (&raw mut scan).cast(),
            0,
        )
    };
    if scan.done == 0 {
        count_drop(DROP_ENV_SCAN_INCOMPLETE);
    }
}

/// The bpf_loop callback: one envp entry.
#[inline(never)]
extern "C" fn entry(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer `scan` gave it.
    visit(index, unsafe { &mut *ctx.cast::<Scan>() }, true)
}

/// One envp entry. Returns 1 to stop the loop (end of envp), 0 to go on.
///
/// Written for the verifier's state pruning. The name loop leaves on a different path
/// at each position, with the name's length a different constant on each; if that
/// length reached a comparison or an offset into BPF memory, or simply stayed in a
/// register, the verifier would carry the 64 paths apart through the rest of the
/// program (measured: 1.2 s to verify on 6.18 with the length used as an offset, and
/// over the 1M-instruction limit on 7.3 with it only kept in a register). So the
/// buffers are zeroed before the loop (no tail to clear per path), the length goes
/// through map memory (a volatile store and load: the verifier reads back one unknown
/// number), and the value is read a second time from user memory at `ptr + len + 1`,
/// an address the verifier treats as a plain number.
#[inline(always)]
fn visit(index: u32, scan: &mut Scan, feed_block: bool) -> i64 {
    let slot = (scan.envp as *const u64).wrapping_add(index as usize);
    let Ok(ptr) = (unsafe { bpf_probe_read_user(slot) }) else {
        scan.done = 1;
        return 1;
    };
    if ptr == 0 {
        scan.done = 1;
        return 1;
    }
    let Some(scratch) = ENV_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let scratch = unsafe { &mut *scratch };
    // `NAME=` within the first ENV_NAME_LEN bytes; longer names cannot match a policy
    // name. Bytes after the string's NUL are stale and never looked at.
    if unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut scratch.entry) }.is_err()
        || scratch.entry[0] == b'='
    {
        return 0;
    }
    for i in 0..ENV_NAME_LEN {
        // Volatile: byte stores the compiler cannot merge into a memset call (a
        // subprogram the verifier walks byte by byte).
        // SAFETY: `i` is within both arrays.
        unsafe {
            core::ptr::write_volatile(scratch.name.as_mut_ptr().add(i), 0);
            core::ptr::write_volatile(scratch.key.as_mut_ptr().add(i), 0);
        }
    }
    let mut found = false;
    let mut len = 0u64;
    for i in 0..ENV_NAME_LEN {
        let c = scratch.entry[i];
        if c == b'=' {
            found = true;
            break;
        }
        if c == 0 {
            break;
        }
        scratch.name[i] = c;
        scratch.key[i] = if c.is_ascii_lowercase() { c - 32 } else { c };
        len += 1;
    }
    if !found {
        return 0;
    }
    // SAFETY: a field of our per-CPU scratch.
    let len = unsafe {
        core::ptr::write_volatile(&raw mut scratch.name_len, len);
        core::ptr::read_volatile(&raw const scratch.name_len)
    };
    // The key stays in the per-CPU map value; by value it would be copied to the stack.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "a by-value key is a stack copy in BPF"
    )]
    let policy = match unsafe { ENV_NAMES.get(&scratch.key) } {
        Some(policy) => *policy,
        None => {
            scratch.prefix_key.prefix_len = (ENV_NAME_LEN * 8) as u32;
            scratch.prefix_key.data = scratch.key;
            match env_glob(&scratch.prefix_key) {
                Some(policy) => policy,
                None => return 0,
            }
        }
    };
    let (entry_id, capture) = (policy.entry_id, policy.match_kind & ENV_CAPTURE_VALUE != 0);
    let own_home = policy.match_kind & (ENV_OWN_HOME | ENV_OWN_CONFIG);
    let entry = Entry {
        ptr,
        len,
        index,
        entry_id,
        capture,
        own_home,
    };
    if feed_block {
        looped_rest(scan, scratch, &entry);
    } else {
        chained_rest(scan, scratch, &entry);
    }
    0
}

/// What `visit` found of one envp entry whose name a policy names.
struct Entry {
    /// The entry's address in user memory; the value starts at `ptr + len + 1`.
    ptr: u64,
    /// The name's length (read back from map memory: one unknown number).
    len: u64,
    index: u32,
    entry_id: u32,
    capture: bool,
    /// `ENV_OWN_HOME` / `ENV_OWN_CONFIG` when the name places `~/`, or 0.
    own_home: u32,
}

/// The bpf_loop scan's rest of an entry (5.17+): the block feed, then the value read
/// into the scratch (its `NAME=` is no longer needed) and the home placed from it
/// *before* the record is reserved; the record then takes that same copy. A full ring
/// loses the record (counted) but not the home, so a process that floods the ring and
/// then execs with a new `HOME` still has its reads there counted by the kernel for
/// block rules.
///
/// Written for the verifier, like `visit`: the homes-seen mask, the kind this entry
/// places and the value's length and flags all go through map memory (volatile store,
/// then load), so that the paths of the first-home test and of the capture rejoin
/// before the record's code, which the verifier then walks once instead of once per
/// outcome (verified instructions for `sys_enter_execve_env` on 6.18: 101k with them
/// in registers, 20k through the scratch).
#[inline(always)]
fn looped_rest(scan: &mut Scan, scratch: &mut crate::maps::EnvScratch, entry: &Entry) {
    // The first exact-case entry of the name places `~/` (`EnvScratch::homes_seen`);
    // a cut or unreadable one places none, and no later one stands in for it.
    let own_home = entry.own_home;
    let mut home_kind = 0;
    if own_home != 0 && scratch.homes_seen & own_home == 0 && exact_case(scratch) {
        scratch.homes_seen |= own_home;
        home_kind = own_home;
    }
    // SAFETY: a field of our per-CPU scratch.
    unsafe { core::ptr::write_volatile(&raw mut scratch.home_kind, home_kind) };
    if crate::block::rules_in_force() != 0 {
        // Non-zero when the name was not written in upper case (see `block::feed`).
        let mut folded = 0u8;
        for i in 0..ENV_NAME_LEN {
            folded |= scratch.name[i] ^ scratch.key[i];
        }
        crate::block::feed(
            scan.tgid,
            entry.entry_id,
            probe_common::BLOCK_OP_PRESENT_AT_EXEC,
            folded == 0,
        );
    }
    for i in 0..ENV_VALUE_PREFIX_LEN / 8 {
        // Volatile for the same reason as the name buffers in `visit`; zeroed (capture
        // or not) so that nothing of the `NAME=` reaches the record, which takes the
        // buffer whole.
        // SAFETY: `i * 8 + 8` is within the 64-byte, 8-aligned buffer.
        unsafe {
            core::ptr::write_volatile(scratch.entry.as_mut_ptr().cast::<u64>().add(i), 0);
        }
    }
    let mut value_len = 0u64;
    let mut flags = 0u64;
    if entry.capture {
        let value = (entry.ptr + entry.len + 1) as *const u8;
        // On error the helper leaves the buffer zeroed.
        if let Ok(read) = unsafe { bpf_probe_read_user_str_bytes(value, &mut scratch.entry) } {
            value_len = read.len() as u64;
            flags = u64::from(EXEC_ENV_VALUE_CAPTURED);
            if value_len >= (ENV_VALUE_PREFIX_LEN - 1) as u64 {
                flags |= u64::from(EXEC_ENV_VALUE_TRUNCATED);
            } else {
                // SAFETY: a field of our per-CPU scratch.
                let kind = unsafe { core::ptr::read_volatile(&raw const scratch.home_kind) };
                if kind != 0 {
                    own_home_len(scan.tgid, kind, &scratch.entry, value_len as usize);
                }
            }
        }
    }
    // SAFETY: fields of our per-CPU scratch.
    let (value_len, flags) = unsafe {
        core::ptr::write_volatile(&raw mut scratch.value_len, value_len);
        core::ptr::write_volatile(&raw mut scratch.value_flags, flags);
        (
            core::ptr::read_volatile(&raw const scratch.value_len),
            core::ptr::read_volatile(&raw const scratch.value_flags),
        )
    };
    let Some(mut reserved) = EVENTS.reserve::<ExecEnvEvent>(0) else {
        count_drop(DROP_RING_FULL_ENV_AT_EXEC);
        return;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *reserved.as_mut_ptr() };
    e.header = header(EVENT_ENV_AT_EXEC, scan.tgid, scan.tid);
    e.entry_id = entry.entry_id;
    e.name_len = entry.len as u32;
    e.flags = flags as u16;
    e.index = entry.index as u16;
    e.value_len = value_len as u32;
    e.name = scratch.name;
    e.value = scratch.entry;
    reserved.submit(0);
}

/// The chained scan's rest of an entry (kernels before 5.17, 16 entries per program).
/// Neither the block feed nor the home placed before the record fit 5.10's verifier
/// there (over a million instructions with either, or with the map-memory passing of
/// `looped_rest`): names present at exec do not count toward block rules (`exposed`,
/// counted only when a rule names it), and a full ring at exec leaves the process
/// without its own home until its next exec. The homes-seen mask is `Scan`'s.
#[inline(always)]
fn chained_rest(scan: &mut Scan, scratch: &mut crate::maps::EnvScratch, entry: &Entry) {
    let own_home = entry.own_home;
    let first_home = own_home != 0 && scan.homes_seen & own_home == 0 && exact_case(scratch);
    if first_home {
        scan.homes_seen |= own_home;
    }
    let Some(mut reserved) = EVENTS.reserve::<ExecEnvEvent>(0) else {
        count_drop(DROP_RING_FULL_ENV_AT_EXEC);
        return;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *reserved.as_mut_ptr() };
    e.header = header(EVENT_ENV_AT_EXEC, scan.tgid, scan.tid);
    e.entry_id = entry.entry_id;
    e.name_len = entry.len as u32;
    e.flags = 0;
    e.index = entry.index as u16;
    e.value_len = 0;
    e.name = scratch.name;
    e.value = [0; ENV_VALUE_PREFIX_LEN];
    if entry.capture {
        let value = (entry.ptr + entry.len + 1) as *const u8;
        if let Ok(read) = unsafe { bpf_probe_read_user_str_bytes(value, &mut e.value) } {
            let value_len = read.len();
            e.value_len = value_len as u32;
            e.flags |= EXEC_ENV_VALUE_CAPTURED;
            if value_len >= ENV_VALUE_PREFIX_LEN - 1 {
                e.flags |= EXEC_ENV_VALUE_TRUNCATED;
            } else if first_home {
                own_home_len(scan.tgid, own_home, &e.value, value_len);
            }
        }
    }
    reserved.submit(0);
}

/// Whether the name was written as its policy key, in upper case: `HOME` and
/// `XDG_CONFIG_HOME` are shorter than 16 bytes and both buffers are zeroed past the
/// name, so 16 bytes decide. Branch-free, for the verifier's sake.
#[inline(always)]
fn exact_case(scratch: &crate::maps::EnvScratch) -> bool {
    let mut folded = 0u8;
    for i in 0..16 {
        folded |= scratch.name[i] ^ scratch.key[i];
    }
    folded == 0
}

/// Keeps where the process's `~/` will end once this exec succeeds: the length of its
/// `HOME` (or `XDG_CONFIG_HOME`) value, without one trailing slash, in its
/// `WatchEntry`'s `next_*` fields, for the
/// file programs' `OWN_HOME_PATHS` lookup, and a hash of those bytes, with which the
/// file programs tell a path under this very home from one that only has the same
/// length in front. Userspace still checks the value itself (absolute, no `.`/`..`)
/// before it reports a read; the kernel hashes absolute values other than `/` only.
#[inline(always)]
fn own_home_len(tgid: u32, kind: u32, value: &[u8; ENV_VALUE_PREFIX_LEN], len: usize) {
    let mut len = len;
    if len > 1 && value[(len - 1) & (ENV_VALUE_PREFIX_LEN - 1)] == b'/' {
        len -= 1;
    }
    let hash = if len > 1 && value[0] == b'/' {
        home_hash(value, len)
    } else {
        0
    };
    let Some(watch) = WATCHED.get_ptr_mut(tgid) else {
        return;
    };
    // SAFETY: field stores into this process's own entry.
    unsafe {
        if kind & ENV_OWN_HOME != 0 {
            (*watch).next_home_len = len as u16;
            (*watch).next_home_hash = hash;
        } else {
            (*watch).next_config_len = len as u16;
            (*watch).next_config_hash = hash;
        }
    }
}
