//! The files sensor's upper tiers: kernel hooks that see a file being opened or a
//! link being read whatever the way in, next to the syscall tracepoints
//! (`files.rs`), which keep the path string, the fd and the errno.
//!
//! * BPF-LSM (`lsm_*`), where `bpf` is an active LSM;
//! * fentry/fexit on the `security_*` functions the LSM hooks are called from
//!   (`fx_*`), elsewhere (5.10 onwards; those functions exist on every kernel since).
//!
//! Userspace loads one set or the other (`probe-user/src/sensors/file_hooks.rs`).
//! A hook that reaches a file the policy names (by inode, `INODES`) either tags the
//! traced syscall its thread is in (`PENDING_PATH`: the tracepoint's exit then
//! reports it with the syscall's result, e.g. an overlayfs lower file or a
//! hardlinked symlink the string did not name), or, when the thread is in no traced
//! syscall (io_uring, an int 0x80 syscall, `open_by_handle_at`, a received fd),
//! emits the event itself with `FILE_MATCH_HOOK` and the file's last component.
//!
//! match-proto: lsm file_open(struct file *); lsm inode_readlink(struct dentry *);
//! match-proto: lsm file_receive(struct file *); lsm inode_getattr(const struct path *)
//! match-proto: fexit security_file_open(struct file *) -> int;
//! match-proto: fentry security_inode_readlink(struct dentry *); fentry security_file_receive(struct file *)
//! match-proto: fentry security_inode_getattr(const struct path *)
//! match-proto: struct file { f_path, f_inode }; path { dentry }; dentry { d_inode, d_name };
//! match-proto: qstr { name }; inode { i_ino, i_sb }; super_block { s_dev }; task_struct { stack };
//! match-proto: x86-64 pt_regs { orig_ax } at the top of the kernel stack

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel_str_bytes},
    macros::{fentry, fexit, lsm, map},
    maps::Array,
    programs::{FEntryContext, FExitContext, LsmContext},
};
use probe_common::{
    BLOCK_ENTRY_NONE, DROP_RING_FULL_FILE_HOOK, DROP_UNREADABLE_HOOK_INODE, EVENT_FILE,
    FILE_MATCH_HOOK, FILE_OP_HOOK_GETATTR, FILE_OP_HOOK_OPEN, FILE_OP_HOOK_READLINK,
    FILE_OP_HOOK_RECEIVE, FileEvent, HOFF_DENTRY_NAME, HOFF_FILE_PATH, HOFF_QSTR_NAME, HOFF_SLOTS,
    HOFF_TASK_STACK, KOFF_DENTRY_INODE, KOFF_FILE_INODE, KOFF_PATH_DENTRY, PATH_LEN,
    SETTING_INODES,
};

use crate::{
    maps::{EVENTS, INODES, PENDING_PATH, SETTINGS},
    resolve::{inode_key, koff, kread},
    util::{count_drop, current_ids, header, is_watched},
};

/// Offsets beyond `KERNEL_OFFSETS` (`probe_common::HOFF_*`), from BTF.
#[map]
pub static HOOK_OFFSETS: Array<u32> = Array::with_max_entries(HOFF_SLOTS, 0);

/// x86-64 without KASAN: `THREAD_SIZE` (16 KiB) and the `pt_regs` at the top of the
/// kernel stack (168 bytes, `orig_ax` at 120). A kernel built otherwise gives another
/// number here, and the hooks then report what they see themselves rather than
/// through the syscall's exit (a repeat, never a miss).
const THREAD_SIZE: u64 = 16 * 1024;
const PT_REGS_SIZE: u64 = 168;
const PT_REGS_ORIG_AX: u64 = 120;

/// The number of the syscall the current task is in (`orig_ax`; in the 32-bit
/// table for an int 0x80 syscall).
#[inline(always)]
fn current_syscall() -> Option<u64> {
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let stack: u64 = kread(task + hoff(HOFF_TASK_STACK)).ok()?;
    if stack == 0 {
        return None;
    }
    kread(stack + THREAD_SIZE - PT_REGS_SIZE + PT_REGS_ORIG_AX).ok()
}

/// What the hook was handed.
#[derive(Clone, Copy)]
enum Obj {
    File,
    Dentry,
    Path,
}

#[inline(always)]
fn hoff(slot: u32) -> u64 {
    HOOK_OFFSETS.get(slot).map_or(0, |off| *off as u64)
}

/// (dentry, inode) of the hook's object.
#[inline(always)]
fn dentry_inode(obj: u64, kind: Obj) -> Result<(u64, u64), i64> {
    match kind {
        Obj::File => {
            let dentry: u64 = kread(obj + hoff(HOFF_FILE_PATH) + koff(KOFF_PATH_DENTRY))?;
            let inode: u64 = kread(obj + koff(KOFF_FILE_INODE))?;
            Ok((dentry, inode))
        }
        Obj::Dentry => Ok((obj, kread(obj + koff(KOFF_DENTRY_INODE))?)),
        Obj::Path => {
            let dentry: u64 = kread(obj + koff(KOFF_PATH_DENTRY))?;
            Ok((dentry, kread(dentry + koff(KOFF_DENTRY_INODE))?))
        }
    }
}

