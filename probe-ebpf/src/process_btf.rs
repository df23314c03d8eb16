//! The process family's upper tier: tp_btf (BTF-enabled raw tracepoint) twins of
//! `sched_process_exec`, `task_newtask` and `sched_process_exit`. They run at the same
//! points of the kernel as the tracepoints in `process.rs` and produce the same events
//! through the same bodies (`on_exec`, `on_newtask`, `on_exit`), but are handed the
//! kernel's own objects (the task, the `linux_binprm`) instead of a record laid out
//! by tracefs, so they need no tracefs field offsets: the members they follow come
//! from BTF through `KERNEL_OFFSETS`. Userspace loads this tier when the kernel
//! accepts it and falls back to the tracepoints otherwise
//! (`probe-user/src/sensors/process_tier.rs`).
//!
//! match-proto: tp_btf sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
//! match-proto: tp_btf task_newtask(struct task_struct *task, unsigned long clone_flags)
//! match-proto: tp_btf sched_process_exit(struct task_struct *p, ...)
//! match-proto: struct linux_binprm { filename }; task_struct { pid, signal };
//! match-proto: signal_struct { live }

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use probe_common::{KOFF_BPRM_FILENAME, KOFF_SIGNAL_LIVE, KOFF_TASK_PID, KOFF_TASK_SIGNAL};

use crate::{
    process::{on_exec, on_exit, on_newtask},
    resolve::{koff, kread},
};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn tp_btf_sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let _ = on_exec(
        || Ok(ctx.arg::<i32>(1)),
        || {
            let bprm: u64 = ctx.arg(2);
            let name: u64 = kread(bprm + koff(KOFF_BPRM_FILENAME)).ok()?;
            (name != 0).then_some(name as *const u8)
        },
    );
    0
}

#[btf_tracepoint(function = "task_newtask")]
pub fn tp_btf_task_newtask(ctx: BtfTracePointContext) -> i32 {
    on_newtask(&ctx, || {
        let task: u64 = ctx.arg(0);
        let flags: u64 = ctx.arg(1);
        // Assigned by copy_process before the tracepoint fires (the tracepoint's own
        // `pid` field is this member).
        let child: i32 = kread(task + koff(KOFF_TASK_PID)).ok()?;
        Some((child, flags))
    });
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn tp_btf_sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    // do_exit decrements `signal->live` before this tracepoint; the group is dead
    // when no thread is left alive. (The `group_dead` argument exists on recent
    // kernels only, and a tp_btf program that reads an argument its kernel lacks does
    // not load.)
    let _ = on_exit(|_, _| {
        let task: u64 = ctx.arg(0);
        let signal: u64 = kread(task + koff(KOFF_TASK_SIGNAL))?;
        let live: i32 = kread(signal + koff(KOFF_SIGNAL_LIVE))?;
        Ok(live == 0)
    });
    0
}
