//! Attaching the cgroup programs (sock_addr, sock_create, skb egress) at the root of
//! the cgroup v2 hierarchy.

use aya::programs::{CgroupAttachMode, CgroupSkbAttachType, Program};

use super::{Sensors, error_chain, load_error};

/// Loads a program that `parallel_load` did not verify already.
macro_rules! load_once {
    ($prog:expr, $name:expr) => {
        if $prog.fd().is_err() {
            $prog
                .load()
                .map_err(|e| load_error::load_error($name, &e))?;
        }
    };
}

impl Sensors {
    /// The attach point (for the status) and the result of attaching `program`, a
    /// cgroup program (`hook` names its hook), at the cgroup v2 root.
    pub(super) fn at_cgroup_root(
        &mut self,
        program: &str,
        hook: &str,
    ) -> (String, Result<(), String>) {
        match self.features.cgroup2.clone() {
            Some(root) => (
                format!("cgroup {hook} at {}", root.display()),
                self.attach_cgroup(program, &root),
            ),
            None => (
                format!("cgroup {hook}"),
                Err("no cgroup v2 mount in /proc/mounts".to_owned()),
            ),
        }
    }

    /// A cgroup hook (sock_addr, sock_create, skb egress) on the cgroup v2 root:
    /// every process below it (all of them) passes through it. aya attaches through
    /// a BPF link (kernel 5.7+), and links always coexist with other programs on the
    /// cgroup; `Single` only means "no BPF_F_ALLOW_MULTI flag", which link creation
    /// rejects.
    pub(super) fn attach_cgroup(
        &mut self,
        program: &str,
        root: &std::path::Path,
    ) -> Result<(), String> {
        let cgroup =
            std::fs::File::open(root).map_err(|e| format!("open {}: {e}", root.display()))?;
        if let Some(err) = self.load_errors.get(program) {
            return Err(err.clone());
        }
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or("program missing from the object")?;
        let attached = match prog {
            Program::CgroupSockAddr(prog) => {
                load_once!(prog, program);
                prog.attach(&cgroup, CgroupAttachMode::Single).map(drop)
            }
            Program::CgroupSock(prog) => {
                load_once!(prog, program);
                prog.attach(&cgroup, CgroupAttachMode::Single).map(drop)
            }
            Program::CgroupSkb(prog) => {
                load_once!(prog, program);
                prog.attach(
                    &cgroup,
                    CgroupSkbAttachType::Egress,
                    CgroupAttachMode::Single,
                )
                .map(drop)
            }
            _ => return Err("not a cgroup program".to_owned()),
        };
        attached.map_err(|e| format!("attach: {}", error_chain(&e)))
    }
}
