//! Everything a policy needs before it is put in force, done without touching the
//! sensors: read, parse, validate, compile (kernel map capacities checked), and index
//! the policy's files on this host (`FileIndex::build` stats and walks files: blocking
//! I/O). An event loop runs `prepare` on a blocking thread and then hands the result
//! to `Sensors::apply_policy`, which only writes maps.

use std::path::PathBuf;
use std::sync::Arc;

use super::{
    CompiledPolicy, DEFAULT_POLICY_SOURCE, FileIndex, KernelCapacity, PolicyError, PolicyFile,
};

/// Read at start and at each reload when a block rule names a host.
pub const HOSTS_FILE: &str = "/etc/hosts";

/// Where a policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The built-in `policies/default.yaml`.
    BuiltIn,
    /// One file (`run --policy FILE`).
    File(PathBuf),
    /// Every `*.yaml` / `*.yml` in these directories, merged (the daemon).
    Dirs(Vec<PathBuf>),
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::BuiltIn => f.write_str(DEFAULT_POLICY_SOURCE),
            PolicySource::File(path) => write!(f, "{}", path.display()),
            PolicySource::Dirs(dirs) => {
                for (i, d) in dirs.iter().enumerate() {
                    write!(f, "{}{}", if i == 0 { "" } else { ", " }, d.display())?;
                }
                Ok(())
            }
        }
    }
}

/// A policy ready to be put in force: compiled, within every kernel map's capacity,
/// with its files indexed.
#[derive(Debug, Clone)]
pub struct PreparedPolicy {
    pub policy: CompiledPolicy,
    /// The policy's files on this host (`INODES`, `BASENAMES`, directories).
    pub file_index: Arc<FileIndex>,
    /// The files it came from (one for a file, none for the built-in policy).
    pub files: Vec<PolicyFile>,
    /// A digest of the sources, to tell versions apart (`status`).
    pub version: String,
    /// /etc/hosts as read now (bounded), when a block rule names a host: its
    /// addresses are matched against the rules' host globs (`block_hosts`).
    pub hosts_file: Arc<Vec<(std::net::IpAddr, String)>>,
    /// The `nameserver`s of /etc/resolv.conf as read now, when a block rule names a
    /// host: the resolvers whose answers are learned for the rules' host globs unless
    /// a list is configured (`dns_trust`).
    pub resolv_conf: Arc<Vec<super::dns_trust::Resolver>>,
    /// The block slots of the indexed files (`INODES` values point at them).
    pub block_files: Arc<super::block_files::BlockFiles>,
}

impl PreparedPolicy {
    /// Indexes a compiled policy's files. Blocking I/O (bounded: see `FileIndex`).
    pub fn new(policy: CompiledPolicy) -> Self {
        let file_index = Arc::new(FileIndex::build(&policy.classifier));
        let block_files = Arc::new(super::block_files::compile(
            &policy.block,
            &policy.classifier,
            &file_index,
        ));
        if block_files.not_fed > 0 {
            tracing::warn!(
                "{} policy files need more than {} distinct sets of block slots: block rules count them only when read by their path",
                block_files.not_fed,
                probe_common::MAX_BLOCK_FILE_ENTRIES
            );
        }
        let (hosts_file, resolv_conf) = if policy.block.hosts.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            (
                super::block_hosts::read_hosts_file(std::path::Path::new(HOSTS_FILE)),
                super::dns_trust::read_resolv_conf(std::path::Path::new(
                    super::dns_trust::RESOLV_CONF,
                )),
            )
        };
        Self {
            policy,
            file_index,
            files: Vec::new(),
            version: String::new(),
            hosts_file: Arc::new(hosts_file),
            resolv_conf: Arc::new(resolv_conf),
            block_files,
        }
    }

    /// How full each kernel map will be.
    pub fn capacity(&self) -> KernelCapacity {
        let mut capacity = KernelCapacity::of(&self.policy, Some(&self.file_index));
        if !self.policy.block.is_empty() {
            capacity.0.push(super::MapUse {
                map: probe_common::MAP_BLOCK_ENTRIES,
                used: self.policy.block.entries.len() + self.block_files.entries.len(),
                capacity: probe_common::MAX_BLOCK_ENTRIES as usize,
            });
        }
        capacity
    }
}

/// Reads, parses, validates, compiles and indexes the policy from `source`. Never
/// touches the sensors; bounded in time and memory (docs/policy.md, "Limits"), but it
/// reads files, so call it off an event loop.
pub fn prepare(source: &PolicySource) -> Result<PreparedPolicy, PolicyError> {
    match source {
        PolicySource::BuiltIn => Ok(PreparedPolicy::new(super::load_default()?)),
        PolicySource::File(path) => {
            let policy = super::load_file(path)?;
            let file = PolicyFile {
                path: path.display().to_string(),
                name: policy.name.clone(),
                categories: policy.categories.len(),
                rules: policy.rules.len(),
            };
            let mut prepared = PreparedPolicy::new(policy);
            prepared.files = vec![file];
            Ok(prepared)
        }
        PolicySource::Dirs(dirs) => {
            let set = super::load_dirs(dirs)?;
            let mut prepared = PreparedPolicy::new(set.compiled);
            prepared.files = set.files;
            prepared.version = set.version;
            Ok(prepared)
        }
    }
}
