//! Every map of the object. Names are the `probe_common::MAP_*` constants.

use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf, lpm_trie::Key,
    },
};
use probe_common::{
    BasenameKey, DROP_SLOTS, ENV_NAME_LEN, EnvNameKey, ExecEvent, InodeKey, InodeRef, KOFF_SLOTS,
    MAX_POLICY_ENTRIES, MAX_POLICY_INODES, MAX_WATCHED, PATH_LEN, PendingConnect, PendingEnv,
    PendingPath, PendingRecv, PendingSend, PolicyRef, RING_BYTES, TP_OFFSET_SLOTS, TcpOwner,
    WATCH_HINT_BLOCK, WATCH_HINT_MAX_BLOCKS, WatchEntry,
};

/// The one ring buffer all events go through.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Watched thread groups (key: tgid). Roots are written by userspace; children are
/// added at fork by `process::sched_process_fork`, removed at exit.
#[map]
pub static WATCHED: HashMap<u32, WatchEntry> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// One byte per tgid, non-zero when the tgid may be in `WATCHED`: the first check of
/// every hook (`util::maybe_watched`). An array element is found by index, with no
/// hash and no call (the verifier inlines array lookups), so a process nobody
/// watches costs each hook a few instructions instead of a hash lookup. The byte is
/// set before a tgid enters `WATCHED` (by userspace through the map's shared
/// mapping, by the kernel at fork and at a selecting exec) and cleared after the
/// watch ends at the group's exit; userspace never clears it, so a byte left set
/// only costs that tgid the `WATCHED` lookup. Each writer stores single bytes of its
/// own tgids, so no write can undo another's. Sized by userspace to `pid_max`; a
/// tgid beyond the map (pid_max raised later) is looked up in `WATCHED`.
#[map]
pub static WATCH_HINT: Array<[u8; WATCH_HINT_BLOCK]> =
    Array::with_max_entries(WATCH_HINT_MAX_BLOCKS, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// Policy env names, upper-cased and zero padded.
#[map]
pub static ENV_NAMES: HashMap<EnvNameKey, PolicyRef> =
    HashMap::with_max_entries(MAX_POLICY_ENTRIES, 0);

/// Policy env globs (`LC_*`): the upper-cased literal part as an LPM prefix.
#[map]
pub static ENV_PREFIXES: LpmTrie<EnvNameKey, PolicyRef> =
    LpmTrie::with_max_entries(probe_common::MAX_ENV_PREFIXES, 0);

/// Policy paths. Exact entries include the terminating NUL in their prefix, so they
/// only match the whole path; prefix entries stop before it.
#[map]
pub static PATHS: LpmTrie<[u8; PATH_LEN], PolicyRef> =
    LpmTrie::with_max_entries(MAX_POLICY_ENTRIES, 0);

/// The policy's `~/` prefixes and glob directories relative to a home, the first key
/// byte saying which (`probe_common::OWN_HOME_UNDER_*`); see `own_home`.
#[map]
pub static OWN_HOME_PATHS: LpmTrie<[u8; PATH_LEN], PolicyRef> =
    LpmTrie::with_max_entries(MAX_POLICY_ENTRIES, 0);

/// Key scratch of the `OWN_HOME_PATHS` lookup (too big for the stack).
#[map]
pub static OWN_HOME_SCRATCH: PerCpuArray<Key<[u8; PATH_LEN]>> = PerCpuArray::with_max_entries(1, 0);

/// Policy switches (`probe_common::SETTING_*`).
#[map]
pub static SETTINGS: Array<u32> = Array::with_max_entries(probe_common::SETTING_SLOTS, 0);

/// Per-CPU drop counters, one slot per `probe_common::DROP_*` reason.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

/// Field offsets of the sched tracepoints (`probe_common::TP_*`), from tracefs.
#[map]
pub static TP_OFFSETS: Array<u32> = Array::with_max_entries(TP_OFFSET_SLOTS, 0);

/// argv/filename parked between sys_enter_execve and sched_process_exec (key: tid).
/// LRU so that an exec that fails without us seeing it cannot leak an entry.
#[map]
pub static PENDING_EXEC: LruHashMap<u32, ExecEvent> = LruHashMap::with_max_entries(1_024, 0);

/// Scratch space for building a pending exec: far larger than the 512-byte BPF stack.
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

/// Scratch LPM key for path lookups (260 bytes: too big to keep on the stack with anything else).
#[map]
pub static PATH_SCRATCH: PerCpuArray<Key<[u8; PATH_LEN]>> = PerCpuArray::with_max_entries(1, 0);

/// exit_group(2) code per watched tgid, read when the leader exits.
#[map]
pub static EXIT_CODES: LruHashMap<u32, i32> = LruHashMap::with_max_entries(MAX_WATCHED, 0);

/// Threads of watched processes that can be inside one syscall (or getenv) at once:
/// the capacity of each per-thread entry map below.
///
/// Why plain hash maps and not LRU: an LRU map evicts silently (even before it is
/// full, from its per-CPU free lists), so 2,000 threads blocked in connect lost about
/// 1,000 results with nothing counted. A hash map refuses an insert when full, which
/// is counted (`DROP_PENDING_*_FULL`), and a thread that reaches the exit without its
/// entry is counted too (`DROP_*_EXIT_WITHOUT_ENTRY`). An entry cannot leak: every
/// syscall entry a tracepoint sees is followed by its exit tracepoint in the same
/// thread (also when the thread is killed in the syscall), the exits take the entry
/// before any other check, and a tid reused later overwrites what is left.
pub const PENDING_SLOTS: u32 = 16_384;

/// Destination parked between sys_enter_connect and sys_exit_connect (key: tid);
/// the cgroup connect hook writes the kernel's copy of the destination into it.
#[map]
pub static PENDING_CONNECT: HashMap<u32, PendingConnect> =
    HashMap::with_max_entries(PENDING_SLOTS, 0);

const _: () = assert!(ENV_NAME_LEN == 64);

/// Path-taking syscall arguments parked between enter and exit (key: tid).
#[map]
pub static PENDING_PATH: HashMap<u32, PendingPath> = HashMap::with_max_entries(PENDING_SLOTS, 0);

/// getenv calls in flight, parked between the uprobe and the uretprobe (key: tid).
#[map]
pub static PENDING_ENV: HashMap<u32, PendingEnv> = HashMap::with_max_entries(PENDING_SLOTS, 0);

/// Scratch for one environment entry during the exec-time scan: the entry itself
/// (`NAME=value`, with room past the name for a fixed-size value copy) and the
/// case-folded name used as the `ENV_NAMES` key.
#[repr(C)]
pub struct EnvScratch {
    /// The entry as read, `NAME=` first.
    pub entry: [u8; ENV_NAME_LEN],
    /// The name as written (case kept), zero padded.
    pub name: [u8; ENV_NAME_LEN],
    pub key: EnvNameKey,
    /// The same name as an `ENV_PREFIXES` key, for globs.
    pub prefix_key: Key<EnvNameKey>,
    /// The name's length, passed through map memory so that the verifier sees one
    /// unknown number instead of one constant per path (see `exec_env::visit`).
    pub name_len: u64,
    /// The captured value's length and `EXEC_ENV_*` flags, through map memory for the
    /// same reason (`exec_env::looped_rest`).
    pub value_len: u64,
    pub value_flags: u64,
    /// `ENV_OWN_HOME` / `ENV_OWN_CONFIG` once this envp's first exact-case entry of
    /// that name was seen (reset at each bpf_loop scan's start): libc's getenv,
    /// Python's and Go's environment copies and Node's `process.env` all take the
    /// first, so a later `HOME=` (or a `home=`) must not move the kernel's idea of the
    /// process's `~/` away from its own. In map memory, not in the scan's stack state,
    /// for the verifier's sake; the chained scan of older kernels keeps it in `Scan`.
    pub homes_seen: u32,
    /// The own-home kind the current entry places, or 0 (`exec_env::looped_rest`).
    pub home_kind: u32,
}

#[map]
pub static ENV_SCRATCH: PerCpuArray<EnvScratch> = PerCpuArray::with_max_entries(1, 0);

/// The task that started a TCP connect, per socket (key: `struct sock *`), from
/// CLOSE->SYN_SENT until SYN_SENT ends. LRU: a socket freed in between cannot leak.
#[map]
pub static TCP_OWNERS: LruHashMap<u64, TcpOwner> = LruHashMap::with_max_entries(4_096, 0);

/// Sockets connected to port 53, by (tgid << 32 | fd): what is sent on them is a DNS
/// query, what comes back an answer. LRU: closed fds age out.
#[map]
pub static DNS_SOCKS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(4_096, 0);

/// recvfrom calls in flight (key: tid).
#[map]
pub static PENDING_RECV: HashMap<u32, PendingRecv> = HashMap::with_max_entries(PENDING_SLOTS, 0);

/// Program names the policy selects (`probe_common::CommKey`): their processes are
/// watched from exec on, with no userspace round trip.
#[map]
pub static SELECT_COMMS: HashMap<probe_common::CommKey, u32> =
    HashMap::with_max_entries(probe_common::MAX_POLICY_ENTRIES, 0);

/// Files the policy names, by (dev, inode): the exact paths (both the link and its
/// target) and what lies under policy prefixes. See `resolve`.
#[map]
pub static INODES: HashMap<InodeKey, InodeRef> = HashMap::with_max_entries(MAX_POLICY_INODES, 0);

/// Last components of exact policy paths (`localtime`, `machine-id`, ...): a path the
/// kernel could not match that ends in one goes to userspace to be resolved.
#[map]
pub static BASENAMES: HashMap<BasenameKey, PolicyRef> =
    HashMap::with_max_entries(MAX_POLICY_ENTRIES, 0);

/// Kernel struct member offsets from BTF (`probe_common::KOFF_*`).
#[map]
pub static KERNEL_OFFSETS: Array<u32> = Array::with_max_entries(KOFF_SLOTS, 0);

/// Send syscalls (sendto/sendmsg/sendmmsg) of watched threads in flight (key: tid):
/// the cgroup sendmsg hooks append the destinations they see, the exit reports them.
#[map]
pub static IN_SEND: HashMap<u32, PendingSend> = HashMap::with_max_entries(PENDING_SLOTS, 0);

/// How many of the hooks' destinations the messages of the current send exit have
/// taken (per CPU, one program at a time). In map memory, not on the stack, so the
/// verifier does not follow one state per count: older verifiers gave up on the
/// sendmmsg exit otherwise.
#[map]
pub static SEND_USED: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Scratch for a DNS query gathered from up to two iovecs: twice the capture, so
/// that the second copy, at an offset below the capture, stays in bounds.
#[map]
pub static DNS_SCRATCH: PerCpuArray<[u8; 2 * probe_common::DNS_QUERY_CAPTURE]> =
    PerCpuArray::with_max_entries(1, 0);

/// User ids the policy selects: their execs start a watch, like `SELECT_COMMS`.
#[map]
pub static SELECT_UIDS: HashMap<u32, u32> =
    HashMap::with_max_entries(probe_common::MAX_POLICY_ENTRIES, 0);

/// Where bounded loops keep a position they found (`LOOP_SLOT_*`): read back from
/// map memory it is one unknown to the verifier, where a register would make it
/// follow one path per position through every later iteration.
#[map]
pub static LOOP_SCRATCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
/// The index just past the last '/' of a path (`resolve::by_basename_bounded`).
pub const LOOP_SLOT_SLASH: u32 = 0;

/// The sendmmsg exit, one message per program run: slot 0 holds `sendmmsg_next`
/// (userspace puts it there). Four messages in one program were more than the
/// verifiers of 5.10 and 6.1 would follow; each run here is the size of the sendmsg
/// exit.
#[map]
pub static SEND_MMSG_NEXT: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// Where the sendmmsg chain is, per CPU (a tail call stays on its CPU).
#[map]
pub static SEND_MMSG_STATE: PerCpuArray<crate::send_exit::MmsgState> =
    PerCpuArray::with_max_entries(1, 0);

/// The chained exec-environment scan of kernels without `bpf_loop`: slot 0 holds
/// `exec_env_next` (userspace puts it there), and the scan's position per CPU.
#[map]
pub static ENV_SCAN_NEXT: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
pub static ENV_SCAN_STATE: PerCpuArray<crate::exec_env::Scan> = PerCpuArray::with_max_entries(1, 0);

/// Sockets a watched process connected (TCP, or UDP to another port than 53) and has
/// sent nothing on yet, by (tgid << 32 | fd), with the destination of the connect:
/// the first write/send on one is captured (`first_bytes`), then the entry goes.
/// LRU, bounded: a socket closed before it sent anything is not followed to its
/// close (a close hook would cost every process a program run), so its entry stays
/// until the next connect on that fd number replaces it or the LRU drops it. A later
/// write to a file that reuses the fd number is then captured too; userspace keeps
/// only what parses as a ClientHello or an HTTP request (see `first_bytes`).
#[map]
pub static FIRST_AWAIT: LruHashMap<u64, probe_common::HookDest> =
    LruHashMap::with_max_entries(4_096, 0);
