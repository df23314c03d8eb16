//! Connects and datagram sends seen by the cgroup v2 sock_addr hooks, attached at the
//! root of the cgroup v2 hierarchy. They run inside the kernel's connect and sendmsg
//! paths, in the calling task, after the kernel copied the caller's sockaddr: they are
//! the primary source of destinations (the kernel's own copy, which no other thread
//! can rewrite and which needs no resident user page). They also see what the syscall
//! tracepoints cannot: connects and sends issued through io_uring.
//!
//! Inside a connect or send syscall of the same thread (an entry parked in
//! `PENDING_CONNECT` / `IN_SEND`), a hook writes the destination into that entry and
//! the syscall's exit reports it with the result (and a DNS query's payload). Outside
//! one, the hook reports at once. The key joining the two is the thread id within one
//! syscall: the hook runs synchronously in the thread that made the syscall, between
//! its entry and exit tracepoints, and a thread is in one syscall at a time; a socket
//! cookie would need the fd's `struct socket` walked from the syscall side and adds
//! nothing to that.
//!
//! match-proto: cgroup/connect4, cgroup/connect6, cgroup/sendmsg4, cgroup/sendmsg6 (struct bpf_sock_addr)

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use probe_common::{
    AF_INET, AF_INET6, CONNECT_DEST_FROM_HOOK, ConnectEvent, DNS_QUERY_CAPTURE,
    DROP_MMSG_NOT_INSPECTED, DROP_RING_FULL_CONNECT, DROP_RING_FULL_UDP, EVENT_CONNECT_ISSUED,
    EVENT_UDP_SEND, HookDest, MMSG_MAX, SEND_CALL_FASTOPEN, UDP_DEST_GIVEN, UDP_OUTSIDE_SYSCALL,
    UdpSendEvent,
};

use crate::{
    maps::{EVENTS, IN_SEND, PENDING_CONNECT},
    util::{count_drop, current_ids, header, is_watched},
};

use crate::block::{ALLOW, judge};

/// Destination from the hook's context: address in network order, port in host order.
/// `family` is the hook's (a sendto with `sin_family = AF_UNSPEC` on an IPv4 UDP
/// socket is sent as AF_INET, and reported so).
#[inline(always)]
fn destination(ctx: &SockAddrContext, family: u16) -> HookDest {
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
    HookDest {
        family,
        port: u16::from_be(sa.user_port as u16),
        addr,
    }
}

/// Reports the connect, then judges it against the block rules (`block::judge`):
/// the verdict is the program's return value.
#[inline(always)]
fn on_connect(ctx: &SockAddrContext, family: u16) -> i32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return ALLOW;
    }
    let dest = destination(ctx, family);
    report_connect(tgid, tid, &dest);
    judge(tgid, tid, &dest, false)
}

#[inline(always)]
fn report_connect(tgid: u32, tid: u32, dest: &HookDest) {
    let dest = *dest;
    if let Some(pending) = PENDING_CONNECT.get_ptr_mut(tid) {
        // SAFETY: this thread's own entry; only this thread writes it until its exit.
        let pending = unsafe { &mut *pending };
        if pending.hooked == 0 {
            pending.dest = dest;
            pending.hooked = 1;
        }
        return;
    }
    // Inside a send syscall: a TCP Fast Open connect (sendto/sendmsg with
    // MSG_FASTOPEN). The send's exit reports it, as a connect, with the result.
    if let Some(send) = IN_SEND.get_ptr_mut(tid) {
        // SAFETY: this thread's own entry; only this thread writes it until its exit.
        let send = unsafe { &mut *send };
        if send.hooked == 0 {
            send.dests[0] = dest;
            send.hooked = 1;
            send.call |= SEND_CALL_FASTOPEN;
        }
        return;
    }
    // No connect syscall of this thread: io_uring, or the entry could not be parked.
    match EVENTS.reserve::<ConnectEvent>(0) {
        Some(mut entry) => {
            entry.write(ConnectEvent {
                header: header(EVENT_CONNECT_ISSUED, tgid, tid),
                fd: -1,
                ret: 0,
                family: dest.family,
                port: dest.port,
                flags: CONNECT_DEST_FROM_HOOK,
                addr: dest.addr,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_CONNECT),
    }
}

/// Reports the datagram's destination, then judges it like a connect.
#[inline(always)]
fn on_sendmsg(ctx: &SockAddrContext, family: u16) -> i32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return ALLOW;
    }
    let dest = destination(ctx, family);
    report_send(tgid, tid, &dest);
    judge(tgid, tid, &dest, true)
}

#[inline(always)]
fn report_send(tgid: u32, tid: u32, dest: &HookDest) {
    let dest = *dest;
    let mut fd = -1;
    let mut flags = UDP_DEST_GIVEN | UDP_OUTSIDE_SYSCALL;
    if let Some(pending) = IN_SEND.get_ptr_mut(tid) {
        // SAFETY: this thread's own entry; only this thread writes it until its exit.
        let pending = unsafe { &mut *pending };
        let i = pending.hooked as usize;
        if i < MMSG_MAX {
            pending.dests[i] = dest;
            pending.hooked += 1;
            return;
        }
        // More destinations than the entry keeps (a long sendmmsg): reported now,
        // without the payload.
        fd = pending.fd;
        flags = UDP_DEST_GIVEN;
        if dest.port == crate::dns::DNS_PORT {
            count_drop(DROP_MMSG_NOT_INSPECTED);
        }
    }
    let Some(mut entry) = EVENTS.reserve::<UdpSendEvent>(0) else {
        count_drop(DROP_RING_FULL_UDP);
        return;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e.header = header(EVENT_UDP_SEND, tgid, tid);
    e.fd = fd;
    // The payload is not visible here: a DNS query sent this way has no name.
    e.flags = flags;
    e.family = dest.family;
    e.port = dest.port;
    e.captured_len = 0;
    e.len = 0;
    e.ret = 0;
    e.addr = dest.addr;
    e.payload = [0; DNS_QUERY_CAPTURE];
    entry.submit(0);
}

#[cgroup_sock_addr(connect4)]
pub fn cg_connect4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, AF_INET)
}

#[cgroup_sock_addr(connect6)]
pub fn cg_connect6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, AF_INET6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn cg_sendmsg4(ctx: SockAddrContext) -> i32 {
    on_sendmsg(&ctx, AF_INET)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn cg_sendmsg6(ctx: SockAddrContext) -> i32 {
    on_sendmsg(&ctx, AF_INET6)
}
