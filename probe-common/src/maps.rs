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
pub const MAP_OWN_HOME_PATHS: &str = "OWN_HOME_PATHS";
pub const MAP_WATCH_HINT: &str = "WATCH_HINT";

/// `WATCH_HINT` keeps one byte per tgid, in blocks of this many (one array element).
pub const WATCH_HINT_BLOCK: usize = 64;
/// Blocks the object declares: enough for `PID_MAX_LIMIT` (4,194,304) on 64-bit.
/// Userspace sizes the map to the running kernel's `pid_max` at load.
pub const WATCH_HINT_MAX_BLOCKS: u32 = 65_536;

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
/// Bit `1 << HOST_CALL_*` set: some category counts that host-identity call
/// (uname, SIOCGIFHWADDR, RTM_GETLINK); the host programs return early otherwise.
pub const SETTING_HOST_CALLS: u32 = 6;
/// Non-zero: `OWN_HOME_PATHS` holds the policy's `~/` prefixes and globs, looked up
/// under each watched process's own `HOME` and `XDG_CONFIG_HOME` (`WatchEntry`).
pub const SETTING_OWN_HOME: u32 = 7;
/// Slots 8 and 9 are the block switches (`block::SETTING_BLOCK_RULES`, `SETTING_ENFORCE`).
pub const SETTING_SLOTS: u32 = 16;
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
/// The process family's tp_btf programs (`probe-ebpf/src/process.rs`), which get
/// kernel pointers where the tracepoints got a record: `task_struct.pid` (the child
/// of `task_newtask`), `linux_binprm.filename` (`sched_process_exec`), and
/// `task_struct.signal` -> `signal_struct.live` (`sched_process_exit`: the group is
/// dead when no thread is left alive).
pub const KOFF_TASK_PID: u32 = 12;
pub const KOFF_BPRM_FILENAME: u32 = 13;
pub const KOFF_TASK_SIGNAL: u32 = 14;
pub const KOFF_SIGNAL_LIVE: u32 = 15;
/// The TCP outcome's raw tracepoint (`probe-ebpf/src/net_state.rs`), handed a
/// `struct sock *`: the destination members of its `sock_common` (the first member of
/// `struct sock`).
pub const KOFF_SKC_FAMILY: u32 = 16;
pub const KOFF_SKC_DPORT: u32 = 17;
pub const KOFF_SKC_DADDR: u32 = 18;
pub const KOFF_SKC_V6_DADDR: u32 = 19;
pub const KOFF_SLOTS: u32 = 20;

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
    /// Bytes of the `HOME` the process was given at its last exec (trailing slash
    /// dropped), 0 when unset, cut or unknown: where its `~/` ends in a path it opens.
    /// Set when an exec succeeds (from `next_home_len`), passed on at fork.
    pub home_len: u16,
    /// The same for `XDG_CONFIG_HOME`, which stands for `~/.config`.
    pub config_len: u16,
    /// What the env scan at the entry of an exec in progress found; made current by
    /// the exec's success (`sched_process_exec`), so a failed execve changes nothing.
    pub next_home_len: u16,
    pub next_config_len: u16,
    /// [`home_hash`] of those `home_len` bytes of `HOME`, 0 when the value is not an
    /// absolute path other than `/`. The file programs compare it with the same hash
    /// of a path's first `home_len` bytes, so a read under the process's own home is
    /// known in the kernel, not only a candidate of the right length (a block rule
    /// counts it at once; see `probe-ebpf/src/own_home.rs`).
    pub home_hash: u64,
    /// The same for `XDG_CONFIG_HOME` and `config_len`.
    pub config_hash: u64,
    pub next_home_hash: u64,
    pub next_config_hash: u64,
}
const _: () = assert!(core::mem::size_of::<WatchEntry>() == 48);

/// Bytes [`home_hash`] reads: a home value is used only when shorter
/// (`ENV_VALUE_PREFIX_LEN`).
pub const HOME_HASH_BYTES: usize = 64;
const _: () = assert!(crate::ENV_VALUE_PREFIX_LEN == HOME_HASH_BYTES);
const _: () = assert!(crate::PATH_LEN >= HOME_HASH_BYTES);

