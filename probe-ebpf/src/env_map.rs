//! Executable mappings after exec: a libc (or any library) that a watched process
//! maps with `PROT_EXEC` once it runs (dlopen, dlmopen into a new namespace, a copy
//! of libc loaded by hand) never shows in the scan made at exec. This program tells
//! userspace, which then attaches the getenv uprobes to it like to a libc mapped at
//! start.
//!
//! match-proto: syscalls:sys_enter_mmap(addr, len, prot, flags, fd, off)
//!
//! mmap is frequent: `prot` is tested first, so anonymous and non-executable
//! mappings cost one compare, and unwatched processes one lookup more.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use probe_common::{
    DROP_RING_FULL_EXEC_MAPPED, DROP_UNREADABLE_EXEC_MAPPED, EVENT_EXEC_MAPPED, ExecMappedEvent,
    InodeKey,
};

use crate::{
    maps::EVENTS,
    resolve,
    util::{count_drop, current_ids, header, is_watched, syscall_arg},
};

const PROT_EXEC: u64 = 0x4;

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let _ = try_mmap(&ctx);
    0
}

#[inline(always)]
fn try_mmap(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: reads of this tracepoint's argument slots.
    let prot: u64 = unsafe { ctx.read_at(syscall_arg(2))? };
    if prot & PROT_EXEC == 0 {
        return Ok(());
    }
    let fd: u64 = unsafe { ctx.read_at(syscall_arg(4))? };
    let fd = fd as i32;
    if fd < 0 {
        return Ok(());
    }
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return Ok(());
    }
    let key = resolve::fd_key(fd).unwrap_or_else(|_| {
        count_drop(DROP_UNREADABLE_EXEC_MAPPED);
        InodeKey::default()
    });
    let Some(mut entry) = EVENTS.reserve::<ExecMappedEvent>(0) else {
        count_drop(DROP_RING_FULL_EXEC_MAPPED);
        return Ok(());
    };
    entry.write(ExecMappedEvent {
        header: header(EVENT_EXEC_MAPPED, tgid, tid),
        fd,
        _pad0: 0,
        dev: key.dev,
        ino: key.ino,
    });
    entry.submit(0);
    Ok(())
}
