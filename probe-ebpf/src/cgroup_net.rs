//! Connects and datagram sends seen by the cgroup v2 sock_addr hooks, attached at the
//! root of the cgroup v2 hierarchy. They run inside the kernel's connect and sendmsg
//! paths whoever calls them, so they see what the syscall tracepoints cannot: connects
//! and sends issued through io_uring. The syscall path stays the primary sensor (it
//! has the fd, the result and the payload); a hook reports only what happened outside
//! a connect/send syscall of the same thread, so nothing is reported twice.
//!
//! match-proto: cgroup/connect4, cgroup/connect6, cgroup/sendmsg4, cgroup/sendmsg6 (struct bpf_sock_addr)

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use probe_common::{
    AF_INET, AF_INET6, ConnectEvent, DNS_QUERY_CAPTURE, DROP_RING_FULL_CONNECT, DROP_RING_FULL_UDP,
    EVENT_CONNECT_ISSUED, EVENT_UDP_SEND, UDP_DEST_GIVEN, UDP_OUTSIDE_SYSCALL, UdpSendEvent,
};

use crate::{
    maps::{EVENTS, IN_SEND, PENDING_CONNECT},
    util::{count_drop, current_ids, header, is_watched},
};

/// A cgroup sock_addr program's verdict: let the call proceed.
const ALLOW: i32 = 1;

/// Destination from the hook's context: address in network order, port in host order.
#[inline(always)]
fn destination(ctx: &SockAddrContext, family: u16) -> ([u8; 16], u16) {
    // SAFETY: the kernel hands the hook a valid `bpf_sock_addr`; every field is read
    // with a 4-byte load, as the verifier requires for these context fields.
    let sa = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        for (i, word) in sa.user_ip6.iter().enumerate() {
            addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    }
    // The port is in network order in the low 16 bits of the word.
    (addr, u16::from_be(sa.user_port as u16))
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, family: u16) {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) || PENDING_CONNECT.get_ptr(&tid).is_some() {
        return;
    }
    let (addr, port) = destination(ctx, family);
    match EVENTS.reserve::<ConnectEvent>(0) {
        Some(mut entry) => {
            entry.write(ConnectEvent {
                header: header(EVENT_CONNECT_ISSUED, tgid, tid),
                fd: -1,
                ret: 0,
                family,
                port,
                _pad0: 0,
                addr,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_CONNECT),
    }
}

#[inline(always)]
fn on_sendmsg(ctx: &SockAddrContext, family: u16) {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) || IN_SEND.get_ptr(&tid).is_some() {
        return;
    }
    let (addr, port) = destination(ctx, family);
    let Some(mut entry) = EVENTS.reserve::<UdpSendEvent>(0) else {
        count_drop(DROP_RING_FULL_UDP);
        return;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e.header = header(EVENT_UDP_SEND, tgid, tid);
    e.fd = -1;
    // The payload is not visible here: a DNS query sent this way has no name.
    e.flags = UDP_DEST_GIVEN | UDP_OUTSIDE_SYSCALL;
    e.family = family;
    e.port = port;
    e.captured_len = 0;
    e.len = 0;
    e._pad0 = 0;
    e.addr = addr;
    e.payload = [0; DNS_QUERY_CAPTURE];
    entry.submit(0);
}

#[cgroup_sock_addr(connect4)]
pub fn cg_connect4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn cg_connect6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, AF_INET6);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn cg_sendmsg4(ctx: SockAddrContext) -> i32 {
    on_sendmsg(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn cg_sendmsg6(ctx: SockAddrContext) -> i32 {
    on_sendmsg(&ctx, AF_INET6);
    ALLOW
}
