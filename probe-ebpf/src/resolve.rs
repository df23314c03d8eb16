//! Which file did a path syscall really reach? The path string alone misses relative
//! and dirfd-relative paths, `..`, `/proc/self/root/...` and symlinks. Two answers
//! that do not depend on the string:
//!
//! * **by inode**: the fd an open returned, or the stat buffer a stat filled, names
//!   a (device, inode); userspace put the files the policy names into `INODES`;
//! * **by basename**: for calls with no such result (readlink, access, a failed
//!   open), a path whose last component is a policy basename goes to userspace with
//!   the inode of the directory it is relative to (cwd or dirfd), to be resolved
//!   there.
//!
//! Kernel struct offsets come from BTF through `KERNEL_OFFSETS` (no CO-RE from Rust
//! with aya 0.14). Both are off unless userspace turned them on in `SETTINGS`.
//!
//! match-proto: struct task_struct { files, fs }; files_struct { fdt };
//! match-proto: fdtable { max_fds, fd }; file { f_inode }; inode { i_ino, i_sb };
//! match-proto: super_block { s_dev }; fs_struct { pwd }; path { dentry }; dentry { d_inode }

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    bpf_probe_read_user, generated::bpf_loop,
};
use probe_common::{
    BASENAME_LEN, BasenameKey, DROP_UNREADABLE_INODE, FILE_OP_CREAT, FILE_OP_OPEN, FILE_OP_OPENAT,
    FILE_OP_OPENAT2, InodeKey, InodeRef, KOFF_DENTRY_INODE, KOFF_FDT_FD, KOFF_FDT_MAX_FDS,
    KOFF_FILE_INODE, KOFF_FILES_FDT, KOFF_FS_PWD, KOFF_INODE_INO, KOFF_INODE_SB, KOFF_PATH_DENTRY,
    KOFF_SB_DEV, KOFF_TASK_FILES, KOFF_TASK_FS, PATH_LEN, PendingPath, SETTING_BASENAMES,
    SETTING_INODES, STAT_BUF_STAT, STAT_BUF_STATX,
};

use crate::{
    maps::{
        BASENAMES, INODES, KERNEL_OFFSETS, LOOP_SCRATCH, LOOP_SLOT_SLASH, PATH_SCRATCH, SETTINGS,
    },
    util::count_drop,
};

pub const AT_FDCWD: i32 = -100;

#[inline(always)]
fn setting(slot: u32) -> bool {
    SETTINGS.get(slot).is_some_and(|on| *on != 0)
}

#[inline(always)]
pub(crate) fn koff(slot: u32) -> u64 {
    KERNEL_OFFSETS.get(slot).map_or(0, |off| *off as u64)
}

#[inline(always)]
pub(crate) fn kread<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: a fault-tolerant read of kernel memory; a bad address is an error.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.map_err(|e| e as i64)
}

#[inline(always)]
fn uread<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: a fault-tolerant read of user memory.
    unsafe { bpf_probe_read_user(addr as *const T) }.map_err(|e| e as i64)
}

/// (dev, ino) of a `struct inode *`.
#[inline(always)]
pub(crate) fn inode_key(inode: u64) -> Result<InodeKey, i64> {
    let ino: u64 = kread(inode + koff(KOFF_INODE_INO))?;
    let sb: u64 = kread(inode + koff(KOFF_INODE_SB))?;
    let dev: u32 = kread(sb + koff(KOFF_SB_DEV))?;
    Ok(InodeKey {
        dev: dev as u64,
        ino,
    })
}

/// (dev, ino) of the file behind one of the current task's fds.
#[inline(always)]
pub fn fd_key(fd: i32) -> Result<InodeKey, i64> {
    inode_key(fd_inode(fd)?)
}

/// The inode behind one of the current task's fds.
#[inline(always)]
fn fd_inode(fd: i32) -> Result<u64, i64> {
    if fd < 0 {
        return Err(-1);
    }
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = kread(task + koff(KOFF_TASK_FILES))?;
    let fdt: u64 = kread(files + koff(KOFF_FILES_FDT))?;
    let max_fds: u32 = kread(fdt + koff(KOFF_FDT_MAX_FDS))?;
    if fd as u32 >= max_fds {
        return Err(-1);
    }
    let fds: u64 = kread(fdt + koff(KOFF_FDT_FD))?;
    let file: u64 = kread(fds + fd as u64 * 8)?;
    if file == 0 {
        return Err(-1);
    }
    kread(file + koff(KOFF_FILE_INODE))
}

/// The inode of the current task's working directory.
#[inline(always)]
fn cwd_inode() -> Result<u64, i64> {
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let fs: u64 = kread(task + koff(KOFF_TASK_FS))?;
    let dentry: u64 = kread(fs + koff(KOFF_FS_PWD) + koff(KOFF_PATH_DENTRY))?;
    kread(dentry + koff(KOFF_DENTRY_INODE))
}

/// Kernel-internal `MKDEV` from the user encoding `struct stat` carries.
#[inline(always)]
fn dev_from_user(dev: u64) -> u64 {
    let major = (dev >> 8) & 0xfff;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    (major << 20) | minor
}

