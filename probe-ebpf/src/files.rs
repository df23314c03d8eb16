//! Path-taking syscalls that name a policy path: the open family (how files are
//! read), readlink (how ICU and glibc find the zone name), the stat family and access
//! (how programs check for a file before or instead of reading it).
//!
//! match-proto: syscalls:sys_enter_open(filename, flags, mode)              + sys_exit_open(ret)
//! match-proto: syscalls:sys_enter_openat(dfd, filename, flags, mode)       + sys_exit_openat(ret)
//! match-proto: syscalls:sys_enter_openat2(dfd, filename, how, usize)       + sys_exit_openat2(ret)
//! match-proto: syscalls:sys_enter_creat(pathname, mode)                    + sys_exit_creat(ret)
//! match-proto: syscalls:sys_enter_readlink(path, buf, bufsiz)              + sys_exit_readlink(ret)
//! match-proto: syscalls:sys_enter_readlinkat(dfd, pathname, buf, bufsiz)   + sys_exit_readlinkat(ret)
//! match-proto: syscalls:sys_enter_newstat(filename, statbuf)               + sys_exit_newstat(ret)
//! match-proto: syscalls:sys_enter_newlstat(filename, statbuf)              + sys_exit_newlstat(ret)
//! match-proto: syscalls:sys_enter_newfstatat(dfd, filename, statbuf, flag) + sys_exit_newfstatat(ret)
//! match-proto: syscalls:sys_enter_statx(dfd, filename, flags, mask, buffer) + sys_exit_statx(ret)
//! match-proto: syscalls:sys_enter_access(filename, mode)                   + sys_exit_access(ret)
//! match-proto: syscalls:sys_enter_faccessat(dfd, filename, mode)           + sys_exit_faccessat(ret)
//! match-proto: syscalls:sys_enter_faccessat2(dfd, filename, mode, flags)   + sys_exit_faccessat2(ret)
//!
//! Entry parks the arguments of watched threads; exit reads the path (its page is
//! resident by then, see `FileEvent`), filters it through the policy trie and emits
//! it with the result. A path string that is not a policy path can still reach a
//! policy file (relative, `..`, symlinks): `resolve` matches those by inode, or
//! hands them to userspace by basename.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_buf, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    BLOCK_ENTRY_NONE, DROP_PATH_EXIT_WITHOUT_ENTRY, DROP_PATH_TRUNCATED, DROP_PENDING_PATH_FULL,
    DROP_RING_FULL_FILE, DROP_UNREADABLE_PATH, ENTRY_PROC_ENVIRON, EVENT_FILE, FILE_MATCH_BASENAME,
    FILE_MATCH_HOOK, FILE_MATCH_INODE, FILE_MATCH_OWN_HOME, FILE_MATCH_PATH, FILE_OP_ACCESS,
    FILE_OP_CREAT, FILE_OP_FACCESSAT, FILE_OP_FACCESSAT2, FILE_OP_FSTATAT, FILE_OP_LSTAT,
    FILE_OP_OPEN, FILE_OP_OPENAT, FILE_OP_OPENAT2, FILE_OP_READLINK, FILE_OP_READLINKAT,
    FILE_OP_STAT, FILE_OP_STATX, FileEvent, PATH_LEN, PendingPath, SETTING_PROC_ENVIRON,
    STAT_BUF_NONE, STAT_BUF_STAT, STAT_BUF_STATX,
};

use crate::{
    maps::{EVENTS, PATH_SCRATCH, PATHS, PENDING_PATH, SETTINGS},
    resolve::{self, AT_FDCWD},
    util::{
        SYSCALL_NR, SYSCALL_RET, count_drop, count_missing_entry, current_ids, header, is_watched,
        maybe_watched, park_entry, syscall_arg, take_parked,
    },
};

/// Where a syscall keeps the flags worth reporting.
#[derive(Clone, Copy)]
enum Flags {
    None,
    /// A plain argument (open/openat flags, statx/fstatat flags, faccessat2 flags).
    Arg(usize),
    /// `struct open_how *` argument: `flags` is its first `u64` (openat2).
    OpenHow(usize),
}

/// Where a stat-family syscall writes the file's identity.
#[derive(Clone, Copy)]
enum StatBuf {
    None,
    /// `struct stat *` argument.
    Stat(usize),
    /// `struct statx *` argument.
    Statx(usize),
}

/// One enter program (parks the arguments) and one exit program (reads the path,
/// filters, emits) per syscall. `dfd` is the argument index of the dirfd, if any.
macro_rules! path_syscall {
    ($enter:ident, $exit:ident, $op:expr, dfd: $dfd:expr, path: $path:expr, flags: $flags:expr) => {
        path_syscall!($enter, $exit, $op, dfd: $dfd, path: $path, flags: $flags, stat: StatBuf::None);
    };
    ($enter:ident, $exit:ident, $op:expr, dfd: $dfd:expr, path: $path:expr, flags: $flags:expr, stat: $stat:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            park(&ctx, $op, $dfd, syscall_arg($path), $flags, $stat);
            0
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            let _ = try_exit(&ctx);
            0
        }
    };
}

