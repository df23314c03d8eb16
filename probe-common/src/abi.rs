//! Event layouts. Every event is `EventHeader` followed by a fixed payload.
//!
//! Event kinds are stable numbers: a decoder built against an older probe-common must
//! never mistake one kind for another, so numbers are never reused.

use crate::limits::{ARGV_SLOT_LEN, ARGV_SLOTS, ENV_NAME_LEN, ENV_VALUE_PREFIX_LEN, PATH_LEN};

pub const EVENT_EXEC: u32 = 1;
pub const EVENT_FORK: u32 = 2;
pub const EVENT_EXIT: u32 = 3;
/// An `ExecEvent` of a process nobody watches, sent while the policy has selectors
/// that only userspace can evaluate (exe globs, argv): userspace decides whether to
/// watch it. Nothing of it is reported unless it is selected.
pub const EVENT_EXEC_CANDIDATE: u32 = 4;
pub const EVENT_FILE: u32 = 10;
pub const EVENT_ENV: u32 = 20;
pub const EVENT_ENV_AT_EXEC: u32 = 21;
/// A watched process mapped a file executable after its exec (dlopen, dlmopen, a
/// libc loaded by hand): userspace looks for a libc to attach the getenv uprobes to.
pub const EVENT_EXEC_MAPPED: u32 = 22;
/// A watched process read another process's memory, where its environment lives
/// (`PeerMemoryEvent`).
pub const EVENT_PEER_MEMORY: u32 = 23;
pub const EVENT_CONNECT: u32 = 30;
pub const EVENT_CONNECT_UNIX: u32 = 31;
pub const EVENT_CONNECT_OUTCOME: u32 = 32;
pub const EVENT_UDP_SEND: u32 = 33;
pub const EVENT_DNS_ANSWER: u32 = 34;
/// A `ConnectEvent` from the cgroup connect hook for a connect made outside the
/// connect syscall (io_uring): no fd, no result yet (`ret` 0).
pub const EVENT_CONNECT_ISSUED: u32 = 35;
/// A watched process asked the kernel for host identity without reading a file
/// (`HostCallEvent`).
pub const EVENT_HOST_CALL: u32 = 40;

/// Common header at offset 0 of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of the `EVENT_*` numbers.
    pub kind: u32,
    /// CPU the event was produced on (`bpf_get_smp_processor_id`).
    pub cpu: u32,
    /// Thread-group id (the userspace "pid").
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// `bpf_ktime_get_boot_ns`: monotonic, counts suspend, comparable across CPUs.
    pub ktime_ns: u64,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 24);

/// `ExecEvent::flags`
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 0;
/// More arguments than `ARGV_SLOTS`; `argc` still counts them (up to 64).
pub const EXEC_ARGV_MORE: u32 = 1 << 1;
/// The arguments parked at sys_enter_execve were not found at sched_process_exec
/// (evicted or never parked): argv is missing, not empty.
pub const EXEC_ARGV_LOST: u32 = 1 << 2;
/// The kernel's selectors (program name, uid) picked this process at this exec: the
/// policy watches it on its own account, not because someone asked for its tree.
pub const EXEC_SELECTED: u32 = 1 << 3;

/// A successful execve/execveat of a watched process.
///
/// Filename and argv are read from user memory at `sys_enter_execve` (the old image),
/// parked per thread, and emitted at `sched_process_exec` once the exec succeeded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub uid: u32,
    pub gid: u32,
    /// Number of argv entries seen (slots filled, plus the ones that did not fit).
    pub argc: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    /// Bit `i` set: argv slot `i` was cut at `ARGV_SLOT_LEN - 1` bytes.
    pub argv_truncated_mask: u32,
    /// Bytes of `filename` before the NUL.
    pub filename_len: u32,
    pub filename: [u8; PATH_LEN],
    /// NUL-terminated argv strings, one per slot.
    pub argv: [[u8; ARGV_SLOT_LEN]; ARGV_SLOTS],
}
const _: () =
    assert!(core::mem::size_of::<ExecEvent>() == 24 + 24 + PATH_LEN + ARGV_SLOTS * ARGV_SLOT_LEN);

/// A watched process created a new process (not a thread: `task_newtask` gives the
/// clone flags, and `CLONE_THREAD` children share their group's watch).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub parent_tgid: u32,
    pub child_tgid: u32,
}
const _: () = assert!(core::mem::size_of::<ForkEvent>() == 32);

