//! Process lifecycle: exec (filename, argv, uid), fork/clone, exit; and the watched set.
//!
//! match-proto: syscalls:sys_enter_execve(filename, argv, envp)
//! match-proto: syscalls:sys_enter_execveat(fd, filename, argv, envp, flags)
//! match-proto: sched:sched_process_exec(__data_loc filename, pid, old_pid)
//! match-proto: task:task_newtask(pid, comm, clone_flags, ...)    [offsets from tracefs]
//! match-proto: syscalls:sys_enter_exit_group(error_code)
//! match-proto: sched:sched_process_exit(..., group_dead)         [offset from tracefs]
//!
//! The three sched/task programs have tp_btf twins (`process_btf.rs`), the upper
//! tier where the kernel loads them: each pair shares its body here (`on_exec`,
//! `on_newtask`, `on_exit`) and differs only in how it reads its arguments.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_uid_gid, bpf_probe_read_kernel_buf,
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use probe_common::{
    ARGV_SLOT_LEN, ARGV_SLOTS, DROP_PENDING_FULL, DROP_RING_FULL_EXEC, DROP_RING_FULL_EXIT,
    DROP_RING_FULL_FORK, DROP_UNREADABLE_FORK, DROP_WATCHED_FULL, EVENT_EXEC, EVENT_EXEC_CANDIDATE,
    EVENT_EXIT, EVENT_FORK, EXEC_ARGV_LOST, EXEC_ARGV_MORE, EXEC_FILENAME_TRUNCATED, EXEC_SELECTED,
    EXIT_CODE_KNOWN, ExecEvent, ExitEvent, ForkEvent, PATH_LEN, SETTING_EXEC_CANDIDATES,
    SETTING_SELECTION, TP_EXEC_FILENAME, TP_EXEC_OLD_PID, TP_EXIT_GROUP_DEAD,
    TP_NEWTASK_CLONE_FLAGS, TP_NEWTASK_PID, WATCH_ORIGIN_FORK, WATCH_ORIGIN_SELECTED, WatchEntry,
};

use crate::{
    maps::{
        EVENTS, EXEC_SCRATCH, EXIT_CODES, PENDING_EXEC, SELECT_COMMS, SELECT_UIDS, SETTINGS,
        WATCHED,
    },
    util::{
        count_drop, current_ids, header, is_watched, mark_watch_hint, maybe_watched, syscall_arg,
        tp_offset,
    },
};

const CLONE_THREAD: u64 = 0x0001_0000;
/// argv entries counted (not captured) past the slots, so `argc` stays meaningful.
const ARGV_COUNT_LIMIT: usize = 64;

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    let _ = try_enter_exec(&ctx, syscall_arg(0), syscall_arg(1));
    0
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    let _ = try_enter_exec(&ctx, syscall_arg(1), syscall_arg(2));
    0
}

