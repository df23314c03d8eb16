//! Host identity without files: uname(2), the SIOCGIFHWADDR ioctl and a netlink
//! RTM_GETLINK request give the host name and the MAC addresses as surely as
//! `/etc/hostname` and `/sys/class/net/*/address`, but open nothing.
//!
//! match-proto: syscalls:sys_enter_newuname(name)
//! match-proto: syscalls:sys_enter_ioctl(fd, cmd, arg)
//! match-proto: syscalls:sys_enter_sendto(fd, buff, len, flags, addr, addr_len)
//! match-proto: syscalls:sys_enter_sendmsg(fd, msg, flags)
//!
//! Each program is a second program on its tracepoint (the net sensor owns the first
//! on sendto/sendmsg), so either can be detached alone. The request is emitted at
//! entry: what a program asked for is the probe; its result is not recorded. Only the
//! calls some policy category selects (`SETTING_HOST_CALLS`) are looked at; ioctl and
//! the sends of unwatched processes cost one compare or one lookup.

use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    AF_NETLINK, DROP_RING_FULL_HOST_CALL, DROP_UNREADABLE_HOST_CALL, EVENT_HOST_CALL,
    HOST_CALL_GETLINK, HOST_CALL_IFHWADDR, HOST_CALL_UNAME, HostCallEvent, IFNAME_LEN, RTM_GETLINK,
    SETTING_HOST_CALLS, SIOCGIFHWADDR,
};

use crate::{
    maps::{EVENTS, SETTINGS},
    util::{count_drop, current_ids, header, is_watched, syscall_arg},
};

/// `NLM_F_REQUEST`: set on every request a program sends to the kernel.
const NLM_F_REQUEST: u16 = 0x1;

/// Whether some category counts `call`.
#[inline(always)]
fn selected(call: u32) -> bool {
    SETTINGS
        .get(SETTING_HOST_CALLS)
        .is_some_and(|bits| bits & (1 << call) != 0)
}

/// The watched process calling, when `call` is selected.
#[inline(always)]
fn watched_caller(call: u32) -> Option<(u32, u32)> {
    let (tgid, tid) = current_ids();
    (is_watched(tgid) && selected(call)).then_some((tgid, tid))
}

#[inline(always)]
fn emit(tgid: u32, tid: u32, call: u32, fd: i32, flags: u32, ifname: &[u8; IFNAME_LEN]) {
    crate::block::feed(
        tgid,
        probe_common::BLOCK_ENTRY_HOST_CALLS,
        probe_common::BLOCK_OP_HOST_CALL + call as usize,
        true,
    );
    let Some(mut entry) = EVENTS.reserve::<HostCallEvent>(0) else {
        count_drop(DROP_RING_FULL_HOST_CALL);
        return;
    };
    let ifname_len = ifname
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(IFNAME_LEN - 1) as u32;
    entry.write(HostCallEvent {
        header: header(EVENT_HOST_CALL, tgid, tid),
        call,
        fd,
        flags,
        // The kernel cuts the name at IFNAMSIZ - 1 too; the last byte stays NUL.
        ifname_len: ifname_len.min(IFNAME_LEN as u32 - 1),
        ifname: *ifname,
    });
    entry.submit(0);
}

#[tracepoint]
pub fn sys_enter_newuname(_ctx: TracePointContext) -> u32 {
    if let Some((tgid, tid)) = watched_caller(HOST_CALL_UNAME) {
        emit(tgid, tid, HOST_CALL_UNAME, -1, 0, &[0; IFNAME_LEN]);
    }
    0
}

#[tracepoint]
pub fn sys_enter_ioctl(ctx: TracePointContext) -> u32 {
    let _ = try_ioctl(&ctx);
    0
}

#[inline(always)]
fn try_ioctl(ctx: &TracePointContext) -> Result<(), i64> {
    // Every ioctl of the machine comes here: the request number is the first test.
    // SAFETY: reads of this tracepoint's argument slots.
    let cmd: u64 = unsafe { ctx.read_at(syscall_arg(1))? };
    if cmd as u32 != SIOCGIFHWADDR {
        return Ok(());
    }
    let Some((tgid, tid)) = watched_caller(HOST_CALL_IFHWADDR) else {
        return Ok(());
    };
    let fd: u64 = unsafe { ctx.read_at(syscall_arg(0))? };
    let arg: u64 = unsafe { ctx.read_at(syscall_arg(2))? };
    // `struct ifreq` starts with `ifr_name[IFNAMSIZ]`.
    let mut ifname = [0u8; IFNAME_LEN];
    // SAFETY: a bounded read of user memory into a stack buffer of that size.
    if unsafe { bpf_probe_read_user_buf(arg as *const u8, &mut ifname) }.is_err() {
        count_drop(DROP_UNREADABLE_HOST_CALL);
        return Ok(());
    }
    ifname[IFNAME_LEN - 1] = 0;
    emit(tgid, tid, HOST_CALL_IFHWADDR, fd as i32, 0, &ifname);
    Ok(())
}

