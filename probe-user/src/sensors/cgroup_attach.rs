//! Attaching the cgroup programs (sock_addr, sock_create, skb egress) at the root of
//! the cgroup v2 hierarchy.

use aya::programs::cgroup_skb::CgroupSkbLinkId;
use aya::programs::cgroup_sock::CgroupSockLinkId;
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

/// The links of the ICMP/raw-send judges (`block::RAW_JUDGES`) while they are
/// attached. The egress program runs for every packet of every process, so it is
/// attached only while a block rule that can refuse an ICMP or raw send (one naming
/// `udp_send`, port 0 not left out) is in force: a machine without one pays nothing
/// for it (`Sensors::sync_raw_judges`).
#[derive(Debug, Default)]
pub(super) struct RawJudgeLinks {
    sock_create: Option<CgroupSockLinkId>,
    egress: Option<CgroupSkbLinkId>,
}

impl Sensors {
    /// Loads (verifies) one of the raw-send judges without attaching it; the status
    /// says it is attached while a block rule naming `udp_send` is in force.
    pub(super) fn load_raw_judge(
        &mut self,
        program: &str,
        hook: &str,
    ) -> (String, Result<(), String>) {
        let point = match &self.features.cgroup2 {
            Some(root) => format!(
                "cgroup {hook} at {} (while a block rule naming udp_send is in force)",
                root.display()
            ),
            None => {
                return (
                    format!("cgroup {hook}"),
                    Err("no cgroup v2 mount in /proc/mounts".to_owned()),
                );
            }
        };
        if let Some(err) = self.load_errors.get(program) {
            return (point, Err(err.clone()));
        }
        let loaded = (|| {
            let prog = self
                .ebpf
                .program_mut(program)
                .ok_or("program missing from the object")?;
            match prog {
                Program::CgroupSock(prog) => load_once!(prog, program),
                Program::CgroupSkb(prog) => load_once!(prog, program),
                _ => return Err("not a raw-send judge".to_owned()),
            }
            Ok(())
        })();
        (point, loaded)
    }

    /// Attaches the raw-send judges while the policy in force has block rules and
    /// detaches them when it has none (after each policy is put in force). A judge
    /// that fails to attach is marked unattached in the status (`doctor`, `status`
    /// and the report then say ICMP and raw sends are not judged).
    pub(super) fn sync_raw_judges(&mut self) {
        // The egress program runs for every packet of every process while attached:
        // only a rule that can refuse an ICMP or raw send needs it. The owners of
        // those sockets are recorded while any block rule is in force (a socket
        // creation costs one type/protocol read), so that a reload that adds such a
        // rule judges sockets opened under a connect-only one.
        let any_rule = !self.in_force.block_rules.is_empty();
        let judging = self.in_force.block_rules.values().any(judges_raw_sends);
        let loaded =
            |s: &Self, name: &str| s.status.iter().any(|st| st.program == name && st.attached);
        let Some(root) = self.features.cgroup2.clone() else {
            return;
        };
        for name in super::block::RAW_JUDGES {
            let (linked, wanted) = match name {
                "cg_sock_create" => (self.raw_links.sock_create.is_some(), any_rule),
                _ => (self.raw_links.egress.is_some(), judging),
            };
            if wanted == linked || (wanted && !loaded(self, name)) {
                continue;
            }
            let result = if wanted {
                self.link_raw_judge(name, &root)
            } else {
                self.unlink_raw_judge(name)
            };
            if let Err(err) = result {
                tracing::warn!("sensor {name}: {err}");
                if wanted && let Some(st) = self.status.iter_mut().find(|s| s.program == name) {
                    st.attached = false;
                    st.error = Some(err);
                }
            }
        }
    }

    fn link_raw_judge(&mut self, name: &str, root: &std::path::Path) -> Result<(), String> {
        let cgroup =
            std::fs::File::open(root).map_err(|e| format!("open {}: {e}", root.display()))?;
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or("program missing from the object")?;
        match prog {
            Program::CgroupSock(prog) => {
                let id = prog
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .map_err(|e| format!("attach: {}", error_chain(&e)))?;
                self.raw_links.sock_create = Some(id);
            }
            Program::CgroupSkb(prog) => {
                let id = prog
                    .attach(
                        &cgroup,
                        CgroupSkbAttachType::Egress,
                        CgroupAttachMode::Single,
                    )
                    .map_err(|e| format!("attach: {}", error_chain(&e)))?;
                self.raw_links.egress = Some(id);
            }
            _ => return Err("not a raw-send judge".to_owned()),
        }
        Ok(())
    }

    fn unlink_raw_judge(&mut self, name: &str) -> Result<(), String> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or("program missing from the object")?;
        let detached = match prog {
            Program::CgroupSock(prog) => match self.raw_links.sock_create.take() {
                Some(id) => prog.detach(id),
                None => Ok(()),
            },
            Program::CgroupSkb(prog) => match self.raw_links.egress.take() {
                Some(id) => prog.detach(id),
                None => Ok(()),
            },
            _ => return Err("not a raw-send judge".to_owned()),
        };
        detached.map_err(|e| format!("detach: {}", error_chain(&e)))
    }

    /// Whether the raw-send judges are attached now (they are while block rules are
    /// in force).
    pub fn raw_judges_attached(&self) -> bool {
        self.raw_links.sock_create.is_some() && self.raw_links.egress.is_some()
    }

    /// Whether the owners of new ICMP and raw sockets are being recorded
    /// (`cg_sock_create` attached: while any block rule is in force).
    pub fn raw_socket_owners_recorded(&self) -> bool {
        self.raw_links.sock_create.is_some()
    }
}

/// Whether a block rule can refuse an ICMP or raw-socket send: those are judged as a
/// `udp_send` to port 0 (`probe-ebpf/src/raw_send.rs`), so the rule must name
/// `udp_send` and have no port condition that leaves port 0 out.
fn judges_raw_sends(rule: &probe_common::BlockRule) -> bool {
    let ports = &rule.ports[..(rule.ports_len as usize).min(rule.ports.len())];
    rule.then & probe_common::BLOCK_THEN_UDP != 0 && (ports.is_empty() || ports.contains(&0))
}

#[cfg(test)]
mod tests {
    use probe_common::{BLOCK_THEN_CONNECT, BLOCK_THEN_UDP, BlockRule};

    #[test]
    fn only_rules_that_can_refuse_a_port_0_datagram_need_the_raw_judges() {
        let rule = |then, ports: &[u16]| {
            let mut r = BlockRule {
                then,
                ..BlockRule::default()
            };
            r.ports[..ports.len()].copy_from_slice(ports);
            r.ports_len = ports.len() as u32;
            r
        };
        assert!(super::judges_raw_sends(&rule(BLOCK_THEN_UDP, &[])));
        assert!(super::judges_raw_sends(&rule(
            BLOCK_THEN_CONNECT | BLOCK_THEN_UDP,
            &[0, 443]
        )));
        assert!(!super::judges_raw_sends(&rule(BLOCK_THEN_CONNECT, &[])));
        assert!(!super::judges_raw_sends(&rule(BLOCK_THEN_UDP, &[53, 443])));
    }
}