/// Reads filename and argv from the old image while it still exists, and parks them
/// for `sched_process_exec`. Only watched processes pay for this (all execs, while a
/// policy selects programs by name).
#[inline(always)]
fn try_enter_exec(ctx: &TracePointContext, filename_at: usize, argv_at: usize) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    // With a selection policy any exec may start a watch (decided at
    // sched_process_exec from the new comm), so every exec parks its argv then; exec is
    // rare next to the cost of exec itself. Without one, only watched processes pay.
    if !is_watched(tgid) && !selection_active() {
        return Ok(());
    }
    let filename: *const u8 = unsafe { ctx.read_at(filename_at) }.map_err(|e| e as i64)?;
    let argv: *const *const u8 = unsafe { ctx.read_at(argv_at) }.map_err(|e| e as i64)?;
    let scratch = EXEC_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: per-CPU scratch value, exclusively ours while this program runs.
    let pending = unsafe { &mut *scratch };
    pending.flags = 0;
    pending.argv_truncated_mask = 0;
    pending.filename_len =
        match unsafe { bpf_probe_read_user_str_bytes(filename, &mut pending.filename) } {
            Ok(s) => s.len() as u32,
            Err(_) => 0,
        };
    if pending.filename_len as usize >= PATH_LEN - 1 {
        pending.flags |= EXEC_FILENAME_TRUNCATED;
    }
    let mut argc = 0u32;
    for slot in 0..ARGV_SLOTS {
        let arg: *const u8 = match unsafe { bpf_probe_read_user(argv.wrapping_add(slot)) } {
            Ok(p) => p,
            Err(_) => break,
        };
        if arg.is_null() {
            break;
        }
        let len = match unsafe { bpf_probe_read_user_str_bytes(arg, &mut pending.argv[slot]) } {
            Ok(s) => s.len(),
            Err(_) => {
                pending.argv[slot][0] = 0;
                0
            }
        };
        if len >= ARGV_SLOT_LEN - 1 {
            pending.argv_truncated_mask |= 1 << slot;
        }
        argc += 1;
    }
    if argc as usize == ARGV_SLOTS {
        // Count what did not fit so the report can say "and N more".
        for extra in ARGV_SLOTS..ARGV_COUNT_LIMIT {
            match unsafe { bpf_probe_read_user(argv.wrapping_add(extra)) } {
                Ok(p) if !p.is_null() => {
                    pending.flags |= EXEC_ARGV_MORE;
                    argc += 1;
                }
                _ => break,
            }
        }
    }
    pending.argc = argc;
    // Pass the map value by reference: by value it would be copied (1.3 KiB) onto the
    // 512-byte BPF stack and the object would not link.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "a by-value argument is a stack copy in BPF"
    )]
    let inserted = PENDING_EXEC.insert(tid, &*pending, 0);
    if inserted.is_err() {
        count_drop(DROP_PENDING_FULL);
    }
    Ok(())
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = on_exec(
        || match tp_offset(TP_EXEC_OLD_PID) {
            Some(off) => unsafe { ctx.read_at::<i32>(off) }.map_err(|e| e as i64),
            None => Ok(current_ids().1 as i32),
        },
        || {
            // `__data_loc`: the low 16 bits are the string's offset in the record.
            let off = tp_offset(TP_EXEC_FILENAME)?;
            let loc: u32 = unsafe { ctx.read_at(off) }.unwrap_or(0);
            let data = (loc & 0xffff) as usize;
            (data != 0).then(|| unsafe { (ctx.as_ptr() as *const u8).add(data) })
        },
    );
    0
}

/// The exec succeeded: the homes its env scan found are the process's from now on
/// (a failed execve leaves the old ones, as the process keeps its old image).
#[inline(always)]
fn take_next_homes(tgid: u32) {
    let Some(watch) = WATCHED.get_ptr_mut(tgid) else {
        return;
    };
    // SAFETY: field moves within this process's own entry.
    unsafe {
        let w = &mut *watch;
        w.home_len = w.next_home_len;
        w.config_len = w.next_config_len;
        w.home_hash = w.next_home_hash;
        w.config_hash = w.next_config_hash;
        w.next_home_len = 0;
        w.next_config_len = 0;
        w.next_home_hash = 0;
        w.next_config_hash = 0;
    }
}

