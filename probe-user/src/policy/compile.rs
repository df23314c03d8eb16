//! Compilation: a validated policy becomes kernel map entries (what the kernel filters
//! on) and a classifier (how userspace names what the kernel reported).

use probe_common::{
    ENV_CAPTURE_VALUE, ENV_EXEC_ONLY, ENV_OWN_CONFIG, ENV_OWN_HOME, EnvNameKey, MAP_BASENAMES,
    MAP_ENV_NAMES, MAP_ENV_PREFIXES, MAP_OWN_HOME_PATHS, MAP_PATHS, MAP_SELECT_COMMS,
    MAP_SELECT_UIDS, MAX_ENV_PREFIXES, MAX_POLICY_ENTRIES, PATH_LEN, PATH_MATCH_EXACT,
    PATH_MATCH_PREFIX, PolicyRef,
};

mod path_match;

use super::PolicyError;
use super::distinct::Distinct;
use super::keys::{basename_key, env_key, path_key};
use super::limits::MAX_CATEGORY_ENTRIES;
use super::schema::Category;

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub name: String,
    pub categories: Vec<Category>,
    pub kernel: KernelEntries,
    pub classifier: Classifier,
    pub rules: Vec<super::rules::CompiledRule>,
    /// The `action: block` rules as the kernel judges them (empty: none).
    pub block: super::block::BlockTables,
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
    /// `OWN_HOME_PATHS`: the `~/` prefixes and glob directories relative to a home
    /// (`own_home::HomeTemplates::kernel_keys`), as `paths`.
    pub own_home_paths: Vec<(u32, [u8; PATH_LEN], PolicyRef)>,
    /// Some category counts reads of `/proc/<pid>/environ` (`SETTING_PROC_ENVIRON`).
    pub proc_environ: bool,
    /// `SETTING_HOST_CALLS`: bit `1 << HOST_CALL_*` for each call some category counts.
    pub host_calls: u32,
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
    /// (host call, category) pairs.
    host_calls: Vec<(crate::ops::HostCall, usize)>,
    /// Path globs (`*`, `**`), as (pattern, category).
    globs: Vec<(String, usize)>,
    /// Per category: the operations that count (empty: all).
    operations: Vec<Vec<super::schema::Operation>>,
    /// `~/` entries, matched against each process's own home (`own_home`).
    pub(super) own_home: super::own_home::HomeTemplates,
    /// Built-in home names (`HOME`, `XDG_CONFIG_HOME`) whose value the kernel captures
    /// only to place `~/`: not shown when a category names them without asking for
    /// the value.
    pub(super) home_values_hidden: Vec<String>,
}

impl Classifier {
    /// Exact policy paths with their category (for the block tables).
    pub(super) fn exact_path_categories(&self) -> &[(String, usize)] {
        &self.exact_paths
    }

    /// Path prefixes with their category (for the block tables).
    pub(super) fn prefix_categories(&self) -> &[(String, usize)] {
        &self.prefixes
    }
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

