//! Datagrams with a destination, and DNS. Sends that name a destination (sendto,
//! sendmsg, sendmmsg with an address: UDP) are reported with it; anything sent to port
//! 53, by address or on a socket connected to port 53, carries the start of the query;
//! what comes back from port 53 (recvfrom) carries the answer, so userspace can name
//! the addresses a process connects to later.
//!
//! match-proto: syscalls:sys_enter_sendto(fd, buff, len, flags, addr, addr_len) + sys_exit_sendto
//! match-proto: syscalls:sys_enter_sendmsg(fd, msg, flags) + sys_exit_sendmsg
//! match-proto: syscalls:sys_enter_sendmmsg(fd, mmsg, vlen, flags) + sys_exit_sendmmsg
//! match-proto: syscalls:sys_enter_recvfrom(fd, ubuf, size, flags, addr, addr_len) + sys_exit_recvfrom(ret)
//!
//! Sockets connected to port 53 are noted in `DNS_SOCKS` by `net::sys_exit_connect`
//! (glibc's resolver connects its UDP socket, then uses send/sendmmsg and recvfrom).

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    AF_INET, AF_INET6, DNS_ANSWER_CAPTURE, DNS_QUERY_CAPTURE, DROP_RING_FULL_DNS_ANSWER,
    DROP_RING_FULL_UDP, DROP_UNREADABLE_DATAGRAM, DnsAnswerEvent, EVENT_DNS_ANSWER, EVENT_UDP_SEND,
    PendingRecv, UDP_DEST_GIVEN, UDP_DNS, UdpSendEvent,
};

use crate::{
    maps::{DNS_SOCKS, EVENTS, IN_SEND, PENDING_RECV},
    util::{SYSCALL_RET, count_drop, current_ids, header, is_watched, syscall_arg, take_parked},
};

const DNS_PORT: u16 = 53;
/// Messages of one sendmmsg that are looked at (glibc sends A and AAAA together).
const MMSG_MAX: u32 = 2;
/// `struct mmsghdr` on 64-bit: a 56-byte `user_msghdr` plus `msg_len` and padding.
const MMSGHDR_SIZE: u64 = 64;

/// Key of `DNS_SOCKS`: the socket's fd within its process.
#[inline(always)]
pub fn dns_sock_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | fd as u32 as u64
}

/// A destination read from a user `struct sockaddr`.
struct Dest {
    family: u16,
    port: u16,
    addr: [u8; 16],
}

#[inline(always)]
fn read_dest(ptr: u64, len: u64) -> Option<Dest> {
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
    Some(Dest {
        family,
        port: u16::from_be(port),
        addr,
    })
}

/// Reports one datagram: if it names a destination, or goes to a DNS socket.
#[inline(always)]
fn emit_send(tgid: u32, tid: u32, fd: i32, dest: Option<Dest>, buf: u64, len: u64) {
    let on_dns_sock = DNS_SOCKS.get_ptr(dns_sock_key(tgid, fd)).is_some();
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
    e.len = len as u32;
    e._pad0 = 0;
    e.captured_len = 0;
    e.payload = [0; DNS_QUERY_CAPTURE];
    if let Some(d) = dest {
        e.flags |= UDP_DEST_GIVEN;
        e.family = d.family;
        e.port = d.port;
        e.addr = d.addr;
    }
    if dns {
        e.flags |= UDP_DNS;
        let n = (len as u32).min(DNS_QUERY_CAPTURE as u32) & (DNS_QUERY_CAPTURE as u32 * 2 - 1);
        let n = n.min(DNS_QUERY_CAPTURE as u32);
        if n > 0 {
            // SAFETY: `n` is at most the payload array's size.
            let r = unsafe {
                generated::bpf_probe_read_user(e.payload.as_mut_ptr().cast(), n, buf as *const _)
            };
            if r == 0 {
                e.captured_len = n;
            } else {
                count_drop(DROP_UNREADABLE_DATAGRAM);
            }
        }
    }
    entry.submit(0);
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let _ = IN_SEND.insert(tid, 1, 0);
    let read = |n| unsafe { ctx.read_at::<u64>(syscall_arg(n)) }.unwrap_or(0);
    let (fd, buf, len, addr, addr_len) = (read(0) as i32, read(1), read(2), read(4), read(5));
    emit_send(tgid, tid, fd, read_dest(addr, addr_len), buf, len);
    0
}

