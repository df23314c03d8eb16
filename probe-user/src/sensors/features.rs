//! What the running kernel supports, found by trying: each attach type is probed by
//! loading and attaching a do-nothing program from the object (see
//! probe-ebpf/src/feature_probes.rs) and detaching it at once. A file under /sys is
//! only a hint; a successful attach is the proof.

use std::path::PathBuf;

use aya::{
    Btf, Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr, FEntry, KProbe, Lsm, TracePoint},
};
use serde::Serialize;

/// One kernel capability and what probing it found.
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    pub name: &'static str,
    pub available: bool,
    /// How it was decided, or why it is missing.
    pub detail: String,
}

/// The capabilities the sensors' fallback chains depend on.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFeatures {
    pub features: Vec<Feature>,
    /// The cgroup v2 mount (hybrid layouts put it at /sys/fs/cgroup/unified).
    pub cgroup2: Option<PathBuf>,
}

impl KernelFeatures {
    pub fn has(&self, name: &str) -> bool {
        self.features.iter().any(|f| f.name == name && f.available)
    }

    pub fn detail(&self, name: &str) -> &str {
        self.features
            .iter()
            .find(|f| f.name == name)
            .map_or("not probed", |f| f.detail.as_str())
    }
}

pub const BTF: &str = "btf";
pub const FENTRY: &str = "fentry";
pub const BPF_LSM: &str = "bpf-lsm";
pub const KPROBE: &str = "kprobe";
pub const UPROBE: &str = "uprobe";
pub const CGROUP_SOCK_ADDR: &str = "cgroup-sock-addr";
/// The `bpf_loop` helper (5.17+); without it the programs that use it load as their
/// bounded-loop twins.
pub const BPF_LOOP: &str = "bpf-loop";

/// An error and its sources on one line ("load: ...: Operation not permitted"),
/// without aya's empty verifier-log trailer.
pub(super) fn why(context: &str, err: &dyn std::error::Error) -> String {
    let mut out = format!("{context}: {err}");
    if let Some(at) = out.find(". Verifier output:") {
        out.truncate(at);
    }
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(&format!(": {text}"));
        }
        source = e.source();
    }
    out
}

fn feature(name: &'static str, result: Result<String, String>) -> Feature {
    match result {
        Ok(detail) => Feature {
            name,
            available: true,
            detail,
        },
        Err(detail) => Feature {
            name,
            available: false,
            detail,
        },
    }
}

/// Probes every capability; `tracefs` is the root that start-up found or mounted.
/// `btf` is the kernel's, parsed once for the whole load (`btf::KernelTypes`).
pub fn probe(
    ebpf: &mut Ebpf,
    tracefs: &std::path::Path,
    btf: &Result<Btf, String>,
) -> KernelFeatures {
    let cgroup2 = cgroup2_mount();
    let mut features = vec![
        feature("tracefs", Ok(format!("mounted at {}", tracefs.display()))),
        feature(
            BTF,
            btf.as_ref()
                .map(|_| "/sys/kernel/btf/vmlinux parsed".to_owned())
                .map_err(|e| format!("no kernel BTF: {e}")),
        ),
    ];
    features.push(feature(
        FENTRY,
        match btf {
            Ok(btf) => try_fentry(ebpf, btf),
            Err(_) => Err("needs kernel BTF".to_owned()),
        },
    ));
    features.push(feature(
        BPF_LSM,
        match btf {
            Ok(btf) => try_lsm(ebpf, btf),
            Err(_) => Err("needs kernel BTF".to_owned()),
        },
    ));
    features.push(feature(KPROBE, try_kprobe(ebpf)));
    features.push(feature(BPF_LOOP, try_bpf_loop(ebpf)));
    features.push(feature(
        UPROBE,
        if std::path::Path::new("/sys/bus/event_source/devices/uprobe").exists() {
            Ok("uprobe PMU present".to_owned())
        } else {
            Err(
                "no uprobe PMU (/sys/bus/event_source/devices/uprobe): CONFIG_UPROBE_EVENTS unset"
                    .to_owned(),
            )
        },
    ));
    features.push(feature(
        CGROUP_SOCK_ADDR,
        match &cgroup2 {
            Some(root) => try_cgroup_connect(ebpf, root),
            None => Err("no cgroup v2 mount in /proc/mounts".to_owned()),
        },
    ));
    KernelFeatures { features, cgroup2 }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("probe program {name} missing from the object"))?;
    prog.try_into()
        .map_err(|_| format!("probe program {name} has the wrong type"))
}

fn try_fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<String, String> {
    let p: &mut FEntry = program(ebpf, "probe_fentry")?;
    p.load("do_sys_openat2", btf)
        .map_err(|e| super::load_error::load_error("probe_fentry", &e))?;
    let link = p
        .attach()
        .map_err(|e| why("attach to do_sys_openat2", &e))?;
    let _ = p.detach(link);
    Ok("attached to do_sys_openat2 and detached".to_owned())
}

/// BPF-LSM counts only where `bpf` is an active LSM: elsewhere a program attaches to
/// file_open just the same, and never runs.
fn try_lsm(ebpf: &mut Ebpf, btf: &Btf) -> Result<String, String> {
    let active = super::lsm::bpf_active(&super::lsm::active_lsms()?)?;
    let p: &mut Lsm = program(ebpf, "probe_lsm")?;
    p.load("file_open", btf)
        .map_err(|e| super::load_error::load_error("probe_lsm", &e))?;
    let link = p.attach().map_err(|e| why("attach to file_open", &e))?;
    let _ = p.detach(link);
    Ok(format!("{active}; attached to file_open and detached"))
}

fn try_bpf_loop(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut TracePoint = program(ebpf, "probe_bpf_loop")?;
    p.load().map_err(|e| {
        format!(
            "{}; the file exit and exec-environment programs load as their bounded-loop twins",
            super::load_error::load_error("probe_bpf_loop", &e)
        )
    })?;
    Ok("a program calling bpf_loop loaded".to_owned())
}

fn try_kprobe(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut KProbe = program(ebpf, "probe_kprobe")?;
    p.load()
        .map_err(|e| super::load_error::load_error("probe_kprobe", &e))?;
    let link = p
        .attach("do_sys_openat2", 0)
        .map_err(|e| why("attach to do_sys_openat2 (CONFIG_KPROBES?)", &e))?;
    let _ = p.detach(link);
    Ok("attached to do_sys_openat2 and detached".to_owned())
}

fn try_cgroup_connect(ebpf: &mut Ebpf, root: &std::path::Path) -> Result<String, String> {
    let cgroup = std::fs::File::open(root).map_err(|e| format!("open {}: {e}", root.display()))?;
    let p: &mut CgroupSockAddr = program(ebpf, "probe_cgroup_connect4")?;
    p.load()
        .map_err(|e| super::load_error::load_error("probe_cgroup_connect4", &e))?;
    let link = p
        // Single: with bpf_link_create the kernel takes no flags (links always stack);
        // AllowMultiple would be rejected as invalid.
        .attach(&cgroup, CgroupAttachMode::Single)
        .map_err(|e| why(&format!("attach connect4 at {}", root.display()), &e))?;
    let _ = p.detach(link);
    Ok(format!(
        "connect4 attached at {} and detached",
        root.display()
    ))
}

/// The cgroup v2 mount point, from /proc/mounts (not assumed to be /sys/fs/cgroup).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(target))
    })
}
