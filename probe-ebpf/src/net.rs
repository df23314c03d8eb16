//! Outbound connects of watched processes, with destination and result.
//!
//! match-proto: syscalls:sys_enter_connect(fd, uservaddr, addrlen)
//! match-proto: syscalls:sys_exit_connect(ret)

use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    AF_INET, AF_INET6, ConnectEvent, DROP_RING_FULL_CONNECT, EVENT_CONNECT, PendingConnect,
};

use crate::{
    maps::{EVENTS, PENDING_CONNECT},
    util::{SYSCALL_RET, count_drop, current_ids, header, is_watched, syscall_arg, take_parked},
};

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_enter_connect(&ctx);
    0
}

#[inline(always)]
fn try_enter_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return Ok(());
    }
    let fd: i64 = unsafe { ctx.read_at(syscall_arg(0)) }.map_err(|e| e as i64)?;
    let addr: *const u8 = unsafe { ctx.read_at(syscall_arg(1)) }.map_err(|e| e as i64)?;
    let addrlen: i64 = unsafe { ctx.read_at(syscall_arg(2)) }.map_err(|e| e as i64)?;
    let family: u16 = unsafe { bpf_probe_read_user(addr.cast::<u16>()) }.map_err(|e| e as i64)?;
    let mut pending = PendingConnect {
        fd: fd as i32,
        family,
        port: 0,
        addr: [0; 16],
    };
    // sockaddr_in / sockaddr_in6: port (network order) at offset 2 in both.
    let port: u16 =
        unsafe { bpf_probe_read_user(addr.add(2).cast::<u16>()) }.map_err(|e| e as i64)?;
    pending.port = u16::from_be(port);
    match family {
        AF_INET if addrlen >= 8 => {
            unsafe { bpf_probe_read_user_buf(addr.add(4), &mut pending.addr[..4]) }
                .map_err(|e| e as i64)?;
        }
        AF_INET6 if addrlen >= 24 => {
            unsafe { bpf_probe_read_user_buf(addr.add(8), &mut pending.addr) }
                .map_err(|e| e as i64)?;
        }
        _ => return Ok(()),
    }
    let _ = PENDING_CONNECT.insert(tid, pending, 0);
    Ok(())
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
    match EVENTS.reserve::<ConnectEvent>(0) {
        Some(mut entry) => {
            entry.write(ConnectEvent {
                header: header(EVENT_CONNECT, tgid, tid),
                fd: pending.fd,
                ret: ret as i32,
                family: pending.family,
                port: pending.port,
                _pad0: 0,
                addr: pending.addr,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_CONNECT),
    }
    Ok(())
}
