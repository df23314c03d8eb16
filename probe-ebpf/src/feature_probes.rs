//! Tiny programs that exist only to be loaded and attached once at start-up, to learn
//! what the running kernel really supports (pulsar's approach: a program type that is
//! compiled in can still fail to attach, e.g. fentry without trampolines, kprobes
//! without CONFIG_KPROBES, BPF-LSM without `lsm=bpf`). Userspace detaches them at once.
//! They do nothing and allow everything.
//!
//! match-proto: fentry do_sys_openat2 / lsm file_open / kprobe do_sys_openat2 / cgroup connect4

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_loop,
    macros::{cgroup_sock_addr, fentry, kprobe, lsm, tracepoint},
    programs::{FEntryContext, LsmContext, ProbeContext, SockAddrContext, TracePointContext},
};

#[fentry(function = "do_sys_openat2")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}

#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

/// 1 = allow the connect.
#[cgroup_sock_addr(connect4)]
pub fn probe_cgroup_connect4(_ctx: SockAddrContext) -> i32 {
    1
}

/// Loaded only (never attached): it loads where the kernel has `bpf_loop` (5.17+),
/// which picks the bpf_loop programs over their bounded-loop twins (see `compat`).
#[tracepoint]
pub fn probe_bpf_loop(_ctx: TracePointContext) -> u32 {
    // SAFETY: `stop` has the callback signature bpf_loop expects; no context.
    unsafe { bpf_loop(1, stop as *mut c_void, core::ptr::null_mut(), 0) };
    0
}

#[inline(never)]
extern "C" fn stop(_index: u32, _ctx: *mut c_void) -> i64 {
    1
}
