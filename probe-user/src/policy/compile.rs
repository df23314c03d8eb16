//! Compilation: a validated policy becomes kernel map entries (what the kernel filters
//! on) and a classifier (how userspace names what the kernel reported).

use probe_common::{
    ENV_CAPTURE_VALUE, ENV_NAME_LEN, EnvNameKey, PATH_LEN, PATH_MATCH_EXACT, PATH_MATCH_PREFIX,
    PolicyRef,
};

use super::schema::{Category, Policy};

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub name: String,
    pub categories: Vec<Category>,
    pub kernel: KernelEntries,
    pub classifier: Classifier,
    pub rules: Vec<super::rules::CompiledRule>,
    /// Selectors evaluated by userspace on execs the kernel did not select.
    pub selectors: super::select::UserSelectors,
}

/// Keys and values for the kernel's policy maps.
#[derive(Debug, Clone, Default)]
pub struct KernelEntries {
    /// `ENV_NAMES`: upper-cased, zero-padded names.
    pub env_names: Vec<(EnvNameKey, PolicyRef)>,
    /// `ENV_PREFIXES`: env globs (`LC_*`) as (prefix length in bits, upper-cased
    /// literal part, value).
    pub env_prefixes: Vec<(u32, EnvNameKey, PolicyRef)>,
    /// `PATHS`: (prefix length in bits, padded path bytes, value).
    pub paths: Vec<(u32, [u8; PATH_LEN], PolicyRef)>,
    /// Some category counts reads of `/proc/<pid>/environ` (`SETTING_PROC_ENVIRON`).
    pub proc_environ: bool,
    /// `SELECT_COMMS`: selected program names, zero padded.
    pub select_comms: Vec<probe_common::CommKey>,
    /// `SELECT_UIDS`: selected user ids.
    pub select_uids: Vec<u32>,
    /// Some selector only userspace evaluates: the kernel sends every exec.
    pub exec_candidates: bool,
}

/// Maps what the kernel saw back to policy categories.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    env: Vec<(String, bool, usize)>,
    /// Env globs (`LC_*`) as (literal part, case-insensitive, category).
    env_prefixes: Vec<(String, bool, usize)>,
    exact_paths: Vec<(String, usize)>,
    prefixes: Vec<(String, usize)>,
    /// Categories that count reads of `/proc/<pid>/environ`.
    proc_environ: Vec<usize>,
    /// Path globs (`*`, `**`), as (pattern, category).
    globs: Vec<(String, usize)>,
    /// Per category: the operations that count (empty: all).
    operations: Vec<Vec<super::schema::Operation>>,
}

impl Classifier {
    /// Whether a probe made by `how` counts for category `cat` (its `operations`).
    pub fn counts(&self, cat: usize, how: crate::ops::How) -> bool {
        match self.operations.get(cat) {
            Some(ops) if !ops.is_empty() => ops.contains(&how.operation()),
            _ => true,
        }
    }

    /// Exact policy paths, as written.
    pub fn exact_paths(&self) -> impl Iterator<Item = &str> {
        self.exact_paths.iter().map(|(p, _)| p.as_str())
    }

    /// Policy path globs, as written (after `~/` expansion).
    pub fn globs(&self) -> impl Iterator<Item = &str> {
        self.globs.iter().map(|(p, _)| p.as_str())
    }

    /// Policy path prefixes, as written.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.prefixes.iter().map(|(p, _)| p.as_str())
    }

    /// Categories that count reads of the whole environment: `/proc/<pid>/environ`
    /// and enumerations such as Node's `Object.keys(process.env)`.
    pub fn whole_environment_categories(&self) -> Vec<usize> {
        self.proc_environ.clone()
    }

    /// Categories (indices) whose env list names `name`, honouring each one's case rule.
    pub fn env_categories(&self, name: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .env
            .iter()
            .filter(|(n, ci, _)| {
                if *ci {
                    n.eq_ignore_ascii_case(name)
                } else {
                    n == name
                }
            })
            .map(|(_, _, c)| *c)
            .chain(
                self.env_prefixes
                    .iter()
                    .filter(|(p, ci, _)| {
                        name.len() >= p.len()
                            && if *ci {
                                name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                            } else {
                                name.starts_with(p.as_str())
                            }
                    })
                    .map(|(_, _, c)| *c),
            )
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Categories (indices) whose paths or prefixes cover `path`.
    pub fn path_categories(&self, path: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .exact_paths
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, c)| *c)
            .chain(
                self.prefixes
                    .iter()
                    .filter(|(p, _)| path.starts_with(p.as_str()))
                    .map(|(_, c)| *c),
            )
            .chain(
                self.globs
                    .iter()
                    .filter(|(g, _)| super::glob::matches(g, path))
                    .map(|(_, c)| *c),
            )
            .collect();
        if is_proc_environ(path) {
            out.extend(&self.proc_environ);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `/proc/<pid>/environ`, `/proc/self/environ`, `/proc/<pid>/task/<tid>/environ`: the
/// same test the kernel makes.
pub fn is_proc_environ(path: &str) -> bool {
    path.starts_with("/proc/")
        && path.ends_with("/environ")
        && path.len() > "/proc//environ".len() - 1
}

impl Classifier {
    /// The longest policy prefix under which `path` matched, if it matched only by
    /// prefix (not as an exact path). Probes under one prefix can be folded.
    pub fn fold_prefix(&self, path: &str) -> Option<&str> {
        if self.exact_paths.iter().any(|(p, _)| p == path) {
            return None;
        }
        self.prefixes
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| path.starts_with(p))
            .max_by_key(|p| p.len())
    }
}

