//! What loading one policy may cost, and the YAML parser that enforces it while it
//! parses. A policy is input like any other: a 118 KB file whose aliases expanded to
//! 20 million names, or 100,000 nested brackets, once cost minutes and gigabytes. Each
//! bound below is refused with an error naming the file, line and column
//! (docs/policy.md, "Limits").

use serde::de::DeserializeOwned;
use serde_saphyr::{Error as YamlError, MessageFormatter as _};

use super::PolicyError;

/// Largest policy file read, in bytes. The default policy is about 5 KiB.
pub const MAX_POLICY_FILE_BYTES: usize = 1024 * 1024;
/// Most policy files loaded from the daemon's policy directories.
pub const MAX_POLICY_FILES: usize = 256;
/// Most YAML nodes (mappings, sequences, scalars) in one file, every use of an alias
/// counted again.
pub const MAX_YAML_NODES: usize = 250_000;
/// Deepest nesting of mappings and sequences. A policy needs about 8 (a rule's
/// `destination.except` chain is the deepest part).
pub const MAX_YAML_DEPTH: usize = 32;
/// Most aliases (`*name`) in one file.
pub const MAX_YAML_ALIASES: usize = 10_000;
/// Most bytes of scalar text in one file, aliases counted again.
pub const MAX_YAML_SCALAR_BYTES: usize = 4 * 1024 * 1024;
/// Most (env name or path, category) pairs a compiled policy holds, after `~/`
/// expansion: userspace classifies what the kernel reports against them.
pub const MAX_CATEGORY_ENTRIES: usize = 16_384;

/// Most categories, and most rules, in a policy (merged): a reload maps the old
/// policy's by name onto the new one's.
pub const MAX_CATEGORIES: usize = 1_024;
pub const MAX_RULES: usize = 1_024;
/// Most userspace selectors (`select.exe`, `argv_contains`, `argv_regex`,
/// `containers` together): each exec a selector may pick is checked against all.
pub const MAX_USER_SELECTORS: usize = 1_024;
/// Most `select.argv_regex` entries, and the compiled size of each.
pub const MAX_ARGV_REGEXES: usize = 64;
pub const MAX_REGEX_BYTES: usize = 1024 * 1024;

/// Which bound a policy went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `MAX_POLICY_FILE_BYTES` or `MAX_POLICY_FILES`.
    FileSize,
    /// `MAX_YAML_NODES`, `MAX_YAML_SCALAR_BYTES` or `MAX_YAML_ALIASES`: the document,
    /// with its aliases expanded, is too large.
    YamlSize,
    /// `MAX_YAML_DEPTH`.
    YamlDepth,
    /// `MAX_CATEGORY_ENTRIES`.
    CategoryEntries,
    /// `MAX_CATEGORIES`, `MAX_RULES`, `MAX_USER_SELECTORS` or `MAX_ARGV_REGEXES`.
    Count,
    /// A kernel map's capacity (the map's name).
    KernelMap(&'static str),
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: MAX_YAML_NODES,
            max_depth: MAX_YAML_DEPTH,
            flow_nesting_limit: MAX_YAML_DEPTH,
            max_aliases: MAX_YAML_ALIASES,
            max_anchors: MAX_YAML_ALIASES,
            max_total_scalar_bytes: MAX_YAML_SCALAR_BYTES,
            max_documents: 1,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_YAML_NODES,
            max_replay_stack_depth: MAX_YAML_DEPTH,
        },
        // `<<` merges were never part of the format; an unknown key is clearer than a
        // silent merge.
        merge_keys: serde_saphyr::MergeKeyPolicy::Error,
    }
}

/// Parses YAML policy text into `T` within the bounds above. Errors carry the file,
/// line and column.
pub(super) fn from_yaml<T: DeserializeOwned>(
    text: &str,
    source_name: &str,
) -> Result<T, PolicyError> {
    if text.len() > MAX_POLICY_FILE_BYTES {
        return Err(file_too_large(source_name, text.len()));
    }
    serde_saphyr::from_str_with_options(text, options())
        .map_err(|err| yaml_error(&err, source_name))
}

pub(super) fn file_too_large(source_name: &str, bytes: usize) -> PolicyError {
    PolicyError::Limit {
        source_name: source_name.to_owned(),
        at: None,
        limit: Limit::FileSize,
        message: format!(
            "the file has {bytes} bytes or more; a policy file may have at most {MAX_POLICY_FILE_BYTES}"
        ),
        hint: "split the policy into several files in the policy directory, or remove entries",
        needle: None,
    }
}

/// The error itself, under the wrappers that add snippets and alias locations.
fn original(mut err: &YamlError) -> &YamlError {
    loop {
        match err {
            YamlError::WithSnippet { error, .. } | YamlError::AliasError { error, .. } => {
                err = error;
            }
            other => return other,
        }
    }
}

const SIZE_HINT: &str =
    "anchors and aliases count each time they are used; see \"Limits\" in docs/policy.md";

fn too_deep() -> (Limit, String, &'static str) {
    (
        Limit::YamlDepth,
        format!(
            "mappings and sequences (aliases included) nest deeper than {MAX_YAML_DEPTH} levels"
        ),
        "a policy needs about 8 levels; look for stray brackets",
    )
}