/// A hash of the first `len` bytes of `bytes` (`len` below [`HOME_HASH_BYTES`]), the
/// rest ignored: eight 8-byte words, those past `len` masked off, mixed with the
/// length. The same in the exec scan (the value of `HOME`), the file programs (the
/// front of a path) and userspace tests. Not keyed: a collision can only make the
/// kernel count a read that is not under the home, never hide one that is (equal
/// bytes always hash equal).
#[inline(always)]
pub fn home_hash(bytes: &[u8; HOME_HASH_BYTES], len: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ len as u64;
    let mut i = 0;
    while i < HOME_HASH_BYTES / 8 {
        let at = i * 8;
        let mut w = u64::from_le_bytes([
            bytes[at],
            bytes[at + 1],
            bytes[at + 2],
            bytes[at + 3],
            bytes[at + 4],
            bytes[at + 5],
            bytes[at + 6],
            bytes[at + 7],
        ]);
        if at >= len {
            w = 0;
        } else if len - at < 8 {
            w &= (1u64 << ((len - at) * 8)) - 1;
        }
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 31;
        i += 1;
    }
    h
}

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

/// Value of `INODES`: the file-index id of the policy file (userspace names it from
/// the index) and the `BLOCK_ENTRIES` key whose slots a probe of it feeds
/// (`BLOCK_ENTRY_NONE`: none). The file syscalls and the file hooks match files by
/// inode, not by the path a process wrote, so a block rule must be fed from here
/// too, or `cd /etc && cat localtime` would read a category without the kernel
/// counting it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeRef {
    pub entry_id: u32,
    pub block_entry: u32,
}
const _: () = assert!(core::mem::size_of::<InodeRef>() == 8);

pub const PATH_MATCH_EXACT: u32 = 1;
pub const PATH_MATCH_PREFIX: u32 = 2;
/// `PolicyRef::match_kind` of an env name whose value prefix is reported when it is
/// present at exec (proxy and relay URLs; never for secrets).
pub const ENV_CAPTURE_VALUE: u32 = 1;
/// `PolicyRef::match_kind` of an env name only the exec-time scan reports (the
/// process's own `HOME` and `XDG_CONFIG_HOME`, which place its `~/`): a getenv of it
/// is not an event.
pub const ENV_EXEC_ONLY: u32 = 2;
/// `PolicyRef::match_kind` of `HOME` in `ENV_NAMES`: the exec scan keeps its value's
/// length in the process's `WatchEntry::home_len`.
pub const ENV_OWN_HOME: u32 = 4;
/// The same for `XDG_CONFIG_HOME` (`WatchEntry::config_len`).
pub const ENV_OWN_CONFIG: u32 = 8;

