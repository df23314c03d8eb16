//! The exits of the send syscalls: each message's destination, the kernel's copy the
//! cgroup sendmsg hooks gave during the call (`cgroup_net`), from user memory only
//! when no hook ran, with the start of its payload when it goes to DNS (`dns`).
//!
//! match-proto: syscalls:sys_exit_sendto(ret)
//! match-proto: syscalls:sys_exit_sendmsg(ret)
//! match-proto: syscalls:sys_exit_sendmmsg(ret)

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use probe_common::{
    DROP_MMSG_NOT_INSPECTED, DROP_SEND_EXIT_WITHOUT_ENTRY, DROP_UNREADABLE_DATAGRAM, HookDest,
    MMSG_MAX, PendingSend, SEND_CALL_FASTOPEN, SEND_CALL_KIND, SEND_CALL_SENDMMSG,
    SEND_CALL_SENDMSG, SEND_CALL_SENDTO, UDP_DEST_FROM_USER, UDP_TCP_FASTOPEN,
};

use crate::{
    dns::{MMSGHDR_SIZE, NO_PAYLOAD, Payload, dns_sock_key, emit_send, read_dest, unix_datagram},
    maps::{DNS_SOCKS, IN_SEND, SEND_MMSG_NEXT, SEND_MMSG_STATE, SEND_USED},
    util::{SYSCALL_RET, count_drop, count_missing_entry, current_ids, maybe_watched, take_parked},
};

/// Takes one of the hooks' destinations for the next message (`SEND_USED` counts
/// them), if one is left.
#[inline(always)]
fn take_hooked(p: &PendingSend) -> Option<HookDest> {
    let used = SEND_USED.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, ours while this program runs.
    let n = unsafe { *used };
    let i = (n as usize) & (MMSG_MAX - 1);
    if n >= p.hooked || n as usize >= MMSG_MAX {
        return None;
    }
    unsafe { *used = n + 1 };
    Some(p.dests[i])
}

/// The next destination of this send: the kernel's copy a hook gave, in order; the
/// caller's memory only when no hook ran during the syscall.
#[inline(always)]
fn next_dest(p: &PendingSend, name: u64, namelen: u64) -> (Option<HookDest>, u32) {
    if p.hooked == 0 {
        return (read_dest(name, namelen), UDP_DEST_FROM_USER);
    }
    let fastopen = if p.call & SEND_CALL_FASTOPEN != 0 {
        UDP_TCP_FASTOPEN
    } else {
        0
    };
    (take_hooked(p), fastopen)
}

/// What every message of one send's exit shares.
struct SendExit<'a> {
    tgid: u32,
    tid: u32,
    p: &'a PendingSend,
    on_dns: bool,
    ret: i64,
}

/// One `user_msghdr` at exit: its destination (if it names one) and first two iovecs.
///
/// A function of its own, not inlined: inlined into the unrolled sendmmsg loop, LLVM
/// reloaded a spilled value on a path that never stored it, which kernels before
/// 6.5 refuse ("invalid read from stack") even for root.
///
/// `unix` is a constant at each call (true only for sendmsg): the verifier then
/// skips the unix-path fallback where it cannot run (sendmmsg), which kept the
/// sendmmsg exit under the instruction limit of older verifiers.
#[inline(never)]
fn exit_msghdr(x: &SendExit, msg: u64, unix: u64) {
    let (tgid, tid, p, on_dns, ret) = (x.tgid, x.tid, x.p, x.on_dns, x.ret);
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
    let mut payload = NO_PAYLOAD;
    if iov != 0 && iovlen > 0 {
        let v = iov as *const u64;
        payload.buf0 = unsafe { bpf_probe_read_user(v) }.unwrap_or(0);
        payload.len0 = unsafe { bpf_probe_read_user(v.wrapping_add(1)) }.unwrap_or(0);
        if iovlen > 1 {
            payload.buf1 = unsafe { bpf_probe_read_user(v.wrapping_add(2)) }.unwrap_or(0);
            payload.len1 = unsafe { bpf_probe_read_user(v.wrapping_add(3)) }.unwrap_or(0);
        }
    }
    let (dest, flags) = if name != 0 {
        next_dest(p, name, namelen as u64)
    } else {
        (None, 0)
    };
    if unix != 0 && dest.is_none() && p.hooked == 0 {
        unix_datagram(tgid, tid, p.fd, ret, name, namelen as u64);
    }
    emit_send(tgid, tid, p.fd, dest, flags, &payload, on_dns, ret);
}

/// The start of a send syscall's exit: the parked entry, or `None` (counted).
#[inline(always)]
fn send_exit_start(ctx: &TracePointContext) -> Option<(u32, u32, PendingSend, i64, bool)> {
    let (tgid, tid) = current_ids();
    if !maybe_watched(tgid) {
        return None;
    }
    let Some(p) = take_parked(&IN_SEND, tid) else {
        count_missing_entry(tgid, DROP_SEND_EXIT_WITHOUT_ENTRY);
        return None;
    };
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.unwrap_or(-1);
    let on_dns = DNS_SOCKS.get_ptr(dns_sock_key(tgid, p.fd)).is_some();
    let used = SEND_USED.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, ours while this program runs.
    unsafe { *used = 0 };
    Some((tgid, tid, p, ret, on_dns))
}

