//! The serde schema of a policy file, and its validation.

use serde::Deserialize;

use probe_common::{ENV_NAME_LEN, PATH_LEN};

use super::{API_VERSION, Needle, PolicyError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    /// Programs watched wherever they start (daemon mode), selected in the kernel.
    #[serde(default)]
    pub select: Selection,
    #[serde(default)]
    pub categories: Vec<Category>,
    /// Probe-then-network sequences to flag (see `rules`).
    #[serde(default)]
    pub rules: Vec<super::rules::Rule>,
}

/// Which processes are watched without being started by `probectl run`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Program names (the executable's basename, as in `ps -o comm`, at most 15
    /// bytes): a process is watched from the exec of such a program on, together with
    /// its descendants.
    #[serde(default)]
    pub comms: Vec<String>,
    /// User ids: every program they exec is watched (selected in the kernel too).
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Executable path globs (`/usr/bin/*`, `**/bin/claude`), evaluated by userspace
    /// at exec: the first moments of such a process may pass before it is watched.
    #[serde(default)]
    pub exe: Vec<String>,
    /// Substrings of the command line (arguments joined by spaces), such as an npm
    /// package path: `node .../@anthropic-ai/claude-code/cli.js`. Userspace, like `exe`.
    #[serde(default)]
    pub argv_contains: Vec<String>,
    /// Regular expressions over the command line. Userspace, like `exe`.
    #[serde(default)]
    pub argv_regex: Vec<String>,
    /// Container ids (64 hex digits, or a unique prefix of at least 12), or `"*"`
    /// for any container, from the process's cgroup path. Userspace, like `exe`.
    #[serde(default)]
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A named set of probe targets: env names and file paths.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Environment variable names, matched exactly (see `env_case_insensitive`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Match `env` names in any letter case (`https_proxy` = `HTTPS_PROXY`).
    #[serde(default)]
    pub env_case_insensitive: bool,
    /// Report the first 64 bytes of the value when a name is present in the
    /// environment at exec (credentials in URLs are redacted). For settings such as
    /// proxy and relay URLs; never set it for secrets.
    #[serde(default)]
    pub capture_value_prefix: bool,
    /// Absolute paths matched exactly.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Absolute path prefixes: everything under them matches.
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// Reads of the whole environment count in this category: `/proc/<pid>/environ`
    /// of any pid (`self` too), and enumerations (Node's `Object.keys(process.env)`).
    #[serde(default)]
    pub proc_environ: bool,
    /// Host-identity requests that read no file and count in this category: `uname`,
    /// `siocgifhwaddr` (one interface's MAC address), `rtm_getlink` (every
    /// interface's, through netlink).
    #[serde(default)]
    pub host_calls: Vec<crate::ops::HostCall>,
    /// The operations that count as a probe of this category; all when omitted.
    #[serde(default)]
    pub operations: Vec<Operation>,
}

/// Kinds of operation a probe can be, for `Category::operations` (the one table is
/// `crate::ops`).
pub use crate::ops::Operation;

impl Policy {
    /// How many categories, rules and userspace selectors it has (bounded).
    pub(super) fn counts(&self) -> super::limits::Counts {
        let s = &self.select;
        super::limits::Counts {
            categories: self.categories.len(),
            rules: self.rules.len(),
            selectors: s.exe.len()
                + s.argv_contains.len()
                + s.argv_regex.len()
                + s.containers.len(),
            regexes: s.argv_regex.len(),
        }
    }
}

fn invalid(
    source_name: &str,
    message: String,
    hint: &str,
    needle: Option<Box<Needle>>,
) -> PolicyError {
    PolicyError::Invalid {
        source_name: source_name.to_owned(),
        at: None,
        message,
        hint: hint.to_owned(),
        needle,
    }
}