/// The first bytes of a netlink message: `struct nlmsghdr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
}

/// Emits an RTM_GETLINK request sent to the kernel over netlink: a destination
/// address of family `AF_NETLINK` and a request header of type RTM_GETLINK. (A
/// request on a connected netlink socket without an address is not seen: see
/// docs/architecture.md.)
#[inline(always)]
fn netlink_request(tgid: u32, tid: u32, fd: i32, addr: u64, buf: u64, len: u64) {
    if addr == 0 || buf == 0 || len < core::mem::size_of::<NlMsgHdr>() as u64 {
        return;
    }
    // SAFETY: bounded reads of user memory.
    let Ok(family) = (unsafe { bpf_probe_read_user(addr as *const u16) }) else {
        count_drop(DROP_UNREADABLE_HOST_CALL);
        return;
    };
    if family != AF_NETLINK {
        return;
    }
    let Ok(hdr) = (unsafe { bpf_probe_read_user(buf as *const NlMsgHdr) }) else {
        count_drop(DROP_UNREADABLE_HOST_CALL);
        return;
    };
    if hdr.kind == RTM_GETLINK && hdr.flags & NLM_F_REQUEST != 0 {
        emit(
            tgid,
            tid,
            HOST_CALL_GETLINK,
            fd,
            hdr.flags as u32,
            &[0; IFNAME_LEN],
        );
    }
}

#[tracepoint]
pub fn sys_enter_sendto_host(ctx: TracePointContext) -> u32 {
    let _ = try_sendto(&ctx);
    0
}

#[inline(always)]
fn try_sendto(ctx: &TracePointContext) -> Result<(), i64> {
    let Some((tgid, tid)) = watched_caller(HOST_CALL_GETLINK) else {
        return Ok(());
    };
    // SAFETY: reads of this tracepoint's argument slots.
    let fd: u64 = unsafe { ctx.read_at(syscall_arg(0))? };
    let buf: u64 = unsafe { ctx.read_at(syscall_arg(1))? };
    let len: u64 = unsafe { ctx.read_at(syscall_arg(2))? };
    let addr: u64 = unsafe { ctx.read_at(syscall_arg(4))? };
    netlink_request(tgid, tid, fd as i32, addr, buf, len);
    Ok(())
}

/// `struct user_msghdr`, the fields read here.
#[repr(C)]
#[derive(Clone, Copy)]
struct MsgHdr {
    name: u64,
    namelen: u32,
    _pad0: u32,
    iov: u64,
    iovlen: u64,
}

/// `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}

#[tracepoint]
pub fn sys_enter_sendmsg_host(ctx: TracePointContext) -> u32 {
    let _ = try_sendmsg(&ctx);
    0
}

#[inline(always)]
fn try_sendmsg(ctx: &TracePointContext) -> Result<(), i64> {
    let Some((tgid, tid)) = watched_caller(HOST_CALL_GETLINK) else {
        return Ok(());
    };
    // SAFETY: reads of this tracepoint's argument slots and bounded user reads.
    let fd: u64 = unsafe { ctx.read_at(syscall_arg(0))? };
    let msg: u64 = unsafe { ctx.read_at(syscall_arg(1))? };
    let Ok(hdr) = (unsafe { bpf_probe_read_user(msg as *const MsgHdr) }) else {
        count_drop(DROP_UNREADABLE_HOST_CALL);
        return Ok(());
    };
    if hdr.name == 0 || hdr.iov == 0 || hdr.iovlen == 0 {
        return Ok(());
    }
    // The request header sits at the start of the first buffer (iproute2, libmnl and
    // glibc all build it in one piece).
    let Ok(iov) = (unsafe { bpf_probe_read_user(hdr.iov as *const IoVec) }) else {
        count_drop(DROP_UNREADABLE_HOST_CALL);
        return Ok(());
    };
    netlink_request(tgid, tid, fd as i32, hdr.name, iov.base, iov.len);
    Ok(())
}
