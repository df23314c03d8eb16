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
                "programs with a libc other than the one probectl maps (static, musl, Nix, containers)",
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
                    "cgroup v2 sock_addr connect4/6 + sendmsg4/6 (also sees io_uring), with the syscall tracepoints",
                    Some(CGROUP_SOCK_ADDR),
                    true,
                    &[
                        "DNS query names of datagrams sent through io_uring (the destination is seen, the payload is not)",
                        DNS_ENCRYPTED,
                    ],
                )
            },
            o(
                "syscall tracepoints + sock/inet_sock_set_state",
                None,
                true,
                &["connects and sends issued through io_uring", DNS_ENCRYPTED],
            ),
        ],
    }
}

/// Builds the choice of every family from the probed features and what attached.
pub fn choices(features: &KernelFeatures, status: &[AttachStatus]) -> Vec<SensorChoice> {
    [Family::Process, Family::Files, Family::Env, Family::Net]
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
                        .find(|o| o.implemented && o.needs.is_none_or(|f| features.has(f)))
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
        let choices = choices(&features, &status);
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
}
