//! Map names, map value layouts and the indices of the array maps.

/// Map names as they appear in the object file; both sides use these constants.
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_WATCHED: &str = "WATCHED";
pub const MAP_ENV_NAMES: &str = "ENV_NAMES";
pub const MAP_PATHS: &str = "PATHS";
pub const MAP_DROPS: &str = "DROPS";
pub const MAP_TP_OFFSETS: &str = "TP_OFFSETS";
pub const MAP_SETTINGS: &str = "SETTINGS";
pub const MAP_SELECT_COMMS: &str = "SELECT_COMMS";
pub const MAP_INODES: &str = "INODES";
pub const MAP_BASENAMES: &str = "BASENAMES";
pub const MAP_KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
pub const MAP_ENV_PREFIXES: &str = "ENV_PREFIXES";
pub const MAP_SELECT_UIDS: &str = "SELECT_UIDS";

/// Key of `SELECT_COMMS`: a program name as the kernel keeps it in `comm` (the
/// executable's basename, cut at 15 bytes), zero padded.
pub type CommKey = [u8; 16];

/// `SETTINGS` slots (an array of `u32`, written by userspace from the policy).
/// Non-zero: report reads of `/proc/<pid>/environ` (some category asks for them).
pub const SETTING_PROC_ENVIRON: u32 = 0;
/// Non-zero: some selector is in use (`SELECT_COMMS`, `SELECT_UIDS`, or candidates);
/// every exec parks its argv, and an exec whose program name or uid is selected starts
/// watching that process (and, through fork, its descendants).
pub const SETTING_SELECTION: u32 = 1;
/// Non-zero: `INODES` is filled and `KERNEL_OFFSETS` is valid, so the files sensor
/// also matches by the file a syscall reached (dev, inode), whatever path named it.
pub const SETTING_INODES: u32 = 2;
/// Non-zero: `BASENAMES` is filled; paths the kernel could not match whose last
/// component is a policy basename go to userspace to be resolved there.
pub const SETTING_BASENAMES: u32 = 3;
/// Non-zero: `ENV_PREFIXES` holds policy env globs (`LC_*`), looked up when a name is
/// not in `ENV_NAMES`.
pub const SETTING_ENV_PREFIXES: u32 = 4;
/// Non-zero: the policy has selectors only userspace evaluates (exe globs, argv), so
/// execs of unwatched, unselected processes are sent as `EVENT_EXEC_CANDIDATE`.
pub const SETTING_EXEC_CANDIDATES: u32 = 5;
pub const SETTING_SLOTS: u32 = 8;
/// `FileEvent::entry_id` of a `/proc/<pid>/environ` read (not a `PATHS` entry).
pub const ENTRY_PROC_ENVIRON: u32 = u32::MAX;

/// Key of `INODES`: a file as the kernel names it. `dev` is the kernel-internal
/// encoding (`MKDEV`: major << 20 | minor), as in `super_block::s_dev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u64,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);

/// Key of `BASENAMES`: the last path component, cut to `BASENAME_LEN - 1` bytes,
/// zero padded.
pub type BasenameKey = [u8; crate::BASENAME_LEN];

/// `KERNEL_OFFSETS` slots: byte offsets of struct members, from the kernel's BTF.
/// The files sensor follows task -> files -> fdtable -> file -> inode -> super_block
/// (the file a syscall reached) and task -> fs -> pwd -> dentry -> inode (the cwd).
pub const KOFF_TASK_FILES: u32 = 0;
pub const KOFF_TASK_FS: u32 = 1;
pub const KOFF_FILES_FDT: u32 = 2;
pub const KOFF_FDT_MAX_FDS: u32 = 3;
pub const KOFF_FDT_FD: u32 = 4;
pub const KOFF_FILE_INODE: u32 = 5;
pub const KOFF_INODE_INO: u32 = 6;
pub const KOFF_INODE_SB: u32 = 7;
pub const KOFF_SB_DEV: u32 = 8;
pub const KOFF_FS_PWD: u32 = 9;
pub const KOFF_PATH_DENTRY: u32 = 10;
pub const KOFF_DENTRY_INODE: u32 = 11;
pub const KOFF_SLOTS: u32 = 12;

