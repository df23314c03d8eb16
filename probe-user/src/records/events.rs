//! Records about processes and about probectl itself: execs, probes, exits; who made
//! a connection; reloads, watches, losses, repeats.

use std::sync::Arc;

use serde::Serialize;

use super::{ProbeResult, ResolvedBy};
use crate::ops::How;
use crate::process::{Image, ProcessTable};

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ExecRecord {
    pub ppid: u32,
    pub uid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    /// More arguments existed than were captured.
    pub argv_incomplete: bool,
    /// Indices of arguments cut at the capture limit (127 bytes).
    pub argv_truncated: Vec<usize>,
    /// The kernel lost the arguments of this exec (counted in the report's drops).
    pub argv_lost: bool,
    /// The executable path was cut at the capture limit (255 bytes).
    pub exe_truncated: bool,
    /// For a process started outside the watched tree: the policy selector that
    /// picked it at this exec (`exe ...`, `argv contains ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_by: Option<String>,
    /// The parent's own ancestors, nearest first (at most 16), as the
    /// fork events built them: with `ppid`, the real lineage, through processes that
    /// forked without an exec (a shell's subshell), which have no exec record. The
    /// readable stream draws its tree from it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<u32>,
}

/// Most ancestors an exec record lists above its parent.
pub const MAX_ANCESTORS: usize = 16;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    Env,
    File,
    /// A host-identity request that reads no file (uname, SIOCGIFHWADDR, RTM_GETLINK).
    Host,
}

impl TargetType {
    /// The name reports and profiles use (`env`, `file`, `host`).
    pub fn name(self) -> &'static str {
        match self {
            TargetType::Env => "env",
            TargetType::File => "file",
            TargetType::Host => "host",
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProbeRecord {
    pub tid: u32,
    /// Short name of the process (exe basename).
    pub process: String,
    pub categories: Vec<String>,
    pub target_type: TargetType,
    /// The env name or path, escaped.
    pub target: String,
    /// How it was seen: getenv, secure_getenv, present_at_exec, enumerated, or the
    /// file syscall.
    pub how: How,
    /// What the probe proves: `read` (a getenv that ran, an open, a readlink),
    /// `checked` (stat, access), `exposed` (present in the environment at exec, not
    /// seen read) or `enumerated` (the whole environment listed).
    pub evidence: crate::ops::Evidence,
    pub result: ProbeResult,
    /// The kernel truncated the target (path or name too long).
    pub truncated: bool,
    /// This record stands for every further probe under a policy prefix by this
    /// process (a burst, such as ICU reading all of /usr/share/zoneinfo): they are
    /// counted in the report, not streamed.
    pub folded: bool,
    /// For `present_at_exec`: the parent had the same name (and, where values are
    /// captured, the same value) at its own exec: the environment passed down
    /// unchanged. The readable stream does not repeat these.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inherited: bool,
    /// For `present_at_exec` of categories that ask for it: the start of the value,
    /// credentials redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_prefix: Option<String>,
    /// The path as the process wrote it (escaped), when it is not the target: a
    /// relative path, `..`, `/proc/self/root/...`, a symlink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_path: Option<String>,
    /// How `given_path` was tied to the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<ResolvedBy>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct WatchingRecord {
    /// The pids asked for.
    pub roots: Vec<u32>,
    /// Every process watched now: the roots and their descendants.
    pub pids: Vec<u32>,
    pub policy: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PolicyReloadRecord {
    /// The new policy is in force.
    pub ok: bool,
    /// The policy in force after the attempt.
    pub policy: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ExitRecord {
    /// `None` when the process did not call exit_group (killed by a signal, say).
    pub exit_code: Option<i32>,
}

/// Losses since the previous `loss` record, by source (`kernel:ring_full_file`,
/// `sink:syslog:tcp:...:queue_full`, ...), with the running totals.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LossRecord {
    pub losses: Vec<LossCount>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LossCount {
    pub source: String,
    /// Since the previous loss record.
    pub count: u64,
    /// Since the daemon started.
    pub total: u64,
}

/// Identical records of one tree held back from the sinks in one window.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RepeatedRecord {
    /// The kind of record (`probe`, `exec`, ...).
    pub record_type: super::Kind,
    /// What the records had in common (`cat: openat /etc/timezone -> ok`).
    pub like: String,
    /// Records not written.
    pub count: u64,
    pub first_time: crate::time::Stamp,
    pub last_time: crate::time::Stamp,
    pub window_ms: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CliIdentity {
    pub pid: u32,
    pub name: String,
    /// For interpreters: the script or package path from argv.
    pub script: Option<String>,
    pub uid: Option<u32>,
    /// Executable, command line, working directory, container, package: shared with
    /// the process table and every other record about the process.
    #[serde(flatten)]
    pub image: Arc<Image>,
    /// Parent, grandparent... inside the watched tree (and above it, for a process
    /// found already running): pid and name, the nearest `MAX_PARENTS`.
    pub parents: Vec<ParentRef>,
}

/// Parents listed in a record's identity; a deeper lineage is cut (the chain of
/// pids in a connection's `lineage` is cut alike).
pub const MAX_PARENTS: usize = 64;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ParentRef {
    pub pid: u32,
    pub name: String,
}

impl CliIdentity {
    /// What the process table knows of `pid`.
    pub fn of(procs: &ProcessTable, pid: u32) -> Self {
        let info = procs.get(pid);
        let image = info.map(|i| i.image.clone()).unwrap_or_default();
        CliIdentity {
            pid,
            name: image.name().to_owned(),
            script: image.script().map(str::to_owned),
            uid: info.and_then(|i| i.uid),
            image,
            parents: procs
                .lineage(pid)
                .into_iter()
                .skip(1)
                .take(MAX_PARENTS)
                .map(|p| ParentRef {
                    pid: p,
                    name: procs
                        .get(p)
                        .map(|i| i.name().to_owned())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }
}