/// The end of a send syscall: any destination a hook gave that no message was
/// matched with (a msghdr rewritten meanwhile), without payload.
#[inline(always)]
fn send_exit_rest(tgid: u32, tid: u32, p: &PendingSend, ret: i64) {
    for _ in 0..MMSG_MAX {
        match take_hooked(p) {
            Some(dest) => emit_send(tgid, tid, p.fd, Some(dest), 0, &NO_PAYLOAD, false, ret),
            None => break,
        }
    }
}

/// Each program handles its own syscall only: one program holding the three
/// shapes was more than the verifiers of 5.10 and 6.1 would follow.
#[tracepoint]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid, p, ret, on_dns)) = send_exit_start(&ctx) else {
        return 0;
    };
    if p.call & SEND_CALL_KIND == SEND_CALL_SENDTO {
        let payload = Payload {
            buf0: p.arg,
            len0: p.len,
            ..NO_PAYLOAD
        };
        let (dest, flags) = if p.addr_ptr != 0 {
            next_dest(&p, p.addr_ptr, p.addr_len as u64)
        } else {
            (None, 0)
        };
        if dest.is_none() && p.hooked == 0 {
            unix_datagram(tgid, tid, p.fd, ret, p.addr_ptr, p.addr_len as u64);
        }
        emit_send(tgid, tid, p.fd, dest, flags, &payload, on_dns, ret);
    }
    send_exit_rest(tgid, tid, &p, ret);
    0
}

#[tracepoint]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid, p, ret, on_dns)) = send_exit_start(&ctx) else {
        return 0;
    };
    if p.call & SEND_CALL_KIND == SEND_CALL_SENDMSG && p.arg != 0 {
        let x = SendExit {
            tgid,
            tid,
            p: &p,
            on_dns,
            ret,
        };
        exit_msghdr(&x, p.arg, 1);
    }
    send_exit_rest(tgid, tid, &p, ret);
    0
}

/// The sendmmsg exit's state between the runs of its chain.
#[repr(C)]
pub struct MmsgState {
    p: PendingSend,
    ret: i64,
    /// Messages to look at: those sent, at most `MMSG_MAX`.
    sent: u64,
    /// The next message.
    index: u64,
    tgid: u32,
    tid: u32,
    on_dns: u32,
    _pad0: u32,
}

#[tracepoint]
pub fn sys_exit_sendmmsg(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid, p, ret, on_dns)) = send_exit_start(&ctx) else {
        return 0;
    };
    if p.call & SEND_CALL_KIND != SEND_CALL_SENDMMSG || p.arg == 0 {
        send_exit_rest(tgid, tid, &p, ret);
        return 0;
    }
    // Only the messages sent (the result) are looked at.
    let sent = if ret >= 0 && (ret as u64) < p.len {
        ret as u64
    } else {
        p.len
    };
    if sent > MMSG_MAX as u64 && on_dns {
        count_drop(DROP_MMSG_NOT_INSPECTED);
    }
    let Some(state) = SEND_MMSG_STATE.get_ptr_mut(0) else {
        send_exit_rest(tgid, tid, &p, ret);
        return 0;
    };
    // SAFETY: per-CPU state, ours while this chain of programs runs.
    unsafe {
        *state = MmsgState {
            p,
            ret,
            sent: sent.min(MMSG_MAX as u64),
            index: 0,
            tgid,
            tid,
            on_dns: on_dns as u32,
            _pad0: 0,
        };
        SEND_MMSG_NEXT.tail_call(&ctx, 0);
    }
    // The chain could not start (its slot empty): the hooks' destinations still go
    // out, without the messages' DNS names.
    if on_dns {
        count_drop(DROP_MMSG_NOT_INSPECTED);
    }
    send_exit_rest(tgid, tid, &p, ret);
    0
}

/// One message of a sendmmsg exit, then a tail call for the next; never attached,
/// only tail-called (slot 0 of `SEND_MMSG_NEXT`).
#[tracepoint]
pub fn sendmmsg_next(ctx: TracePointContext) -> u32 {
    let Some(state) = SEND_MMSG_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU state written by `sys_exit_sendmmsg` in this chain.
    let s = unsafe { &mut *state };
    if s.index >= s.sent || s.index >= MMSG_MAX as u64 {
        send_exit_rest(s.tgid, s.tid, &s.p, s.ret);
        return 0;
    }
    let x = SendExit {
        tgid: s.tgid,
        tid: s.tid,
        p: &s.p,
        on_dns: s.on_dns != 0,
        ret: s.ret,
    };
    exit_msghdr(&x, s.p.arg + s.index * MMSGHDR_SIZE, 0);
    s.index += 1;
    // SAFETY: slot 0 holds this program; returns only when the call fails.
    unsafe { SEND_MMSG_NEXT.tail_call(&ctx, 0) };
    send_exit_rest(s.tgid, s.tid, &s.p, s.ret);
    0
}
