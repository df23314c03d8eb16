//! `action: block` in the kernel (see `probe_common::block`): the probe programs feed
//! each watched tree's slots (`feed`), the cgroup connect/sendmsg hooks judge
//! (`judge`). With no block rule in the policy every function here returns after one
//! `SETTINGS` lookup, so unwatched and non-block paths cost what they did.
//!
//! The maps live here rather than in `maps.rs`: nothing else reads them.

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
};
use probe_common::{
    AF_INET, BLOCK_DNS_PENDING_NS, BLOCK_NET_CONNECT, BLOCK_NET_DNS_PENDING, BLOCK_NET_UDP,
    BLOCK_OPS, BLOCK_PORTS, BLOCK_RULE_DNS_PENDING, BLOCK_RULE_HAS_CIDR, BLOCK_RULE_HAS_HOST,
    BLOCK_SLOTS, BLOCK_THEN_CONNECT, BLOCK_THEN_DNS, BLOCK_THEN_UDP, BLOCK_VERDICT_BLOCKED,
    BLOCK_VERDICT_WOULD_BLOCK, BlockAddr, BlockAddrKey, BlockEntry, BlockEvent, BlockNet,
    BlockRule, BlockTreeState, DROP_RING_FULL_BLOCK, EVENT_BLOCK, HookDest, MAX_BLOCK_ADDRS,
    MAX_BLOCK_CIDRS, MAX_BLOCK_ENTRIES, MAX_BLOCK_RULES, MAX_WATCHED, SETTING_BLOCK_RULES,
    SETTING_ENFORCE,
};

use crate::{
    maps::{EVENTS, SETTINGS},
    util::{count_drop, header},
};

/// Policy entry id -> the slots a probe of it feeds, per operation.
#[map]
pub static BLOCK_ENTRIES: HashMap<u32, BlockEntry> =
    HashMap::with_max_entries(MAX_BLOCK_ENTRIES, 0);

/// The block rules, `SETTING_BLOCK_RULES` of them.
#[map]
pub static BLOCK_RULES: Array<BlockRule> = Array::with_max_entries(MAX_BLOCK_RULES, 0);

/// Each slot's window in ns (`within` of the rules that use it).
#[map]
pub static BLOCK_WINDOWS: Array<u64> = Array::with_max_entries(BLOCK_SLOTS as u32, 0);

/// The rules' CIDRs (see `BlockNet`).
#[map]
pub static BLOCK_NET4: LpmTrie<[u8; 4], BlockNet> = LpmTrie::with_max_entries(MAX_BLOCK_CIDRS, 0);
#[map]
pub static BLOCK_NET6: LpmTrie<[u8; 16], BlockNet> = LpmTrie::with_max_entries(MAX_BLOCK_CIDRS, 0);

/// Addresses userspace learned for the rules' host globs (see `BlockAddr`). LRU: an
/// evicted address loses its bits, like an expired one.
#[map]
pub static BLOCK_ADDRS: LruHashMap<BlockAddrKey, BlockAddr> =
    LruHashMap::with_max_entries(MAX_BLOCK_ADDRS, 0);

/// Watched processes that are not the root of their tree (key: tgid; value: the
/// root's tgid). Written at fork while block rules are in force, removed at exit; a
/// process without an entry is its own tree (roots userspace inserts, processes
/// selected at exec).
#[map]
pub static BLOCK_TREES: HashMap<u32, u32> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Per tree: when each slot was last fed. LRU: a tree whose root exited is never
/// told; an evicted tree forgets its reads, so a later connect is let through (it
/// fails open, never closed).
#[map]
pub static BLOCK_STATE: LruHashMap<u32, BlockTreeState> =
    LruHashMap::with_max_entries(MAX_WATCHED, 0);

