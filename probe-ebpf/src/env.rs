//! Environment lookups: uprobes and uretprobes on libc getenv/secure_getenv.
//! Userspace attaches them to the libc the watched processes map; this side filters
//! to watched processes and policy names before it reserves any ring-buffer space.
//!
//! match-proto: uprobe    libc:getenv(const char *name)        -> park name pointer
//! match-proto: uretprobe libc:getenv -> char *                -> read name, emit
//! match-proto: uprobe    libc:secure_getenv(const char *name) -> park name pointer
//! match-proto: uretprobe libc:secure_getenv -> char *         -> read name, emit
//!
//! The name is read on return, not on entry: a freshly forked or exec'd process often
//! has not touched the page that holds the caller's string literal yet, and a BPF
//! read cannot fault it in. getenv reads the name itself, so at return it is resident.

use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes,
    macros::{uprobe, uretprobe},
    maps::lpm_trie::Key,
    programs::{ProbeContext, RetProbeContext},
};
use probe_common::{
    DROP_RING_FULL_ENV, DROP_UNREADABLE_ENV_NAME, ENV_EXEC_ONLY, ENV_NAME_LEN, ENV_OP_ENUMERATE,
    ENV_OP_GETENV, ENV_OP_SECURE_GETENV, EVENT_ENV, EnvEvent, PendingEnv,
};

use crate::{
    maps::{ENV_NAMES, EVENTS, PENDING_ENV},
    util::{count_drop, current_ids, env_glob, header, is_watched, take_parked},
};

#[uprobe]
pub fn getenv(ctx: ProbeContext) -> u32 {
    park(&ctx, ENV_OP_GETENV);
    0
}

#[uprobe]
pub fn secure_getenv(ctx: ProbeContext) -> u32 {
    park(&ctx, ENV_OP_SECURE_GETENV);
    0
}

/// Node's `Object.keys(process.env)` and friends: libuv copies the whole environment.
/// match-proto: uprobe node:uv_os_environ(uv_env_item_t **envitems, int *count)
#[uprobe]
pub fn uv_os_environ(_ctx: ProbeContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return 0;
    }
    match EVENTS.reserve::<EnvEvent>(0) {
        Some(mut entry) => {
            entry.write(EnvEvent {
                header: header(EVENT_ENV, tgid, tid),
                op: ENV_OP_ENUMERATE,
                entry_id: 0,
                name_len: 0,
                name_truncated: 0,
                value_present: 1,
                _pad0: 0,
                name: [0; ENV_NAME_LEN],
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_ENV),
    }
    crate::block::feed(
        tgid,
        probe_common::BLOCK_ENTRY_ENUMERATE,
        probe_common::BLOCK_OP_ENUMERATE,
        true,
    );
    0
}

#[uretprobe]
pub fn getenv_ret(ctx: RetProbeContext) -> u32 {
    // The getenv inside glibc's (and musl's) secure_getenv returns first: the entry
    // parked is the outer call's (`park` kept it), and the outer call's return takes
    // it. Taking it here left secure_getenv's return without an entry: one false
    // `env_exit_without_entry` loss per secure_getenv (Node's OpenSSL makes several).
    let (_, tid) = current_ids();
    if PENDING_ENV
        .get_ptr(tid)
        .is_some_and(|p| unsafe { (*p).op } == ENV_OP_SECURE_GETENV)
    {
        return 0;
    }
    let _ = try_return(&ctx);
    0
}

#[uretprobe]
pub fn secure_getenv_ret(ctx: RetProbeContext) -> u32 {
    let _ = try_return(&ctx);
    0
}

#[inline(always)]
fn park(ctx: &ProbeContext, op: u32) {
    let (tgid, tid) = current_ids();
    if !is_watched(tgid) {
        return;
    }
    // glibc's secure_getenv calls getenv: keep the outer call's parked entry so the
    // lookup is reported once, as secure_getenv.
    if op == ENV_OP_GETENV
        && let Some(outer) = PENDING_ENV.get_ptr(tid)
        && unsafe { (*outer).op } == ENV_OP_SECURE_GETENV
    {
        return;
    }
    if let Some(name_ptr) = ctx.arg::<u64>(0) {
        crate::util::park_entry(
            &PENDING_ENV,
            tid,
            &PendingEnv {
                name_ptr,
                op,
                _pad0: 0,
            },
            probe_common::DROP_PENDING_ENV_FULL,
        );
    }
}

#[inline(always)]
fn try_return(ctx: &RetProbeContext) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    if !crate::util::maybe_watched(tgid) {
        return Ok(());
    }
    let Some(pending) = take_parked(&PENDING_ENV, tid) else {
        crate::util::count_missing_entry(tgid, probe_common::DROP_ENV_EXIT_WITHOUT_ENTRY);
        return Ok(());
    };
    let value: u64 = ctx.ret();
    let mut name = [0u8; ENV_NAME_LEN];
    let Ok(read) =
        (unsafe { bpf_probe_read_user_str_bytes(pending.name_ptr as *const u8, &mut name) })
    else {
        count_drop(DROP_UNREADABLE_ENV_NAME);
        return Ok(());
    };
    let len = read.len();
    if len >= ENV_NAME_LEN - 1 {
        // Longer than any name a policy may hold (validation caps them below this), so
        // it cannot match: not an event, not a drop.
        return Ok(());
    }
    let mut key = [0u8; ENV_NAME_LEN];
    // Non-zero when the name was not written in upper case (block rules of
    // case-sensitive categories then do not count it).
    let mut folded = 0u8;
    for i in 0..ENV_NAME_LEN {
        let c = name[i];
        key[i] = if c.is_ascii_lowercase() { c - 32 } else { c };
        folded |= key[i] ^ c;
    }
    let entry_id = match unsafe { ENV_NAMES.get(key) } {
        // Only the exec scan reports it (a built-in home name no category names).
        Some(policy) if policy.match_kind & ENV_EXEC_ONLY != 0 => return Ok(()),
        Some(policy) => policy.entry_id,
        None => {
            let prefix_key = Key::new((ENV_NAME_LEN * 8) as u32, key);
            match env_glob(&prefix_key) {
                Some(policy) => policy.entry_id,
                None => return Ok(()),
            }
        }
    };
    let op = if pending.op == ENV_OP_SECURE_GETENV {
        probe_common::BLOCK_OP_SECURE_GETENV
    } else {
        probe_common::BLOCK_OP_GETENV
    };
    crate::block::feed(tgid, entry_id, op, folded == 0);
    match EVENTS.reserve::<EnvEvent>(0) {
        Some(mut entry) => {
            entry.write(EnvEvent {
                header: header(EVENT_ENV, tgid, tid),
                op: pending.op,
                entry_id,
                name_len: len as u32,
                name_truncated: 0,
                value_present: (value != 0) as u32,
                _pad0: 0,
                name,
            });
            entry.submit(0);
        }
        None => count_drop(DROP_RING_FULL_ENV),
    }
    Ok(())
}