fn env_key(name: &str) -> EnvNameKey {
    let mut key = [0u8; ENV_NAME_LEN];
    for (dst, src) in key.iter_mut().zip(name.bytes()) {
        *dst = src.to_ascii_uppercase();
    }
    key
}

fn path_key(path: &str) -> [u8; PATH_LEN] {
    let mut key = [0u8; PATH_LEN];
    key[..path.len()].copy_from_slice(path.as_bytes());
    key
}

/// Most home directories a `~/` path is expanded into.
const MAX_HOMES: usize = 256;

/// Home directories of the users whose files `~/` stands for: root and every regular
/// account (uid 1000 up to, not including, nobody's 65534) in /etc/passwd whose home
/// exists. Read when the policy is compiled; a user added later is not covered until
/// the policy is loaded again.
pub fn home_dirs() -> Vec<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut homes: Vec<String> = passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let uid: u32 = fields.get(2)?.parse().ok()?;
            let home = *fields.get(5)?;
            let regular = uid == 0 || (1000..65534).contains(&uid);
            (regular && home.starts_with('/') && home != "/" && std::path::Path::new(home).is_dir())
                .then(|| home.trim_end_matches('/').to_owned())
        })
        .collect();
    homes.sort();
    homes.dedup();
    homes.truncate(MAX_HOMES);
    homes
}

/// `~/x` -> `<home>/x` for every home; other paths as they are. Expansions that would
/// not fit a kernel key are left out.
fn expand_home(path: &str, homes: &[String]) -> Vec<String> {
    match path.strip_prefix("~/") {
        Some(rest) => homes
            .iter()
            .map(|home| format!("{home}/{rest}"))
            .filter(|p| p.len() < PATH_LEN)
            .collect(),
        None => vec![path.to_owned()],
    }
}

pub(super) fn compile(policy: Policy) -> CompiledPolicy {
    compile_for_homes(policy, &home_dirs())
}

pub(super) fn compile_for_homes(policy: Policy, homes: &[String]) -> CompiledPolicy {
    let mut kernel = KernelEntries::default();
    let mut classifier = Classifier::default();
    for comm in &policy.select.comms {
        let mut key = [0u8; 16];
        key[..comm.len()].copy_from_slice(comm.as_bytes());
        kernel.select_comms.push(key);
    }
    kernel.select_uids = policy.select.uids.clone();
    let selectors = super::select::UserSelectors::compile(&policy.select);
    kernel.exec_candidates = !selectors.is_empty();
    let mut next_id = 0u32;
    let mut id = || {
        next_id += 1;
        next_id
    };
    for (index, cat) in policy.categories.iter().enumerate() {
        classifier.operations.push(cat.operations.clone());
        let env_flags = if cat.capture_value_prefix {
            ENV_CAPTURE_VALUE
        } else {
            0
        };
        for name in &cat.env {
            if let Some(literal) = name.strip_suffix('*') {
                let key = env_key(literal);
                let bits = (literal.len() * 8) as u32;
                match kernel
                    .env_prefixes
                    .iter_mut()
                    .find(|(b, k, _)| *b == bits && *k == key)
                {
                    Some((_, _, value)) => value.match_kind |= env_flags,
                    None => kernel.env_prefixes.push((
                        bits,
                        key,
                        PolicyRef {
                            entry_id: id(),
                            match_kind: env_flags,
                        },
                    )),
                }
                classifier
                    .env_prefixes
                    .push((literal.to_owned(), cat.env_case_insensitive, index));
                continue;
            }
            let key = env_key(name);
            // Two categories may name one variable; the kernel needs it once, with the
            // union of what they ask for.
            match kernel.env_names.iter_mut().find(|(k, _)| *k == key) {
                Some((_, value)) => value.match_kind |= env_flags,
                None => kernel.env_names.push((
                    key,
                    PolicyRef {
                        entry_id: id(),
                        match_kind: env_flags,
                    },
                )),
            }
            classifier
                .env
                .push((name.clone(), cat.env_case_insensitive, index));
        }
        if cat.proc_environ {
            kernel.proc_environ = true;
            classifier.proc_environ.push(index);
        }
        for path in cat.paths.iter().flat_map(|p| expand_home(p, homes)) {
            let path = &path;
            if super::glob::is_glob(path) {
                // The kernel passes everything under the literal directory; the
                // classifier matches the pattern.
                let prefix = super::glob::literal_prefix(path);
                kernel.paths.push((
                    (prefix.len() * 8) as u32,
                    path_key(prefix),
                    PolicyRef {
                        entry_id: id(),
                        match_kind: PATH_MATCH_PREFIX,
                    },
                ));
                classifier.globs.push((path.to_owned(), index));
                continue;
            }
            // The NUL terminator is part of an exact key, so it cannot match longer paths.
            let bits = ((path.len() + 1) * 8) as u32;
            kernel.paths.push((
                bits,
                path_key(path),
                PolicyRef {
                    entry_id: id(),
                    match_kind: PATH_MATCH_EXACT,
                },
            ));
            classifier.exact_paths.push((path.to_owned(), index));
        }
        for prefix in cat.path_prefixes.iter().flat_map(|p| expand_home(p, homes)) {
            let prefix = &prefix;
            let bits = (prefix.len() * 8) as u32;
            kernel.paths.push((
                bits,
                path_key(prefix),
                PolicyRef {
                    entry_id: id(),
                    match_kind: PATH_MATCH_PREFIX,
                },
            ));
            classifier.prefixes.push((prefix.to_owned(), index));
        }
    }
    kernel.paths.sort_by_key(|a| (a.0, a.1));
    kernel.paths.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    CompiledPolicy {
        name: policy.metadata.name.clone(),
        categories: policy.categories,
        kernel,
        classifier,
        rules: Vec::new(),
        selectors,
    }
}