/// Per tree: when userspace fed each slot (reads it decided: a basename or own-home
/// candidate, a case variant, process_vm_readv). Only userspace writes it; the judge
/// takes the later of the two times.
#[map]
pub static BLOCK_LATE: LruHashMap<u32, BlockTreeState> =
    LruHashMap::with_max_entries(MAX_WATCHED, 0);

/// Per tree: when it last received a DNS answer (`EventHeader::ktime_ns` of the
/// answer's event), and when userspace finished the latest it handled (see
/// `probe_common::BLOCK_DNS_PENDING_NS`). LRU: an evicted mark is an answer no longer
/// pending (fails open); an evicted done time is one pending at most that long.
#[map]
pub static BLOCK_DNS_PENDING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_WATCHED, 0);
#[map]
pub static BLOCK_DNS_DONE: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_WATCHED, 0);

/// A watched process received a DNS answer whose event, stamped `at_ns`, is on its
/// way to userspace: its tree's unknown addresses are pending until userspace has
/// handled it (only for rules with `BLOCK_RULE_DNS_PENDING`).
#[inline(always)]
pub fn dns_answer_received(tgid: u32, at_ns: u64) {
    if rules_in_force() == 0 {
        return;
    }
    // Full map: an LRU evicts another tree's mark.
    let _ = BLOCK_DNS_PENDING.insert(tree_of(tgid), at_ns, 0);
}

/// Whether `tree` received a DNS answer at most `BLOCK_DNS_PENDING_NS` before `now`
/// that userspace has not handled yet.
#[inline(always)]
fn dns_pending(tree: u32, now: u64) -> bool {
    // SAFETY: value pointers from successful lookups, read only.
    let Some(at) = BLOCK_DNS_PENDING.get_ptr(&tree).map(|p| unsafe { *p }) else {
        return false;
    };
    if at > now || now - at > BLOCK_DNS_PENDING_NS {
        return false;
    }
    match BLOCK_DNS_DONE.get_ptr(&tree).map(|p| unsafe { *p }) {
        Some(done) => done < at,
        None => true,
    }
}

/// Zeros, to insert a new tree's state from map memory (256 bytes are too many for
/// the stacks of the programs that feed).
#[map]
pub static BLOCK_ZERO: PerCpuArray<BlockTreeState> = PerCpuArray::with_max_entries(1, 0);

/// Where `judge` keeps what it computes in loops (per CPU, one program at a time):
/// read back from map memory each value is one unknown to the verifier. Kept in
/// registers, the held-slot bits were a different constant on every path through
/// the slot loop, and the verifier followed 2^32 of them (over its 1M-instruction
/// limit).
///
/// The same goes for what crosses the rule loop: whether a DNS answer is pending, and
/// which rule matched (with its reason and the slots it held). Carried in registers,
/// `pending` doubled the loop's paths, and the matched rule's index was a different
/// constant at each of the loop's exits, so the verifier walked the record's code
/// once per rule (100k instructions verified for each cgroup program).
#[repr(C)]
pub struct JudgeScratch {
    held: u32,
    call: u32,
    pending: u32,
    rule: u32,
    why: u32,
    rule_held: u32,
}

#[map]
pub static BLOCK_JUDGE: PerCpuArray<JudgeScratch> = PerCpuArray::with_max_entries(1, 0);

/// Whether the policy has block rules: the one check every block path makes first.
#[inline(always)]
pub fn rules_in_force() -> u32 {
    match SETTINGS.get(SETTING_BLOCK_RULES) {
        Some(&n) if n > MAX_BLOCK_RULES => MAX_BLOCK_RULES,
        Some(&n) => n,
        None => 0,
    }
}

/// The root of `tgid`'s tree.
#[inline(always)]
fn tree_of(tgid: u32) -> u32 {
    match BLOCK_TREES.get_ptr(tgid) {
        // SAFETY: value pointer from a successful lookup.
        Some(root) => unsafe { *root },
        None => tgid,
    }
}

