//! Outbound connects of watched processes, with destination and result.
//!
//! match-proto: syscalls:sys_enter_connect(fd, uservaddr, addrlen)
//! match-proto: syscalls:sys_exit_connect(ret)
//!
//! Entry parks the sockaddr pointer; exit reads the address (resident by then: the
//! kernel copied it) and emits it with the result. Non-blocking connects report
//! `-EINPROGRESS`; their final outcome is not captured by these tracepoints.

use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    AF_INET, AF_INET6, ConnectEvent, DROP_RING_FULL_CONNECT, DROP_UNREADABLE_SOCKADDR,
    EVENT_CONNECT, PendingConnect,
};

use crate::{
    maps::{EVENTS, PENDING_CONNECT},
    util::{SYSCALL_RET, count_drop, current_ids, header, is_watched, syscall_arg, take_parked},
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
    };
    let _ = PENDING_CONNECT.insert(tid, pending, 0);
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
    let Some(pending) = take_parked(&PENDING_CONNECT, tid) else {
        return Ok(());
    };
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.map_err(|e| e as i64)?;
    let addr = pending.addr_ptr as *const u8;
    let Ok(family) = (unsafe { bpf_probe_read_user(addr.cast::<u16>()) }) else {
        count_drop(DROP_UNREADABLE_SOCKADDR);
        return Ok(());
    };
    // sockaddr_in / sockaddr_in6: port (network order) at offset 2 in both; the
    // address at 4 (v4) or 8 (v6).
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
    match EVENTS.reserve::<ConnectEvent>(0) {
        Some(mut entry) => {
            entry.write(ConnectEvent {
                header: header(EVENT_CONNECT, tgid, tid),
                fd: pending.fd,
                ret: ret as i32,
                family,
                port: u16::from_be(port),
                _pad0: 0,
                addr: ip,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_CONNECT),
    }
    Ok(())
}
