//! Path-taking syscalls that name a policy path: open/openat of time-zone and other
//! policy files, readlink/readlinkat (how ICU and glibc find the zone name).
//!
//! match-proto: syscalls:sys_enter_open(filename, flags, mode)         + sys_exit_open(ret)
//! match-proto: syscalls:sys_enter_openat(dfd, filename, flags, mode)  + sys_exit_openat(ret)
//! match-proto: syscalls:sys_enter_readlink(path, buf, bufsiz)         + sys_exit_readlink(ret)
//! match-proto: syscalls:sys_enter_readlinkat(dfd, pathname, buf, bufsiz) + sys_exit_readlinkat(ret)
//!
//! Entry parks the arguments of watched threads; exit reads the path (its page is
//! resident by then, see `FileEvent`), filters it through the policy trie and emits
//! it with the result. Only absolute paths can match here; relative and
//! dirfd-relative resolution comes with the complete files sensor.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_buf, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    DROP_RING_FULL_FILE, EVENT_FILE, FILE_OP_OPEN, FILE_OP_OPENAT, FILE_OP_READLINK,
    FILE_OP_READLINKAT, FileEvent, PATH_LEN, PendingPath,
};

use crate::{
    maps::{EVENTS, PATH_SCRATCH, PATHS, PENDING_PATH},
    util::{SYSCALL_RET, count_drop, current_ids, header, is_watched, syscall_arg, take_parked},
};

const AT_FDCWD: i32 = -100;

#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    park(
        &ctx,
        FILE_OP_OPEN,
        None,
        syscall_arg(0),
        Some(syscall_arg(1)),
    );
    0
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    park(
        &ctx,
        FILE_OP_OPENAT,
        Some(syscall_arg(0)),
        syscall_arg(1),
        Some(syscall_arg(2)),
    );
    0
}

#[tracepoint]
pub fn sys_enter_readlink(ctx: TracePointContext) -> u32 {
    park(&ctx, FILE_OP_READLINK, None, syscall_arg(0), None);
    0
}

#[tracepoint]
pub fn sys_enter_readlinkat(ctx: TracePointContext) -> u32 {
    park(
        &ctx,
        FILE_OP_READLINKAT,
        Some(syscall_arg(0)),
        syscall_arg(1),
        None,
    );
    0
}

#[tracepoint]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_readlink(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_readlinkat(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

/// Parks the arguments of a watched thread's path syscall; unwatched threads cost one
/// lookup.
#[inline(always)]
fn park(
    ctx: &TracePointContext,
    op: u32,
    dfd_at: Option<usize>,
    path_at: usize,
    flags_at: Option<usize>,
) {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return;
    }
    let Ok(path_ptr) = (unsafe { ctx.read_at::<u64>(path_at) }) else {
        return;
    };
    let dfd = match dfd_at {
        Some(at) => unsafe { ctx.read_at::<i64>(at) }.unwrap_or(AT_FDCWD as i64) as i32,
        None => AT_FDCWD,
    };
    let open_flags = match flags_at {
        Some(at) => unsafe { ctx.read_at::<u64>(at) }.unwrap_or(0) as u32,
        None => 0,
    };
    let _ = PENDING_PATH.insert(
        tid,
        PendingPath {
            path_ptr,
            op,
            dfd,
            open_flags,
            _pad0: 0,
        },
        0,
    );
}

/// Reads the parked path, filters it through the policy trie, and only then reserves
/// ring-buffer space.
#[inline(always)]
fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    let Some(pending) = take_parked(&PENDING_PATH, tid) else {
        return Ok(());
    };
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.map_err(|e| e as i64)?;
    let key = PATH_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let key = unsafe { &mut *key };
    let len =
        unsafe { bpf_probe_read_user_str_bytes(pending.path_ptr as *const u8, &mut key.data) }
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
    e.op = pending.op;
    e.entry_id = entry_id;
    e.dfd = pending.dfd;
    e.open_flags = pending.open_flags;
    e.ret = ret as i32;
    e.path_len = len as u32;
    e.path_truncated = (len >= PATH_LEN - 1) as u32;
    e._pad0 = 0;
    if unsafe { bpf_probe_read_kernel_buf(key.data.as_ptr(), &mut e.path) }.is_err() {
        e.path_len = 0;
    }
    entry.submit(0);
    Ok(())
}
