//! The small values records carry, typed: what a probe or a connect got, how a path
//! was tied to its target, where a connection was seen. Each serialises as the word
//! records have always used (`ok`, `ENOENT`, `in_progress`, `cgroup_hook`).

use serde::Serialize;

/// An errno as records name it (`ENOENT`), from a syscall's negative return.
pub fn errno_name(ret: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(ret.saturating_neg()))
}

/// A JSON Schema string, for values that serialise as one.
fn string_schema(description: &str) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "description": description})
}

/// What a probe got: `set`/`unset` for an env lookup, `ok` or the errno name for a
/// file operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    Set,
    Unset,
    Ok,
    /// A negative syscall return (`-2`: `ENOENT`).
    Failed(i32),
    /// The request was made; its result is not recorded (host-identity calls).
    Issued,
}

impl ProbeResult {
    /// A file syscall's return: `ok` when not negative.
    pub fn of_syscall(ret: i32) -> Self {
        if ret >= 0 {
            ProbeResult::Ok
        } else {
            ProbeResult::Failed(ret)
        }
    }

    pub fn name(self) -> String {
        match self {
            ProbeResult::Set => "set".into(),
            ProbeResult::Unset => "unset".into(),
            ProbeResult::Ok => "ok".into(),
            ProbeResult::Failed(ret) => errno_name(ret),
            ProbeResult::Issued => "issued".into(),
        }
    }

    pub fn is_ok(self) -> bool {
        matches!(self, ProbeResult::Ok | ProbeResult::Set)
    }
}

impl std::fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for ProbeResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl schemars::JsonSchema for ProbeResult {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProbeResult".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        string_schema(
            "`set`/`unset` for env lookups; `ok` or the errno name (`ENOENT`) for file operations; `issued` for host-identity requests (result not recorded)",
        )
    }
}

/// How a path that was not the target itself was tied to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedBy {
    /// The file the syscall reached is a policy file (same device and inode).
    KernelInode,
    /// Joined to the cwd or dirfd and normalised by probectl.
    Userspace,
}

/// An address family.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ipv4,
    Ipv6,
    Unix,
    /// A family probectl does not decode (the address says which number).
    Unknown,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Unix => "unix",
            Family::Unknown => "unknown",
        }
    }
}

/// How a process that probed is related to the process that made a network call, in
/// the watched tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The same process.
    #[serde(rename = "self")]
    Itself,
    Parent,
    Child,
    /// Same parent.
    Sibling,
    /// A grandparent or further up.
    Ancestor,
    /// A grandchild or further down.
    Descendant,
    /// Elsewhere in the same tree (a cousin, say).
    Relative,
}

impl Relation {
    pub fn name(self) -> &'static str {
        match self {
            Relation::Itself => "self",
            Relation::Parent => "parent",
            Relation::Child => "child",
            Relation::Sibling => "sibling",
            Relation::Ancestor => "ancestor",
            Relation::Descendant => "descendant",
            Relation::Relative => "relative",
        }
    }

    /// The same relation seen from the other side (the caller is the prober's child
    /// when the prober is the caller's parent).
    pub fn inverse(self) -> Relation {
        match self {
            Relation::Parent => Relation::Child,
            Relation::Child => Relation::Parent,
            Relation::Ancestor => Relation::Descendant,
            Relation::Descendant => Relation::Ancestor,
            other => other,
        }
    }
}

/// Where a connection or datagram was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeenAt {
    /// The connect/sendto/sendmsg tracepoints alone: the destination was read from the
    /// caller's memory at the syscall's exit (no hook ran: hooks not attached, or a
    /// socket the kernel runs no cgroup program for).
    Syscall,
    /// The syscall tracepoints gave the result; the destination is the kernel's own
    /// copy, written by the cgroup sock_addr hook that ran inside the same syscall.
    SyscallAndCgroupHook,
    /// The cgroup sock_addr hook: a connect or send made outside those syscalls
    /// (io_uring).
    CgroupHook,
}

/// What a connect (or a datagram send) got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectResult {
    Ok,
    /// A non-blocking connect: the TCP outcome comes later.
    InProgress,
    /// Seen by the cgroup hook: no syscall result.
    Issued,
    /// A datagram was sent.
    Sent,
    /// A negative syscall return.
    Failed(i32),
    /// The send returned success but a block rule dropped the packet at the cgroup
    /// egress hook: the kernel's IPv6 ping send ignores the output's verdict, so
    /// the call cannot say EPERM (the `blocked` record of the same send says why).
    Dropped,
}

impl ConnectResult {
    /// A connect(2) return.
    pub fn of_syscall(ret: i32) -> Self {
        match ret {
            0 => ConnectResult::Ok,
            r if r == -libc::EINPROGRESS => ConnectResult::InProgress,
            r if r > 0 => ConnectResult::Ok,
            r => ConnectResult::Failed(r),
        }
    }

    /// Whether its TCP outcome comes later, from the socket's state changes.
    pub fn awaits_outcome(self) -> bool {
        matches!(self, ConnectResult::InProgress | ConnectResult::Issued)
    }

    pub fn name(self) -> String {
        match self {
            ConnectResult::Ok => "ok".into(),
            ConnectResult::InProgress => "in_progress".into(),
            ConnectResult::Issued => "issued".into(),
            ConnectResult::Sent => "sent".into(),
            ConnectResult::Failed(ret) => errno_name(ret),
            ConnectResult::Dropped => "dropped".into(),
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, ConnectResult::Failed(_) | ConnectResult::Dropped)
    }
}

impl std::fmt::Display for ConnectResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for ConnectResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl schemars::JsonSchema for ConnectResult {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ConnectResult".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        string_schema(
            "`ok`, `in_progress` (non-blocking connect), `issued` (seen by the cgroup hook: no syscall result), `sent` (a datagram), or the errno name",
        )
    }
}

/// How a non-blocking TCP connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TcpOutcome {
    Established,
    /// Refused, unreachable, timed out.
    Failed,
}

impl TcpOutcome {
    pub fn name(self) -> &'static str {
        match self {
            TcpOutcome::Established => "established",
            TcpOutcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for TcpOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where probectl learnt the name of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
pub enum NameSource {
    /// An answer the process received in this run.
    #[serde(rename = "dns")]
    Dns,
    #[serde(rename = "/etc/hosts")]
    EtcHosts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_serialise_as_the_words_records_use() {
        let j = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        assert_eq!(j(serde_json::json!(ProbeResult::Failed(-2))), "ENOENT");
        assert_eq!(j(serde_json::json!(ProbeResult::Unset)), "unset");
        assert_eq!(
            j(serde_json::json!(ConnectResult::of_syscall(-115))),
            "in_progress"
        );
        assert_eq!(
            j(serde_json::json!(ConnectResult::of_syscall(-111))),
            "ECONNREFUSED"
        );
        assert_eq!(j(serde_json::json!(SeenAt::CgroupHook)), "cgroup_hook");
        assert_eq!(
            j(serde_json::json!(SeenAt::SyscallAndCgroupHook)),
            "syscall_and_cgroup_hook"
        );
        assert_eq!(j(serde_json::json!(NameSource::EtcHosts)), "/etc/hosts");
        assert_eq!(
            j(serde_json::json!(ResolvedBy::KernelInode)),
            "kernel_inode"
        );
    }
}