/// A watched process forked `child` (a process, not a thread): the child joins the
/// parent's tree.
#[inline(always)]
pub fn on_fork(parent: u32, child: u32) {
    if rules_in_force() == 0 {
        return;
    }
    let root = tree_of(parent);
    // Full map: the child is its own tree (fails open).
    let _ = BLOCK_TREES.insert(child, root, 0);
}

/// A watched group is dead.
#[inline(always)]
pub fn on_exit(tgid: u32) {
    // Always, not only while block rules are in force: a reload that removed them
    // must not leave entries behind.
    let _ = BLOCK_TREES.remove(tgid);
}

/// A watched process made a probe of policy entry `entry_id` by operation `op`
/// (`BLOCK_OP_*`, or a `FILE_OP_*`). `exact_case`: for env names, whether the name
/// was written exactly as its upper-case key (case-sensitive categories need that).
#[inline(always)]
pub fn feed(tgid: u32, entry_id: u32, op: usize, exact_case: bool) {
    if rules_in_force() == 0 {
        return;
    }
    let Some(entry) = BLOCK_ENTRIES.get_ptr(entry_id) else {
        return;
    };
    // SAFETY: value pointer from a successful lookup.
    let entry = unsafe { &*entry };
    // Masked, not compared (see `BLOCK_OPS`), through a volatile read so that the
    // compiler cannot drop the mask on what it knows of `op`.
    let op = unsafe { core::ptr::read_volatile(&op) } & (BLOCK_OPS - 1);
    let mut slots = entry.slots[op];
    if !exact_case {
        slots &= !entry.exact_case;
    }
    if slots == 0 {
        return;
    }
    let tree = tree_of(tgid);
    let state = match BLOCK_STATE.get_ptr_mut(tree) {
        Some(state) => state,
        None => {
            let Some(zero) = BLOCK_ZERO.get_ptr(0) else {
                return;
            };
            // BPF_NOEXIST: a feeder on another CPU that inserted first keeps its
            // write (the insert then fails, and its entry is found below).
            // SAFETY: per-CPU map value, never written.
            let _ = BLOCK_STATE.insert(tree, unsafe { &*zero }, BPF_NOEXIST);
            match BLOCK_STATE.get_ptr_mut(tree) {
                Some(state) => state,
                None => return,
            }
        }
    };
    // SAFETY: a map value; concurrent feeders of one tree write times, and any of
    // them is a time the slot was fed.
    let state = unsafe { &mut *state };
    let now = unsafe { bpf_ktime_get_boot_ns() };
    for slot in 0..BLOCK_SLOTS {
        if slots & (1 << slot) != 0 {
            state.fed_ns[slot] = now;
        }
    }
}

/// `bpf_map_update_elem` flag: only add a new key.
const BPF_NOEXIST: u64 = 1;

/// A deny verdict of a cgroup sock_addr program: the caller gets EPERM.
pub const DENY: i32 = 0;
/// Let the call proceed.
pub const ALLOW: i32 = 1;

/// Whether `port` is among the first `len` of `ports`.
#[inline(always)]
fn has_port(ports: &[u16; BLOCK_PORTS], len: u32, port: u16) -> bool {
    for (i, &p) in ports.iter().enumerate() {
        if (i as u32) < len && p == port {
            return true;
        }
    }
    false
}

