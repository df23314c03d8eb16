//! How a probe was seen: the one table of operations. Records name them, the policy's
//! `operations:` groups them, OCSF maps them to activities, all from this enum, so the
//! three cannot drift apart.

use serde::{Deserialize, Serialize};

/// The call, or the moment, through which a probe was seen.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum How {
    Open,
    Openat,
    Openat2,
    Creat,
    Readlink,
    Readlinkat,
    Stat,
    Lstat,
    Fstatat,
    Statx,
    Access,
    Faccessat,
    Faccessat2,
    /// A kernel file hook (BPF-LSM `file_open` or fexit `security_file_open`) saw an
    /// open the syscall tracepoints did not: io_uring, int 0x80, `open_by_handle_at`.
    FileOpen,
    /// `inode_readlink` outside the traced syscalls.
    InodeReadlink,
    /// An open file arrived over SCM_RIGHTS or `pidfd_getfd` (`file_receive`).
    FileReceive,
    /// `inode_getattr` outside the traced syscalls: a stat through io_uring, int 0x80
    /// or an fd.
    InodeGetattr,
    Getenv,
    SecureGetenv,
    /// The name was in the environment handed to exec.
    PresentAtExec,
    /// The whole environment was listed (Node's `Object.keys(process.env)`).
    Enumerated,
    /// uname(2): host name, kernel release.
    Uname,
    /// ioctl(SIOCGIFHWADDR): one interface's MAC address.
    Siocgifhwaddr,
    /// A netlink RTM_GETLINK request: every interface and its MAC address.
    RtmGetlink,
    /// process_vm_readv(2) on another process: it may have read that process's
    /// environment (or any other part of its memory).
    ProcessVmReadv,
}

/// What a probe proves about the program: that it read the thing, only checked that it
/// exists, merely had it in its environment, or listed the whole environment. Rules
/// count `read` and `enumerated` unless they name the others (`probed.evidence`), so a
/// child that only inherited `ANTHROPIC_BASE_URL` is not said to have probed it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Deserialize,
    Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// A getenv that ran, an open, a readlink, a host-identity request, a read of
    /// another process's memory.
    Read,
    /// stat or access: it learnt whether the thing exists, not what it holds.
    Checked,
    /// Present in the environment handed to exec; not seen read.
    Exposed,
    /// The whole environment was listed.
    Enumerated,
}

impl Evidence {
    pub const ALL: [Evidence; 4] = [
        Evidence::Read,
        Evidence::Checked,
        Evidence::Exposed,
        Evidence::Enumerated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Evidence::Read => "read",
            Evidence::Checked => "checked",
            Evidence::Exposed => "exposed",
            Evidence::Enumerated => "enumerated",
        }
    }

    /// Its bit in an `EvidenceSet`.
    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// A set of evidence kinds: what a rule counts as "probed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvidenceSet(u8);

impl EvidenceSet {
    /// What `probed` counts when a rule does not say: `read` and `enumerated`.
    pub const DEFAULT: EvidenceSet = EvidenceSet(Evidence::Read.bit() | Evidence::Enumerated.bit());
    pub const ALL: EvidenceSet = EvidenceSet(0b1111);

    pub fn of(kinds: &[Evidence]) -> Self {
        EvidenceSet(kinds.iter().fold(0, |acc, k| acc | k.bit()))
    }

    pub fn contains(self, kind: Evidence) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn kinds(self) -> impl Iterator<Item = Evidence> {
        Evidence::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

/// Kinds of operation, for a category's `operations:` (and OCSF's activities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// open, openat, openat2, creat.
    Open,
    /// readlink, readlinkat.
    Readlink,
    /// stat, lstat, fstatat, statx.
    Stat,
    /// access, faccessat, faccessat2.
    Access,
    /// getenv, secure_getenv.
    Getenv,
    /// The name was in the environment handed to exec.
    PresentAtExec,
    /// The whole environment was listed.
    Enumerated,
    /// A host-identity request that reads no file (uname, SIOCGIFHWADDR, RTM_GETLINK).
    HostCall,
    /// A read of another process's memory by a call (process_vm_readv); an open of
    /// `/proc/<pid>/mem` is an `open`.
    ReadMemory,
}

/// The host-identity requests that read no file, as a category's `host_calls:`
/// names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostCall {
    Uname,
    Siocgifhwaddr,
    RtmGetlink,
}

impl HostCall {
    /// The kernel's number for it (`HOST_CALL_*`).
    pub fn kernel(self) -> u32 {
        match self {
            HostCall::Uname => probe_common::HOST_CALL_UNAME,
            HostCall::Siocgifhwaddr => probe_common::HOST_CALL_IFHWADDR,
            HostCall::RtmGetlink => probe_common::HOST_CALL_GETLINK,
        }
    }

    pub fn of_kernel(call: u32) -> Option<HostCall> {
        [
            HostCall::Uname,
            HostCall::Siocgifhwaddr,
            HostCall::RtmGetlink,
        ]
        .into_iter()
        .find(|c| c.kernel() == call)
    }