path_syscall!(sys_enter_open, sys_exit_open, FILE_OP_OPEN, dfd: None, path: 0, flags: Flags::Arg(1));
path_syscall!(sys_enter_openat, sys_exit_openat, FILE_OP_OPENAT, dfd: Some(0), path: 1, flags: Flags::Arg(2));
path_syscall!(sys_enter_openat2, sys_exit_openat2, FILE_OP_OPENAT2, dfd: Some(0), path: 1, flags: Flags::OpenHow(2));
path_syscall!(sys_enter_creat, sys_exit_creat, FILE_OP_CREAT, dfd: None, path: 0, flags: Flags::None);
path_syscall!(sys_enter_readlink, sys_exit_readlink, FILE_OP_READLINK, dfd: None, path: 0, flags: Flags::None);
path_syscall!(sys_enter_readlinkat, sys_exit_readlinkat, FILE_OP_READLINKAT, dfd: Some(0), path: 1, flags: Flags::None);
path_syscall!(sys_enter_newstat, sys_exit_newstat, FILE_OP_STAT, dfd: None, path: 0, flags: Flags::None, stat: StatBuf::Stat(1));
path_syscall!(sys_enter_newlstat, sys_exit_newlstat, FILE_OP_LSTAT, dfd: None, path: 0, flags: Flags::None, stat: StatBuf::Stat(1));
path_syscall!(sys_enter_newfstatat, sys_exit_newfstatat, FILE_OP_FSTATAT, dfd: Some(0), path: 1, flags: Flags::Arg(3), stat: StatBuf::Stat(2));
path_syscall!(sys_enter_statx, sys_exit_statx, FILE_OP_STATX, dfd: Some(0), path: 1, flags: Flags::Arg(2), stat: StatBuf::Statx(4));
path_syscall!(sys_enter_access, sys_exit_access, FILE_OP_ACCESS, dfd: None, path: 0, flags: Flags::None);
path_syscall!(sys_enter_faccessat, sys_exit_faccessat, FILE_OP_FACCESSAT, dfd: Some(0), path: 1, flags: Flags::None);
path_syscall!(sys_enter_faccessat2, sys_exit_faccessat2, FILE_OP_FACCESSAT2, dfd: Some(0), path: 1, flags: Flags::Arg(3));

/// `/proc/<anything>/SUFFIX`, while a category counts whole-environment reads
/// (`SETTINGS`): `/environ` is another process's (or its own) whole environment,
/// read in one go; `/mem` another process's memory, its environment included (a
/// process's own is left out by userspace).
#[inline(always)]
fn is_proc_file(path: &[u8; PATH_LEN], len: usize, suffix: &[u8]) -> bool {
    const PREFIX: &[u8; 6] = b"/proc/";
    if len < PREFIX.len() + suffix.len() || len >= PATH_LEN {
        return false;
    }
    if SETTINGS.get(SETTING_PROC_ENVIRON).is_none_or(|on| *on == 0) {
        return false;
    }
    for i in 0..PREFIX.len() {
        if path[i] != PREFIX[i] {
            return false;
        }
    }
    let start = len - suffix.len();
    for (i, &b) in suffix.iter().enumerate() {
        // Masked so the verifier sees the index stay inside the array.
        if path[(start + i) & (PATH_LEN - 1)] != b {
            return false;
        }
    }
    true
}

/// Parks the arguments of a watched thread's path syscall; unwatched threads cost one
/// lookup.
#[inline(always)]
fn park(
    ctx: &TracePointContext,
    op: u32,
    dfd_arg: Option<usize>,
    path_at: usize,
    flags: Flags,
    stat: StatBuf,
) {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return;
    }
    let Ok(path_ptr) = (unsafe { ctx.read_at::<u64>(path_at) }) else {
        return;
    };
    let dfd = match dfd_arg {
        Some(n) => unsafe { ctx.read_at::<i64>(syscall_arg(n)) }.unwrap_or(AT_FDCWD as i64) as i32,
        None => AT_FDCWD,
    };
    let open_flags = match flags {
        Flags::None => 0,
        Flags::Arg(n) => unsafe { ctx.read_at::<u64>(syscall_arg(n)) }.unwrap_or(0) as u32,
        Flags::OpenHow(n) => unsafe { ctx.read_at::<*const u64>(syscall_arg(n)) }
            .ok()
            .and_then(|how| unsafe { bpf_probe_read_user(how) }.ok())
            .unwrap_or(0) as u32,
    };
    let (stat_kind, stat_at) = match stat {
        StatBuf::None => (STAT_BUF_NONE, None),
        StatBuf::Stat(n) => (STAT_BUF_STAT, Some(n)),
        StatBuf::Statx(n) => (STAT_BUF_STATX, Some(n)),
    };
    let stat_buf = stat_at
        .and_then(|n| unsafe { ctx.read_at::<u64>(syscall_arg(n)) }.ok())
        .unwrap_or(0);
    park_entry(
        &PENDING_PATH,
        tid,
        &PendingPath {
            path_ptr,
            stat_buf,
            op,
            dfd,
            open_flags,
            stat_kind,
            hook_matched: 0,
            hook_entry: 0,
            syscall_nr: unsafe { ctx.read_at::<i32>(SYSCALL_NR) }.unwrap_or(-1) as u32,
            _pad0: 0,
        },
        DROP_PENDING_PATH_FULL,
    );
}

