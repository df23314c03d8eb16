//! probectl kernel programs. One module per sensor family; each program is a thin
//! entry point that calls a `try_*` function and ignores its error, because there is
//! nobody to return an error to in the kernel: failures are counted in `DROPS`.
#![no_std]
#![no_main]

mod block;
mod cgroup_net;
mod compat;
mod dns;
mod env;
mod env_map;
mod exec_env;
mod feature_probes;
mod files;
mod files_hooks;
mod first_bytes;
mod host;
mod maps;
mod net;
mod net_state;
mod own_home;
mod peer_mem;
mod process;
mod process_btf;
mod raw_send;
mod resolve;
mod send_exit;
mod util;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that can reach this; it exists to satisfy rustc.
    loop {}
}

/// GPL-compatible licence, required by the probe_read_user/kernel helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
