//! The files sensor's upper tiers (`probe-ebpf/src/files_hooks.rs`): BPF-LSM where
//! `bpf` is an active LSM, else fentry/fexit on the `security_*` functions, each
//! chosen by actually loading and attaching all of its programs; when neither works
//! the syscall tracepoints stand alone (`chain.rs` says which and why).

use aya::{
    Btf,
    maps::Array,
    programs::{FEntry, FExit, Lsm},
};
use probe_common::{
    HOFF_DENTRY_NAME, HOFF_FILE_PATH, HOFF_QSTR_NAME, HOFF_TASK_STACK, MAP_HOOK_OFFSETS,
};
use serde::Serialize;

use super::{
    AttachStatus, Family, SensorError, Sensors,
    features::{BPF_LSM, FENTRY, why},
    map_err,
};

/// A tier of kernel file hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookTier {
    Lsm,
    Fentry,
}

/// How a hook program attaches.
#[derive(Clone, Copy)]
enum Kind {
    Lsm,
    Fentry,
    Fexit,
}

/// (program, hook or kernel function, kind) of each tier, best tier first.
const LSM_PROGRAMS: [(&str, &str, Kind); 4] = [
    ("lsm_file_open", "file_open", Kind::Lsm),
    ("lsm_inode_readlink", "inode_readlink", Kind::Lsm),
    ("lsm_file_receive", "file_receive", Kind::Lsm),
    ("lsm_inode_getattr", "inode_getattr", Kind::Lsm),
];
const FENTRY_PROGRAMS: [(&str, &str, Kind); 4] = [
    ("fx_security_file_open", "security_file_open", Kind::Fexit),
    (
        "fx_security_inode_readlink",
        "security_inode_readlink",
        Kind::Fentry,
    ),
    (
        "fx_security_file_receive",
        "security_file_receive",
        Kind::Fentry,
    ),
    (
        "fx_security_inode_getattr",
        "security_inode_getattr",
        Kind::Fentry,
    ),
];

/// What loading the hook tiers found: the tier in use, and why each better one is not.
#[derive(Debug, Clone, Default)]
pub struct HookOutcome {
    pub chosen: Option<HookTier>,
    pub passed_over: Vec<(HookTier, String)>,
}

impl HookOutcome {
    pub fn why_not(&self, tier: HookTier) -> Option<&str> {
        self.passed_over
            .iter()
            .find(|(t, _)| *t == tier)
            .map(|(_, why)| why.as_str())
    }
}

/// (slot, struct, member) of the offsets only the hooks follow.
const HOOK_OFFSETS: [(u32, &str, &str); 4] = [
    (HOFF_FILE_PATH, "file", "f_path"),
    (HOFF_DENTRY_NAME, "dentry", "d_name"),
    (HOFF_QSTR_NAME, "qstr", "name"),
    (HOFF_TASK_STACK, "task_struct", "stack"),
];

