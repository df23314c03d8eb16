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
    /// It needs the family's cgroup programs attached, on top of the tracepoints.
    uses_cgroup: bool,
    /// What it cannot see.
    blind_spots: Vec<&'static str>,
}

/// What a family uses and what it passed over.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SensorChoice {
    pub family: Family,
    /// The attach point in use, or `none` when nothing attached.
    pub chosen: String,
    /// Better attach points not used, each with the reason.
    pub passed_over: Vec<PassedOver>,
    /// What the chosen attach point cannot see.
    pub blind_spots: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PassedOver {
    pub attach_point: &'static str,
    pub reason: String,
}

fn chain(family: Family) -> Vec<Option_> {
    let o = |name, needs, implemented, blind_spots: &[&'static str]| Option_ {
        name,
        needs,
        implemented,
        uses_cgroup: false,
        blind_spots: blind_spots.to_vec(),
    };
    const URING_OPENS: &str = "opens issued through io_uring";
    const DNS_ENCRYPTED: &str = "DNS over TCP, TLS or HTTPS";
    const UNIX_FROM_USER: &str = "unix socket paths (connects, and datagrams sent with sendto/sendmsg) are read from the caller's memory at the syscall's exit: this build loads no connect_unix/sendmsg_unix hook (aya 0.14 has no attach type for them), so a thread can rewrite a path during the call";
    const UNIX_DGRAM: &str =
        "unix datagram destinations of sendmmsg, and unix datagrams sent through io_uring";
    const THROUGH_OTHERS: &str = "a socket connected by an unwatched process and then only used by a watched one (the connect was the other process's), and a connect a watched process injects into an unwatched one with ptrace: the hooks and tracepoints run in the task that connects (a watched process that connects a socket it received over SCM_RIGHTS or took with pidfd_getfd, or into which a tracer injects a connect, is seen)";
    match family {
        Family::Process => vec![
            o(
                "tp_btf sched_process_exec/fork/exit",
                Some(FENTRY),
                false,
                &[],
            ),
            o(
                "tracepoints sched/*, task/task_newtask, syscalls/*execve*",
                None,
                true,
                &[],
            ),
        ],
        Family::Files => vec![
            o(
                "BPF-LSM file_open + inode_readlink (also sees io_uring)",
                Some(BPF_LSM),
                false,
                &[],
            ),
            o(
                "fentry do_sys_openat2 + vfs_readlink",
                Some(FENTRY),
                false,
                &[URING_OPENS],
            ),
            o("kprobe do_sys_openat2", Some(KPROBE), false, &[URING_OPENS]),
            o(
                "syscall tracepoints, enter + exit",
                None,
                true,
                &[
                    URING_OPENS,
                    "relative or symlinked paths into policy prefixes by calls with no fd or stat result (readlink, access, failures)",
                ],
            ),
        ],
        Family::Env => vec![o(
            "uprobes on libc getenv/secure_getenv + envp at execve",
            Some(UPROBE),
            true,
            &[
                "lookups before a libc's uprobes attach (the first process to map a libc, in its first milliseconds), and programs linked statically",
                "lookups through a getenv defined outside libc (an LD_PRELOAD library's, or the program's own, as bash has) before the scan after exec attaches to it; `run` attaches to its command's program and LD_PRELOAD libraries before the exec",
                "a process that writes getenv's original bytes back over the uprobe (mprotect, then a copy from the libc file): its later lookups",
                "what another process's memory held when a watched process read it (process_vm_readv, /proc/<pid>/mem): reported as a possible read of that process's environment",
            ],
        )],
        Family::Net => vec![
            o(
                "BPF-LSM socket_connect",
                Some(BPF_LSM),
                false,
                &[DNS_ENCRYPTED],
            ),
            Option_ {
                uses_cgroup: true,
                ..o(
                    "cgroup v2 sock_addr connect4/6 + sendmsg4/6 (destinations from the kernel's copy, also through io_uring), with the syscall tracepoints for results and DNS payloads",
                    Some(CGROUP_SOCK_ADDR),
                    true,
                    &[
                        "DNS query names of datagrams sent through io_uring (the destination is seen, the payload is not)",
                        UNIX_FROM_USER,
                        UNIX_DGRAM,
                        THROUGH_OTHERS,
                        DNS_ENCRYPTED,
                    ],
                )
            },
            o(
                "syscall tracepoints + sock/inet_sock_set_state",
                None,
                true,
                &[
                    "connects and sends issued through io_uring",
                    "destinations are read from the caller's memory: a thread can rewrite them during the syscall, and a sockaddr on a page not yet resident is unreadable (counted as unreadable_sockaddr)",
                    UNIX_DGRAM,
                    THROUGH_OTHERS,
                    DNS_ENCRYPTED,
                ],
            ),
        ],
        Family::Host => vec![o(
            "syscall tracepoints newuname, ioctl (SIOCGIFHWADDR), sendto/sendmsg (netlink RTM_GETLINK)",
            None,
            true,
            &[
                "an RTM_GETLINK request on a connected netlink socket sent without an address, or through io_uring",
                "the MAC address read from the sysfs or proc files a policy does not name",
            ],
        )],
    }
}

/// Builds the choice of every family from the probed features and what attached.
pub fn choices(features: &KernelFeatures, status: &[AttachStatus]) -> Vec<SensorChoice> {
    Family::ALL
        .into_iter()
        .map(|family| {
            // All of the family's programs of one kind (cgroup or not) attached.
            let attached = |cgroup: bool| {
                let mut of_kind = status
                    .iter()
                    .filter(|s| {
                        s.family == family && s.attach_point.starts_with("cgroup") == cgroup
                    })
                    .peekable();
                of_kind.peek().is_some() && of_kind.all(|s| s.attached)
            };
            let mut passed_over = Vec::new();
            let mut chosen = None;
            for opt in chain(family) {
                let available = opt.needs.is_none_or(|f| features.has(f));
                let programs_attached = attached(false) && (!opt.uses_cgroup || attached(true));
                if opt.implemented && available && programs_attached {
                    chosen = Some(opt);
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
                chosen: chosen
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), |o| o.name.to_owned()),
                passed_over,
                blind_spots: chosen.map(|o| o.blind_spots).unwrap_or_default(),
            }
        })
        .collect()
}
