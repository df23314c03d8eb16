//! The outcome of TCP connects, from the TCP state machine: CLOSE->SYN_SENT runs in
//! the connecting task (the socket's owner is noted, for a watched process), and the
//! change that leaves SYN_SENT (usually in softirq, for whichever task) is reported
//! for that owner. Non-blocking connects return `-EINPROGRESS`; this is where their
//! result comes from.
//!
//! Every TCP state change of every socket on the machine comes here, watched or not,
//! about ten per loopback connect and close. Two programs, one body:
//! - `raw_inet_sock_set_state`, a raw tracepoint: handed the socket and the two
//!   states, it decides on the states and builds nothing else. The destination of a
//!   watched socket's outcome is read from the socket (`sock_common` members from BTF,
//!   `KERNEL_OFFSETS`).
//! - `inet_sock_set_state`, the tracepoint, when the raw tracepoint or BTF is not
//!   there: the kernel builds a trace record (both addresses, both ports, IPv6
//!   included) for every change before the program runs. Measured here at about
//!   150 ns per change with an empty program (docs/benchmarks.md).
//!
//! Userspace loads the raw tracepoint when it can and the tracepoint otherwise
//! (`probe-user/src/sensors/sock_state_tier.rs`).
//!
//! match-proto: raw_tp inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)
//! match-proto: struct sock_common { skc_daddr, skc_dport, skc_family, skc_v6_daddr }
//! match-proto: sock:inet_sock_set_state(skaddr, oldstate, newstate, dport, family, daddr, daddr_v6)  [offsets from tracefs]

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use probe_common::{
    AF_INET6, ConnectOutcomeEvent, DROP_RING_FULL_CONNECT_OUTCOME, EVENT_CONNECT_OUTCOME,
    KOFF_SKC_DADDR, KOFF_SKC_DPORT, KOFF_SKC_FAMILY, KOFF_SKC_V6_DADDR, TP_SOCK_DADDR,
    TP_SOCK_DADDR_V6, TP_SOCK_DPORT, TP_SOCK_FAMILY, TP_SOCK_NEWSTATE, TP_SOCK_OLDSTATE,
    TP_SOCK_SKADDR, TcpOwner,
};

use crate::{
    maps::{EVENTS, TCP_OWNERS},
    resolve::{koff, kread},
    util::{count_drop, current_ids, header, is_watched, take_lru, tp_offset},
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

/// Where a socket was connecting to: (family, port in host order, address).
type Dest = (u16, u16, [u8; 16]);

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn raw_inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let (sk, old, new): (u64, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    on_state_change(old, new, || Ok(sk), || dest_of_sock(sk));
    0
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    // The record's layout comes from tracefs; without the two states nothing is done.
    let (Some(old_off), Some(new_off)) = (tp_offset(TP_SOCK_OLDSTATE), tp_offset(TP_SOCK_NEWSTATE))
    else {
        return 0;
    };
    // SAFETY: offsets of the record's fields, read with bounds checks.
    let states = unsafe { (ctx.read_at::<i32>(old_off), ctx.read_at::<i32>(new_off)) };
    let (Ok(old), Ok(new)) = states else {
        return 0;
    };
    on_state_change(
        old,
        new,
        || {
            let off = tp_offset(TP_SOCK_SKADDR).ok_or(-1i64)?;
            // SAFETY: as above.
            unsafe { ctx.read_at::<u64>(off) }.map_err(|e| e as i64)
        },
        || dest_of_record(&ctx),
    );
    0
}

/// The shared body: decides on the two states before anything else is read.
#[inline(always)]
fn on_state_change(
    old: i32,
    new: i32,
    sock: impl FnOnce() -> Result<u64, i64>,
    dest: impl FnOnce() -> Dest,
) {
    let opening = old == TCP_CLOSE && new == TCP_SYN_SENT;
    if !opening && old != TCP_SYN_SENT {
        return;
    }
    let Ok(sk) = sock() else {
        return;
    };
    if opening {
        // Inside connect(2), in the connecting task.
        let (tgid, tid) = current_ids();
        if is_watched(tgid) {
            let _ = TCP_OWNERS.insert(sk, TcpOwner { tgid, tid }, 0);
        }
        return;
    }
    let Some(owner) = take_lru(&TCP_OWNERS, sk) else {
        return;
    };
    let (family, port, addr) = dest();
    match EVENTS.reserve::<ConnectOutcomeEvent>(0) {
        Some(mut entry) => {
            entry.write(ConnectOutcomeEvent {
                header: header(EVENT_CONNECT_OUTCOME, owner.tgid, owner.tid),
                established: (new == TCP_ESTABLISHED) as u32,
                family,
                port,
                addr,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_CONNECT_OUTCOME),
    }
}

/// From the socket itself: `struct sock` begins with its `sock_common`.
#[inline(always)]
fn dest_of_sock(sk: u64) -> Dest {
    let family: u16 = kread(sk + koff(KOFF_SKC_FAMILY)).unwrap_or(0);
    // The socket keeps the port in network order; the record (and the event) in host
    // order.
    let port = u16::from_be(kread::<u16>(sk + koff(KOFF_SKC_DPORT)).unwrap_or(0));
    let mut addr = [0u8; 16];
    if family == AF_INET6 {
        addr = kread(sk + koff(KOFF_SKC_V6_DADDR)).unwrap_or([0; 16]);
    } else {
        let v4: [u8; 4] = kread(sk + koff(KOFF_SKC_DADDR)).unwrap_or([0; 4]);
        addr[..4].copy_from_slice(&v4);
    }
    (family, port, addr)
}

/// From the tracepoint's record.
#[inline(always)]
fn dest_of_record(ctx: &TracePointContext) -> Dest {
    // SAFETY (each read): offsets of the record's fields, read with bounds checks.
    let family: u16 = tp_offset(TP_SOCK_FAMILY)
        .and_then(|o| unsafe { ctx.read_at(o) }.ok())
        .unwrap_or(0);
    let port: u16 = tp_offset(TP_SOCK_DPORT)
        .and_then(|o| unsafe { ctx.read_at(o) }.ok())
        .unwrap_or(0);
    let mut addr = [0u8; 16];
    if family == AF_INET6 {
        if let Some(o) = tp_offset(TP_SOCK_DADDR_V6) {
            addr = unsafe { ctx.read_at(o) }.unwrap_or([0; 16]);
        }
    } else if let Some(o) = tp_offset(TP_SOCK_DADDR) {
        let v4: [u8; 4] = unsafe { ctx.read_at(o) }.unwrap_or([0; 4]);
        addr[..4].copy_from_slice(&v4);
    }
    (family, port, addr)
}
