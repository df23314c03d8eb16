//! Outbound connects of watched processes, with destination and result.
//!
//! match-proto: syscalls:sys_enter_connect(fd, uservaddr, addrlen)
//! match-proto: syscalls:sys_exit_connect(ret)
//!
//! Entry parks the sockaddr pointer. The cgroup connect hook, which runs inside the
//! syscall in the same thread, writes the kernel's copy of the destination into the
//! parked entry (`cgroup_net`); the exit emits that copy with the result. Only when
//! no hook ran (hooks not attached, unix sockets, a socket the kernel skips the hook
//! for) is the address read from user memory at exit, as the fallback tier.
//! Non-blocking connects return `-EINPROGRESS`; their outcome comes from the TCP state
//! machine (`net_state.rs`).

use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    AF_INET, AF_INET6, AF_UNIX, CONNECT_DEST_FROM_HOOK, ConnectEvent,
    DROP_CONNECT_EXIT_WITHOUT_ENTRY, DROP_PENDING_CONNECT_FULL, DROP_RING_FULL_CONNECT,
    DROP_UNREADABLE_SOCKADDR, EVENT_CONNECT, EVENT_CONNECT_UNIX, HookDest, PendingConnect,
    UNIX_ABSTRACT, UNIX_PATH_LEN, UnixConnectEvent,
};

use crate::{
    maps::{DNS_SOCKS, EVENTS, PENDING_CONNECT},
    util::{
        SYSCALL_RET, count_drop, count_missing_entry, current_ids, header, is_watched,
        maybe_watched, park_entry, syscall_arg, take_parked,
    },
};

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    let (Ok(fd), Ok(addr_ptr), Ok(addrlen)) = (
        unsafe { ctx.read_at::<i64>(syscall_arg(0)) },
        unsafe { ctx.read_at::<u64>(syscall_arg(1)) },
        unsafe { ctx.read_at::<i64>(syscall_arg(2)) },
    ) else {
        count_drop(DROP_UNREADABLE_SOCKADDR);
        return 0;
    };
    let pending = PendingConnect {
        addr_ptr,
        fd: fd as i32,
        addrlen: addrlen as u32,
        hooked: 0,
        dest: HookDest::default(),
    };
    park_entry(&PENDING_CONNECT, tid, &pending, DROP_PENDING_CONNECT_FULL);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_exit_connect(&ctx);
    0
}

#[inline(always)]
fn try_exit_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !maybe_watched(tgid) {
        return Ok(());
    }
    let Some(pending) = take_parked(&PENDING_CONNECT, tid) else {
        count_missing_entry(tgid, DROP_CONNECT_EXIT_WITHOUT_ENTRY);
        return Ok(());
    };
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.map_err(|e| e as i64)?;
    if pending.hooked != 0 {
        // The kernel's own copy: what a thread rewrites in its buffer meanwhile, or a
        // page that was not resident, changes nothing.
        let d = pending.dest;
        emit_connect(tgid, tid, pending.fd, ret, &d, CONNECT_DEST_FROM_HOOK);
        return Ok(());
    }
    let addr = pending.addr_ptr as *const u8;
    let Ok(family) = (unsafe { bpf_probe_read_user(addr.cast::<u16>()) }) else {
        count_drop(DROP_UNREADABLE_SOCKADDR);
        return Ok(());
    };
    // sockaddr_in / sockaddr_in6: port (network order) at offset 2 in both; the
    // address at 4 (v4) or 8 (v6).
    if family == AF_UNIX {
        return emit_unix(tgid, tid, &pending, ret);
    }
    let mut ip = [0u8; 16];
    let read = match family {
        AF_INET if pending.addrlen >= 8 => unsafe {
            bpf_probe_read_user_buf(addr.add(4), &mut ip[..4])
        },
        AF_INET6 if pending.addrlen >= 24 => unsafe {
            bpf_probe_read_user_buf(addr.add(8), &mut ip)
        },
        // Other families (unix, netlink, AF_UNSPEC disconnects) are not outbound
        // network connections for this sensor.
        _ => return Ok(()),
    };
    let port = unsafe { bpf_probe_read_user(addr.add(2).cast::<u16>()) };
    let (Ok(()), Ok(port)) = (read, port) else {
        count_drop(DROP_UNREADABLE_SOCKADDR);
        return Ok(());
    };
    let dest = HookDest {
        family,
        port: u16::from_be(port),
        addr: ip,
    };
    emit_connect(tgid, tid, pending.fd, ret, &dest, 0);
    Ok(())
}

#[inline(always)]
fn emit_connect(tgid: u32, tid: u32, fd: i32, ret: i64, dest: &HookDest, flags: u32) {
    if dest.port == 53 {
        // What this socket sends is a DNS query, what it receives an answer.
        let _ = DNS_SOCKS.insert(crate::dns::dns_sock_key(tgid, fd), 1, 0);
    }
    // -EINPROGRESS: a non-blocking connect sends once the handshake is done.
    if ret == 0 || ret == -115 {
        crate::first_bytes::await_first_bytes(tgid, fd, dest);
    }
    match EVENTS.reserve::<ConnectEvent>(0) {
        Some(mut entry) => {
            entry.write(ConnectEvent {
                header: header(EVENT_CONNECT, tgid, tid),
                fd,
                ret: ret as i32,
                family: dest.family,
                port: dest.port,
                flags,
                addr: dest.addr,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_CONNECT),
    }
}

/// A unix-socket connect: the path (or abstract name) and the result.
#[inline(always)]
fn emit_unix(tgid: u32, tid: u32, pending: &PendingConnect, ret: i64) -> Result<(), i64> {
    emit_unix_address(
        tgid,
        tid,
        pending.fd,
        ret,
        pending.addr_ptr,
        pending.addrlen,
        0,
    );
    Ok(())
}

/// A unix address read from the caller's `struct sockaddr_un` at a syscall's exit
/// (connect, or a datagram send with `UNIX_DATAGRAM`): no cgroup hook gives these
/// in this build.
#[inline(always)]
pub fn emit_unix_address(
    tgid: u32,
    tid: u32,
    fd: i32,
    ret: i64,
    addr_ptr: u64,
    addrlen: u32,
    flags: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<UnixConnectEvent>(0) else {
        count_drop(DROP_RING_FULL_CONNECT);
        return;
    };
    // SAFETY: reserved record, exclusively ours until submit.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    e.header = header(EVENT_CONNECT_UNIX, tgid, tid);
    e.fd = fd;
    e.ret = ret as i32;
    e.flags = flags;
    e._pad0 = [0; 4];
    e.path = [0; UNIX_PATH_LEN];
    let len = (addrlen as usize).saturating_sub(2).min(UNIX_PATH_LEN);
    e.path_len = len as u32;
    // sun_path starts at offset 2. Read the whole array; a short sockaddr on the last
    // mapped bytes of a page falls back to a string read.
    let src = (addr_ptr as *const u8).wrapping_add(2);
    if unsafe { bpf_probe_read_user_buf(src, &mut e.path) }.is_err()
        && unsafe { aya_ebpf::helpers::bpf_probe_read_user_str_bytes(src, &mut e.path) }.is_err()
    {
        e.path_len = 0;
        count_drop(DROP_UNREADABLE_SOCKADDR);
    }
    if len > 0 && e.path[0] == 0 {
        e.flags |= UNIX_ABSTRACT;
    }
    entry.submit(0);
}