/// `ExitEvent::flags`: `exit_code` came from `exit_group(2)`. Without it the process
/// ended some other way (a signal, for example) and the code is unknown here.
pub const EXIT_CODE_KNOWN: u32 = 1 << 0;

/// The last thread of a watched thread group exited (the group is dead).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub exit_code: i32,
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 32);

/// `FileEvent::op`: which syscall touched the path. The value is an index into
/// `FILE_SYSCALLS`.
pub const FILE_OP_OPEN: u32 = 0;
pub const FILE_OP_OPENAT: u32 = 1;
pub const FILE_OP_READLINK: u32 = 2;
pub const FILE_OP_READLINKAT: u32 = 3;
pub const FILE_OP_OPENAT2: u32 = 4;
pub const FILE_OP_CREAT: u32 = 5;
pub const FILE_OP_STAT: u32 = 6;
pub const FILE_OP_LSTAT: u32 = 7;
pub const FILE_OP_FSTATAT: u32 = 8;
pub const FILE_OP_STATX: u32 = 9;
pub const FILE_OP_ACCESS: u32 = 10;
pub const FILE_OP_FACCESSAT: u32 = 11;
pub const FILE_OP_FACCESSAT2: u32 = 12;
/// Seen by a kernel file hook (BPF-LSM `file_open`, or fexit `security_file_open`)
/// outside the traced syscalls: io_uring, 32-bit syscalls, `open_by_handle_at`.
/// Not in `FILE_SYSCALLS` (no tracepoint); `ret` is the hook's verdict (0 allowed).
pub const FILE_OP_HOOK_OPEN: u32 = 13;
/// `inode_readlink` / `security_inode_readlink` outside the traced syscalls.
pub const FILE_OP_HOOK_READLINK: u32 = 14;
/// `file_receive` / `security_file_receive`: an open file arrived over SCM_RIGHTS
/// (or `pidfd_getfd`); the receiver never opened it by path.
pub const FILE_OP_HOOK_RECEIVE: u32 = 15;
/// `inode_getattr` / `security_inode_getattr` outside the traced syscalls: a stat of
/// the file through io_uring, a 32-bit syscall or an fd (`fstat`).
pub const FILE_OP_HOOK_GETATTR: u32 = 16;

/// Path-taking syscalls the files sensor traces, indexed by `FILE_OP_*`: their
/// tracepoint suffixes. The kernel programs are named `sys_enter_<suffix>` /
/// `sys_exit_<suffix>`, after their tracepoints; reports name the operations as
/// probe-user's `ops::How` does.
pub const FILE_SYSCALLS: [&str; 13] = [
    "open",
    "openat",
    "readlink",
    "readlinkat",
    "openat2",
    "creat",
    "newstat",
    "newlstat",
    "newfstatat",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
];

/// A watched process named a policy path in a path-taking syscall.
///
/// The syscall's arguments are parked at `sys_enter_*` and the path is read at
/// `sys_exit_*`: by then the kernel has faulted the string's page in (a fresh process's
/// string literals are often not yet mapped at entry, where a non-faulting read fails),
/// and the result is known.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    pub header: EventHeader,
    /// `FILE_OP_*`.
    pub op: u32,
    /// Policy entry that matched (see `PolicyRef` and `matched_by`).
    pub entry_id: u32,
    /// The dirfd argument (`AT_FDCWD` = -100), or -100 for the non-`at` syscalls.
    pub dfd: i32,
    /// open flags (`O_*`); 0 for readlink.
    pub open_flags: u32,
    /// Syscall result: an fd (open), a byte count (readlink), or `-errno`.
    pub ret: i32,
    /// Bytes of `path` before the NUL.
    pub path_len: u32,
    /// Non-zero: the path did not fit in `PATH_LEN - 1` bytes.
    pub path_truncated: u32,
    /// `FILE_MATCH_*`: how the kernel tied the syscall to a policy entry.
    pub matched_by: u32,
    /// For a relative path: the directory it is relative to (the cwd, or the dirfd's
    /// file), as (`MKDEV` dev, inode); zeros when absolute or unreadable. Userspace
    /// names it without racing the process's exit.
    pub base_dev: u64,
    pub base_ino: u64,
    pub path: [u8; PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<FileEvent>() == 24 + 48 + PATH_LEN);

