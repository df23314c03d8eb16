//! Datagrams with a destination, and DNS. Sends that name a destination (sendto,
//! sendmsg, sendmmsg with an address: UDP) are reported at the syscall's exit with the
//! destinations the cgroup sendmsg hooks gave during it (the kernel's copy, one per
//! message; see `cgroup_net`), and from user memory only when no hook ran; anything
//! sent to port 53, by address or on a socket connected to port 53, carries the start
//! of the query (up to two iovecs, up to `MMSG_MAX` messages of a sendmmsg);
//! what comes back from port 53 (recvfrom) carries the answer, so userspace can name
//! the addresses a process connects to later.
//!
//! match-proto: syscalls:sys_enter_sendto(fd, buff, len, flags, addr, addr_len) + sys_exit_sendto
//! match-proto: syscalls:sys_enter_sendmsg(fd, msg, flags) + sys_exit_sendmsg
//! match-proto: syscalls:sys_enter_sendmmsg(fd, mmsg, vlen, flags) + sys_exit_sendmmsg
//! match-proto: syscalls:sys_enter_recvfrom(fd, ubuf, size, flags, addr, addr_len) + sys_exit_recvfrom(ret)
//!
//! The exits of the sends are in `send_exit`.
//!
//! Sockets connected to port 53 are noted in `DNS_SOCKS` by `net::sys_exit_connect`
//! (glibc's resolver connects its UDP socket, then uses send/sendmmsg and recvfrom).

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    AF_INET, AF_INET6, AF_UNIX, DNS_ANSWER_CAPTURE, DNS_FROM_ADDR, DNS_FROM_NONE,
    DNS_FROM_UNREADABLE, DNS_QUERY_CAPTURE, DROP_PENDING_RECV_FULL, DROP_PENDING_SEND_FULL,
    DROP_RECV_EXIT_WITHOUT_ENTRY, DROP_RING_FULL_DNS_ANSWER, DROP_RING_FULL_UDP,
    DROP_UNREADABLE_DATAGRAM, DROP_UNREADABLE_FIRST_BYTES, DnsAnswerEvent, EVENT_DNS_ANSWER,
    EVENT_UDP_SEND, FIRST_CALL_SENDMSG, FIRST_CALL_SENDTO, HookDest, PendingRecv, PendingSend,
    SEND_CALL_SENDMMSG, SEND_CALL_SENDMSG, SEND_CALL_SENDTO, UDP_DEST_GIVEN, UDP_DNS,
    UNIX_DATAGRAM, UdpSendEvent,
};

use crate::{
    first_bytes,
    maps::{DNS_SCRATCH, DNS_SOCKS, EVENTS, IN_SEND, PENDING_RECV},
    util::{
        SYSCALL_RET, count_drop, count_missing_entry, current_ids, header, is_watched, park_entry,
        syscall_arg, take_parked,
    },
};

pub const DNS_PORT: u16 = 53;
/// `struct mmsghdr` on 64-bit: a 56-byte `user_msghdr` plus `msg_len` and padding.
pub(crate) const MMSGHDR_SIZE: u64 = 64;

/// Key of `DNS_SOCKS`: the socket's fd within its process.
#[inline(always)]
pub fn dns_sock_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | fd as u32 as u64
}

/// A destination read from a user `struct sockaddr`: the fallback when no cgroup
/// hook ran during the send, and the source recvfrom wrote.
#[inline(always)]
pub(crate) fn read_dest(ptr: u64, len: u64) -> Option<HookDest> {
    if ptr == 0 || len < 8 {
        return None;
    }
    let sa = ptr as *const u8;
    let family: u16 = unsafe { bpf_probe_read_user(sa.cast::<u16>()) }.ok()?;
    let port: u16 = unsafe { bpf_probe_read_user(sa.wrapping_add(2).cast::<u16>()) }.ok()?;
    let mut addr = [0u8; 16];
    match family {
        AF_INET => {
            let v4: [u8; 4] =
                unsafe { bpf_probe_read_user(sa.wrapping_add(4).cast::<[u8; 4]>()) }.ok()?;
            addr[..4].copy_from_slice(&v4);
        }
        AF_INET6 if len >= 24 => {
            addr = unsafe { bpf_probe_read_user(sa.wrapping_add(8).cast::<[u8; 16]>()) }.ok()?;
        }
        _ => return None,
    }
    Some(HookDest {
        family,
        port: u16::from_be(port),
        addr,
    })
}

/// A datagram to a unix address, when no IP destination was found: its path is read
/// from the caller's memory (the fallback: this build has no sendmsg_unix hook).
#[inline(always)]
pub(crate) fn unix_datagram(tgid: u32, tid: u32, fd: i32, ret: i64, ptr: u64, len: u64) {
    if ptr == 0 || len < 3 {
        return;
    }
    let family: Option<u16> = unsafe { bpf_probe_read_user(ptr as *const u16) }.ok();
    if family == Some(AF_UNIX) {
        crate::net::emit_unix_address(tgid, tid, fd, ret, ptr, len as u32, UNIX_DATAGRAM);
    }
}