/// First byte of an `OWN_HOME_PATHS` key: what follows is relative to `HOME`...
pub const OWN_HOME_UNDER_HOME: u8 = 1;
/// ... or to `XDG_CONFIG_HOME` (`~/.config/gcloud/` is stored as `/gcloud/`).
pub const OWN_HOME_UNDER_CONFIG: u8 = 2;

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
// Slots 19..=31 (31 still free): losses of the per-thread entry maps and of the net sensor.
/// A watched thread's connect could not be parked (`PENDING_CONNECT` full): its
/// result is lost; the cgroup hook still reports the destination.
pub const DROP_PENDING_CONNECT_FULL: u32 = 19;
/// A watched thread's path argument could not be parked (`PENDING_PATH` full).
pub const DROP_PENDING_PATH_FULL: u32 = 20;
/// A watched thread's getenv could not be parked (`PENDING_ENV` full).
pub const DROP_PENDING_ENV_FULL: u32 = 21;
/// A watched thread's send could not be parked (`IN_SEND` full): the cgroup hook
/// still reports the destinations, a DNS query's name is lost.
pub const DROP_PENDING_SEND_FULL: u32 = 22;
/// A watched thread's recvfrom could not be parked (`PENDING_RECV` full).
pub const DROP_PENDING_RECV_FULL: u32 = 23;
/// A watched thread reached the exit of connect(2) without its parked entry.
pub const DROP_CONNECT_EXIT_WITHOUT_ENTRY: u32 = 24;
/// A watched thread reached the exit of a path syscall without its parked entry.
pub const DROP_PATH_EXIT_WITHOUT_ENTRY: u32 = 25;
/// A watched thread returned from getenv without its parked entry.
pub const DROP_ENV_EXIT_WITHOUT_ENTRY: u32 = 26;
/// A watched thread reached the exit of a send syscall without its parked entry.
pub const DROP_SEND_EXIT_WITHOUT_ENTRY: u32 = 27;
/// A watched thread reached the exit of recvfrom without its parked entry.
pub const DROP_RECV_EXIT_WITHOUT_ENTRY: u32 = 28;
/// A watched thread's path was longer than `PATH_LEN - 1` bytes and matched no
/// policy entry by its cut prefix, inode or basename: it could not be checked whole.
pub const DROP_PATH_TRUNCATED: u32 = 29;
/// A sendmmsg had more messages than the sensor looks into (`MMSG_MAX`): their
/// destinations are reported by the cgroup hook, a DNS name in them is not.
pub const DROP_MMSG_NOT_INSPECTED: u32 = 30;
/// A watched process's host-identity call was lost: the ring was full.
pub const DROP_RING_FULL_HOST_CALL: u32 = 64;
/// The interface name of a watched SIOCGIFHWADDR, or the netlink header of a watched
/// send, could not be read.
pub const DROP_UNREADABLE_HOST_CALL: u32 = 65;
/// A watched process's executable mapping was not reported: the ring was full (its
/// libc, if it was one, gets no getenv uprobes until the next exec or mapping).
pub const DROP_RING_FULL_EXEC_MAPPED: u32 = 66;
/// The file behind a watched executable mapping could not be named (dev, ino):
/// userspace rescans the process's maps a few times instead of until it appears.
pub const DROP_UNREADABLE_EXEC_MAPPED: u32 = 67;
/// A watched process's read of another process's memory was lost: the ring was full.
pub const DROP_RING_FULL_PEER_MEMORY: u32 = 40;
/// A file hook (BPF-LSM or fentry) could not emit: the ring buffer was full.
pub const DROP_RING_FULL_FILE_HOOK: u32 = 49;
/// A file hook could not follow the kernel's pointers to the file's inode.
pub const DROP_UNREADABLE_HOOK_INODE: u32 = 50;
/// A watched process's first bytes on a connection were lost: the ring was full
/// (the connection is reported without its TLS server name or HTTP request line).
pub const DROP_RING_FULL_FIRST_BYTES: u32 = 70;
/// The first buffer a watched process sent on a connection could not be read.
pub const DROP_UNREADABLE_FIRST_BYTES: u32 = 71;
/// Slots in `DROPS`: 31..=39, 41..=48, 51..=63 and 68..=69 are free for other reasons (append to
/// `DROP_SLOT_NAMES`).
pub const DROP_SLOTS: u32 = 72;