/// `FileEvent::matched_by`: the path string itself is a policy path or under a
/// policy prefix.
pub const FILE_MATCH_PATH: u32 = 0;
/// The file the syscall reached (fd at open, stat buffer at stat) is one the policy
/// names, whatever the string said: a relative or dirfd-relative path, `..`,
/// `/proc/self/root`, a symlink.
pub const FILE_MATCH_INODE: u32 = 1;
/// Neither matched, but the last component is a policy basename: userspace resolves
/// the path against `base_*` (or the process's cwd) and decides.
pub const FILE_MATCH_BASENAME: u32 = 2;
/// A kernel file hook reached a file the policy names (by its inode), for a call the
/// syscall tracepoints did not see or could not match: `path` holds only the file's
/// last component (the dentry name), userspace reports the policy path.
pub const FILE_MATCH_HOOK: u32 = 3;
/// The part of an absolute path after the process's own `HOME` or `XDG_CONFIG_HOME`
/// (by the lengths in its `WatchEntry`) is under a policy `~/` prefix or glob: a
/// candidate userspace checks against the home values it got at exec.
pub const FILE_MATCH_OWN_HOME: u32 = 4;

/// `PendingPath::stat_kind`: which stat buffer layout the syscall fills.
pub const STAT_BUF_NONE: u32 = 0;
/// `struct stat` (x86-64): `st_dev` u64 at 0, `st_ino` u64 at 8; `st_dev` is the
/// user encoding (`new_encode_dev`).
pub const STAT_BUF_STAT: u32 = 1;
/// `struct statx`: `stx_ino` u64 at 32, `stx_dev_major`/`stx_dev_minor` u32 at 136/140.
pub const STAT_BUF_STATX: u32 = 2;

/// Arguments of a path-taking syscall, parked between enter and exit (key: tid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingPath {
    /// User address of the path string.
    pub path_ptr: u64,
    /// User address of the stat buffer (stat family), else 0.
    pub stat_buf: u64,
    pub op: u32,
    pub dfd: i32,
    pub open_flags: u32,
    /// `STAT_BUF_*`.
    pub stat_kind: u32,
    /// Non-zero: a file hook (BPF-LSM or fentry) saw this syscall reach the policy
    /// file `hook_entry` (an overlayfs lower file, a hardlink to a policy symlink).
    pub hook_matched: u32,
    pub hook_entry: u32,
    /// The syscall's number (`__syscall_nr` at entry): a file hook takes the entry
    /// as the syscall it runs in only if the thread is in that syscall now (an entry
    /// whose exit never ran is stale, see `files_hooks`).
    pub syscall_nr: u32,
    pub _pad0: u32,
}
const _: () = assert!(core::mem::size_of::<PendingPath>() == 48);

/// `EnvEvent::op`
pub const ENV_OP_GETENV: u32 = 1;
pub const ENV_OP_SECURE_GETENV: u32 = 2;
/// The whole environment was enumerated (Node's `Object.keys(process.env)`, through
/// libuv's `uv_os_environ`): no name, every variable.
pub const ENV_OP_ENUMERATE: u32 = 3;

/// A watched process looked up an environment variable that the policy names.
///
/// The name pointer is parked by the getenv uprobe and the name is read by the
/// uretprobe, for the same reason as `FileEvent`: at entry the caller's string literal
/// may sit in a page the process has not touched yet; getenv itself faults it in.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvEvent {
    pub header: EventHeader,
    /// `ENV_OP_*`.
    pub op: u32,
    /// Policy entry whose name matched (case-folded).
    pub entry_id: u32,
    /// Bytes of `name` before the NUL.
    pub name_len: u32,
    /// Non-zero: the name did not fit in `ENV_NAME_LEN - 1` bytes.
    pub name_truncated: u32,
    /// Non-zero: the variable was set (getenv returned non-NULL).
    pub value_present: u32,
    pub _pad0: u32,
    /// The name exactly as the program passed it (not case-folded).
    pub name: [u8; ENV_NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<EnvEvent>() == 24 + 24 + ENV_NAME_LEN);

/// A getenv call in flight, parked by the entry uprobe (key: tid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingEnv {
    pub name_ptr: u64,
    pub op: u32,
    pub _pad0: u32,
}
const _: () = assert!(core::mem::size_of::<PendingEnv>() == 16);