/// One datagram's payload: up to two iovecs (a query split in two is gathered).
#[derive(Clone, Copy)]
pub(crate) struct Payload {
    pub(crate) buf0: u64,
    pub(crate) len0: u64,
    pub(crate) buf1: u64,
    pub(crate) len1: u64,
}

pub(crate) const NO_PAYLOAD: Payload = Payload {
    buf0: 0,
    len0: 0,
    buf1: 0,
    len1: 0,
};

/// Copies the start of a DNS query into `out`; returns the bytes captured.
#[inline(always)]
fn gather(p: &Payload, out: &mut [u8; DNS_QUERY_CAPTURE]) -> u32 {
    const CAP: u64 = DNS_QUERY_CAPTURE as u64;
    let Some(scratch) = DNS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let scratch = unsafe { &mut *scratch };
    let mut n0 = p.len0;
    if n0 > CAP {
        n0 = CAP;
    }
    // SAFETY: n0 <= CAP, within the scratch's 2 * CAP bytes.
    if n0 > 0
        && unsafe {
            generated::bpf_probe_read_user(
                scratch.as_mut_ptr().cast(),
                n0 as u32,
                p.buf0 as *const _,
            )
        } != 0
    {
        count_drop(DROP_UNREADABLE_DATAGRAM);
        return 0;
    }
    let mut n1 = p.len1;
    if n1 > CAP - n0 {
        n1 = CAP - n0;
    }
    if n1 > CAP - 1 {
        n1 = CAP - 1;
    }
    // The mask changes nothing (n1 < CAP) but gives kernels before ~6.3 a bound they
    // keep: LLVM merges the two clamps above into one branch whose never-taken side
    // those verifiers still walk with n1 unbounded ("R2 min value is negative").
    let mut n1 = n1 & (CAP - 1);
    let off = (n0 & (2 * CAP - 1)) as usize;
    // SAFETY: off <= CAP and n1 <= CAP: the copy ends within the 2 * CAP scratch.
    if n1 > 0
        && off <= CAP as usize
        && unsafe {
            generated::bpf_probe_read_user(
                scratch.as_mut_ptr().wrapping_add(off).cast(),
                n1 as u32,
                p.buf1 as *const _,
            )
        } != 0
    {
        count_drop(DROP_UNREADABLE_DATAGRAM);
        n1 = 0;
    }
    let mut total = n0 + n1;
    if total > CAP {
        total = CAP;
    }
    // SAFETY: total <= CAP, the size of `out`; the scratch is larger.
    if unsafe {
        generated::bpf_probe_read_kernel(
            out.as_mut_ptr().cast(),
            total as u32,
            scratch.as_ptr().cast(),
        )
    } != 0
    {
        return 0;
    }
    total as u32
}

