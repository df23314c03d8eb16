//! Policies: YAML schema, validation with file:line:column errors, and compilation into
//! kernel map entries plus the userspace classifier.

pub mod block;
pub mod block_files;
pub mod block_hosts;
mod capacity;
mod compile;
mod distinct;
pub mod dns_trust;
mod explain;
mod file_index;
pub mod glob;
mod keys;
pub mod limits;
mod merge;
pub mod own_home;
mod prepare;
pub mod rules;
mod schema;
pub mod select;
mod suggest;

pub use capacity::{KernelCapacity, MapUse};
pub use compile::{Classifier, CompiledPolicy, KernelEntries, home_dirs, is_own_proc_mem};
pub use explain::{block_summary, explain};
pub use file_index::{FileIndex, kernel_dev};
pub use keys::basename_key;
pub use limits::Limit;
pub use merge::{PolicyFile, PolicySet, load_dirs};
pub use prepare::{PolicySource, PreparedPolicy, prepare};
pub use schema::{Category, Metadata, Policy};

use std::path::Path;

/// The built-in policy, embedded at build time.
pub const DEFAULT_POLICY_YAML: &str = include_str!("../../../policies/default.yaml");
pub const DEFAULT_POLICY_SOURCE: &str = "<built-in policies/default.yaml>";

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "probectl.dev/v1alpha1";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "cannot read policy file {path}: {source}\n  hint: check the path and that it is readable"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{source_name}:{line}:{column}: {message}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Parse {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
        hint: Option<String>,
    },
    #[error("{source_name}:{}{message}\n  hint: {hint}", at.map(|(l, c)| format!("{l}:{c}: ")).unwrap_or_else(|| " ".to_owned()))]
    Invalid {
        source_name: String,
        /// Line and column (1-based) of the offending value, found from `needle`.
        at: Option<(usize, usize)>,
        message: String,
        hint: String,
        /// What to look for in the text to place the error.
        needle: Option<Box<Needle>>,
    },
    /// Over one of the bounds on what a policy may cost to load, or more entries than
    /// a kernel map holds (docs/policy.md, "Limits").
    #[error("{source_name}:{}{message}\n  hint: {hint}", at.map(|(l, c)| format!("{l}:{c}: ")).unwrap_or_else(|| " ".to_owned()))]
    Limit {
        source_name: String,
        at: Option<(usize, usize)>,
        limit: Limit,
        message: String,
        hint: &'static str,
        needle: Option<Box<Needle>>,
    },
}

impl PolicyError {
    /// The bound this error is about, if it is one.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            PolicyError::Limit { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

/// The text of an offending value, to find its line and column in the policy file
/// (serde_yaml gives positions for syntax errors only, not for the checks after it).
#[derive(Debug, Clone)]
pub struct Needle {
    pub text: String,
    /// Search only after this key (e.g. `rules:`).
    pub after: Option<&'static str>,
    /// The last occurrence (a duplicate), not the first.
    pub last: bool,
}

impl Needle {
    pub fn first(text: impl Into<String>) -> Option<Box<Self>> {
        Some(Box::new(Self {
            text: text.into(),
            after: None,
            last: false,
        }))
    }
    pub fn last(text: impl Into<String>) -> Option<Box<Self>> {
        Some(Box::new(Self {
            text: text.into(),
            after: None,
            last: true,
        }))
    }
    /// The first occurrence after `key`.
    pub fn after(text: impl Into<String>, key: &'static str) -> Option<Box<Self>> {
        Some(Box::new(Self {
            text: text.into(),
            after: Some(key),
            last: false,
        }))
    }
    pub fn in_rules(text: impl Into<String>, last: bool) -> Option<Box<Self>> {
        Some(Box::new(Self {
            text: text.into(),
            after: Some("\nrules:"),
            last,
        }))
    }

    /// (line, column), 1-based, of the needle in `text`.
    fn locate(&self, text: &str) -> Option<(usize, usize)> {
        let start = self.after.and_then(|a| text.find(a)).unwrap_or(0);
        let hay = &text[start..];
        let offset = start
            + if self.last {
                hay.rfind(&self.text)?
            } else {
                hay.find(&self.text)?
            };
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        Some((line, column))
    }
}

impl PolicyError {
    /// Fills in the position of a validation error from the policy text.
    fn placed(mut self, text: &str) -> Self {
        if let PolicyError::Invalid { at, needle, .. } | PolicyError::Limit { at, needle, .. } =
            &mut self
            && at.is_none()
        {
            *at = needle.as_ref().and_then(|n| n.locate(text));
        }
        self
    }
}

/// Loads the embedded default policy.
pub fn load_default() -> Result<CompiledPolicy, PolicyError> {
    parse(DEFAULT_POLICY_YAML, DEFAULT_POLICY_SOURCE)
}

/// Loads and validates a policy file (at most `limits::MAX_POLICY_FILE_BYTES`).
pub fn load_file(path: &Path) -> Result<CompiledPolicy, PolicyError> {
    let text = read_policy_file(path)?;
    parse(&text, &path.display().to_string())
}

/// Reads a policy file, refusing one larger than `limits::MAX_POLICY_FILE_BYTES`
/// without reading the rest (it might be endless: a FIFO, /dev/zero).
pub(crate) fn read_policy_file(path: &Path) -> Result<String, PolicyError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let read_err = |source| PolicyError::Read {
        path: path.display().to_string(),
        source,
    };
    // Non-blocking, so a FIFO cannot hold the caller; then only regular files.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    if !file.metadata().map_err(read_err)?.is_file() {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mut bytes = Vec::new();
    file.take(limits::MAX_POLICY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() > limits::MAX_POLICY_FILE_BYTES {
        return Err(limits::file_too_large(
            &path.display().to_string(),
            bytes.len(),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8: {e}"),
        ))
    })
}

/// Parses, validates and compiles policy text. `source_name` goes into error messages.
pub fn parse(text: &str, source_name: &str) -> Result<CompiledPolicy, PolicyError> {
    let parsed = parse_policy(text, source_name)?;
    compile::compile(parsed, source_name).map_err(|e| e.placed(text))
}

/// A policy that parsed and passed validation, with its rules compiled (against its own
/// categories).
#[derive(Debug, Clone)]
pub struct ParsedPolicy {
    pub policy: Policy,
    pub rules: Vec<rules::CompiledRule>,
}

/// Parses and validates policy text (its rules included) without compiling it.
pub fn parse_policy(text: &str, source_name: &str) -> Result<ParsedPolicy, PolicyError> {
    let policy: Policy = limits::from_yaml(text, source_name)?;
    schema::validate(&policy, source_name).map_err(|e| e.placed(text))?;
    let names: Vec<&str> = policy.categories.iter().map(|c| c.name.as_str()).collect();
    let rules =
        rules::compile_rules(&policy.rules, &names, source_name).map_err(|e| e.placed(text))?;
    Ok(ParsedPolicy { policy, rules })
}

/// A YAML error's line, column (1-based; 0 when unknown) and message without the
/// position serde_yaml repeats at its end (it goes in front, as `file:line:column`).
pub fn yaml_error_parts(err: &serde_yaml::Error) -> (usize, usize, String) {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let mut message = err.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    (line, column, message)
}

// The matchers' property tests (they had dropped out of the module tree).
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