fn yaml_error(err: &YamlError, source_name: &str) -> PolicyError {
    let (line, column) = err
        .location()
        .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
    let limit = match original(err) {
        YamlError::Budget { breach, .. } => {
            use serde_saphyr::budget::BudgetBreach as B;
            Some(match breach {
                B::Depth { .. } => too_deep(),
                B::Nodes { .. } | B::Events { .. } => (
                    Limit::YamlSize,
                    format!(
                        "the policy has more than {MAX_YAML_NODES} YAML nodes, its aliases expanded"
                    ),
                    SIZE_HINT,
                ),
                B::ScalarBytes { .. } => (
                    Limit::YamlSize,
                    format!("the policy has more than {MAX_YAML_SCALAR_BYTES} bytes of text"),
                    SIZE_HINT,
                ),
                B::Aliases { .. } | B::Anchors { .. } => (
                    Limit::YamlSize,
                    format!("the policy has more than {MAX_YAML_ALIASES} aliases or anchors"),
                    SIZE_HINT,
                ),
                other => (
                    Limit::YamlSize,
                    format!("the policy is too large to load ({other:?})"),
                    SIZE_HINT,
                ),
            })
        }
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. } => Some((
            Limit::YamlSize,
            format!("aliases expand the policy to more than {MAX_YAML_NODES} YAML nodes"),
            SIZE_HINT,
        )),
        YamlError::AliasReplayStackDepthExceeded { .. } => Some(too_deep()),
        // The scanner's own nesting limit (flow collections: `[[[[...`).
        YamlError::ExternalMessage { source, .. }
            if matches!(
                source.as_ref(),
                serde_saphyr::ExternalMessageSource::Parser(scan)
                    if matches!(scan.kind(), serde_saphyr::granit_parser::ErrorKind::RecursionLimitExceeded)
            ) =>
        {
            Some(too_deep())
        }
        _ => None,
    };
    if let Some((limit, message, hint)) = limit {
        return PolicyError::Limit {
            source_name: source_name.to_owned(),
            at: (line > 0).then_some((line, column)),
            limit,
            message,
            hint,
            needle: None,
        };
    }
    let message = serde_saphyr::DefaultMessageFormatter
        .format_message(original(err))
        .into_owned();
    let hint = super::suggest::did_you_mean(&message);
    PolicyError::Parse {
        source_name: source_name.to_owned(),
        line,
        column,
        message,
        hint,
    }
}

/// How many categories, rules and userspace selectors a policy has.
pub(super) struct Counts {
    pub categories: usize,
    pub rules: usize,
    pub selectors: usize,
    pub regexes: usize,
}

/// Checks the number of categories, rules and userspace selectors (before anything
/// costly is done with them, such as compiling regexes).
pub(super) fn check_counts(counts: &Counts, source_name: &str) -> Result<(), PolicyError> {
    for (what, n, max, key) in [
        (
            "categories",
            counts.categories,
            MAX_CATEGORIES,
            "categories:",
        ),
        ("rules", counts.rules, MAX_RULES, "rules:"),
        (
            "userspace selectors (exe, argv_contains, argv_regex, containers)",
            counts.selectors,
            MAX_USER_SELECTORS,
            "select:",
        ),
        (
            "argv_regex selectors",
            counts.regexes,
            MAX_ARGV_REGEXES,
            "argv_regex:",
        ),
    ] {
        if n > max {
            return Err(PolicyError::Limit {
                source_name: source_name.to_owned(),
                at: None,
                limit: Limit::Count,
                message: format!("the policy has {n} {what}; at most {max} are allowed"),
                hint: "see \"Limits\" in docs/policy.md",
                needle: super::Needle::first(key),
            });
        }
    }
    Ok(())
}

/// A selector's regular expression, its compiled size bounded (`MAX_REGEX_BYTES`).
pub(super) fn selector_regex(text: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(text)
        .size_limit(MAX_REGEX_BYTES)
        .build()
}

/// More distinct `what` than kernel map `map` holds; `written` is the first entry that
/// did not fit, as the policy spells it (to place the error).
pub(super) fn over_capacity(
    map: &'static str,
    capacity: usize,
    what: &str,
    written: &str,
    source_name: &str,
) -> PolicyError {
    PolicyError::Limit {
        source_name: source_name.to_owned(),
        at: None,
        limit: Limit::KernelMap(map),
        message: format!(
            "the policy has more {what} than the kernel map {map} holds ({capacity}){}",
            if written.is_empty() {
                String::new()
            } else {
                format!("; {written:?} is one too many")
            }
        ),
        hint: "each distinct entry (after `~/` expansion to every home) takes one slot; remove entries or use a prefix or glob",
        needle: (!written.is_empty())
            .then(|| super::Needle::first(written))
            .flatten(),
    }
}

pub(super) fn too_many_entries(written: &str, source_name: &str) -> PolicyError {
    PolicyError::Limit {
        source_name: source_name.to_owned(),
        at: None,
        limit: Limit::CategoryEntries,
        message: format!(
            "the categories list more than {MAX_CATEGORY_ENTRIES} env names and paths in all (after `~/` expansion); {written:?} is one too many"
        ),
        hint: "a name or path listed in several categories counts once per category; see \"Limits\" in docs/policy.md",
        needle: super::Needle::first(written),
    }
}

pub(super) fn too_many_files(dir: &str) -> PolicyError {
    PolicyError::Limit {
        source_name: dir.to_owned(),
        at: None,
        limit: Limit::FileSize,
        message: format!("the policy directories hold more than {MAX_POLICY_FILES} policy files"),
        hint: "merge policy files, or remove the ones not in use",
        needle: None,
    }
}

#[cfg(test)]
mod tests;
