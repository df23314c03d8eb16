//! Enforcement of `action: block` rules in the kernel: the maps userspace fills from
//! the policy, the per-tree state the probe programs write, and the event the cgroup
//! connect/sendmsg hooks emit when a rule's sequence holds.
//!
//! A *slot* is one (category, evidence kinds, window) triple some block rule uses; at
//! most `BLOCK_SLOTS`. The probe programs that match a policy entry look the entry up
//! in `BLOCK_ENTRIES` and, for the slots the entry feeds by that operation, write the
//! time into the tree's `BlockTreeState`. At a connect or send the hook compares
//! each slot's time with its window (`BLOCK_WINDOWS`) once, then each rule's masks.

/// Event kind of `BlockEvent` (never reused).
pub const EVENT_BLOCK: u32 = 45;

pub const MAP_BLOCK_ENTRIES: &str = "BLOCK_ENTRIES";
pub const MAP_BLOCK_RULES: &str = "BLOCK_RULES";
pub const MAP_BLOCK_WINDOWS: &str = "BLOCK_WINDOWS";
pub const MAP_BLOCK_NET4: &str = "BLOCK_NET4";
pub const MAP_BLOCK_NET6: &str = "BLOCK_NET6";
pub const MAP_BLOCK_TREES: &str = "BLOCK_TREES";
pub const MAP_BLOCK_STATE: &str = "BLOCK_STATE";
/// Per tree, the slots userspace fed (reads only it could decide); written only by
/// userspace, so that it never overwrites a time the kernel wrote.
pub const MAP_BLOCK_LATE: &str = "BLOCK_LATE";

/// `SETTINGS` slot: the number of block rules in `BLOCK_RULES` (0: enforcement is
/// off, and every block path returns after this one check).
pub const SETTING_BLOCK_RULES: u32 = 8;
/// `SETTINGS` slot: non-zero when probectl enforces (`--enforce`, `enforce: true`);
/// zero: a rule that holds is reported as "would block" and the call goes through.
pub const SETTING_ENFORCE: u32 = 9;

/// Block rules the kernel evaluates at most.
pub const MAX_BLOCK_RULES: u32 = 16;
/// (category, evidence, window) slots the block rules use at most.
pub const BLOCK_SLOTS: usize = 32;
/// Ports a block rule's destination (and its `except`) lists at most.
pub const BLOCK_PORTS: usize = 8;
/// CIDRs over all block rules, per family (each is an LPM trie entry).
pub const MAX_BLOCK_CIDRS: u32 = 256;
/// `BLOCK_ENTRIES` keys for the policy's files (`BLOCK_ENTRY_FILES + k`): distinct
/// sets of slots, not files.
pub const MAX_BLOCK_FILE_ENTRIES: u32 = 256;
/// Size of `BLOCK_ENTRIES`: every policy entry, the fixed keys below, and the files'.
pub const MAX_BLOCK_ENTRIES: u32 = crate::limits::MAX_POLICY_ENTRIES + 8 + MAX_BLOCK_FILE_ENTRIES;

/// Index of an operation in `BlockEntry::slots`. The file syscalls use their
/// `FILE_OP_*` number (0..=16); the others follow.
pub const BLOCK_OP_GETENV: usize = 17;
pub const BLOCK_OP_SECURE_GETENV: usize = 18;
pub const BLOCK_OP_ENUMERATE: usize = 19;
pub const BLOCK_OP_PRESENT_AT_EXEC: usize = 20;
/// `BLOCK_OP_HOST_CALL + HOST_CALL_*`.
pub const BLOCK_OP_HOST_CALL: usize = 21;
/// `HOST_CALL_*` are 1..=3; a power of two, so that the kernel can mask an index
/// (5.10's verifier loses the bound of a compared one).
pub const BLOCK_OPS: usize = 32;
const _: () = assert!(BLOCK_OP_HOST_CALL + 4 <= BLOCK_OPS && BLOCK_OPS.is_power_of_two());

