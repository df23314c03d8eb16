//! The first bytes a watched process sends on a connection it opened: the start of a
//! TLS ClientHello (whose server name names the destination without DNS) or of an
//! HTTP request (method, Host, path). `net::sys_exit_connect` notes each connected
//! socket in `FIRST_AWAIT` with its destination; the first write, send/sendto,
//! sendmsg or writev on it (the first iovec only) copies up to `FIRST_BYTES_CAPTURE`
//! bytes into a `FirstBytesEvent` and forgets the socket. Userspace parses them.
//!
//! Also here: a query written with write(2) on a socket connected to port 53 (Go's
//! resolver connects its UDP socket and writes), reported like a sendto query.
//!
//! The bytes are taken at the syscall's entry: a send that then fails (EAGAIN on a
//! full socket) is retried by the program with the same bytes, so nothing is lost by
//! not waiting for the result, and no per-thread entry has to be parked.
//! Sends through io_uring are not seen (no syscall tracepoint runs for them).
//!
//! match-proto: syscalls:sys_enter_write(fd, buf, count)
//! match-proto: syscalls:sys_enter_writev(fd, vec, vlen)

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    DROP_RING_FULL_FIRST_BYTES, DROP_UNREADABLE_FIRST_BYTES, EVENT_FIRST_BYTES,
    FIRST_BYTES_CAPTURE, FIRST_CALL_WRITE, FIRST_CALL_WRITEV, FirstBytesEvent, HookDest,
};

use crate::{
    dns::{NO_PAYLOAD, Payload, dns_sock_key, emit_send},
    maps::{DNS_SOCKS, EVENTS, FIRST_AWAIT},
    util::{count_drop, current_ids, header, is_watched, syscall_arg, take_lru},
};

/// After a connect that succeeded or is in progress: the socket's first send will
/// be captured. Port 53 is left to the DNS sensor (`DNS_SOCKS`).
#[inline(always)]
pub fn await_first_bytes(tgid: u32, fd: i32, dest: &HookDest) {
    let key = dns_sock_key(tgid, fd);
    if dest.port == crate::dns::DNS_PORT {
        let _ = FIRST_AWAIT.remove(&key);
        return;
    }
    // The fd number may have been a DNS socket before (Go closes its resolver's
    // socket and reuses the number): what this one writes is not a query.
    let _ = DNS_SOCKS.remove(&key);
    let _ = FIRST_AWAIT.insert(key, dest, 0);
}

/// The destination of a connected socket that has sent nothing yet, taken out of
/// `FIRST_AWAIT` (so each connection is captured once); `None` for any other fd,
/// which costs this one lookup.
#[inline(always)]
pub fn take_awaiting(tgid: u32, fd: i32, len: u64) -> Option<HookDest> {
    if len == 0 {
        return None;
    }
    take_lru(&FIRST_AWAIT, dns_sock_key(tgid, fd))
}

/// Copies the start of `buf` into a `FirstBytesEvent`.
#[inline(always)]
pub fn emit_first(tgid: u32, tid: u32, fd: i32, dest: &HookDest, buf: u64, len: u64, call: u32) {
    const CAP: u64 = FIRST_BYTES_CAPTURE as u64;
    let Some(mut entry) = EVENTS.reserve::<FirstBytesEvent>(0) else {
        count_drop(DROP_RING_FULL_FIRST_BYTES);
        return;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e.header = header(EVENT_FIRST_BYTES, tgid, tid);
    e.fd = fd;
    e.call = call;
    e.len = len.min(u32::MAX as u64) as u32;
    e.captured_len = 0;
    e.dest = *dest;
    e._pad0 = 0;
    let mut n = len;
    if n > CAP {
        n = CAP;
    }
    // The mask changes nothing (n <= CAP) but keeps a bound that verifiers before
    // ~6.3 follow when LLVM merges the clamp into a select (see `dns::gather`).
    let n = n & (2 * CAP - 1);
    // SAFETY: n <= CAP, the payload array's size; the ring record is ours.
    if n > 0
        && n <= CAP
        && unsafe {
            generated::bpf_probe_read_user(e.payload.as_mut_ptr().cast(), n as u32, buf as *const _)
        } == 0
    {
        e.captured_len = n as u32;
    } else {
        count_drop(DROP_UNREADABLE_FIRST_BYTES);
    }
    entry.submit(0);
}

/// write(2): the hottest syscall of all. An unwatched process pays the `WATCHED`
/// lookup only; a watched one two more (its connected sockets, its DNS sockets).
#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let read = |n| unsafe { ctx.read_at::<u64>(syscall_arg(n)) }.unwrap_or(0);
    let (fd, buf, len) = (read(0) as i32, read(1), read(2));
    if let Some(dest) = take_awaiting(tgid, fd, len) {
        emit_first(tgid, tid, fd, &dest, buf, len, FIRST_CALL_WRITE);
    } else if len > 0 && DNS_SOCKS.get_ptr(dns_sock_key(tgid, fd)).is_some() {
        let payload = Payload {
            buf0: buf,
            len0: len,
            ..NO_PAYLOAD
        };
        emit_send(tgid, tid, fd, None, 0, &payload, true, 0);
    }
    0
}

/// The first iovec of a writev/sendmsg: (base, len), or `None` if unreadable.
#[inline(always)]
pub fn first_iovec(iov: u64, iovlen: u64) -> Option<(u64, u64)> {
    if iov == 0 || iovlen == 0 {
        return None;
    }
    let v = iov as *const u64;
    let base = unsafe { bpf_probe_read_user(v) }.ok()?;
    let len = unsafe { bpf_probe_read_user(v.wrapping_add(1)) }.ok()?;
    Some((base, len))
}

#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let read = |n| unsafe { ctx.read_at::<u64>(syscall_arg(n)) }.unwrap_or(0);
    let (fd, vec, vlen) = (read(0) as i32, read(1), read(2));
    let Some(dest) = take_awaiting(tgid, fd, vlen) else {
        return 0;
    };
    match first_iovec(vec, vlen) {
        Some((base, len)) => emit_first(tgid, tid, fd, &dest, base, len, FIRST_CALL_WRITEV),
        None => count_drop(DROP_UNREADABLE_FIRST_BYTES),
    }
    0
}