/// The exec event of both tiers. `old_pid` gives the pid the exec started under (the
/// key of its parked argv); `filename` the kernel's copy of the executed file's
/// name (after PATH search), called only when the exec is reported.
#[inline(always)]
pub(crate) fn on_exec(
    old_pid: impl FnOnce() -> Result<i32, i64>,
    filename: impl FnOnce() -> Option<*const u8>,
) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    let mut kind = EVENT_EXEC;
    let mut selected_here = 0;
    if !is_watched(tgid) {
        // After exec, comm is the new program's basename: selection by name or uid
        // happens here, in the kernel, before the program's first instruction.
        if !selection_active() {
            return Ok(());
        }
        let comm = bpf_get_current_comm().map_err(|e| e as i64)?;
        let uid = bpf_get_current_uid_gid() as u32;
        if SELECT_COMMS.get_ptr(comm).is_some() || SELECT_UIDS.get_ptr(uid).is_some() {
            let watch = WatchEntry {
                origin: WATCH_ORIGIN_SELECTED,
                parent_tgid: 0,
                // Not watched at execve entry: its environment was not scanned.
                ..WatchEntry::default()
            };
            mark_watch_hint(tgid, true);
            if WATCHED.insert(tgid, watch, 0).is_err() {
                count_drop(DROP_WATCHED_FULL);
                return Ok(());
            }
            selected_here = EXEC_SELECTED;
        } else if SETTINGS
            .get(SETTING_EXEC_CANDIDATES)
            .is_some_and(|on| *on != 0)
        {
            // Userspace evaluates the other selectors on this exec.
            kind = EVENT_EXEC_CANDIDATE;
        } else {
            let _ = PENDING_EXEC.remove(tid);
            return Ok(());
        }
    }
    if selected_here == 0 {
        take_next_homes(tgid);
    }
    let old_pid = old_pid()?;
    let pending = PENDING_EXEC.get_ptr(old_pid as u32);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop(DROP_RING_FULL_EXEC);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring-buffer record.
    let e = unsafe { &mut *event };
    e.header = header(kind, tgid, tid);
    let uid_gid = bpf_get_current_uid_gid();
    e.uid = uid_gid as u32;
    e.gid = (uid_gid >> 32) as u32;
    e.flags = if pending.is_some() { 0 } else { EXEC_ARGV_LOST };
    e.argc = 0;
    e.argv_truncated_mask = 0;
    e.filename_len = 0;
    if let Some(p) = pending {
        // SAFETY: map value pointer from a successful lookup.
        let p = unsafe { &*p };
        e.argc = p.argc;
        e.flags = p.flags;
        e.argv_truncated_mask = p.argv_truncated_mask;
        // One helper call copies all slots: an open-coded 1 KiB copy would blow the
        // instruction budget.
        let dst = unsafe {
            core::slice::from_raw_parts_mut(
                e.argv.as_mut_ptr().cast::<u8>(),
                ARGV_SLOTS * ARGV_SLOT_LEN,
            )
        };
        if unsafe { bpf_probe_read_kernel_buf(p.argv.as_ptr().cast::<u8>(), dst) }.is_err() {
            e.argc = 0;
        }
    }
    e.flags |= selected_here;
    // The kernel's own view of the file that was executed (after PATH search), which
    // is better than the pathname argument; fall back to the argument if absent.
    let mut have_filename = false;
    if let Some(src) = filename()
        && let Ok(s) = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut e.filename) }
    {
        e.filename_len = s.len() as u32;
        have_filename = true;
    }
    if !have_filename && let Some(p) = pending {
        let p = unsafe { &*p };
        if unsafe { bpf_probe_read_kernel_buf(p.filename.as_ptr(), &mut e.filename) }.is_ok() {
            e.filename_len = p.filename_len;
        }
    }
    if e.filename_len as usize >= PATH_LEN - 1 {
        e.flags |= EXEC_FILENAME_TRUNCATED;
    }
    entry.submit(0);
    let _ = PENDING_EXEC.remove(old_pid as u32);
    Ok(())
}

/// Whether the policy selects programs by name (`SETTING_SELECTION`).
#[inline(always)]
fn selection_active() -> bool {
    SETTINGS.get(SETTING_SELECTION).is_some_and(|on| *on != 0)
}

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    on_newtask(&ctx, || {
        let pid_off = tp_offset(TP_NEWTASK_PID)?;
        let flags_off = tp_offset(TP_NEWTASK_CLONE_FLAGS)?;
        let child = unsafe { ctx.read_at::<i32>(pid_off) }.ok()?;
        let flags = unsafe { ctx.read_at::<u64>(flags_off) }.ok()?;
        Some((child, flags))
    });
    0
}