/// The rules' CIDR bits for the destination (IPv4-mapped IPv6 counts as IPv4), ORed
/// with those of the addresses learned for their host globs that have not expired
/// at `now`; and whether such a learned address was found.
#[inline(always)]
fn nets(dest: &HookDest, now: u64) -> (BlockNet, bool) {
    let a = &dest.addr;
    let mapped =
        dest.family != AF_INET && a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff;
    let mut key = BlockAddrKey::default();
    let found = if dest.family == AF_INET || mapped {
        let v4 = if mapped {
            [a[12], a[13], a[14], a[15]]
        } else {
            [a[0], a[1], a[2], a[3]]
        };
        key.family = u32::from(AF_INET);
        key.addr[..4].copy_from_slice(&v4);
        BLOCK_NET4.get(&Key::new(32, v4))
    } else {
        key.family = u32::from(dest.family);
        key.addr = *a;
        BLOCK_NET6.get(&Key::new(128, *a))
    };
    let mut net = found.copied().unwrap_or_default();
    let mut known = false;
    // SAFETY: value pointer from a successful lookup, read only.
    if let Some(learned) = BLOCK_ADDRS.get_ptr(&key).map(|p| unsafe { &*p })
        && learned.expires_ns > now
    {
        net.rules |= learned.net.rules;
        net.except |= learned.net.except;
        known = true;
    }
    (net, known)
}

/// When `slot` was last fed: by the kernel (`state`) or by userspace (`late`),
/// whichever is later; 0 when neither did.
#[inline(always)]
fn fed_at(
    state: Option<*const BlockTreeState>,
    late: Option<*const BlockTreeState>,
    slot: usize,
) -> u64 {
    // SAFETY: value pointers from successful lookups, read only.
    let kernel = match state {
        Some(s) => unsafe { (*s).fed_ns[slot] },
        None => 0,
    };
    let user = match late {
        Some(l) => unsafe { (*l).fed_ns[slot] },
        None => 0,
    };
    if user > kernel { user } else { kernel }
}

