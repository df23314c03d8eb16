//! The TCP outcome program (`probe-ebpf/src/net_state.rs`): a raw tracepoint on
//! `inet_sock_set_state` when the kernel has it and BTF names the socket's members,
//! the tracepoint of the same name otherwise. Both report the same events; the raw
//! tracepoint is preferred because it runs for every TCP state change of every
//! process on the machine, and the tracepoint makes the kernel build a trace record
//! for each first (measured in docs/benchmarks.md). Chosen by actually loading and
//! attaching; the tracepoint is then neither loaded nor attached (`attach_all`).

use aya::programs::RawTracePoint;
use probe_common::{KOFF_SKC_DADDR, KOFF_SKC_DPORT, KOFF_SKC_FAMILY, KOFF_SKC_V6_DADDR};

use super::{AttachStatus, Family, Sensors, features::why};

const RAW_PROGRAM: &str = "raw_inet_sock_set_state";
const TRACEPOINT: &str = "inet_sock_set_state";
/// The tracepoint program it replaces (programs are named after their tracepoints).
const REPLACED: &str = "inet_sock_set_state";

/// `struct sock` begins with `__sk_common`; each slot is that offset plus the
/// member's in `struct sock_common`.
const OFFSETS: [(u32, &[(&str, &str)]); 4] = [
    (
        KOFF_SKC_FAMILY,
        &[("sock", "__sk_common"), ("sock_common", "skc_family")],
    ),
    (
        KOFF_SKC_DPORT,
        &[("sock", "__sk_common"), ("sock_common", "skc_dport")],
    ),
    (
        KOFF_SKC_DADDR,
        &[("sock", "__sk_common"), ("sock_common", "skc_daddr")],
    ),
    (
        KOFF_SKC_V6_DADDR,
        &[("sock", "__sk_common"), ("sock_common", "skc_v6_daddr")],
    ),
];

/// Whether the raw tracepoint is in use, or why not (then the tracepoint).
#[derive(Debug, Clone)]
pub struct SockStateOutcome {
    pub raw: Result<(), String>,
}

impl Default for SockStateOutcome {
    fn default() -> Self {
        Self {
            raw: Err("not tried".to_owned()),
        }
    }
}

impl SockStateOutcome {
    /// Whether `program` is the tracepoint the raw tracepoint replaces while in use.
    pub(super) fn replaces(&self, program: &str) -> bool {
        self.raw.is_ok() && program == REPLACED
    }
}

impl Sensors {
    /// Tries the raw tracepoint: writes its offsets from BTF, loads and attaches it.
    pub(super) fn attach_sock_state_tier(
        &mut self,
        types: &super::btf::KernelTypes,
    ) -> SockStateOutcome {
        let raw = self.try_raw_sock_state(types);
        match &raw {
            Ok(()) => self.status.push(AttachStatus {
                program: RAW_PROGRAM.to_owned(),
                family: Family::Net,
                attach_point: format!("raw_tracepoint {TRACEPOINT}"),
                attached: true,
                error: None,
            }),
            Err(why) => tracing::info!(
                "TCP connect outcomes come from the sock/{TRACEPOINT} tracepoint: the raw tracepoint is not used: {why}"
            ),
        }
        SockStateOutcome { raw }
    }

    fn try_raw_sock_state(&mut self, types: &super::btf::KernelTypes) -> Result<(), String> {
        self.write_btf_offsets(types, &OFFSETS)?;
        let prog = self
            .ebpf
            .program_mut(RAW_PROGRAM)
            .ok_or("program missing from the object")?;
        let p: &mut RawTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
        p.load()
            .map_err(|e| super::load_error::load_error(RAW_PROGRAM, &e))?;
        if let Err(e) = p.attach(TRACEPOINT) {
            let err = why(&format!("attach to raw tracepoint {TRACEPOINT}"), &e);
            if let Err(e) = p.unload() {
                tracing::warn!("unloading {RAW_PROGRAM}: {e}");
            }
            return Err(err);
        }
        Ok(())
    }
}