/// Names of the drop slots, for reports: the one table both sides use. A slot not
/// listed is unused (never counted).
pub const DROP_SLOT_NAMES: &[(u32, &str)] = &[
    (DROP_RING_FULL_EXEC, "ring_full_exec"),
    (DROP_RING_FULL_FORK, "ring_full_fork"),
    (DROP_RING_FULL_EXIT, "ring_full_exit"),
    (DROP_RING_FULL_FILE, "ring_full_file"),
    (DROP_RING_FULL_ENV, "ring_full_env"),
    (DROP_RING_FULL_CONNECT, "ring_full_connect"),
    (DROP_WATCHED_FULL, "watched_map_full"),
    (DROP_PENDING_FULL, "exec_pending_map_full"),
    (DROP_UNREADABLE_PATH, "unreadable_path"),
    (DROP_UNREADABLE_ENV_NAME, "unreadable_env_name"),
    (DROP_UNREADABLE_SOCKADDR, "unreadable_sockaddr"),
    (DROP_UNREADABLE_FORK, "unreadable_fork_child"),
    (DROP_RING_FULL_ENV_AT_EXEC, "ring_full_env_at_exec"),
    (DROP_ENV_SCAN_INCOMPLETE, "env_scan_incomplete"),
    (DROP_RING_FULL_CONNECT_OUTCOME, "ring_full_connect_outcome"),
    (DROP_RING_FULL_UDP, "ring_full_udp"),
    (DROP_RING_FULL_DNS_ANSWER, "ring_full_dns_answer"),
    (DROP_UNREADABLE_DATAGRAM, "unreadable_datagram"),
    (DROP_UNREADABLE_INODE, "unreadable_inode"),
    (DROP_PENDING_CONNECT_FULL, "pending_connect_full"),
    (DROP_PENDING_PATH_FULL, "pending_path_full"),
    (DROP_PENDING_ENV_FULL, "pending_env_full"),
    (DROP_PENDING_SEND_FULL, "pending_send_full"),
    (DROP_PENDING_RECV_FULL, "pending_recv_full"),
    (
        DROP_CONNECT_EXIT_WITHOUT_ENTRY,
        "connect_exit_without_entry",
    ),
    (DROP_PATH_EXIT_WITHOUT_ENTRY, "path_exit_without_entry"),
    (DROP_ENV_EXIT_WITHOUT_ENTRY, "env_exit_without_entry"),
    (DROP_SEND_EXIT_WITHOUT_ENTRY, "send_exit_without_entry"),
    (DROP_RECV_EXIT_WITHOUT_ENTRY, "recv_exit_without_entry"),
    (DROP_PATH_TRUNCATED, "path_truncated_unmatched"),
    (DROP_MMSG_NOT_INSPECTED, "sendmmsg_messages_not_inspected"),
    (DROP_RING_FULL_HOST_CALL, "ring_full_host_call"),
    (DROP_UNREADABLE_HOST_CALL, "unreadable_host_call"),
    (DROP_RING_FULL_EXEC_MAPPED, "ring_full_exec_mapped"),
    (DROP_UNREADABLE_EXEC_MAPPED, "unreadable_exec_mapped"),
    (DROP_RING_FULL_PEER_MEMORY, "ring_full_peer_memory"),
    (DROP_RING_FULL_FILE_HOOK, "ring_full_file_hook"),
    (DROP_UNREADABLE_HOOK_INODE, "unreadable_hook_inode"),
    (DROP_RING_FULL_FIRST_BYTES, "ring_full_first_bytes"),
    (DROP_UNREADABLE_FIRST_BYTES, "unreadable_first_bytes"),
    (crate::block::DROP_RING_FULL_BLOCK, "ring_full_block"),
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

/// Every named slot exists in `DROPS` and is named once: a merge that gave two
/// reasons one slot would otherwise add their counts silently.
const _: () = {
    let names = DROP_SLOT_NAMES;
    let mut i = 0;
    while i < names.len() {
        assert!(names[i].0 < DROP_SLOTS);
        let mut j = i + 1;
        while j < names.len() {
            assert!(names[i].0 != names[j].0);
            j += 1;
        }
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::{HOME_HASH_BYTES, home_hash};

    fn buf(s: &str) -> [u8; HOME_HASH_BYTES] {
        let mut b = [0u8; HOME_HASH_BYTES];
        b[..s.len()].copy_from_slice(s.as_bytes());
        b
    }

    #[test]
    fn the_home_hash_reads_the_first_len_bytes_only() {
        let home = "/tmp/probectl/home";
        let h = home_hash(&buf(home), home.len());
        // A path under it: the bytes past the home do not count.
        let path = "/tmp/probectl/home/.claude/settings.json";
        assert_eq!(
            home_hash(&buf(&path[..HOME_HASH_BYTES.min(path.len())]), home.len()),
            h
        );
        // Same length, other bytes; a shorter or longer cut.
        assert_ne!(home_hash(&buf("/tmp/probectl/hoMe"), home.len()), h);
        assert_ne!(home_hash(&buf(home), home.len() - 1), h);
        assert_ne!(home_hash(&buf(path), home.len() + 1), h);
        // Every byte position counts, across word boundaries.
        for i in 0..home.len() {
            let mut b = buf(home);
            b[i] ^= 1;
            assert_ne!(home_hash(&b, home.len()), h, "byte {i}");
        }
        let long = "/home/a-rather-long-user-name/with/many/levels/below/it/x";
        assert_eq!(long.len(), 57);
        assert_ne!(home_hash(&buf(long), 57), home_hash(&buf(long), 56));
    }
}