/// `ExecEnvEvent::flags`: `value` holds a prefix of the value (the policy asked for
/// it; otherwise only the name is reported).
pub const EXEC_ENV_VALUE_CAPTURED: u16 = 1 << 0;
/// The value is longer than the captured prefix.
pub const EXEC_ENV_VALUE_TRUNCATED: u16 = 1 << 1;

/// Environment entries scanned per exec; a larger environment sets
/// `EXEC_ENV_SCAN_INCOMPLETE` on nothing but the drop counter `env_scan_incomplete`.
pub const EXEC_ENV_MAX_ENTRIES: u32 = 512;
const _: () = assert!(EXEC_ENV_MAX_ENTRIES <= u16::MAX as u32); // `ExecEnvEvent::index`

/// A policy env name present in the environment handed to execve: the only signal
/// for runtimes that copy the environment at start (Bun, Python, Go) and never call
/// getenv per lookup. It says "exposed at exec", never "looked up".
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEnvEvent {
    pub header: EventHeader,
    /// Policy entry whose name matched (case-folded).
    pub entry_id: u32,
    /// Bytes of `name`.
    pub name_len: u32,
    /// Bytes of `value` (0 unless `EXEC_ENV_VALUE_CAPTURED`).
    pub value_len: u32,
    /// `EXEC_ENV_*` flags.
    pub flags: u16,
    /// The entry's index in envp. One scan reports in rising index order, so an index
    /// not above the last one of the same process starts another exec attempt (a PATH
    /// search, or a failed execve followed by another): userspace keeps the first
    /// entry of each name within the last attempt, as libc's getenv and the runtimes'
    /// environment copies do.
    pub index: u16,
    /// The name as it appears in the environment.
    pub name: [u8; ENV_NAME_LEN],
    /// A prefix of the value, when the policy asks for one.
    pub value: [u8; ENV_VALUE_PREFIX_LEN],
}
const _: () =
    assert!(core::mem::size_of::<ExecEnvEvent>() == 24 + 16 + ENV_NAME_LEN + ENV_VALUE_PREFIX_LEN);

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `connect(2)` by a watched process to an IPv4/IPv6 address, with its result.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectEvent {
    pub header: EventHeader,
    pub fd: i32,
    /// Syscall result: 0, or `-errno` (`-EINPROGRESS` = -115 for non-blocking sockets).
    pub ret: i32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Destination port in host byte order.
    pub port: u16,
    /// `CONNECT_*` flags.
    pub flags: u32,
    /// IPv4 in the first 4 bytes, or the 16 bytes of IPv6, network order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ConnectEvent>() == 56);

/// `ConnectEvent::flags`: the destination is the kernel's own copy, given by the
/// cgroup connect hook during this syscall; without it, it was read from the
/// caller's memory (no hook ran: see docs/architecture.md, "Net").
pub const CONNECT_DEST_FROM_HOOK: u32 = 1 << 0;

/// A destination as a cgroup sock_addr hook saw it (the kernel's copy of the
/// caller's sockaddr): address in network order, port in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookDest {
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<HookDest>() == 20);

/// Parked between `sys_enter_connect` and `sys_exit_connect`, keyed by thread id.
/// The cgroup connect hook, which runs inside the syscall in the same thread, fills
/// `dest` with the kernel's copy; the exit emits it with the result. Only when no
/// hook ran is the address read from user memory (at exit, when the kernel has
/// copied it, so its page is resident).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingConnect {
    /// User address of the `struct sockaddr`.
    pub addr_ptr: u64,
    pub fd: i32,
    pub addrlen: u32,
    /// Non-zero: a cgroup hook filled `dest`.
    pub hooked: u32,
    pub dest: HookDest,
}
const _: () = assert!(core::mem::size_of::<PendingConnect>() == 40);

/// Destinations of one send syscall the entry keeps (glibc sends A and AAAA
/// queries in one sendmmsg; a third message is looked at too).
pub const MMSG_MAX: usize = 4;

/// `PendingSend::call`
pub const SEND_CALL_SENDTO: u32 = 1;
pub const SEND_CALL_SENDMSG: u32 = 2;
pub const SEND_CALL_SENDMMSG: u32 = 3;
/// The `SEND_CALL_*` kind in `PendingSend::call` (the bits above are flags).
pub const SEND_CALL_KIND: u32 = 0xff;
/// `PendingSend::call` flag: the cgroup connect hook ran inside this send: a TCP
/// Fast Open (sendto/sendmsg with `MSG_FASTOPEN` on a TCP socket), a connect.
pub const SEND_CALL_FASTOPEN: u32 = 1 << 8;

