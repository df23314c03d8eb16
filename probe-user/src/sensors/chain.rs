//! The fallback chain of each sensor family: the attach points in order of
//! preference, which one is in use, and why each better one is not. Shown by
//! `probectl doctor` and in every report, so nobody mistakes a fallback for full
//! coverage.

use serde::Serialize;

use super::features::{BPF_LSM, CGROUP_SOCK_ADDR, FENTRY, KPROBE, KernelFeatures, UPROBE};
use super::{AttachStatus, Family};

/// One link of a chain.
struct Option_ {
    name: &'static str,
    /// Kernel feature it needs (a `features` name), if any beyond tracepoints.
    needs: Option<&'static str>,
    /// This build has programs for it.
    implemented: bool,
}

/// What a family uses and what it passed over.
#[derive(Debug, Clone, Serialize)]
pub struct SensorChoice {
    pub family: Family,
    /// The attach point in use, or `none` when nothing attached.
    pub chosen: String,
    /// Better attach points not used, each with the reason.
    pub passed_over: Vec<PassedOver>,
    /// What the chosen attach point cannot see.
    pub blind_spots: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PassedOver {
    pub attach_point: &'static str,
    pub reason: String,
}

fn chain(family: Family) -> (Vec<Option_>, Vec<&'static str>) {
    let o = |name, needs, implemented| Option_ {
        name,
        needs,
        implemented,
    };
    match family {
        Family::Process => (
            vec![
                o("tp_btf sched_process_exec/fork/exit", Some(FENTRY), false),
                o(
                    "tracepoints sched/*, task/task_newtask, syscalls/*execve*",
                    None,
                    true,
                ),
            ],
            vec![],
        ),
        Family::Files => (
            vec![
                o(
                    "BPF-LSM file_open + inode_readlink (also sees io_uring)",
                    Some(BPF_LSM),
                    false,
                ),
                o("fentry do_sys_openat2 + vfs_readlink", Some(FENTRY), false),
                o("kprobe do_sys_openat2", Some(KPROBE), false),
                o("syscall tracepoints, enter + exit", None, true),
            ],
            vec![
                "opens issued through io_uring",
                "relative or symlinked paths into policy prefixes by calls with no fd or stat result (readlink, access, failures)",
            ],
        ),
        Family::Env => (
            vec![o(
                "uprobes on libc getenv/secure_getenv + envp at execve",
                Some(UPROBE),
                true,
            )],
            vec![
                "programs with a libc other than the one probectl maps (static, musl, Nix, containers)",
            ],
        ),
        Family::Net => (
            vec![
                o("BPF-LSM socket_connect", Some(BPF_LSM), false),
                o(
                    "cgroup v2 sock_addr connect4/6 + sendmsg4/6 (also sees io_uring)",
                    Some(CGROUP_SOCK_ADDR),
                    false,
                ),
                o("syscall tracepoints + sock/inet_sock_set_state", None, true),
            ],
            vec![
                "connects and sends issued through io_uring",
                "DNS over TCP, TLS or HTTPS",
            ],
        ),
    }
}

/// Builds the choice of every family from the probed features and what attached.
pub fn choices(features: &KernelFeatures, status: &[AttachStatus]) -> Vec<SensorChoice> {
    [Family::Process, Family::Files, Family::Env, Family::Net]
        .into_iter()
        .map(|family| {
            let (options, blind_spots) = chain(family);
            let attached = status
                .iter()
                .filter(|s| s.family == family)
                .all(|s| s.attached)
                && status.iter().any(|s| s.family == family);
            let mut passed_over = Vec::new();
            let mut chosen = None;
            for opt in &options {
                let available = opt.needs.is_none_or(|f| features.has(f));
                if opt.implemented && available && attached {
                    chosen = Some(opt.name.to_owned());
                    break;
                }
                let reason = match (available, opt.implemented) {
                    (false, _) => format!(
                        "kernel: {}",
                        features.detail(opt.needs.unwrap_or("tracefs"))
                    ),
                    (true, false) => {
                        "the kernel supports it; this build has no programs for it yet".to_owned()
                    }
                    (true, true) => {
                        "some of its programs did not attach (see unattached sensors)".to_owned()
                    }
                };
                passed_over.push(PassedOver {
                    attach_point: opt.name,
                    reason,
                });
            }
            SensorChoice {
                family,
                chosen: chosen.unwrap_or_else(|| "none".to_owned()),
                passed_over,
                blind_spots,
            }
        })
        .collect()
}