/// At a watched process's connect (`udp` false) or datagram send (`udp` true) to
/// `dest`: the verdict of the first block rule whose sequence holds for its tree,
/// reported in a `BlockEvent`; `ALLOW` when none does.
#[inline(always)]
pub fn judge(tgid: u32, tid: u32, dest: &HookDest, udp: bool) -> i32 {
    let count = rules_in_force();
    if count == 0 {
        return ALLOW;
    }
    let tree = tree_of(tgid);
    let (state, late) = (BLOCK_STATE.get_ptr(tree), BLOCK_LATE.get_ptr(tree));
    // Through volatile reads: the compiler would test both at once by ORing the two
    // pointers, which the verifier refuses. (For the same reason each pointer is
    // read only where it is known not to be null, see `fed_at`.)
    let (fed, fed_late) = unsafe {
        (
            core::ptr::read_volatile(&state.is_some()),
            core::ptr::read_volatile(&late.is_some()),
        )
    };
    if !fed && !fed_late {
        // The tree never fed a slot.
        return ALLOW;
    }
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(scratch) = BLOCK_JUDGE.get_ptr_mut(0) else {
        return ALLOW;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let scratch = unsafe { &mut *scratch };
    // Which slots hold now, each against its own window (accumulated in map memory,
    // see `JudgeScratch`).
    put(&mut scratch.held, 0);
    for slot in 0..BLOCK_SLOTS {
        let fed = fed_at(state, late, slot);
        if fed == 0 || fed > now {
            continue;
        }
        if let Some(&window) = BLOCK_WINDOWS.get(slot as u32)
            && now - fed <= window
        {
            let held = get(&scratch.held);
            put(&mut scratch.held, held | 1 << slot);
        }
    }
    let held = get(&scratch.held);
    if held == 0 {
        return ALLOW;
    }
    let call = if !udp {
        BLOCK_THEN_CONNECT
    } else if dest.port == crate::dns::DNS_PORT {
        BLOCK_THEN_UDP | BLOCK_THEN_DNS
    } else {
        BLOCK_THEN_UDP
    };
    put(&mut scratch.call, call);
    let (nets, known) = nets(dest, now);
    // An address not learned while an answer of the tree is on its way to userspace
    // may be the one it names (`BLOCK_RULE_DNS_PENDING`); a call to port 53 is the
    // resolution itself, never held back by it.
    let pending = !known && dest.port != crate::dns::DNS_PORT && dns_pending(tree, now);
    put(&mut scratch.pending, u32::from(pending));
    let mut matched = false;
    for index in 0..MAX_BLOCK_RULES {
        if index >= count {
            break;
        }
        let Some(rule) = BLOCK_RULES.get(index) else {
            break;
        };
        let bit = 1u32 << index;
        let by_pending = get(&scratch.pending) != 0
            && rule.flags & (BLOCK_RULE_HAS_HOST | BLOCK_RULE_DNS_PENDING)
                == BLOCK_RULE_HAS_HOST | BLOCK_RULE_DNS_PENDING;
        if rule.then & get(&scratch.call) == 0
            || (rule.flags & (BLOCK_RULE_HAS_CIDR | BLOCK_RULE_HAS_HOST) != 0
                && nets.rules & bit == 0
                && !by_pending)
            || nets.except & bit != 0
            || (rule.ports_len != 0 && !has_port(&rule.ports, rule.ports_len, dest.port))
            || has_port(&rule.except_ports, rule.except_ports_len, dest.port)
            || (rule.all_of == 0 && rule.any_of == 0)
            || held & rule.all_of != rule.all_of
            || (rule.any_of != 0 && held & rule.any_of == 0)
        {
            continue;
        }
        // Held only by the pending answer (not by a CIDR or a learned name).
        let why = if by_pending && nets.rules & bit == 0 {
            BLOCK_NET_DNS_PENDING
        } else {
            0
        };
        put(&mut scratch.rule, index);
        put(&mut scratch.why, why);
        put(&mut scratch.rule_held, held & (rule.all_of | rule.any_of));
        matched = true;
        break;
    }
    if !matched {
        return ALLOW;
    }
    let enforce = SETTINGS.get(SETTING_ENFORCE).is_some_and(|on| *on != 0);
    report(
        tgid,
        tid,
        tree,
        get(&scratch.rule),
        enforce,
        dest,
        udp,
        get(&scratch.why),
        get(&scratch.rule_held),
    );
    if enforce { DENY } else { ALLOW }
}

/// A volatile store into the judge's scratch (see `JudgeScratch`).
#[inline(always)]
fn put(at: &mut u32, value: u32) {
    // SAFETY: a field of the per-CPU scratch, exclusively ours.
    unsafe { core::ptr::write_volatile(at, value) };
}

/// A volatile load from the judge's scratch: one unknown number to the verifier.
#[inline(always)]
fn get(at: &u32) -> u32 {
    // SAFETY: a field of the per-CPU scratch, exclusively ours.
    unsafe { core::ptr::read_volatile(at) }
}

#[inline(always)]
fn report(
    tgid: u32,
    tid: u32,
    tree: u32,
    rule: u32,
    enforce: bool,
    dest: &HookDest,
    udp: bool,
    why: u32,
    held: u32,
) {
    // Looked up again rather than carried from `judge`: each pointer's null or not
    // would otherwise split the verifier's walk of the rule loop.
    let (state, late) = (BLOCK_STATE.get_ptr(tree), BLOCK_LATE.get_ptr(tree));
    let Some(mut entry) = EVENTS.reserve::<BlockEvent>(0) else {
        count_drop(DROP_RING_FULL_BLOCK);
        return;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e.header = header(EVENT_BLOCK, tgid, tid);
    e.rule = rule;
    e.verdict = if enforce {
        BLOCK_VERDICT_BLOCKED
    } else {
        BLOCK_VERDICT_WOULD_BLOCK
    };
    e.net = why
        | if udp {
            BLOCK_NET_UDP
        } else {
            BLOCK_NET_CONNECT
        };
    e.tree = tree;
    e.held = held;
    e.family = dest.family;
    e.port = dest.port;
    e.addr = dest.addr;
    for slot in 0..BLOCK_SLOTS {
        e.fed_ns[slot] = fed_at(state, late, slot);
    }
    entry.submit(0);
}
