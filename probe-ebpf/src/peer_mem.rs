//! Another process's memory, where its environment lives: process_vm_readv(2) by a
//! watched process naming another pid. (Opening `/proc/<pid>/mem` is the files
//! sensor's, matched like `/proc/<pid>/environ`.)
//!
//! match-proto: syscalls:sys_enter_process_vm_readv(pid, lvec, liovcnt, rvec, riovcnt, flags)
//!
//! Emitted at entry, only while some policy category counts reads of other processes'
//! environments (`SETTING_PROC_ENVIRON`): the request is the probe. What the ranges
//! held is not known here: the report says it may have read the environment.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use probe_common::{
    DROP_RING_FULL_PEER_MEMORY, EVENT_PEER_MEMORY, PEER_MEMORY_PROCESS_VM_READV, PeerMemoryEvent,
    SETTING_PROC_ENVIRON,
};

use crate::{
    maps::{EVENTS, SETTINGS},
    util::{count_drop, current_ids, header, is_watched, syscall_arg},
};

#[tracepoint]
pub fn sys_enter_process_vm_readv(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) || SETTINGS.get(SETTING_PROC_ENVIRON).is_none_or(|on| *on == 0) {
        return 0;
    }
    let Ok(pid) = (unsafe { ctx.read_at::<i64>(syscall_arg(0)) }) else {
        return 0;
    };
    // Its own memory is no probe of anyone's environment.
    if pid as u32 == tgid {
        return 0;
    }
    match EVENTS.reserve::<PeerMemoryEvent>(0) {
        Some(mut entry) => {
            entry.write(PeerMemoryEvent {
                header: header(EVENT_PEER_MEMORY, tgid, tid),
                call: PEER_MEMORY_PROCESS_VM_READV,
                target_pid: pid as u32,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_PEER_MEMORY),
    }
    0
}