/// The file the syscall reached, from its result: the fd an open returned, or the
/// stat buffer. `None` when the call gave neither (failed, readlink, access, an
/// empty path, which is an `fstat` on an fd and no new probe).
#[inline(always)]
fn reached(pending: &PendingPath, ret: i64, path_len: usize) -> Option<InodeKey> {
    if path_len == 0 {
        return None;
    }
    let is_open = matches!(
        pending.op,
        FILE_OP_OPEN | FILE_OP_OPENAT | FILE_OP_OPENAT2 | FILE_OP_CREAT
    );
    let found = if is_open && ret >= 0 {
        fd_inode(ret as i32).and_then(inode_key)
    } else if ret == 0 && pending.stat_kind == STAT_BUF_STAT {
        let dev: Result<u64, i64> = uread(pending.stat_buf);
        dev.and_then(|dev| {
            uread::<u64>(pending.stat_buf + 8).map(|ino| InodeKey {
                dev: dev_from_user(dev),
                ino,
            })
        })
    } else if ret == 0 && pending.stat_kind == STAT_BUF_STATX {
        let ino: Result<u64, i64> = uread(pending.stat_buf + 32);
        ino.and_then(|ino| {
            let major: u32 = uread(pending.stat_buf + 136)?;
            let minor: u32 = uread(pending.stat_buf + 140)?;
            Ok(InodeKey {
                dev: ((major as u64) << 20) | minor as u64,
                ino,
            })
        })
    } else {
        return None;
    };
    match found {
        Ok(key) => Some(key),
        Err(_) => {
            count_drop(DROP_UNREADABLE_INODE);
            None
        }
    }
}

/// The file-index entry of the file the syscall reached, if the policy names that
/// file.
#[inline(always)]
pub fn by_inode(pending: &PendingPath, ret: i64, path_len: usize) -> Option<InodeRef> {
    if !setting(SETTING_INODES) {
        return None;
    }
    let key = reached(pending, ret, path_len)?;
    // SAFETY: read-only lookup of a plain value.
    unsafe { INODES.get(&key) }.copied()
}

/// The directory a relative path is relative to, as (dev, ino); zeros when the path
/// is absolute or the pointers could not be followed.
#[inline(always)]
pub fn base_dir(path_first_byte: u8, dfd: i32) -> InodeKey {
    if path_first_byte == b'/' || !setting(SETTING_INODES) {
        return InodeKey::default();
    }
    let inode = if dfd == AT_FDCWD {
        cwd_inode()
    } else {
        fd_inode(dfd)
    };
    inode.and_then(inode_key).unwrap_or_default()
}

/// State of the last-slash search.
#[repr(C)]
struct SlashSearch {
    len: u32,
    /// Index just past the last '/', or 0.
    start: u32,
}

#[inline(never)]
extern "C" fn find_slash(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer `by_basename` gave it.
    let search = unsafe { &mut *ctx.cast::<SlashSearch>() };
    if index >= search.len {
        return 1;
    }
    let Some(scratch) = PATH_SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch filled by the exit program that runs this loop.
    let byte = unsafe { (*scratch).data[(index as usize) & (PATH_LEN - 1)] };
    if byte == b'/' {
        search.start = index + 1;
    }
    0
}

/// Policy entry whose basename the path ends with, for paths the kernel cannot
/// resolve itself. The path is in `PATH_SCRATCH`. The last-slash search runs in a
/// `bpf_loop` callback (5.17+), so the verifier checks one iteration.
#[inline(always)]
pub fn by_basename(path_len: usize) -> Option<u32> {
    if !setting(SETTING_BASENAMES) || path_len == 0 {
        return None;
    }
    let mut search = SlashSearch {
        len: path_len as u32,
        start: 0,
    };
    // SAFETY: `find_slash` has the callback signature bpf_loop expects; `search`
    // outlives the call.
    unsafe {
        bpf_loop(
            PATH_LEN as u32,
            find_slash as *mut c_void,
            (&raw mut search).cast(),
            0,
        )
    };
    basename_entry(search.start)
}

/// [`by_basename`] for kernels without `bpf_loop` (before 5.17): the same search as a
/// bounded loop, which the verifier walks iteration by iteration (5.3+). Its programs
/// must not reference `bpf_loop` at all: before 5.13 a callback subprogram alone makes
/// the load fail ("number of funcs in func_info doesn't match number of subprogs").
#[inline(always)]
pub fn by_basename_bounded(path_len: usize) -> Option<u32> {
    if !setting(SETTING_BASENAMES) || path_len == 0 {
        return None;
    }
    let scratch = PATH_SCRATCH.get_ptr(0)?;
    let start = LOOP_SCRATCH.get_ptr_mut(LOOP_SLOT_SLASH)?;
    // SAFETY: per-CPU slots, exclusively ours while this program runs. The volatile
    // accesses keep the position in map memory (see `LOOP_SCRATCH`).
    unsafe { core::ptr::write_volatile(start, 0) };
    for index in 0..PATH_LEN {
        if index >= path_len {
            break;
        }
        // SAFETY: per-CPU scratch filled by the exit program that runs this loop.
        if unsafe { (*scratch).data[index] } == b'/' {
            unsafe { core::ptr::write_volatile(start, index as u32 + 1) };
        }
    }
    basename_entry(unsafe { core::ptr::read_volatile(start) })
}

/// The policy entry of the basename that starts at `start` in `PATH_SCRATCH`.
#[inline(always)]
fn basename_entry(start: u32) -> Option<u32> {
    let scratch = PATH_SCRATCH.get_ptr(0)?;
    let mut key: BasenameKey = [0; BASENAME_LEN];
    // SAFETY: the scratch value is PATH_LEN bytes; the start is masked into it and
    // the string read stops at the NUL the scratch always has.
    let src = unsafe {
        (*scratch)
            .data
            .as_ptr()
            .add((start as usize) & (PATH_LEN - 1))
    };
    unsafe { bpf_probe_read_kernel_str_bytes(src, &mut key) }.ok()?;
    // SAFETY: read-only lookup of a plain value.
    unsafe { BASENAMES.get(&key) }.map(|policy| policy.entry_id)
}