/// The one body of every hook: watched? a policy file? inside a traced syscall?
#[inline(always)]
fn on_hook(obj: u64, kind: Obj, op: u32, ret: i32) {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) || obj == 0 {
        return;
    }
    // INODES and the offsets are only valid once userspace turned this on.
    if SETTINGS.get(SETTING_INODES).is_none_or(|on| *on == 0) {
        return;
    }
    let Ok((dentry, inode)) = dentry_inode(obj, kind) else {
        count_drop(DROP_UNREADABLE_HOOK_INODE);
        return;
    };
    if inode == 0 {
        // A negative dentry: nothing was reached.
        return;
    }
    let Ok(key) = inode_key(inode) else {
        count_drop(DROP_UNREADABLE_HOOK_INODE);
        return;
    };
    // SAFETY: read-only lookup of a plain value.
    let Some(file) = (unsafe { INODES.get(&key) }).copied() else {
        return;
    };
    let entry_id = file.entry_id;
    // Block rules are fed here, whether the syscall exit or this hook reports it:
    // an io_uring open has no syscall exit at all.
    if file.block_entry != BLOCK_ENTRY_NONE {
        crate::block::feed(tgid, file.block_entry, op as usize, true);
    }
    if let Some(pending) = PENDING_PATH.get_ptr_mut(&tid) {
        // SAFETY: this thread's own entry; only this thread writes it in between.
        let parked_nr = unsafe { (*pending).syscall_nr };
        // An entry of another syscall is not the one this hook runs in (an int 0x80
        // open has another number; an entry whose exit never ran is stale): then
        // the hook reports it itself.
        if current_syscall() == Some(parked_nr as u64) {
            unsafe {
                (*pending).hook_matched = 1;
                (*pending).hook_entry = entry_id;
            }
            return;
        }
    }
    let Some(mut entry) = EVENTS.reserve::<FileEvent>(0) else {
        count_drop(DROP_RING_FULL_FILE_HOOK);
        return;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e.header = header(EVENT_FILE, tgid, tid);
    e.op = op;
    e.entry_id = entry_id;
    e.dfd = crate::resolve::AT_FDCWD;
    e.open_flags = 0;
    e.ret = ret;
    e.matched_by = FILE_MATCH_HOOK;
    e.base_dev = 0;
    e.base_ino = 0;
    e.path_truncated = 0;
    e.path = [0; PATH_LEN];
    e.path_len = 0;
    let name: Result<u64, i64> = kread(dentry + hoff(HOFF_DENTRY_NAME) + hoff(HOFF_QSTR_NAME));
    if let Ok(name) = name
        && let Ok(read) = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut e.path) }
    {
        e.path_len = read.len() as u32;
    }
    entry.submit(0);
}

#[lsm(hook = "file_open")]
pub fn lsm_file_open(ctx: LsmContext) -> i32 {
    on_hook(ctx.arg(0), Obj::File, FILE_OP_HOOK_OPEN, 0);
    0
}

#[lsm(hook = "inode_readlink")]
pub fn lsm_inode_readlink(ctx: LsmContext) -> i32 {
    on_hook(ctx.arg(0), Obj::Dentry, FILE_OP_HOOK_READLINK, 0);
    0
}

#[lsm(hook = "file_receive")]
pub fn lsm_file_receive(ctx: LsmContext) -> i32 {
    on_hook(ctx.arg(0), Obj::File, FILE_OP_HOOK_RECEIVE, 0);
    0
}

/// Syscalls whose stats the hook leaves alone (x86-64 numbers, and the 32-bit table's
/// fstat and fstat64, which `current_syscall` gives for an int 0x80 call): stat,
/// fstat, lstat, newfstatat and statx by path are traced and matched by the file
/// they reached; a stat of an fd (fstat, or `""` with AT_EMPTY_PATH, as glibc's
/// fstat is) learns nothing about a file whose open was already seen, and reporting
/// it would repeat every open of a policy file that libc follows with an fstat.
const STAT_SYSCALLS: [u64; 7] = [4, 5, 6, 262, 332, 108, 197];

/// A stat through any other way in (a 32-bit stat64, io_uring statx, ...): every
/// stat reaches `inode_getattr`.
#[inline(always)]
fn on_getattr(path: u64) {
    if !is_watched(current_ids().0) {
        return;
    }
    if let Some(nr) = current_syscall()
        && STAT_SYSCALLS.contains(&nr)
    {
        return;
    }
    on_hook(path, Obj::Path, FILE_OP_HOOK_GETATTR, 0);
}

#[lsm(hook = "inode_getattr")]
pub fn lsm_inode_getattr(ctx: LsmContext) -> i32 {
    on_getattr(ctx.arg(0));
    0
}

/// fexit, so that the event carries the LSMs' verdict on the open.
#[fexit(function = "security_file_open")]
pub fn fx_security_file_open(ctx: FExitContext) -> i32 {
    // The return value follows the one argument in the context; read directly
    // because `bpf_get_func_ret` needs 5.17.
    let ret: i64 = ctx.arg(1);
    on_hook(ctx.arg(0), Obj::File, FILE_OP_HOOK_OPEN, ret as i32);
    0
}

#[fentry(function = "security_inode_readlink")]
pub fn fx_security_inode_readlink(ctx: FEntryContext) -> i32 {
    on_hook(ctx.arg(0), Obj::Dentry, FILE_OP_HOOK_READLINK, 0);
    0
}

#[fentry(function = "security_file_receive")]
pub fn fx_security_file_receive(ctx: FEntryContext) -> i32 {
    on_hook(ctx.arg(0), Obj::File, FILE_OP_HOOK_RECEIVE, 0);
    0
}

#[fentry(function = "security_inode_getattr")]
pub fn fx_security_inode_getattr(ctx: FEntryContext) -> i32 {
    on_getattr(ctx.arg(0));
    0
}