#[inline(always)]
fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    try_exit_with(ctx, resolve::by_basename)
}

/// Reads the parked path, filters it through the policy trie, and only then reserves
/// ring-buffer space. `by_basename` is [`resolve::by_basename`], or its bounded-loop
/// twin in the programs for kernels without `bpf_loop` (see `compat`).
#[inline(always)]
pub(crate) fn try_exit_with(
    ctx: &TracePointContext,
    by_basename: impl Fn(usize) -> Option<u32>,
) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !maybe_watched(tgid) {
        return Ok(());
    }
    let Some(pending) = take_parked(&PENDING_PATH, tid) else {
        count_missing_entry(tgid, DROP_PATH_EXIT_WITHOUT_ENTRY);
        return Ok(());
    };
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.map_err(|e| e as i64)?;
    let key = PATH_SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let key = unsafe { &mut *key };
    // Zeroed first so the bytes after the NUL, which are copied into the event, are
    // not left over from another process's lookup.
    key.data = [0; PATH_LEN];
    let Ok(path) =
        (unsafe { bpf_probe_read_user_str_bytes(pending.path_ptr as *const u8, &mut key.data) })
    else {
        count_drop(DROP_UNREADABLE_PATH);
        return Ok(());
    };
    let len = path.len();
    key.prefix_len = (PATH_LEN * 8) as u32;
    // The `BLOCK_ENTRIES` key of what matched: a path entry is its own key, a file
    // matched by inode carries one (`InodeRef`), a file hook fed at the hook, an
    // own-home hit verified against the home's hash is its own key, and a basename
    // or unverified own-home candidate is decided in userspace.
    let mut block_entry = BLOCK_ENTRY_NONE;
    let (entry_id, matched_by) = match PATHS.get(&*key) {
        Some(policy) => {
            block_entry = policy.entry_id;
            (policy.entry_id, FILE_MATCH_PATH)
        }
        None if is_proc_file(&key.data, len, b"/environ")
            || is_proc_file(&key.data, len, b"/mem") =>
        {
            // Of the `/proc` entry only `/environ` counts (`/mem` may be the
            // process's own): its last byte is `n`. The index goes through a
            // volatile read so that the compiler keeps the mask the verifier needs.
            let last = unsafe { core::ptr::read_volatile(&len) }.wrapping_sub(1) & (PATH_LEN - 1);
            if key.data[last] == b'n' {
                block_entry = ENTRY_PROC_ENVIRON;
            }
            (ENTRY_PROC_ENVIRON, FILE_MATCH_PATH)
        }
        None => match resolve::by_inode(&pending, ret, len) {
            Some(file) => {
                block_entry = file.block_entry;
                (file.entry_id, FILE_MATCH_INODE)
            }
            // A file hook saw this call reach a policy file the string and the
            // result did not name (an overlayfs lower file, a hardlinked symlink).
            None if pending.hook_matched != 0 && len > 0 => (pending.hook_entry, FILE_MATCH_HOOK),
            None => match crate::own_home::by_own_home(tgid, len)
                .map(|hit| {
                    if hit.verified {
                        block_entry = hit.entry_id;
                    }
                    (hit.entry_id, FILE_MATCH_OWN_HOME)
                })
                .or_else(|| by_basename(len).map(|entry_id| (entry_id, FILE_MATCH_BASENAME)))
            {
                Some(found) => found,
                None => {
                    // A path cut at PATH_LEN that nothing matched may still have
                    // named a policy file past the cut: it was not checked whole.
                    if len >= PATH_LEN - 1 {
                        count_drop(DROP_PATH_TRUNCATED);
                    }
                    return Ok(());
                }
            },
        },
    };
    if block_entry != BLOCK_ENTRY_NONE {
        crate::block::feed(tgid, block_entry, pending.op as usize, true);
    }
    let base = resolve::base_dir(key.data[0], pending.dfd);
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
    e.matched_by = matched_by;
    e.base_dev = base.dev;
    e.base_ino = base.ino;
    if unsafe { bpf_probe_read_kernel_buf(key.data.as_ptr(), &mut e.path) }.is_err() {
        e.path_len = 0;
    }
    entry.submit(0);
    Ok(())
}