/// Value of a `WATCHED` entry (key: tgid).
///
/// `origin` says why the process is watched, so userspace can tell a root it chose
/// from a descendant the kernel added at fork.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchEntry {
    pub origin: u32,
    /// tgid of the parent that passed the watch on at fork (0 for roots).
    pub parent_tgid: u32,
}
const _: () = assert!(core::mem::size_of::<WatchEntry>() == 8);

pub const WATCH_ORIGIN_ROOT: u32 = 1;
pub const WATCH_ORIGIN_FORK: u32 = 2;
/// Watched because its program name is selected by the policy, from its exec on.
pub const WATCH_ORIGIN_SELECTED: u32 = 3;

/// Value stored in `ENV_NAMES` and `PATHS`: the id of the policy entry that put the
/// key there. Userspace maps it back to category and matcher.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyRef {
    pub entry_id: u32,
    /// `PATH_MATCH_*`: whether the path entry is exact or a prefix.
    pub match_kind: u32,
}
const _: () = assert!(core::mem::size_of::<PolicyRef>() == 8);

pub const PATH_MATCH_EXACT: u32 = 1;
pub const PATH_MATCH_PREFIX: u32 = 2;
/// `PolicyRef::match_kind` of an env name whose value prefix is reported when it is
/// present at exec (proxy and relay URLs; never for secrets).
pub const ENV_CAPTURE_VALUE: u32 = 1;

/// Key of `ENV_NAMES`: the name in ASCII upper case, zero padded. The kernel folds the
/// looked-up name the same way, so `https_proxy` and `HTTPS_PROXY` hit one entry;
/// userspace then applies the policy's own case rule to the original name.
pub type EnvNameKey = [u8; crate::ENV_NAME_LEN];

/// Per-CPU drop counters (`DROPS`, a per-CPU array), one slot per reason.
/// Userspace sums the CPUs and reports every non-zero slot.
pub const DROP_RING_FULL_EXEC: u32 = 0;
pub const DROP_RING_FULL_FORK: u32 = 1;
pub const DROP_RING_FULL_EXIT: u32 = 2;
pub const DROP_RING_FULL_FILE: u32 = 3;
pub const DROP_RING_FULL_ENV: u32 = 4;
pub const DROP_RING_FULL_CONNECT: u32 = 5;
/// A watched process forked but the watched map was full: its child is not watched.
pub const DROP_WATCHED_FULL: u32 = 6;
/// Exec arguments could not be parked between sys_enter_execve and sched_process_exec.
pub const DROP_PENDING_FULL: u32 = 7;
/// A watched thread's path argument could not be read at syscall exit.
pub const DROP_UNREADABLE_PATH: u32 = 8;
/// A watched thread's getenv name could not be read at return.
pub const DROP_UNREADABLE_ENV_NAME: u32 = 9;
/// A watched thread's connect address could not be read.
pub const DROP_UNREADABLE_SOCKADDR: u32 = 10;
/// A watched process forked but the child's pid could not be read: the child is not
/// watched.
pub const DROP_UNREADABLE_FORK: u32 = 11;
pub const DROP_RING_FULL_ENV_AT_EXEC: u32 = 12;
/// An exec's environment had more than `EXEC_ENV_MAX_ENTRIES` entries; the rest were
/// not scanned.
pub const DROP_ENV_SCAN_INCOMPLETE: u32 = 13;
pub const DROP_RING_FULL_CONNECT_OUTCOME: u32 = 14;
pub const DROP_RING_FULL_UDP: u32 = 15;
pub const DROP_RING_FULL_DNS_ANSWER: u32 = 16;
/// A datagram's payload or message header could not be read.
pub const DROP_UNREADABLE_DATAGRAM: u32 = 17;
/// The kernel pointers from a watched syscall to the file it reached could not be
/// read, so the file was not matched by inode (only by its path string).
pub const DROP_UNREADABLE_INODE: u32 = 18;
// Slots 19..=47 are kept for other sensors' reasons (see DROP_SLOT_NAMES).
/// A watched path syscall named a path longer than `PATH_LEN - 1` bytes that matched
/// nothing in the kernel: its end was not read, so it may have named a policy file.
pub const DROP_PATH_TRUNCATED_UNMATCHED: u32 = 48;
/// A file hook (BPF-LSM or fentry) could not emit: the ring buffer was full.
pub const DROP_RING_FULL_FILE_HOOK: u32 = 49;
/// A file hook could not follow the kernel's pointers to the file's inode.
pub const DROP_UNREADABLE_HOOK_INODE: u32 = 50;
pub const DROP_SLOTS: u32 = 64;

