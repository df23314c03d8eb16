//! The fallback chain of each sensor family: the attach points in order of
//! preference, which one is in use, and why each better one is not. Shown by
//! `probectl doctor` and in every report, so nobody mistakes a fallback for full
//! coverage.

use serde::Serialize;

use super::features::{BPF_LSM, CGROUP_SOCK_ADDR, FENTRY, KPROBE, KernelFeatures, UPROBE};
use super::{AttachStatus, Family, HookOutcome, HookTier, ProcessOutcome};

/// One link of a chain.
struct Option_ {
    name: &'static str,
    /// Kernel feature it needs (a `features` name), if any beyond tracepoints.
    needs: Option<&'static str>,
    /// This build has programs for it.
    implemented: bool,
    /// It needs the family's cgroup programs attached, on top of the tracepoints.
    uses_cgroup: bool,
    /// It is this tier of file hooks, on top of the tracepoints.
    hooks: Option<HookTier>,
    /// It is the process family's tp_btf tier (`process_tier.rs`).
    tp_btf: bool,
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
        hooks: None,
        tp_btf: false,
        blind_spots: blind_spots.to_vec(),
    };
    const URING_OPENS: &str = "opens issued through io_uring";
    const DNS_ENCRYPTED: &str = "DNS over TCP, TLS or HTTPS";
    const FIRST_BYTES_UNSEEN: &str = "a connection's first bytes (its TLS server name or HTTP request line) when they are sent through io_uring, sendmmsg, sendfile or splice, are split so that the name comes after the first 4 KiB or the first iovec, or are sent by another process than the one that connected (a child that inherited the socket)";
    const UNIX_FROM_USER: &str = "unix socket paths (connects, and datagrams sent with sendto/sendmsg) are read from the caller's memory at the syscall's exit: this build loads no connect_unix/sendmsg_unix hook (aya 0.14 has no attach type for them), so a thread can rewrite a path during the call";
    const UNIX_DGRAM: &str =
        "unix datagram destinations of sendmmsg, and unix datagrams sent through io_uring";
    const THROUGH_OTHERS: &str = "a socket connected by an unwatched process and then only used by a watched one (the connect was the other process's), and a connect a watched process injects into an unwatched one with ptrace: the hooks and tracepoints run in the task that connects (a watched process that connects a socket it received over SCM_RIGHTS or took with pidfd_getfd, or into which a tracer injects a connect, is seen)";
    // What the syscall tracepoints alone cannot see (the fixtures in
    // tests/file_evasion.rs check each by these words).
    const COMPAT_SYSCALLS: &str =
        "32-bit syscalls (int 0x80): they raise no syscalls:sys_enter_* event";
    const BY_HANDLE: &str = "opens by open_by_handle_at (no path)";
    const OVERLAYFS: &str =
        "policy files reached through an overlayfs mount (another device and inode)";
    const HARDLINKED_LINK: &str = "readlink through a hardlink to a policy symlink (another name, no result to match by inode)";
    const RECEIVED_FDS: &str =
        "files received open over SCM_RIGHTS or pidfd_getfd (the receiver names no path)";
    const LONG_PATHS: &str = "paths longer than 255 bytes that end in a policy file (counted as path_truncated_unmatched)";
    // What the hook tiers still cannot see.
    const HOOK_BLIND_SPOTS: &[&str] = &[
        "access checks outside the traced syscalls (32-bit access): the hooks cover opens, readlinks, stats and received files",
        "files created after start, outside the traced syscalls: the hooks match by the inodes indexed at start",
        "relative or symlinked paths into policy prefixes by calls with no fd or stat result (readlink, access, failures)",
    ];
    // What both process tiers miss: argv is read at the execve/execveat syscall
    // tracepoints, on every tier.
    const COMPAT_EXEC_ARGV: &str = "the argv of an exec made through a 32-bit syscall (int 0x80): it raises no syscalls:sys_enter_execve event (the exec itself is seen, with its argv marked lost)";
    match family {
        Family::Process => vec![
            Option_ {
                tp_btf: true,
                ..o(
                    "tp_btf sched_process_exec + task_newtask + sched_process_exit, with the syscall tracepoints execve/execveat/exit_group",
                    None,
                    true,
                    &[COMPAT_EXEC_ARGV],
                )
            },
            o(
                "tracepoints sched/*, task/task_newtask, syscalls/*execve*",
                None,
                true,
                &[
                    COMPAT_EXEC_ARGV,
                    "on kernels whose sched_process_exit tracepoint has no group_dead field, a process's watch ends when its leader thread exits: what its other threads do afterwards is missed (the tp_btf tier asks the kernel whether any thread is left)",
                ],
            ),
        ],
        Family::Files => vec![
            Option_ {
                hooks: Some(HookTier::Lsm),
                ..o(
                    "BPF-LSM file_open + inode_readlink + file_receive + inode_getattr, with the syscall tracepoints",
                    Some(BPF_LSM),
                    true,
                    HOOK_BLIND_SPOTS,
                )
            },
            Option_ {
                hooks: Some(HookTier::Fentry),
                ..o(
                    "fexit security_file_open + fentry security_inode_readlink + security_file_receive + security_inode_getattr, with the syscall tracepoints",
                    Some(FENTRY),
                    true,
                    HOOK_BLIND_SPOTS,
                )
            },
            o("kprobe do_sys_openat2", Some(KPROBE), false, &[URING_OPENS]),
            o(
                "syscall tracepoints, enter + exit",
                None,
                true,
                &[
                    URING_OPENS,
                    COMPAT_SYSCALLS,
                    BY_HANDLE,
                    OVERLAYFS,
                    HARDLINKED_LINK,
                    RECEIVED_FDS,
                    LONG_PATHS,
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
                        FIRST_BYTES_UNSEEN,
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
                    FIRST_BYTES_UNSEEN,
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

/// The attach points of the file hooks (`file_hooks.rs`).
fn is_hook(attach_point: &str) -> bool {
    ["lsm ", "fentry ", "fexit "]
        .iter()
        .any(|kind| attach_point.starts_with(kind))
}

/// Builds the choice of every family from the probed features and what attached.
pub fn choices(
    features: &KernelFeatures,
    status: &[AttachStatus],
    hooks: &HookOutcome,
    process: &ProcessOutcome,
) -> Vec<SensorChoice> {
    Family::ALL
        .into_iter()
        .map(|family| {
            // All of the family's programs of one kind (cgroup or not) attached;
            // the file hooks are judged by `hooks`, not here, and the judges of
            // ICMP and raw sends by `block_capability` (they watch nothing).
            let attached = |cgroup: bool| {
                let mut of_kind = status
                    .iter()
                    .filter(|s| {
                        s.family == family
                            && !is_hook(&s.attach_point)
                            && !super::block::RAW_JUDGES.contains(&s.program.as_str())
                            && s.attach_point.starts_with("cgroup") == cgroup
                    })
                    .peekable();
                of_kind.peek().is_some() && of_kind.all(|s| s.attached)
            };
            let mut passed_over = Vec::new();
            let mut chosen = None;
            for opt in chain(family) {
                let available = opt.needs.is_none_or(|f| features.has(f));
                let tier_in_use = in_use(&opt, hooks, process);
                let programs_attached = attached(false) && (!opt.uses_cgroup || attached(true));
                if opt.implemented && available && programs_attached && tier_in_use {
                    chosen = Some(opt);
                    break;
                }
                let tier_failure = opt
                    .hooks
                    .and_then(|tier| hooks.why_not(tier))
                    .or_else(|| opt.tp_btf.then(|| process.why_not()).flatten());
                let reason = match (available, opt.implemented) {
                    (true, true) if !tier_in_use => tier_failure
                        .unwrap_or("a better tier of file hooks is in use")
                        .to_owned(),
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
            // Nothing attached whole: the first option whose programs partly attached
            // is in use all the same (the getenv uprobes report while the exec-env
            // tracepoints failed), and says how partly; its unattached programs are
            // listed wherever sensors are (doctor, PARTIAL in reports).
            let partial = match &chosen {
                Some(_) => None,
                None => partly_attached(family, status),
            };
            let chosen_name = match (&chosen, partial) {
                (Some(o), _) => o.name.to_owned(),
                (None, Some((attached, total))) => {
                    let name = chain(family)
                        .into_iter()
                        .find(|o| {
                            o.implemented
                                && o.needs.is_none_or(|f| features.has(f))
                                && in_use(o, hooks, process)
                        })
                        .map_or("?", |o| o.name);
                    format!(
                        "{name} (partial: {attached} of {total} programs attached; see unattached sensors)"
                    )
                }
                (None, None) => "none".to_owned(),
            };
            SensorChoice {
                family,
                chosen: chosen_name,
                passed_over,
                blind_spots: chosen.map(|o| o.blind_spots).unwrap_or_default(),
            }
        })
        .collect()
}

/// Whether an option's own tier (file hooks, tp_btf) is the one that loaded; options
/// without one are.
fn in_use(opt: &Option_, hooks: &HookOutcome, process: &ProcessOutcome) -> bool {
    opt.hooks.is_none_or(|tier| hooks.chosen == Some(tier))
        && (!opt.tp_btf || process.uses_tp_btf())
}

/// (attached, total) of a family's programs, when some but not all attached.
fn partly_attached(family: Family, status: &[AttachStatus]) -> Option<(usize, usize)> {
    let of_family = status.iter().filter(|s| s.family == family);
    let total = of_family.clone().count();
    let attached = of_family.filter(|s| s.attached).count();
    (attached > 0 && attached < total).then_some((attached, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::features::Feature;

    fn features(available: &[&'static str]) -> KernelFeatures {
        KernelFeatures {
            features: [BPF_LSM, FENTRY, KPROBE, UPROBE, CGROUP_SOCK_ADDR]
                .into_iter()
                .map(|name| Feature {
                    name,
                    available: available.contains(&name),
                    detail: format!("{name} probed"),
                })
                .collect(),
            cgroup2: None,
        }
    }

    fn tracepoints_attached() -> Vec<AttachStatus> {
        vec![AttachStatus {
            program: "sys_exit_openat".to_owned(),
            family: Family::Files,
            attach_point: "tracepoint syscalls/sys_exit_openat".to_owned(),
            attached: true,
            error: None,
        }]
    }

    fn files(choices: &[SensorChoice]) -> &SensorChoice {
        choices.iter().find(|c| c.family == Family::Files).unwrap()
    }

    #[test]
    fn the_files_chain_takes_the_hook_tier_that_loaded() {
        let hooks = HookOutcome {
            chosen: Some(HookTier::Fentry),
            passed_over: vec![(HookTier::Lsm, "bpf is not an active LSM".to_owned())],
        };
        let choices = choices(
            &features(&[BPF_LSM, FENTRY]),
            &tracepoints_attached(),
            &hooks,
            &ProcessOutcome::default(),
        );
        let files = files(&choices);
        assert!(
            files.chosen.starts_with("fexit security_file_open"),
            "{files:?}"
        );
        assert_eq!(files.passed_over.len(), 1);
        assert_eq!(files.passed_over[0].reason, "bpf is not an active LSM");
        assert!(
            !files.blind_spots.iter().any(|b| b.contains("int 0x80")),
            "the hooks see 32-bit syscalls"
        );
    }

    #[test]
    fn without_hooks_the_files_chain_falls_to_the_tracepoints_and_names_what_they_miss() {
        let hooks = HookOutcome {
            chosen: None,
            passed_over: vec![
                (HookTier::Lsm, "kernel: bpf-lsm probed".to_owned()),
                (HookTier::Fentry, "kernel: fentry probed".to_owned()),
            ],
        };
        let choices = choices(
            &features(&[]),
            &tracepoints_attached(),
            &hooks,
            &ProcessOutcome::default(),
        );
        let files = files(&choices);
        assert_eq!(files.chosen, "syscall tracepoints, enter + exit");
        assert_eq!(files.passed_over.len(), 3, "{files:?}");
        for words in [
            "int 0x80",
            "open_by_handle_at",
            "overlayfs",
            "hardlink",
            "SCM_RIGHTS",
            "longer than 255 bytes",
            "io_uring",
        ] {
            assert!(
                files.blind_spots.iter().any(|b| b.contains(words)),
                "{words}: {files:?}"
            );
        }
    }

    fn process(choices: &[SensorChoice]) -> &SensorChoice {
        choices
            .iter()
            .find(|c| c.family == Family::Process)
            .unwrap()
    }

    #[test]
    fn the_process_chain_takes_tp_btf_when_it_loaded() {
        let status = [
            status(
                "tp_btf_sched_process_exec",
                Family::Process,
                "tp_btf sched_process_exec",
                true,
            ),
            status(
                "sys_enter_execve",
                Family::Process,
                "tracepoint syscalls/sys_enter_execve",
                true,
            ),
        ];
        let loaded = ProcessOutcome { tp_btf: Ok(()) };
        let choices = choices(&features(&[]), &status, &HookOutcome::default(), &loaded);
        let process = process(&choices);
        assert!(process.chosen.starts_with("tp_btf "), "{process:?}");
        assert!(process.passed_over.is_empty(), "{process:?}");
        assert!(
            !process.blind_spots.iter().any(|b| b.contains("group_dead")),
            "{process:?}"
        );
    }

    #[test]
    fn the_process_chain_falls_to_the_tracepoints_and_says_why() {
        let status = [status(
            "sched_process_exec",
            Family::Process,
            "tracepoint sched/sched_process_exec",
            true,
        )];
        let refused = ProcessOutcome {
            tp_btf: Err("tp_btf_sched_process_exec: load: Operation not permitted".to_owned()),
        };
        let choices = choices(&features(&[]), &status, &HookOutcome::default(), &refused);
        let process = process(&choices);
        assert!(
            process.chosen.starts_with("tracepoints sched/*"),
            "{process:?}"
        );
        assert_eq!(process.passed_over.len(), 1, "{process:?}");
        assert!(process.passed_over[0].attach_point.starts_with("tp_btf "));
        assert_eq!(
            process.passed_over[0].reason,
            "tp_btf_sched_process_exec: load: Operation not permitted"
        );
        assert!(
            process.blind_spots.iter().any(|b| b.contains("group_dead")),
            "{process:?}"
        );
    }

    fn status(program: &str, family: Family, point: &str, attached: bool) -> AttachStatus {
        AttachStatus {
            program: program.to_owned(),
            family,
            attach_point: point.to_owned(),
            attached,
            error: (!attached).then(|| "load: Invalid argument".to_owned()),
        }
    }

    /// On 5.10 the exec-env tracepoints failed while the getenv uprobes attached and
    /// reported: env is partly in use, not "none".
    #[test]
    fn partly_attached_family_is_partial_not_none() {
        let features = KernelFeatures {
            features: vec![Feature {
                name: UPROBE,
                available: true,
                detail: "uprobe PMU present".to_owned(),
            }],
            cgroup2: None,
        };
        let status = [
            status(
                "sys_enter_execve_env",
                Family::Env,
                "tracepoint syscalls/sys_enter_execve",
                false,
            ),
            status("getenv", Family::Env, "uprobe libc:getenv", true),
            status("getenv_ret", Family::Env, "uretprobe libc:getenv", true),
            status(
                "sys_exit_openat",
                Family::Files,
                "tracepoint syscalls/sys_exit_openat",
                false,
            ),
        ];
        let choices = choices(
            &features,
            &status,
            &HookOutcome::default(),
            &ProcessOutcome::default(),
        );
        let env = choices.iter().find(|c| c.family == Family::Env).unwrap();
        assert!(env.chosen.starts_with("uprobes on libc"), "{}", env.chosen);
        assert!(
            env.chosen.contains("partial: 2 of 3 programs attached"),
            "{}",
            env.chosen
        );
        // Nothing of files attached: that is none.
        let files = choices.iter().find(|c| c.family == Family::Files).unwrap();
        assert_eq!(files.chosen, "none");
    }

    /// The judges of ICMP and raw sends failing (an old kernel) leaves the net
    /// family on its sock_addr tier: they watch nothing, `block_capability` says
    /// what is lost.
    #[test]
    fn the_raw_send_judges_do_not_choose_the_net_tier() {
        let status = [
            status(
                "cg_connect4",
                Family::Net,
                "cgroup connect4 at /sys/fs/cgroup",
                true,
            ),
            status(
                "sys_enter_connect",
                Family::Net,
                "tracepoint syscalls/sys_enter_connect",
                true,
            ),
            status(
                "cg_sock_create",
                Family::Net,
                "cgroup sock_create at /sys/fs/cgroup",
                true,
            ),
            status(
                "cg_raw_egress",
                Family::Net,
                "cgroup skb egress at /sys/fs/cgroup",
                false,
            ),
        ];
        let choices = choices(
            &features(&[CGROUP_SOCK_ADDR]),
            &status,
            &HookOutcome::default(),
            &ProcessOutcome::default(),
        );
        let net = choices.iter().find(|c| c.family == Family::Net).unwrap();
        assert!(net.chosen.starts_with("cgroup v2 sock_addr"), "{net:?}");
    }
}