impl Sensors {
    /// Loads the best tier of file hooks that loads and attaches whole. Call after
    /// the policy maps (the hooks match by `INODES`) and the kernel offsets are
    /// written.
    pub(super) fn attach_file_hooks(
        &mut self,
        types: &super::btf::KernelTypes,
    ) -> Result<HookOutcome, SensorError> {
        let mut outcome = HookOutcome::default();
        let matching_by_inode = self.file_resolution.as_ref().is_some_and(|r| r.by_inode);
        let btf = &types.aya;
        let offsets = types
            .offsets
            .as_ref()
            .map_err(String::clone)
            .and_then(|btf| {
                HOOK_OFFSETS
                    .iter()
                    .map(|(slot, strukt, member)| {
                        btf.member_offset(strukt, member)
                            .map(|offset| (*slot, offset))
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()
            });
        let precondition = match (btf, offsets) {
            _ if !matching_by_inode => {
                Err("the hooks match files by inode, which is off (see the files note)".to_owned())
            }
            (Err(e), _) => Err(format!("no kernel BTF: {e}")),
            (_, Err(e)) => Err(format!("kernel BTF: {e}")),
            (Ok(_), Ok(offsets)) => {
                let mut array: Array<_, u32> = Array::try_from(self.map(MAP_HOOK_OFFSETS)?)
                    .map_err(map_err(MAP_HOOK_OFFSETS))?;
                for (slot, offset) in offsets {
                    array
                        .set(slot, offset, 0)
                        .map_err(map_err(MAP_HOOK_OFFSETS))?;
                }
                Ok(())
            }
        };
        for (tier, feature, programs) in [
            (HookTier::Lsm, BPF_LSM, &LSM_PROGRAMS),
            (HookTier::Fentry, FENTRY, &FENTRY_PROGRAMS),
        ] {
            let tried = precondition.clone().and_then(|()| {
                if !self.features.has(feature) {
                    return Err(format!("kernel: {}", self.features.detail(feature)));
                }
                let btf = btf.as_ref().map_err(|e| format!("no kernel BTF: {e}"))?;
                self.attach_tier(programs, btf)
            });
            match tried {
                Ok(()) => {
                    for (program, target, kind) in programs {
                        self.status.push(AttachStatus {
                            program: (*program).to_owned(),
                            family: Family::Files,
                            attach_point: format!("{} {target}", kind_name(*kind)),
                            attached: true,
                            error: None,
                        });
                    }
                    outcome.chosen = Some(tier);
                    break;
                }
                Err(why) => {
                    tracing::info!("file hooks {tier:?} not used: {why}");
                    outcome.passed_over.push((tier, why));
                }
            }
        }
        Ok(outcome)
    }

    /// Loads and attaches every program of a tier, or none: on the first failure the
    /// ones already attached are unloaded (their links go with them).
    fn attach_tier(&mut self, programs: &[(&str, &str, Kind)], btf: &Btf) -> Result<(), String> {
        for (i, (program, target, kind)) in programs.iter().enumerate() {
            if let Err(err) = self.attach_hook(program, target, *kind, btf) {
                for (done, _, kind) in &programs[..i] {
                    self.unload_hook(done, *kind);
                }
                return Err(format!("{program}: {err}"));
            }
        }
        Ok(())
    }

    fn attach_hook(
        &mut self,
        program: &str,
        target: &str,
        kind: Kind,
        btf: &Btf,
    ) -> Result<(), String> {
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or("program missing from the object")?;
        match kind {
            Kind::Lsm => {
                let p: &mut Lsm = prog.try_into().map_err(|e| format!("{e}"))?;
                p.load(target, btf).map_err(|e| why("load", &e))?;
                p.attach()
                    .map_err(|e| why(&format!("attach to {target}"), &e))?;
            }
            Kind::Fentry => {
                let p: &mut FEntry = prog.try_into().map_err(|e| format!("{e}"))?;
                p.load(target, btf).map_err(|e| why("load", &e))?;
                p.attach()
                    .map_err(|e| why(&format!("attach to {target}"), &e))?;
            }
            Kind::Fexit => {
                let p: &mut FExit = prog.try_into().map_err(|e| format!("{e}"))?;
                p.load(target, btf).map_err(|e| why("load", &e))?;
                p.attach()
                    .map_err(|e| why(&format!("attach to {target}"), &e))?;
            }
        }
        Ok(())
    }

    fn unload_hook(&mut self, program: &str, kind: Kind) {
        let Some(prog) = self.ebpf.program_mut(program) else {
            return;
        };
        let result = match kind {
            Kind::Lsm => <&mut Lsm>::try_from(prog).map(|p| p.unload()),
            Kind::Fentry => <&mut FEntry>::try_from(prog).map(|p| p.unload()),
            Kind::Fexit => <&mut FExit>::try_from(prog).map(|p| p.unload()),
        };
        if let Ok(Err(err)) | Err(err) = result {
            tracing::warn!("unloading {program}: {err}");
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Lsm => "lsm",
        Kind::Fentry => "fentry",
        Kind::Fexit => "fexit",
    }
}
