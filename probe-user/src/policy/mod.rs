//! Policies: YAML schema, validation with file:line:column errors, and compilation into
//! kernel map entries plus the userspace classifier.

mod compile;
mod explain;
mod file_index;
pub mod rules;
mod schema;
mod suggest;

pub use compile::{Classifier, CompiledPolicy, KernelEntries, home_dirs};
pub use explain::explain;
pub use file_index::{FileIndex, basename_key, kernel_dev};
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
    #[error("{source_name}: {message}\n  hint: {hint}")]
    Invalid {
        source_name: String,
        message: String,
        hint: String,
    },
}

/// Loads the embedded default policy.
pub fn load_default() -> Result<CompiledPolicy, PolicyError> {
    parse(DEFAULT_POLICY_YAML, DEFAULT_POLICY_SOURCE)
}

/// Loads and validates a policy file.
pub fn load_file(path: &Path) -> Result<CompiledPolicy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses, validates and compiles policy text. `source_name` goes into error messages.
pub fn parse(text: &str, source_name: &str) -> Result<CompiledPolicy, PolicyError> {
    let policy: Policy = serde_yaml::from_str(text).map_err(|err| {
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let mut message = err.to_string();
        // serde_yaml repeats the position at the end; it is already in front.
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        let hint = suggest::did_you_mean(&message);
        PolicyError::Parse {
            source_name: source_name.to_owned(),
            line,
            column,
            message,
            hint,
        }
    })?;
    schema::validate(&policy, source_name)?;
    let rules = rules::compile_rules(&policy.rules, &policy.categories, source_name)?;
    let mut compiled = compile::compile(policy);
    compiled.rules = rules;
    Ok(compiled)
}

#[cfg(test)]
mod tests;