/// Names of the drop slots, indexed by slot, for reports.
pub const DROP_SLOT_NAMES: [&str; DROP_SLOTS as usize] = [
    "ring_full_exec",
    "ring_full_fork",
    "ring_full_exit",
    "ring_full_file",
    "ring_full_env",
    "ring_full_connect",
    "watched_map_full",
    "exec_pending_map_full",
    "unreadable_path",
    "unreadable_env_name",
    "unreadable_sockaddr",
    "unreadable_fork_child",
    "ring_full_env_at_exec",
    "env_scan_incomplete",
    "ring_full_connect_outcome",
    "ring_full_udp",
    "ring_full_dns_answer",
    "unreadable_datagram",
    "unreadable_inode",
    // 19..=47: not in use yet (an empty name is not reported).
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    // 48..=63: the files sensor's tiers.
    "path_truncated_unmatched",
    "ring_full_file_hook",
    "unreadable_hook_inode",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
];

/// Field offsets of the sched/task tracepoints, read by userspace from tracefs
/// `format` files and written into the `TP_OFFSETS` array, because these layouts
/// change between kernel versions (6.18 turned the sched_process_fork comms into
/// `__data_loc` strings, for example). An offset of 0 means "field absent".
pub const TP_NEWTASK_PID: u32 = 0;
pub const TP_NEWTASK_CLONE_FLAGS: u32 = 1;
pub const TP_EXEC_FILENAME: u32 = 2;
pub const TP_EXEC_OLD_PID: u32 = 3;
/// `sched_process_exit.group_dead` (added in 6.x); without it the leader's exit is
/// taken as the group's.
pub const TP_EXIT_GROUP_DEAD: u32 = 4;
/// `sock:inet_sock_set_state` fields.
pub const TP_SOCK_SKADDR: u32 = 5;
pub const TP_SOCK_OLDSTATE: u32 = 6;
pub const TP_SOCK_NEWSTATE: u32 = 7;
pub const TP_SOCK_DPORT: u32 = 8;
pub const TP_SOCK_FAMILY: u32 = 9;
pub const TP_SOCK_DADDR: u32 = 10;
pub const TP_SOCK_DADDR_V6: u32 = 11;
pub const TP_OFFSET_SLOTS: u32 = 12;

/// Map of struct offsets the file hooks follow beyond `KERNEL_OFFSETS`.
pub const MAP_HOOK_OFFSETS: &str = "HOOK_OFFSETS";
/// `HOOK_OFFSETS` slots, from the kernel's BTF: `file.f_path`, `dentry.d_name`,
/// `qstr.name` (the hooks name the file by its last component).
pub const HOFF_FILE_PATH: u32 = 0;
pub const HOFF_DENTRY_NAME: u32 = 1;
pub const HOFF_QSTR_NAME: u32 = 2;
/// `task_struct.stack`: the kernel stack, whose top holds the task's `pt_regs`.
pub const HOFF_TASK_STACK: u32 = 3;
pub const HOFF_SLOTS: u32 = 4;
