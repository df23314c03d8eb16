//! Policies: YAML schema, validation with file:line:column errors, and compilation into
//! kernel map entries plus the userspace classifier.

mod compile;
mod explain;
mod file_index;
pub mod glob;
mod merge;
pub mod rules;
mod schema;
pub mod select;
mod suggest;

pub use compile::{Classifier, CompiledPolicy, KernelEntries, home_dirs};
pub use explain::explain;
pub use file_index::{FileIndex, basename_key, kernel_dev};
pub use merge::{PolicyFile, PolicySet, load_dirs};
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
        if let PolicyError::Invalid { at, needle, .. } = &mut self
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
    let policy = parse_policy(text, source_name)?;
    compile_policy(policy, source_name)
}

/// Parses and validates policy text (its rules included) without compiling it.
pub fn parse_policy(text: &str, source_name: &str) -> Result<Policy, PolicyError> {
    let policy: Policy = serde_yaml::from_str(text).map_err(|err| {
        let (line, column, message) = yaml_error_parts(&err);
        let hint = suggest::did_you_mean(&message);
        PolicyError::Parse {
            source_name: source_name.to_owned(),
            line,
            column,
            message,
            hint,
        }
    })?;
    schema::validate(&policy, source_name).map_err(|e| e.placed(text))?;
    rules::compile_rules(&policy.rules, &policy.categories, source_name)
        .map_err(|e| e.placed(text))?;
    Ok(policy)
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

/// Compiles a validated policy.
fn compile_policy(policy: Policy, source_name: &str) -> Result<CompiledPolicy, PolicyError> {
    let rules = rules::compile_rules(&policy.rules, &policy.categories, source_name)?;
    let mut compiled = compile::compile(policy);
    compiled.rules = rules;
    Ok(compiled)
}

#[cfg(test)]
mod tests;
