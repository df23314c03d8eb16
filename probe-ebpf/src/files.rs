//! Path-taking syscalls that name a policy path: open/openat of time-zone and other
//! policy files, readlink/readlinkat (how ICU and glibc find the zone name).
//!
//! match-proto: syscalls:sys_enter_open(filename, flags, mode)
//! match-proto: syscalls:sys_enter_openat(dfd, filename, flags, mode)
//! match-proto: syscalls:sys_enter_readlink(path, buf, bufsiz)
//! match-proto: syscalls:sys_enter_readlinkat(dfd, pathname, buf, bufsiz)
//!
//! Only absolute paths can match here; relative and dirfd-relative resolution comes
//! with the complete files sensor.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_buf, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    DROP_RING_FULL_FILE, EVENT_FILE, FILE_OP_OPEN, FILE_OP_OPENAT, FILE_OP_READLINK,
    FILE_OP_READLINKAT, FileEvent, PATH_LEN,
};

use crate::{
    maps::{EVENTS, PATHS, PATH_SCRATCH},
    util::{count_drop, current_ids, header, is_watched, syscall_arg},
};

const AT_FDCWD: i32 = -100;

#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    let flags = unsafe { ctx.read_at::<u64>(syscall_arg(1)) }.unwrap_or(0) as u32;
    let _ = try_path(&ctx, FILE_OP_OPEN, None, syscall_arg(0), flags);
    0
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let flags = unsafe { ctx.read_at::<u64>(syscall_arg(2)) }.unwrap_or(0) as u32;
    let _ = try_path(&ctx, FILE_OP_OPENAT, Some(syscall_arg(0)), syscall_arg(1), flags);
    0
}

#[tracepoint]
pub fn sys_enter_readlink(ctx: TracePointContext) -> u32 {
    let _ = try_path(&ctx, FILE_OP_READLINK, None, syscall_arg(0), 0);
    0
}

#[tracepoint]
pub fn sys_enter_readlinkat(ctx: TracePointContext) -> u32 {
    let _ = try_path(&ctx, FILE_OP_READLINKAT, Some(syscall_arg(0)), syscall_arg(1), 0);
    0
}

/// Filters by watched tgid, then by the policy's path trie, and only then reserves
/// ring-buffer space.
#[inline(always)]
fn try_path(
    ctx: &TracePointContext,
    op: u32,
    dfd_at: Option<usize>,
    path_at: usize,
    open_flags: u32,
) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return Ok(());
    }
    let path: *const u8 = unsafe { ctx.read_at(path_at) }.map_err(|e| e as i64)?;
    let dfd = match dfd_at {
        Some(at) => unsafe { ctx.read_at::<i64>(at) }.unwrap_or(AT_FDCWD as i64) as i32,
        None => AT_FDCWD,
    };
    let key = PATH_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let key = unsafe { &mut *key };
    let len = unsafe { bpf_probe_read_user_str_bytes(path, &mut key.data) }
        .map_err(|e| e as i64)?
        .len();
    key.prefix_len = (PATH_LEN * 8) as u32;
    let Some(policy) = PATHS.get(&*key) else {
        return Ok(());
    };
    let entry_id = policy.entry_id;
    let Some(mut entry) = EVENTS.reserve::<FileEvent>(0) else {
        count_drop(DROP_RING_FULL_FILE);
        return Ok(());
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e.header = header(EVENT_FILE, tgid, tid);
    e.op = op;
    e.entry_id = entry_id;
    e.dfd = dfd;
    e.open_flags = open_flags;
    e.path_len = len as u32;
    e.path_truncated = (len >= PATH_LEN - 1) as u32;
    if unsafe { bpf_probe_read_kernel_buf(key.data.as_ptr(), &mut e.path) }.is_err() {
        e.path_len = 0;
    }
    entry.submit(0);
    Ok(())
}
