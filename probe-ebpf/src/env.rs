//! Environment lookups: uprobes on libc getenv/secure_getenv. Userspace attaches them
//! to the libc the watched processes map; this side filters to watched processes and
//! policy names before it reserves any ring-buffer space.
//!
//! match-proto: uprobe libc:getenv(const char *name)
//! match-proto: uprobe libc:secure_getenv(const char *name)

use aya_ebpf::{helpers::bpf_probe_read_user_str_bytes, macros::uprobe, programs::ProbeContext};
use probe_common::{
    DROP_RING_FULL_ENV, ENV_NAME_LEN, ENV_OP_GETENV, ENV_OP_SECURE_GETENV, EVENT_ENV, EnvEvent,
};

use crate::{
    maps::{ENV_NAMES, EVENTS},
    util::{count_drop, current_ids, header, is_watched},
};

#[uprobe]
pub fn getenv(ctx: ProbeContext) -> u32 {
    let _ = try_getenv(&ctx, ENV_OP_GETENV);
    0
}

#[uprobe]
pub fn secure_getenv(ctx: ProbeContext) -> u32 {
    let _ = try_getenv(&ctx, ENV_OP_SECURE_GETENV);
    0
}

#[inline(always)]
fn try_getenv(ctx: &ProbeContext, op: u32) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return Ok(());
    }
    let name_ptr: *const u8 = ctx.arg(0).ok_or(-1i64)?;
    let mut name = [0u8; ENV_NAME_LEN];
    let len = unsafe { bpf_probe_read_user_str_bytes(name_ptr, &mut name) }
        .map_err(|e| e as i64)?
        .len();
    if len >= ENV_NAME_LEN - 1 {
        // Longer than any name a policy may hold (policy validation caps them), so it
        // cannot match; not an event, not a drop.
        return Ok(());
    }
    let mut key = [0u8; ENV_NAME_LEN];
    for i in 0..ENV_NAME_LEN {
        let c = name[i];
        key[i] = if c.is_ascii_lowercase() { c - 32 } else { c };
    }
    let Some(policy) = (unsafe { ENV_NAMES.get(&key) }) else {
        return Ok(());
    };
    let entry_id = policy.entry_id;
    match EVENTS.reserve::<EnvEvent>(0) {
        Some(mut entry) => {
            entry.write(EnvEvent {
                header: header(EVENT_ENV, tgid, tid),
                op,
                entry_id,
                name_len: len as u32,
                name_truncated: 0,
                name,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_ENV),
    }
    Ok(())
}