/// `user_msghdr`: the destination (msg_name) and the first iovec's buffer.
#[inline(always)]
fn send_msghdr(tgid: u32, tid: u32, fd: i32, msg: u64) {
    let m = msg as *const u64;
    let (Ok(name), Ok(namelen), Ok(iov), Ok(iovlen)) = (
        unsafe { bpf_probe_read_user(m) },
        unsafe { bpf_probe_read_user(m.wrapping_add(1).cast::<u32>()) },
        unsafe { bpf_probe_read_user(m.wrapping_add(2)) },
        unsafe { bpf_probe_read_user(m.wrapping_add(3)) },
    ) else {
        count_drop(DROP_UNREADABLE_DATAGRAM);
        return;
    };
    let (mut buf, mut len) = (0u64, 0u64);
    if iov != 0 && iovlen > 0 {
        let v = iov as *const u64;
        buf = unsafe { bpf_probe_read_user(v) }.unwrap_or(0);
        len = unsafe { bpf_probe_read_user(v.wrapping_add(1)) }.unwrap_or(0);
    }
    emit_send(tgid, tid, fd, read_dest(name, namelen as u64), buf, len);
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let _ = IN_SEND.insert(tid, 1, 0);
    let fd = unsafe { ctx.read_at::<u64>(syscall_arg(0)) }.unwrap_or(0) as i32;
    let msg = unsafe { ctx.read_at::<u64>(syscall_arg(1)) }.unwrap_or(0);
    if msg != 0 {
        send_msghdr(tgid, tid, fd, msg);
    }
    0
}

#[tracepoint]
pub fn sys_enter_sendmmsg(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let _ = IN_SEND.insert(tid, 1, 0);
    let fd = unsafe { ctx.read_at::<u64>(syscall_arg(0)) }.unwrap_or(0) as i32;
    let mmsg = unsafe { ctx.read_at::<u64>(syscall_arg(1)) }.unwrap_or(0);
    let vlen = unsafe { ctx.read_at::<u64>(syscall_arg(2)) }.unwrap_or(0) as u32;
    if mmsg == 0 {
        return 0;
    }
    for i in 0..MMSG_MAX {
        if i >= vlen {
            break;
        }
        send_msghdr(tgid, tid, fd, mmsg + i as u64 * MMSGHDR_SIZE);
    }
    0
}

/// The end of a send syscall: the cgroup sendmsg hooks may report this thread's
/// sends again (see `cgroup_net`).
#[inline(always)]
fn send_done() {
    let (_, tid) = current_ids();
    let _ = IN_SEND.remove(&tid);
}

#[tracepoint]
pub fn sys_exit_sendto(_ctx: TracePointContext) -> u32 {
    send_done();
    0
}

#[tracepoint]
pub fn sys_exit_sendmsg(_ctx: TracePointContext) -> u32 {
    send_done();
    0
}

#[tracepoint]
pub fn sys_exit_sendmmsg(_ctx: TracePointContext) -> u32 {
    send_done();
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
    let _ = PENDING_RECV.insert(tid, pending, 0);
    0
}

#[tracepoint]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    let Some(pending) = take_parked(&PENDING_RECV, tid) else {
        return 0;
    };
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.unwrap_or(-1);
    if ret <= 0 {
        return 0;
    }
    let from_dns = DNS_SOCKS.get_ptr(dns_sock_key(tgid, pending.fd)).is_some()
        || read_dest(pending.addr_ptr, 8).is_some_and(|d| d.port == DNS_PORT);
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
    e.fd = pending.fd;
    e.len = ret as u32;
    e._pad0 = 0;
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