/// A send syscall in flight (key: tid), from its entry to its exit. The cgroup
/// sendmsg hooks, which run inside it once per message with a destination, append
/// the kernel's copy of each destination to `dests`; the exit reports them, with
/// the DNS payload of the message each belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingSend {
    /// sendto: the buffer; sendmsg: the `user_msghdr`; sendmmsg: the `mmsghdr` array.
    pub arg: u64,
    /// sendto: the length; sendmmsg: the message count.
    pub len: u64,
    /// sendto: the address argument (for the fallback when no hook ran).
    pub addr_ptr: u64,
    pub addr_len: u32,
    pub fd: i32,
    /// `SEND_CALL_*`.
    pub call: u32,
    /// Destinations the hooks gave (those past `MMSG_MAX` were reported at once).
    pub hooked: u32,
    pub dests: [HookDest; MMSG_MAX],
}
const _: () = assert!(core::mem::size_of::<PendingSend>() == 40 + 20 * MMSG_MAX);

/// Bytes of `sun_path` in `struct sockaddr_un`.
pub const UNIX_PATH_LEN: usize = 108;
/// `UnixConnectEvent::flags`: an abstract socket (`sun_path` starts with NUL); the
/// name follows the NUL.
pub const UNIX_ABSTRACT: u32 = 1 << 0;
/// `UnixConnectEvent::flags`: a datagram sendto/sendmsg to this address, not a
/// connect; `ret` is the bytes sent or `-errno`.
pub const UNIX_DATAGRAM: u32 = 1 << 1;

/// `connect(2)` by a watched process to a unix socket (the D-Bus system bus, a
/// local proxy, an agent socket), with its result.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnixConnectEvent {
    pub header: EventHeader,
    pub fd: i32,
    pub ret: i32,
    /// Bytes of `path` that belong to the address (`addrlen - 2`, at most 108).
    pub path_len: u32,
    /// `UNIX_*` flags.
    pub flags: u32,
    pub path: [u8; UNIX_PATH_LEN],
    pub _pad0: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<UnixConnectEvent>() == 24 + 16 + UNIX_PATH_LEN + 4);

/// The outcome of a TCP connect of a watched process, seen when the socket leaves
/// SYN_SENT: ESTABLISHED, or CLOSE (refused, unreachable, timed out). A non-blocking
/// connect returns `-EINPROGRESS` long before this; the header's tgid/tid are those of
/// the task that connected, the time is the state change's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectOutcomeEvent {
    pub header: EventHeader,
    /// Non-zero: the connection was established; zero: it failed.
    pub established: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Destination port, host order.
    pub port: u16,
    /// IPv4 in the first 4 bytes, or IPv6, network order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ConnectOutcomeEvent>() == 48);

/// Who started a TCP connect, kept per socket (key: the kernel's `struct sock *`)
/// from CLOSE->SYN_SENT, which runs in the connecting task, to the state change that
/// ends SYN_SENT, which usually runs in softirq context where `current` is unrelated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOwner {
    pub tgid: u32,
    pub tid: u32,
}
const _: () = assert!(core::mem::size_of::<TcpOwner>() == 8);

/// Bytes of a datagram captured for DNS decoding (a query fits; an answer is taken
/// from `DnsAnswerEvent`).
pub const DNS_QUERY_CAPTURE: usize = 256;
/// Bytes of a DNS answer captured (the classic UDP limit).
pub const DNS_ANSWER_CAPTURE: usize = 512;

/// `UdpSendEvent::flags`: the call named a destination (sendto/sendmsg with an
/// address), so `family`/`port`/`addr` are set.
pub const UDP_DEST_GIVEN: u32 = 1 << 0;
/// The datagram goes to port 53 (by its address, or on a socket connected to port
/// 53): `payload` holds the start of the DNS query.
pub const UDP_DNS: u32 = 1 << 1;
/// Seen by the cgroup sendmsg hook outside a send syscall (io_uring): no fd, no
/// payload.
pub const UDP_OUTSIDE_SYSCALL: u32 = 1 << 2;
/// The destination was read from the caller's memory: no cgroup hook ran for this
/// send (hooks not attached). Without it, a `UDP_DEST_GIVEN` destination is the
/// kernel's copy.
pub const UDP_DEST_FROM_USER: u32 = 1 << 3;
/// Not a datagram: a TCP Fast Open connect made by this send (`SEND_CALL_FASTOPEN`);
/// `ret` is the send's failure, if any.
pub const UDP_TCP_FASTOPEN: u32 = 1 << 4;