/// Reports one datagram: if it names a destination, or goes to a DNS socket.
/// `ret`: the send syscall's result (only a failure is kept, see `UdpSendEvent`).
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one datagram's facts, from three exits"
)]
pub(crate) fn emit_send(
    tgid: u32,
    tid: u32,
    fd: i32,
    dest: Option<HookDest>,
    dest_flags: u32,
    payload: &Payload,
    on_dns_sock: bool,
    ret: i64,
) {
    if dest.is_none() && !on_dns_sock {
        return;
    }
    let dns = on_dns_sock || dest.as_ref().is_some_and(|d| d.port == DNS_PORT);
    let Some(mut entry) = EVENTS.reserve::<UdpSendEvent>(0) else {
        count_drop(DROP_RING_FULL_UDP);
        return;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e.header = header(EVENT_UDP_SEND, tgid, tid);
    e.fd = fd;
    e.flags = 0;
    e.family = 0;
    e.port = 0;
    e.addr = [0; 16];
    e.len = (payload.len0 + payload.len1) as u32;
    e.ret = if ret < 0 { ret as i32 } else { 0 };
    e.captured_len = 0;
    e.payload = [0; DNS_QUERY_CAPTURE];
    if let Some(d) = dest {
        e.flags |= UDP_DEST_GIVEN | dest_flags;
        e.family = d.family;
        e.port = d.port;
        e.addr = d.addr;
    }
    if dns {
        e.flags |= UDP_DNS;
        e.captured_len = gather(payload, &mut e.payload);
    }
    entry.submit(0);
}

#[inline(always)]
fn park_send(tgid: u32, tid: u32, send: PendingSend) {
    if is_watched(tgid) {
        park_entry(&IN_SEND, tid, &send, DROP_PENDING_SEND_FULL);
    }
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let read = |n| unsafe { ctx.read_at::<u64>(syscall_arg(n)) }.unwrap_or(0);
    let (fd, buf, len) = (read(0) as i32, read(1), read(2));
    park_send(
        tgid,
        tid,
        PendingSend {
            arg: buf,
            len,
            addr_ptr: read(4),
            addr_len: read(5) as u32,
            fd,
            call: SEND_CALL_SENDTO,
            ..Default::default()
        },
    );
    // send(2) on a connected TCP socket is sendto without an address.
    if let Some(dest) = first_bytes::take_awaiting(tgid, fd, len) {
        first_bytes::emit_first(tgid, tid, fd, &dest, buf, len, FIRST_CALL_SENDTO);
    }
    0
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let read = |n| unsafe { ctx.read_at::<u64>(syscall_arg(n)) }.unwrap_or(0);
    let (fd, msg) = (read(0) as i32, read(1));
    park_send(
        tgid,
        tid,
        PendingSend {
            arg: msg,
            fd,
            call: SEND_CALL_SENDMSG,
            ..Default::default()
        },
    );
    // The first iovec of a sendmsg on a connected socket (msg_iov and msg_iovlen at
    // offsets 16 and 24 of `user_msghdr`), read only for a socket still awaited.
    if msg != 0
        && let Some(dest) = first_bytes::take_awaiting(tgid, fd, 1)
    {
        let m = msg as *const u64;
        let iov = unsafe { bpf_probe_read_user(m.wrapping_add(2)) }.unwrap_or(0);
        let iovlen = unsafe { bpf_probe_read_user(m.wrapping_add(3)) }.unwrap_or(0);
        match first_bytes::first_iovec(iov, iovlen) {
            Some((base, len)) => {
                first_bytes::emit_first(tgid, tid, fd, &dest, base, len, FIRST_CALL_SENDMSG)
            }
            None => count_drop(DROP_UNREADABLE_FIRST_BYTES),
        }
    }
    0
}

#[tracepoint]
pub fn sys_enter_sendmmsg(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let read = |n| unsafe { ctx.read_at::<u64>(syscall_arg(n)) }.unwrap_or(0);
    park_send(
        tgid,
        tid,
        PendingSend {
            arg: read(1),
            len: read(2),
            fd: read(0) as i32,
            call: SEND_CALL_SENDMMSG,
            ..Default::default()
        },
    );
    0
}

#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let read = |n| unsafe { ctx.read_at::<u64>(syscall_arg(n)) }.unwrap_or(0);
    let pending = PendingRecv {
        fd: read(0) as i32,
        buf_ptr: read(1),
        addr_ptr: read(4),
        _pad0: 0,
    };
    park_entry(&PENDING_RECV, tid, &pending, DROP_PENDING_RECV_FULL);
    0
}

#[tracepoint]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    // (No `maybe_watched` first: with it, LLVM kept a helper's argument register
    // across the call in `read_dest`, which the verifier refuses.)
    let Some(pending) = take_parked(&PENDING_RECV, tid) else {
        count_missing_entry(tgid, DROP_RECV_EXIT_WITHOUT_ENTRY);
        return 0;
    };
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.unwrap_or(-1);
    if ret <= 0 {
        return 0;
    }
    // The source the kernel wrote into the caller's src_addr (sockaddr_in6 at most).
    let from = read_dest(pending.addr_ptr, 28);
    let from_dns = DNS_SOCKS.get_ptr(dns_sock_key(tgid, pending.fd)).is_some()
        || from.as_ref().is_some_and(|d| d.port == DNS_PORT);
    if !from_dns {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<DnsAnswerEvent>(0) else {
        count_drop(DROP_RING_FULL_DNS_ANSWER);
        return 0;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e.header = header(EVENT_DNS_ANSWER, tgid, tid);
    // Before the submit: userspace's "done" for this answer always follows the mark.
    crate::block::dns_answer_received(tgid, e.header.ktime_ns);
    e.fd = pending.fd;
    e.len = ret as u32;
    e._pad0 = 0;
    e.from_kind = DNS_FROM_NONE;
    e.from = HookDest::default();
    if pending.addr_ptr != 0 {
        match from {
            Some(d) => {
                e.from_kind = DNS_FROM_ADDR;
                e.from = d;
            }
            None => e.from_kind = DNS_FROM_UNREADABLE,
        }
    }
    e.captured_len = 0;
    e.payload = [0; DNS_ANSWER_CAPTURE];
    let n = (ret as u32).min(DNS_ANSWER_CAPTURE as u32);
    // SAFETY: `n` is at most the payload array's size.
    if unsafe {
        generated::bpf_probe_read_user(
            e.payload.as_mut_ptr().cast(),
            n,
            pending.buf_ptr as *const _,
        )
    } == 0
    {
        e.captured_len = n;
    } else {
        count_drop(DROP_UNREADABLE_DATAGRAM);
    }
    entry.submit(0);
    0
}