    /// The distinct `BASENAMES` keys: the last components of the exact paths.
    pub fn basenames(&self) -> Vec<probe_common::BasenameKey> {
        let mut seen = std::collections::HashSet::new();
        self.exact_paths()
            .filter_map(|path| std::path::Path::new(path).file_name())
            .map(|name| basename_key(name.as_encoded_bytes()))
            .filter(|key| seen.insert(*key))
            .collect()
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

    /// Categories (indices) that count the host-identity request `call`.
    pub fn host_call_categories(&self, call: crate::ops::HostCall) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .host_calls
            .iter()
            .filter(|(c, _)| *c == call)
            .map(|(_, cat)| *cat)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
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

    /// `path_categories`, and the `~/` entries under the process's own homes.
    pub fn path_categories_for(
        &self,
        path: &str,
        homes: &super::own_home::ExecHomes,
    ) -> Vec<usize> {
        let mut out = self.path_categories(path);
        if !homes.is_empty() {
            out.extend(self.own_home.categories(path, homes));
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// Whether the captured value of env name `name` is shown (see
    /// `home_values_hidden`).
    pub fn shows_value_of(&self, name: &str) -> bool {
        !self.home_values_hidden.iter().any(|n| n == name)
    }
}

/// `/proc/<pid>/environ`, `/proc/self/environ`, `/proc/<pid>/task/<tid>/environ`: the
/// same test the kernel makes.
pub fn is_proc_environ(path: &str) -> bool {
    path.starts_with("/proc/")
        && path.ends_with("/environ")
        && path.len() > "/proc//environ".len() - 1
}

/// `/proc/<pid>/mem` (or `/proc/<pid>/task/<tid>/mem`): another process's memory,
/// its environment included. The same test the kernel makes.
pub fn is_proc_mem(path: &str) -> bool {
    path.starts_with("/proc/") && path.ends_with("/mem") && path.len() > "/proc//mem".len()
}

/// A process's own memory file: `/proc/self/mem`, `/proc/thread-self/mem`,
/// `/proc/<its pid>/mem` (and a task's under it).
pub fn is_own_proc_mem(path: &str, tgid: u32) -> bool {
    if !is_proc_mem(path) {
        return false;
    }
    let Some(who) = path["/proc/".len()..].split('/').next() else {
        return false;
    };
    who == "self" || who == "thread-self" || who.parse::<u32>() == Ok(tgid)
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

/// Compiles a validated policy for this host's home directories.
pub(super) fn compile(
    parsed: super::ParsedPolicy,
    source_name: &str,
) -> Result<CompiledPolicy, PolicyError> {
    compile_for_homes(parsed, &home_dirs(), source_name)
}

pub(super) fn compile_for_homes(
    parsed: super::ParsedPolicy,
    homes: &[String],
    source_name: &str,
) -> Result<CompiledPolicy, PolicyError> {
    let super::ParsedPolicy { policy, rules } = parsed;
    // Again for a merged policy: each file was within the bounds on its own.
    super::limits::check_counts(&policy.counts(), source_name)?;
    let mut kernel = KernelEntries::default();
    let mut classifier = Classifier::default();
    let mut comms = Distinct::new(MAP_SELECT_COMMS, MAX_POLICY_ENTRIES);
    for comm in &policy.select.comms {
        let mut key = [0u8; 16];
        key[..comm.len()].copy_from_slice(comm.as_bytes());
        if comms
            .get_or_add(
                key,
                kernel.select_comms.len(),
                "program names",
                comm,
                source_name,
            )?
            .is_none()
        {
            kernel.select_comms.push(key);
        }
    }
    let mut uids = Distinct::new(MAP_SELECT_UIDS, MAX_POLICY_ENTRIES);
    for &uid in &policy.select.uids {
        if uids
            .get_or_add(
                uid,
                kernel.select_uids.len(),
                "user ids",
                &uid.to_string(),
                source_name,
            )?
            .is_none()
        {
            kernel.select_uids.push(uid);
        }
    }
    let selectors = super::select::UserSelectors::compile(&policy.select);
    kernel.exec_candidates = !selectors.is_empty();
    let mut next_id = 0u32;
    let mut id = || {
        next_id += 1;
        next_id
    };
    // Two slots of `ENV_NAMES` are kept for the built-in home names (below).
    let reserved = super::own_home::HOME_ENV_NAMES.len();
    let mut env_names = Distinct::new(MAP_ENV_NAMES, MAX_POLICY_ENTRIES - reserved as u32);
    let mut env_prefixes = Distinct::new(MAP_ENV_PREFIXES, MAX_ENV_PREFIXES);
    let mut paths = Distinct::new(MAP_PATHS, MAX_POLICY_ENTRIES);
    // (name or path, category) pairs userspace classifies against.
    let mut entries = 0usize;
    let mut count_entry = |written: &str| -> Result<(), PolicyError> {
        entries += 1;
        if entries > MAX_CATEGORY_ENTRIES {
            return Err(super::limits::too_many_entries(written, source_name));
        }
        Ok(())
    };
    for (index, cat) in policy.categories.iter().enumerate() {
        classifier.operations.push(cat.operations.clone());
        let env_flags = if cat.capture_value_prefix {
            ENV_CAPTURE_VALUE
        } else {
            0
        };
        for name in &cat.env {
            count_entry(name)?;
            if let Some(literal) = name.strip_suffix('*') {
                let key = env_key(literal);
                let bits = (literal.len() * 8) as u32;
                let at = kernel.env_prefixes.len();
                match env_prefixes.get_or_add(
                    (bits, key),
                    at,
                    "env name globs",
                    name,
                    source_name,
                )? {
                    Some(i) => kernel.env_prefixes[i].2.match_kind |= env_flags,
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
            let at = kernel.env_names.len();
            match env_names.get_or_add(
                key,
                at,
                "env names (two of its slots are kept for HOME and XDG_CONFIG_HOME)",
                name,
                source_name,
            )? {
                Some(i) => kernel.env_names[i].1.match_kind |= env_flags,
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
        for call in &cat.host_calls {
            kernel.host_calls |= 1 << call.kernel();
            classifier.host_calls.push((*call, index));
        }
        for written in &cat.paths {
            classifier.own_home.add_path(written, index);
            for path in expand_home(written, homes) {
                count_entry(written)?;
                let (bits, key, match_kind) = if super::glob::is_glob(&path) {
                    // The kernel passes everything under the literal directory; the
                    // classifier matches the pattern.
                    let prefix = super::glob::literal_prefix(&path);
                    (
                        (prefix.len() * 8) as u32,
                        path_key(prefix),
                        PATH_MATCH_PREFIX,
                    )
                } else {
                    // The NUL terminator is part of an exact key, so it cannot match
                    // longer paths.
                    (
                        ((path.len() + 1) * 8) as u32,
                        path_key(&path),
                        PATH_MATCH_EXACT,
                    )
                };
                let entry = || {
                    let entry_id = id();
                    (
                        bits,
                        key,
                        PolicyRef {
                            entry_id,
                            match_kind,
                        },
                    )
                };
                let what = "paths and prefixes";
                paths.push_new(
                    (bits, key),
                    &mut kernel.paths,
                    entry,
                    what,
                    written,
                    source_name,
                )?;
                if match_kind == PATH_MATCH_PREFIX {
                    classifier.globs.push((path, index));
                } else {
                    classifier.exact_paths.push((path, index));
                }
            }
        }
        for written in &cat.path_prefixes {
            classifier.own_home.add_prefix(written, index);
            for prefix in expand_home(written, homes) {
                count_entry(written)?;
                let bits = (prefix.len() * 8) as u32;
                let key = path_key(&prefix);
                let entry = || {
                    let entry_id = id();
                    let match_kind = PATH_MATCH_PREFIX;
                    (
                        bits,
                        key,
                        PolicyRef {
                            entry_id,
                            match_kind,
                        },
                    )
                };
                let what = "paths and prefixes";
                paths.push_new(
                    (bits, key),
                    &mut kernel.paths,
                    entry,
                    what,
                    written,
                    source_name,
                )?;
                classifier.prefixes.push((prefix, index));
            }
        }
    }
    // The exec scan reports the process's own homes with their value, whatever the
    // policy names (`own_home`); getenv of them is not an event unless a category
    // names them (`ENV_EXEC_ONLY`).
    env_names.capacity += reserved;
    for ((name, key), own_home_flag) in super::own_home::HOME_ENV_NAMES
        .iter()
        .zip(super::own_home::home_env_keys())
        .zip([ENV_OWN_HOME, ENV_OWN_CONFIG])
    {
        let at = kernel.env_names.len();
        match env_names.get_or_add(key, at, "env names", name, source_name)? {
            Some(i) => {
                let policy = &mut kernel.env_names[i].1;
                if policy.match_kind & ENV_CAPTURE_VALUE == 0 {
                    classifier.home_values_hidden.push((*name).to_owned());
                }
                policy.match_kind |= ENV_CAPTURE_VALUE | own_home_flag;
            }
            None => kernel.env_names.push((
                key,
                PolicyRef {
                    entry_id: id(),
                    match_kind: ENV_CAPTURE_VALUE | ENV_EXEC_ONLY | own_home_flag,
                },
            )),
        }
    }
    for (bits, key, exact) in classifier.own_home.kernel_keys() {
        let value = PolicyRef {
            entry_id: id(),
            match_kind: if exact {
                PATH_MATCH_EXACT
            } else {
                PATH_MATCH_PREFIX
            },
        };
        kernel.own_home_paths.push((bits, key, value));
    }
    if kernel.own_home_paths.len() > MAX_POLICY_ENTRIES as usize {
        return Err(super::limits::over_capacity(
            MAP_OWN_HOME_PATHS,
            MAX_POLICY_ENTRIES as usize,
            "`~/` prefixes and glob directories (twice for those under ~/.config)",
            "",
            source_name,
        ));
    }
    kernel.paths.sort_by_key(|a| (a.0, a.1));
    if classifier.basenames().len() > MAX_POLICY_ENTRIES as usize {
        return Err(super::limits::over_capacity(
            MAP_BASENAMES,
            MAX_POLICY_ENTRIES as usize,
            "distinct file names (last path components)",
            "",
            source_name,
        ));
    }
    let block = super::block::compile(
        &rules,
        &policy.categories,
        &kernel,
        &classifier,
        source_name,
    )?;
    Ok(CompiledPolicy {
        name: policy.metadata.name.clone(),
        categories: policy.categories,
        kernel,
        classifier,
        rules,
        block,
        selectors,
    })
}