/// A datagram sent by a watched process with an explicit destination (UDP, as
/// sendto/sendmsg/sendmmsg), or any datagram to a DNS server.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UdpSendEvent {
    pub header: EventHeader,
    pub fd: i32,
    /// `UDP_*` flags.
    pub flags: u32,
    pub family: u16,
    /// Destination port, host order (0 unless `UDP_DEST_GIVEN`).
    pub port: u16,
    /// Bytes of `payload` captured.
    pub captured_len: u32,
    /// Length the program asked to send.
    pub len: u32,
    /// 0: sent, or not known (seen by a hook outside a send syscall); negative: the
    /// send syscall failed with this `-errno` (EPERM: a block rule refused it).
    pub ret: i32,
    pub addr: [u8; 16],
    pub payload: [u8; DNS_QUERY_CAPTURE],
}
const _: () = assert!(core::mem::size_of::<UdpSendEvent>() == 24 + 24 + 16 + DNS_QUERY_CAPTURE);

/// A datagram received by a watched process from a DNS server (recvfrom on a socket
/// connected to port 53, or from a port-53 source), for name attribution.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsAnswerEvent {
    pub header: EventHeader,
    pub fd: i32,
    /// Bytes received (the syscall's result).
    pub len: u32,
    /// Bytes of `payload` captured.
    pub captured_len: u32,
    /// `DNS_FROM_*`: what `from` is.
    pub from_kind: u32,
    /// The datagram's source as recvfrom wrote it into the caller's `src_addr`
    /// (`DNS_FROM_ADDR`); unset on a connected socket, whose peer the kernel enforces.
    pub from: HookDest,
    pub _pad0: u32,
    pub payload: [u8; DNS_ANSWER_CAPTURE],
}
const _: () = assert!(core::mem::size_of::<DnsAnswerEvent>() == 24 + 16 + 24 + DNS_ANSWER_CAPTURE);

/// `DnsAnswerEvent::from_kind`: no source address asked for (a connected socket).
pub const DNS_FROM_NONE: u32 = 0;
/// `from` holds the source the kernel wrote into `src_addr`.
pub const DNS_FROM_ADDR: u32 = 1;
/// A source address was asked for but could not be read.
pub const DNS_FROM_UNREADABLE: u32 = 2;

/// A recvfrom in flight (key: tid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingRecv {
    pub buf_ptr: u64,
    pub addr_ptr: u64,
    pub fd: i32,
    pub _pad0: u32,
}
const _: () = assert!(core::mem::size_of::<PendingRecv>() == 24);

/// A watched process's `mmap` with `PROT_EXEC` of a file (`EVENT_EXEC_MAPPED`), seen
/// at the syscall's entry. The file is named by (dev, ino) from the fd, so userspace
/// can wait until `/proc/<pid>/maps` lists it; both 0 when the kernel pointers could
/// not be read (then userspace rescans a few times).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecMappedEvent {
    pub header: EventHeader,
    pub fd: i32,
    pub _pad0: u32,
    /// `MKDEV` encoding (major << 20 | minor), as in `super_block::s_dev`.
    pub dev: u64,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<ExecMappedEvent>() == 24 + 24);

/// `PeerMemoryEvent::call`: process_vm_readv(2).
pub const PEER_MEMORY_PROCESS_VM_READV: u32 = 1;

/// A watched process asked to read another process's memory (where that process's
/// environment lives), when some policy category counts reads of other processes'
/// environments (`SETTING_PROC_ENVIRON`). Emitted at entry: the request is the probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerMemoryEvent {
    pub header: EventHeader,
    /// `PEER_MEMORY_*`.
    pub call: u32,
    /// The pid whose memory was asked for.
    pub target_pid: u32,
}
const _: () = assert!(core::mem::size_of::<PeerMemoryEvent>() == 32);
