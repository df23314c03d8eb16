//! Block rules for what the sock_addr sendmsg hooks never see: ICMP echo on
//! unprivileged ping sockets (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`, allowed
//! where `net.ipv4.ping_group_range` includes the user) and raw sockets
//! (CAP_NET_RAW). The kernel runs `cgroup/sendmsg4/6` in `udp_sendmsg` and
//! `udpv6_sendmsg` only, so a datagram on those sockets would leave after the reads
//! that a block rule names.
//!
//! Two programs at the cgroup v2 root:
//! - `cg_sock_create` runs in the creating task (`socket(2)`): for an ICMP/ICMPv6 or
//!   `SOCK_RAW` socket of a watched process it records the owner (the socket's
//!   cookie -> tgid) in `RAW_OWNERS`. It never refuses a socket.
//! - `cg_raw_egress` runs for every packet leaving through the cgroup egress hook
//!   (while block rules are in force it reads the packet's socket's type and
//!   protocol, and goes further for ICMP and raw sockets only); for a packet of an
//!   owned socket it reads the destination from the IP header and
//!   asks the same judge as a UDP send (`block::judge`, port 0): on deny it drops the
//!   packet, and the send returns EPERM to the caller.
//!
//! Keyed by the socket cookie rather than `BPF_MAP_TYPE_SK_STORAGE`: the cookie
//! helper is available to both program types from kernel 5.7, sk storage in
//! `cgroup/sock` programs only later (loaded and attached on 5.10 and 6.1 by
//! `cargo xtask kernels`). Cookies are never reused, so an entry of a
//! closed socket is never matched again; the LRU ages it out.
//!
//! What this does not see: a socket created before its process was watched, or
//! received from another process (not recorded, let through: fails open), and
//! AF_PACKET sockets, whose frames bypass the cgroup egress hook.
//!
//! match-proto: cgroup/sock_create (struct bpf_sock), cgroup_skb/egress (struct __sk_buff)

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_sk_fullsock},
    macros::{cgroup_skb, cgroup_sock, map},
    maps::LruHashMap,
    programs::{SkBuffContext, SockContext},
};
use probe_common::{AF_INET, AF_INET6, HookDest, MAX_WATCHED};

use crate::{
    block::{ALLOW, judge, rules_in_force},
    util::{current_ids, is_watched},
};

/// `IPPROTO_ICMP`, `IPPROTO_ICMPV6`, `SOCK_RAW`.
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;
const SOCK_RAW: u32 = 3;

/// Socket cookie -> tgid of the watched process that created the socket.
#[map]
pub static RAW_OWNERS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(MAX_WATCHED, 0);

/// Whether a socket of this type and protocol sends without the sendmsg hooks.
#[inline(always)]
fn unhooked(ty: u32, protocol: u32) -> bool {
    ty == SOCK_RAW || protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6
}

#[cgroup_sock(sock_create)]
pub fn cg_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the kernel hands the program a valid `bpf_sock`; 4-byte fields.
    let (ty, protocol) = unsafe { ((*ctx.sock).type_, (*ctx.sock).protocol) };
    // TCP and UDP sockets (nearly all of them) cost these two reads.
    if !unhooked(ty, protocol) {
        return ALLOW;
    }
    let (tgid, _) = current_ids();
    if !is_watched(tgid) {
        return ALLOW;
    }
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    // Full map: an LRU evicts the least recently used socket's owner (its sends are
    // then let through unjudged).
    let _ = RAW_OWNERS.insert(&cookie, &tgid, 0);
    ALLOW
}

/// IPv4 header: destination address at 16; IPv6 header: at 24.
const IPV4_DADDR: usize = 16;
const IPV6_DADDR: usize = 24;

#[cgroup_skb(egress)]
pub fn cg_raw_egress(ctx: SkBuffContext) -> i32 {
    // No block rule: one array read per packet.
    if rules_in_force() == 0 {
        return ALLOW;
    }
    // The packet's socket's type and protocol: a TCP or UDP socket (nearly every
    // packet) is never ours, and is let through without a cookie (which the helper
    // would otherwise allocate for it) or a lookup.
    // SAFETY: a context field the verifier checks (a socket pointer or null).
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return ALLOW;
    }
    // SAFETY: `sk` is the context's socket, non-null.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return ALLOW;
    }
    // SAFETY: a full socket from the helper; 4-byte fields.
    let (ty, protocol) = unsafe { ((*full).type_, (*full).protocol) };
    if !unhooked(ty, protocol) {
        return ALLOW;
    }
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    // An ICMP or raw socket we do not own (not a watched process's): one lookup.
    let Some(owner) = RAW_OWNERS.get_ptr(&cookie) else {
        return ALLOW;
    };
    // SAFETY: value pointer from a successful lookup.
    let tgid = unsafe { *owner };
    // The program sees the packet from its network header on.
    let Ok(first) = ctx.skb.load::<u8>(0) else {
        return ALLOW;
    };
    let mut dest = HookDest {
        family: AF_INET,
        port: 0,
        addr: [0; 16],
    };
    match first >> 4 {
        4 => match ctx.skb.load::<[u8; 4]>(IPV4_DADDR) {
            Ok(a) => dest.addr[..4].copy_from_slice(&a),
            Err(_) => return ALLOW,
        },
        6 => match ctx.skb.load::<[u8; 16]>(IPV6_DADDR) {
            Ok(a) => {
                dest.family = AF_INET6;
                dest.addr = a;
            }
            Err(_) => return ALLOW,
        },
        _ => return ALLOW,
    }
    // Judged as a datagram send (`then: udp_send`, port 0). A packet names no
    // thread: the tid reported is the owner's tgid.
    judge(tgid, tgid, &dest, true)
}