pub(super) fn validate(policy: &Policy, source_name: &str) -> Result<(), PolicyError> {
    super::limits::check_counts(&policy.counts(), source_name)?;
    if policy.api_version != API_VERSION {
        return Err(invalid(
            source_name,
            format!("unsupported apiVersion {:?}", policy.api_version),
            &format!("this probectl reads `apiVersion: {API_VERSION}`"),
            Needle::first("apiVersion"),
        ));
    }
    if policy.kind != "Policy" {
        return Err(invalid(
            source_name,
            format!("unsupported kind {:?}", policy.kind),
            "use `kind: Policy`",
            Needle::first("kind"),
        ));
    }
    if policy.metadata.name.trim().is_empty() {
        return Err(invalid(
            source_name,
            "metadata.name is empty".into(),
            "give the policy a name",
            Needle::first("metadata"),
        ));
    }
    for comm in &policy.select.comms {
        if comm.is_empty() || comm.len() > 15 || comm.contains('/') || comm.contains('\0') {
            return Err(invalid(
                source_name,
                format!("select.comms: {comm:?} is not a program name"),
                "program names are 1-15 bytes without `/` (the kernel cuts longer names at 15, so use the first 15)",
                Needle::first(comm.as_str()),
            ));
        }
    }
    for glob in &policy.select.exe {
        if glob.len() >= PATH_LEN {
            return Err(invalid(
                source_name,
                format!("select.exe: a glob of {} bytes is too long", glob.len()),
                "exe globs are at most 255 bytes",
                None,
            ));
        }
        if !glob.starts_with('/') && !glob.starts_with("**") {
            return Err(invalid(
                source_name,
                format!("select.exe: {glob:?} is not an absolute path glob"),
                "write the whole path (`/usr/bin/node`), or start with `**/` to match any directory",
                Needle::first(glob.as_str()),
            ));
        }
    }
    for id in &policy.select.containers {
        let hex = id.len() >= 12 && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if id != "*" && !hex {
            return Err(invalid(
                source_name,
                format!("select.containers: {id:?} is not a container id"),
                "give the id (at least its first 12 hex digits, as `docker ps` shows it), or \"*\" for any container",
                Needle::first(id.as_str()),
            ));
        }
    }
    for re in &policy.select.argv_regex {
        if let Err(err) = super::limits::selector_regex(re) {
            return Err(invalid(
                source_name,
                format!("select.argv_regex: {re:?} is not a valid regular expression: {err}"),
                "the syntax is Rust's `regex` crate (no look-around)",
                Needle::first(re.as_str()),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for cat in &policy.categories {
        if cat.name.trim().is_empty() {
            return Err(invalid(
                source_name,
                "a category has an empty name".into(),
                "name every category",
                Needle::first("categories"),
            ));
        }
        if !seen.insert(cat.name.as_str()) {
            return Err(invalid(
                source_name,
                format!("category {:?} is defined twice", cat.name),
                "merge the two definitions or rename one",
                Needle::last(cat.name.as_str()),
            ));
        }
        for name in &cat.env {
            validate_env_name(name).map_err(|why| {
                invalid(
                    source_name,
                    format!("category {:?}: env name {name:?} {why}", cat.name),
                    "env names are 1-63 bytes of letters, digits and `_`, or such a prefix and `*` (LC_*)",
                    Needle::first(name.as_str()),
                )
            })?;
        }
        for (list, what) in [(&cat.paths, "path"), (&cat.path_prefixes, "path prefix")] {
            for path in list {
                validate_path(path).map_err(|why| {
                    invalid(
                        source_name,
                        format!("category {:?}: {what} {path:?} {why}", cat.name),
                        "paths are absolute (or `~/...`, for every user's home), at most 255 bytes, without NUL or `..`",
                        Needle::first(path.as_str()),
                    )
                })?;
                let kernel_prefix = if what == "path" {
                    super::glob::is_glob(path).then(|| super::glob::literal_prefix(path))
                } else {
                    Some(path.as_str())
                };
                if kernel_prefix == Some("/") {
                    let why = if what == "path" {
                        "the kernel filters a glob on the directory before its first `*`, and here that is `/`"
                    } else {
                        "the kernel would match it against every path"
                    };
                    return Err(invalid(
                        source_name,
                        format!(
                            "category {:?}: {what} {path:?} would send every file a watched program opens to probectl: {why}",
                            cat.name
                        ),
                        "start a glob or a prefix with at least one directory (`/etc/**/x`, not `/**/x`)",
                        Needle::after(
                            path.as_str(),
                            if what == "path" {
                                "paths:"
                            } else {
                                "path_prefixes:"
                            },
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_env_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() >= ENV_NAME_LEN {
        return Err("is too long");
    }
    // A glob: a literal part and a trailing `*` (`LC_*`).
    let literal = name.strip_suffix('*').unwrap_or(name);
    if literal.is_empty() {
        return Err("matches every name");
    }
    if !literal
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(
            "has characters other than letters, digits and `_` (a glob may end in one `*`)",
        );
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') && !path.starts_with("~/") {
        return Err("is neither absolute nor under `~/`");
    }
    if path.split('/').any(|part| part == "..") {
        return Err("contains `..`");
    }
    if path.len() >= PATH_LEN {
        return Err("is too long");
    }
    if path.contains('\0') {
        return Err("contains NUL");
    }
    Ok(())
}
