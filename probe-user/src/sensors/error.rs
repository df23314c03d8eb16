//! What loading, attaching or updating the sensors can fail with.

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(
        "probectl needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) to load eBPF programs\n  hint: run it with sudo, e.g. `sudo probectl run -- CMD`"
    )]
    NotRoot,
    #[error(
        "tracefs is unavailable: {detail}\n  hint: mount it with `mount -t tracefs nodev /sys/kernel/tracing` (needs CONFIG_TRACING)"
    )]
    Tracefs { detail: String },
    #[error(
        "cannot load the eBPF programs: {source}\n  hint: probectl needs a kernel with BPF ring buffers (5.8+) and tracepoints; check `dmesg` and that BPF is not disabled (kernel.unprivileged_bpf_disabled does not matter as root, but lockdown=confidentiality does)"
    )]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    #[error(
        "cannot map the kernel's watch hint into probectl: {source}\n  hint: probectl needs BPF_F_MMAPABLE arrays (Linux 5.5+) and mmap of BPF maps (not refused by a seccomp filter or an LSM)"
    )]
    WatchHint {
        #[source]
        source: std::io::Error,
    },
    #[error("the eBPF object has no map {0}: kernel and userspace builds do not match")]
    MissingMap(&'static str),
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "no sensor could attach; nothing would be seen:\n{0}\n  hint: check that tracefs is mounted and the kernel has CONFIG_FTRACE_SYSCALLS"
    )]
    NothingAttached(String),
    #[error(
        "the policy needs {used} entries in the kernel map {map}, which holds {capacity}; no map was changed"
    )]
    OverCapacity {
        map: &'static str,
        used: usize,
        capacity: usize,
    },
    #[error("writing the policy into the kernel map {map} failed: {source}; {}", match restored {
        None => "every policy map was restored to the policy in force".to_owned(),
        Some(e) => format!("restoring the policy in force failed too ({e}): the kernel maps may hold a mix of both policies"),
    })]
    PolicyUpdate {
        map: &'static str,
        source: Box<SensorError>,
        /// Why restoring the previous contents failed, if it did.
        restored: Option<String>,
    },
}
