//! The process family's upper tier (`probe-ebpf/src/process_btf.rs`): tp_btf twins of
//! the `sched_process_exec`, `task_newtask` and `sched_process_exit` tracepoints,
//! chosen by actually loading and attaching all three. When any of them fails, the
//! ones already attached are unloaded and the tracepoints are attached instead
//! (`attach_all`); `chain.rs` then names the tier passed over and why.

use aya::{Btf, programs::BtfTracePoint};
use probe_common::{KOFF_BPRM_FILENAME, KOFF_SIGNAL_LIVE, KOFF_TASK_PID, KOFF_TASK_SIGNAL};

use super::{AttachStatus, Family, Sensors, features::why};

/// (tp_btf program, raw tracepoint, the tracepoint program it replaces).
pub(super) const TP_BTF_PROGRAMS: [(&str, &str, &str); 3] = [
    (
        "tp_btf_sched_process_exec",
        "sched_process_exec",
        "sched_process_exec",
    ),
    ("tp_btf_task_newtask", "task_newtask", "task_newtask"),
    (
        "tp_btf_sched_process_exit",
        "sched_process_exit",
        "sched_process_exit",
    ),
];

/// (slot, struct, member) of the offsets only the tp_btf programs follow.
const OFFSETS: [(u32, &[(&str, &str)]); 4] = [
    (KOFF_TASK_PID, &[("task_struct", "pid")]),
    (KOFF_BPRM_FILENAME, &[("linux_binprm", "filename")]),
    (KOFF_TASK_SIGNAL, &[("task_struct", "signal")]),
    (KOFF_SIGNAL_LIVE, &[("signal_struct", "live")]),
];

/// Which tier the process family uses: tp_btf, or why not (then the tracepoints).
#[derive(Debug, Clone)]
pub struct ProcessOutcome {
    pub tp_btf: Result<(), String>,
}

impl Default for ProcessOutcome {
    fn default() -> Self {
        Self {
            tp_btf: Err("not tried".to_owned()),
        }
    }
}

impl ProcessOutcome {
    pub fn uses_tp_btf(&self) -> bool {
        self.tp_btf.is_ok()
    }

    /// Why tp_btf is not in use, if it is not.
    pub fn why_not(&self) -> Option<&str> {
        self.tp_btf.as_ref().err().map(String::as_str)
    }

    /// Whether `program` is a tracepoint the tp_btf tier replaces while it is in use.
    pub(super) fn replaces(&self, program: &str) -> bool {
        self.uses_tp_btf() && TP_BTF_PROGRAMS.iter().any(|(_, _, tp)| *tp == program)
    }
}

impl Sensors {
    /// Tries the tp_btf tier: writes its offsets from BTF, then loads and attaches its
    /// three programs, or none of them.
    pub(super) fn attach_process_tier(
        &mut self,
        types: &super::btf::KernelTypes,
    ) -> ProcessOutcome {
        let started = std::time::Instant::now();
        let tried = self.try_tp_btf(types);
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            ok = tried.is_ok(),
            "process tp_btf tier tried"
        );
        match &tried {
            Ok(()) => {
                for (program, tracepoint, _) in TP_BTF_PROGRAMS {
                    self.status.push(AttachStatus {
                        program: program.to_owned(),
                        family: Family::Process,
                        attach_point: format!("tp_btf {tracepoint}"),
                        attached: true,
                        error: None,
                    });
                }
            }
            Err(why) => tracing::info!("process tp_btf tier not used: {why}"),
        }
        ProcessOutcome { tp_btf: tried }
    }

    fn try_tp_btf(&mut self, types: &super::btf::KernelTypes) -> Result<(), String> {
        let btf = types
            .aya
            .as_ref()
            .map_err(|e| format!("no kernel BTF: {e}"))?;
        self.write_btf_offsets(types, &OFFSETS)?;
        for (i, (program, tracepoint, _)) in TP_BTF_PROGRAMS.iter().enumerate() {
            if let Err(err) = self.attach_tp_btf(program, tracepoint, btf) {
                for (done, _, _) in &TP_BTF_PROGRAMS[..i] {
                    self.unload_tp_btf(done);
                }
                return Err(format!("{program}: {err}"));
            }
        }
        Ok(())
    }

    fn attach_tp_btf(&mut self, program: &str, tracepoint: &str, btf: &Btf) -> Result<(), String> {
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or("program missing from the object")?;
        let p: &mut BtfTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
        let started = std::time::Instant::now();
        let loaded = p.load(tracepoint, btf);
        tracing::debug!(
            program,
            ms = started.elapsed().as_millis(),
            ok = loaded.is_ok(),
            "verified"
        );
        loaded.map_err(|e| super::load_error::load_error(program, &e))?;
        p.attach()
            .map_err(|e| why(&format!("attach to {tracepoint}"), &e))?;
        Ok(())
    }

    fn unload_tp_btf(&mut self, program: &str) {
        let Some(prog) = self.ebpf.program_mut(program) else {
            return;
        };
        if let Ok(Err(err)) | Err(err) = <&mut BtfTracePoint>::try_from(prog).map(|p| p.unload()) {
            tracing::warn!("unloading {program}: {err}");
        }
    }
}