/// Key of `BLOCK_ENTRIES` for a whole-environment enumeration (Node's
/// `uv_os_environ`), which names no policy entry.
pub const BLOCK_ENTRY_ENUMERATE: u32 = u32::MAX - 1;
/// Key of `BLOCK_ENTRIES` for the host-identity calls (`BLOCK_OP_HOST_CALL + call`).
pub const BLOCK_ENTRY_HOST_CALLS: u32 = u32::MAX - 2;
// (`ENTRY_PROC_ENVIRON`, `u32::MAX`, is the key for reads of `/proc/<pid>/environ`.)
/// `InodeRef::block_entry` of a file no block rule counts (no such key is stored).
pub const BLOCK_ENTRY_NONE: u32 = u32::MAX - 3;
/// Keys of `BLOCK_ENTRIES` for the policy's files as the file index has them
/// (`InodeRef::block_entry`): `BLOCK_ENTRY_FILES + k`, one per distinct set of
/// slots, so that thousands of zoneinfo files share one entry. Policy entry ids are
/// below `MAX_POLICY_ENTRIES`, far under this.
pub const BLOCK_ENTRY_FILES: u32 = 1 << 31;

/// Value of `BLOCK_ENTRIES` (key: a policy entry id, as in `PolicyRef`): the block
/// slots a probe of this entry feeds, per operation (`BLOCK_OP_*`). Userspace computes
/// them from the categories that name the entry, their `operations:`, and the
/// evidence kinds the slot counts, through the one mapping of operations to evidence.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    pub slots: [u32; BLOCK_OPS],
    /// Slots of case-sensitive env categories: fed only when the name was written
    /// exactly as the (upper-case) policy name.
    pub exact_case: u32,
    pub _pad0: u32,
}
const _: () = assert!(core::mem::size_of::<BlockEntry>() == 4 * BLOCK_OPS + 8);

/// `BlockRule::then` bits.
pub const BLOCK_THEN_CONNECT: u32 = 1 << 0;
pub const BLOCK_THEN_UDP: u32 = 1 << 1;
/// A datagram to port 53 (`dns_query`).
pub const BLOCK_THEN_DNS: u32 = 1 << 2;

/// `BlockRule::flags`: the destination lists CIDRs (the address must be in one).
pub const BLOCK_RULE_HAS_CIDR: u32 = 1 << 0;

/// One block rule (`BLOCK_RULES`, an array indexed by rule, `SETTING_BLOCK_RULES`
/// of them in force).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockRule {
    /// Every one of these slots must hold.
    pub all_of: u32,
    /// At least one of these, when non-zero.
    pub any_of: u32,
    /// `BLOCK_THEN_*`.
    pub then: u32,
    /// `BLOCK_RULE_*`.
    pub flags: u32,
    pub ports_len: u32,
    pub except_ports_len: u32,
    pub ports: [u16; BLOCK_PORTS],
    pub except_ports: [u16; BLOCK_PORTS],
}
const _: () = assert!(core::mem::size_of::<BlockRule>() == 24 + 4 * BLOCK_PORTS);

/// Value of `BLOCK_NET4` / `BLOCK_NET6` (LPM tries of the rules' CIDRs): bit `r`
/// set when rule `r`'s destination CIDRs (`rules`) or its `except` CIDRs (`except`)
/// contain the address. A trie gives only the longest match, so userspace stores in
/// each prefix the union of every shorter one that contains it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlockNet {
    pub rules: u32,
    pub except: u32,
}
const _: () = assert!(core::mem::size_of::<BlockNet>() == 8);

/// Per tree (key: the tgid of the tree's root, `BLOCK_TREES`): when each slot was
/// last fed (`bpf_ktime_get_boot_ns`; 0: never).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTreeState {
    pub fed_ns: [u64; BLOCK_SLOTS],
}
const _: () = assert!(core::mem::size_of::<BlockTreeState>() == 8 * BLOCK_SLOTS);

/// `BlockEvent::verdict`
pub const BLOCK_VERDICT_BLOCKED: u32 = 1;
pub const BLOCK_VERDICT_WOULD_BLOCK: u32 = 2;