/// Runs in the parent inside copy_process, before the child can run, so a child of a
/// watched process is watched from its first instruction. Threads (`CLONE_THREAD`)
/// share their group's watch and are skipped; fork, vfork and clone of a process are
/// not. `child_and_flags` reads the new task's pid and the clone flags (both tiers
/// of the same event).
#[inline(always)]
pub(crate) fn on_newtask<C: EbpfContext>(
    ctx: &C,
    child_and_flags: impl FnOnce() -> Option<(i32, u64)>,
) {
    let (tgid, tid) = current_ids();
    if !maybe_watched(tgid) {
        return;
    }
    let Some(parent) = WATCHED.get_ptr(tgid) else {
        return;
    };
    // SAFETY: a plain value read once; a racing exec of the parent changes only the
    // home lengths, which the child then may not inherit (a candidate filter).
    let parent = unsafe { *parent };
    let Some((child, flags)) = child_and_flags() else {
        count_drop(DROP_UNREADABLE_FORK);
        return;
    };
    if flags & CLONE_THREAD != 0 {
        return;
    }
    let child = child as u32;
    let watch = WatchEntry {
        origin: WATCH_ORIGIN_FORK,
        parent_tgid: tgid,
        // A forked child shares its parent's environment, so its `~/` too.
        home_len: parent.home_len,
        config_len: parent.config_len,
        home_hash: parent.home_hash,
        config_hash: parent.config_hash,
        ..WatchEntry::default()
    };
    crate::block::on_fork(tgid, child);
    mark_watch_hint(child, true);
    if WATCHED.insert(child, watch, 0).is_err() {
        count_drop(DROP_WATCHED_FULL);
        warn!(
            ctx,
            "watched set full: child {} of {} is not watched", child, tgid
        );
    }
    match EVENTS.reserve::<ForkEvent>(0) {
        Some(mut entry) => {
            entry.write(ForkEvent {
                header: header(EVENT_FORK, tgid, tid),
                parent_tgid: tgid,
                child_tgid: child,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_FORK),
    }
}

#[tracepoint]
pub fn sys_enter_exit_group(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current_ids();
    if is_watched(tgid)
        && let Ok(code) = unsafe { ctx.read_at::<i64>(syscall_arg(0)) }
    {
        let _ = EXIT_CODES.insert(tgid, code as i32, 0);
    }
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = on_exit(|tgid, tid| match tp_offset(TP_EXIT_GROUP_DEAD) {
        Some(off) => Ok(unsafe { ctx.read_at::<u8>(off) }.map_err(|e| e as i64)? != 0),
        None => Ok(tid == tgid),
    });
    0
}

/// The exit event of both tiers; `group_dead(tgid, tid)` says whether the exiting
/// thread is the last of its group.
#[inline(always)]
pub(crate) fn on_exit(group_dead: impl FnOnce(u32, u32) -> Result<bool, i64>) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return Ok(());
    }
    // The watch ends when the whole group is dead, not when the leader exits: a leader
    // may pthread_exit while other threads run on, and exec from a non-leader thread
    // kills the old leader first.
    if !group_dead(tgid, tid)? {
        return Ok(());
    }
    let code = EXIT_CODES.get_ptr(tgid).map(|p| unsafe { *p });
    // Whoever removes the watch reports the exit: two last threads exiting at once
    // (the tp_btf tier's group_dead is "no thread left alive", which both may see)
    // give one event.
    if WATCHED.remove(tgid).is_err() {
        return Ok(());
    }
    // After the removal: the hint is never clear while the tgid is watched.
    mark_watch_hint(tgid, false);
    let _ = EXIT_CODES.remove(tgid);
    crate::block::on_exit(tgid);
    match EVENTS.reserve::<ExitEvent>(0) {
        Some(mut entry) => {
            entry.write(ExitEvent {
                header: header(EVENT_EXIT, tgid, tid),
                exit_code: code.unwrap_or(0),
                flags: if code.is_some() { EXIT_CODE_KNOWN } else { 0 },
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_EXIT),
    }
    Ok(())
}