    pub fn how(self) -> How {
        match self {
            HostCall::Uname => How::Uname,
            HostCall::Siocgifhwaddr => How::Siocgifhwaddr,
            HostCall::RtmGetlink => How::RtmGetlink,
        }
    }
}

impl How {
    /// The file syscall a files-sensor event names (`FileEvent::op`, a `FILE_OP_*`).
    pub fn of_file_op(op: u32) -> Option<How> {
        use probe_common::*;
        Some(match op {
            FILE_OP_OPEN => How::Open,
            FILE_OP_OPENAT => How::Openat,
            FILE_OP_READLINK => How::Readlink,
            FILE_OP_READLINKAT => How::Readlinkat,
            FILE_OP_OPENAT2 => How::Openat2,
            FILE_OP_CREAT => How::Creat,
            FILE_OP_STAT => How::Stat,
            FILE_OP_LSTAT => How::Lstat,
            FILE_OP_FSTATAT => How::Fstatat,
            FILE_OP_STATX => How::Statx,
            FILE_OP_ACCESS => How::Access,
            FILE_OP_FACCESSAT => How::Faccessat,
            FILE_OP_FACCESSAT2 => How::Faccessat2,
            FILE_OP_HOOK_OPEN => How::FileOpen,
            FILE_OP_HOOK_READLINK => How::InodeReadlink,
            FILE_OP_HOOK_RECEIVE => How::FileReceive,
            FILE_OP_HOOK_GETATTR => How::InodeGetattr,
            _ => return None,
        })
    }

    pub fn operation(self) -> Operation {
        match self {
            How::Open
            | How::Openat
            | How::Openat2
            | How::Creat
            | How::FileOpen
            | How::FileReceive => Operation::Open,
            How::Readlink | How::Readlinkat | How::InodeReadlink => Operation::Readlink,
            How::Stat | How::Lstat | How::Fstatat | How::Statx | How::InodeGetattr => {
                Operation::Stat
            }
            How::Access | How::Faccessat | How::Faccessat2 => Operation::Access,
            How::Getenv | How::SecureGetenv => Operation::Getenv,
            How::PresentAtExec => Operation::PresentAtExec,
            How::Enumerated => Operation::Enumerated,
            How::Uname | How::Siocgifhwaddr | How::RtmGetlink => Operation::HostCall,
            How::ProcessVmReadv => Operation::ReadMemory,
        }
    }

    /// What a probe made this way proves (see `Evidence`).
    pub fn evidence(self) -> Evidence {
        match self.operation() {
            Operation::Stat | Operation::Access => Evidence::Checked,
            Operation::PresentAtExec => Evidence::Exposed,
            Operation::Enumerated => Evidence::Enumerated,
            Operation::Open
            | Operation::Readlink
            | Operation::Getenv
            | Operation::HostCall
            | Operation::ReadMemory => Evidence::Read,
        }
    }

    /// The name records use (`openat`, `present_at_exec`).
    pub fn name(self) -> &'static str {
        match self {
            How::Open => "open",
            How::Openat => "openat",
            How::Openat2 => "openat2",
            How::Creat => "creat",
            How::Readlink => "readlink",
            How::Readlinkat => "readlinkat",
            How::Stat => "stat",
            How::Lstat => "lstat",
            How::Fstatat => "fstatat",
            How::Statx => "statx",
            How::Access => "access",
            How::Faccessat => "faccessat",
            How::Faccessat2 => "faccessat2",
            How::FileOpen => "file_open",
            How::InodeReadlink => "inode_readlink",
            How::FileReceive => "file_receive",
            How::InodeGetattr => "inode_getattr",
            How::Getenv => "getenv",
            How::SecureGetenv => "secure_getenv",
            How::PresentAtExec => "present_at_exec",
            How::Enumerated => "enumerated",
            How::Uname => "uname",
            How::Siocgifhwaddr => "siocgifhwaddr",
            How::RtmGetlink => "rtm_getlink",
            How::ProcessVmReadv => "process_vm_readv",
        }
    }
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_op_has_a_name_that_matches_its_serialised_form() {
        // The traced syscalls, then the hook operations (`FILE_OP_HOOK_*`).
        for op in 0..=probe_common::FILE_OP_HOOK_GETATTR {
            let how = How::of_file_op(op).expect("every FILE_OP_* is a How");
            assert_eq!(
                serde_json::to_value(how).unwrap(),
                serde_json::Value::from(how.name())
            );
        }
        assert_eq!(
            How::of_file_op(probe_common::FILE_OP_HOOK_GETATTR + 1),
            None
        );
    }

    #[test]
    fn every_host_call_round_trips_through_its_kernel_number_and_names_agree() {
        for call in [
            HostCall::Uname,
            HostCall::Siocgifhwaddr,
            HostCall::RtmGetlink,
        ] {
            assert_eq!(HostCall::of_kernel(call.kernel()), Some(call));
            // The policy's name for it is the record's name for the operation.
            assert_eq!(
                serde_json::to_value(call).unwrap(),
                serde_json::Value::from(call.how().name())
            );
            assert_eq!(call.how().operation(), Operation::HostCall);
        }
        assert_eq!(HostCall::of_kernel(0), None);
    }
}
