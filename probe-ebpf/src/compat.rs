//! Twins of the `bpf_loop` programs for kernels without it (before 5.17): the same
//! work as bounded loops, which the verifier walks iteration by iteration. Userspace
//! loads these only where the `probe_bpf_loop` feature probe fails, so newer kernels
//! keep the bpf_loop programs (one verified iteration, a faster load). Each is
//! attached to the same tracepoint as its twin. The exec-environment twins scan by
//! tail calls, not by a loop (see `exec_env::scan_chained`).
//!
//! match-proto: the same tracepoints as their twins (`files`, `exec_env`)

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{exec_env, files, resolve, util::syscall_arg};

/// One bounded-loop exit program per path syscall of `files`.
macro_rules! bounded_exit {
    ($($name:ident),* $(,)?) => {$(
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            let _ = files::try_exit_with(&ctx, resolve::by_basename_bounded);
            0
        }
    )*};
}

bounded_exit!(
    sys_exit_open_bounded,
    sys_exit_openat_bounded,
    sys_exit_openat2_bounded,
    sys_exit_creat_bounded,
    sys_exit_readlink_bounded,
    sys_exit_readlinkat_bounded,
    sys_exit_newstat_bounded,
    sys_exit_newlstat_bounded,
    sys_exit_newfstatat_bounded,
    sys_exit_statx_bounded,
    sys_exit_access_bounded,
    sys_exit_faccessat_bounded,
    sys_exit_faccessat2_bounded,
);

#[tracepoint]
pub fn sys_enter_execve_env_bounded(ctx: TracePointContext) -> u32 {
    exec_env::scan_chained(&ctx, syscall_arg(2));
    0
}

#[tracepoint]
pub fn sys_enter_execveat_env_bounded(ctx: TracePointContext) -> u32 {
    exec_env::scan_chained(&ctx, syscall_arg(3));
    0
}

/// The next envp entry of a chained scan; never attached, only tail-called (slot 0
/// of `ENV_SCAN_NEXT`).
#[tracepoint]
pub fn exec_env_next(ctx: TracePointContext) -> u32 {
    exec_env::scan_next(&ctx);
    0
}