/// `BlockEvent::net`
pub const BLOCK_NET_CONNECT: u32 = 1;
pub const BLOCK_NET_UDP: u32 = 2;

/// A block rule held at a watched process's connect or send: refused (EPERM) when
/// enforcing, let through and reported otherwise.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockEvent {
    pub header: EventHeader,
    /// Index of the rule in `BLOCK_RULES`.
    pub rule: u32,
    /// `BLOCK_VERDICT_*`.
    pub verdict: u32,
    /// `BLOCK_NET_*`.
    pub net: u32,
    /// The tree whose reads made the rule hold (its root's tgid).
    pub tree: u32,
    /// The rule's slots that held.
    pub held: u32,
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
    /// When each slot was last fed (only the `held` bits are meaningful).
    pub fed_ns: [u64; BLOCK_SLOTS],
}
const _: () = assert!(core::mem::size_of::<BlockEvent>() == 24 + 24 + 16 + 8 * BLOCK_SLOTS);

/// A block event was lost: the ring was full (the verdict still applied).
pub const DROP_RING_FULL_BLOCK: u32 = 68;

use crate::abi::EventHeader;

// Host names in block rules (`destination.host`, `except.host`): the kernel sees
// only an address, so userspace writes the addresses it learned for the rules' host
// globs (DNS answers, /etc/hosts) into `BLOCK_ADDRS`, with the same per-rule bits as
// the CIDR tries. Appended: nothing above is renumbered.

pub const MAP_BLOCK_ADDRS: &str = "BLOCK_ADDRS";

/// `BlockRule::flags`: the destination names host globs (the address must have been
/// learned for one, or be in one of the CIDRs).
pub const BLOCK_RULE_HAS_HOST: u32 = 1 << 1;

/// Learned addresses the kernel keeps (LRU: the least recently used goes first).
pub const MAX_BLOCK_ADDRS: u32 = 8_192;

/// Key of `BLOCK_ADDRS`: `family` is `AF_INET` (the address in `addr[..4]`, the rest
/// zero; IPv4-mapped IPv6 is stored this way too) or `AF_INET6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlockAddrKey {
    pub family: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockAddrKey>() == 20);

/// Value of `BLOCK_ADDRS`: the rules whose destination hosts (`net.rules`) or except
/// hosts (`net.except`) name this address, until `expires_ns`
/// (`bpf_ktime_get_boot_ns`); the judge treats an expired entry as absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockAddr {
    pub net: BlockNet,
    pub expires_ns: u64,
}
const _: () = assert!(core::mem::size_of::<BlockAddr>() == 16);

// A DNS answer still on its way to userspace (`destination.dns_pending: block`): the
// connect that follows a fresh answer can reach the hook before userspace has stored
// the address in `BLOCK_ADDRS`. The recvfrom exit that reports a watched tree's
// answer writes its time into `BLOCK_DNS_PENDING` (key: the tree); userspace, once it
// has handled that answer (and written what it learned), writes the same time into
// `BLOCK_DNS_DONE`. While the tree's latest answer is newer than what userspace has
// done, and at most `BLOCK_DNS_PENDING_NS` old, a rule with `BLOCK_RULE_DNS_PENDING`
// treats an address not in `BLOCK_ADDRS` as its host's (a call to port 53, the
// resolution itself, excepted). Bounded in time: if userspace dies, it ends.

pub const MAP_BLOCK_DNS_PENDING: &str = "BLOCK_DNS_PENDING";
pub const MAP_BLOCK_DNS_DONE: &str = "BLOCK_DNS_DONE";

/// `BlockRule::flags`: `destination.dns_pending: block`.
pub const BLOCK_RULE_DNS_PENDING: u32 = 1 << 2;

/// How long an answer userspace has not handled keeps unknown addresses refused.
pub const BLOCK_DNS_PENDING_NS: u64 = 2_000_000_000;

/// `BlockEvent::net` flag: the rule held because the address was not learned yet
/// while a DNS answer of the tree was pending (`BLOCK_RULE_DNS_PENDING`).
pub const BLOCK_NET_DNS_PENDING: u32 = 1 << 16;
