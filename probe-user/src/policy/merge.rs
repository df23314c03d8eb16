//! The daemon's policy: every `*.yaml` file in its policy directories, each validated
//! on its own (errors name file:line:column), then merged into one. Selections and
//! rules add up; a category may appear in several files only with the same
//! definition, since two meanings for one name would make rules ambiguous.

use std::path::PathBuf;

use serde::Serialize;

use std::collections::HashMap;

use super::limits::MAX_POLICY_FILES;
use super::{
    CompiledPolicy, DEFAULT_POLICY_SOURCE, DEFAULT_POLICY_YAML, ParsedPolicy, PolicyError,
    parse_policy,
};

/// One policy file in force.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyFile {
    pub path: String,
    pub name: String,
    pub categories: usize,
    pub rules: usize,
}

/// The merged policy and the files it came from.
#[derive(Debug)]
pub struct PolicySet {
    pub compiled: CompiledPolicy,
    pub files: Vec<PolicyFile>,
    /// A digest of every file's path and text, to tell two versions apart in
    /// `status` (not a security hash).
    pub version: String,
}

/// Loads every `*.yaml` / `*.yml` file of `dirs` (sorted by name within each
/// directory). With no file at all, the built-in default policy.
pub fn load_dirs(dirs: &[PathBuf]) -> Result<PolicySet, PolicyError> {
    let mut sources: Vec<(String, String)> = Vec::new();
    for dir in dirs {
        let read_err = |source| PolicyError::Read {
            path: dir.display().to_string(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        paths.sort();
        for path in paths {
            if sources.len() >= MAX_POLICY_FILES {
                return Err(super::limits::too_many_files(&dir.display().to_string()));
            }
            let text = super::read_policy_file(&path)?;
            sources.push((path.display().to_string(), text));
        }
    }
    if sources.is_empty() {
        sources.push((
            DEFAULT_POLICY_SOURCE.to_owned(),
            DEFAULT_POLICY_YAML.to_owned(),
        ));
    }
    let mut parsed = Vec::new();
    for (path, text) in &sources {
        parsed.push((path.clone(), parse_policy(text, path)?));
    }
    let mut set = merge(parsed)?;
    set.version = version_of(&sources);
    Ok(set)
}

/// FNV-1a over the sources, as 16 hex digits: stable across builds and runs.
fn version_of(sources: &[(String, String)]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (path, text) in sources {
        for &b in path
            .as_bytes()
            .iter()
            .chain([0u8].iter())
            .chain(text.as_bytes())
        {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Merges policies that each passed validation on their own. Their rules were
/// compiled against their own categories; here they are only renumbered to the merged
/// list (no second compilation).
fn merge(parsed: Vec<(String, ParsedPolicy)>) -> Result<PolicySet, PolicyError> {
    let files: Vec<PolicyFile> = parsed
        .iter()
        .map(|(path, p)| PolicyFile {
            path: path.clone(),
            name: p.policy.metadata.name.clone(),
            categories: p.policy.categories.len(),
            rules: p.policy.rules.len(),
        })
        .collect();
    let mut iter = parsed.into_iter();
    let Some((first_path, first)) = iter.next() else {
        unreachable!("load_dirs always has a source")
    };
    let ParsedPolicy {
        policy: mut merged,
        rules: mut merged_rules,
    } = first;
    let mut category_at: HashMap<String, (usize, String)> = merged
        .categories
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), (i, first_path.clone())))
        .collect();
    let mut rule_from: HashMap<String, String> = merged
        .rules
        .iter()
        .map(|r| (r.name.clone(), first_path.clone()))
        .collect();
    for (path, ParsedPolicy { policy, mut rules }) in iter {
        merged.metadata.name = format!("{} + {}", merged.metadata.name, policy.metadata.name);
        let sel = policy.select;
        merged.select.comms.extend(sel.comms);
        merged.select.uids.extend(sel.uids);
        merged.select.exe.extend(sel.exe);
        merged.select.argv_contains.extend(sel.argv_contains);
        merged.select.argv_regex.extend(sel.argv_regex);
        merged.select.containers.extend(sel.containers);
        // This file's category i is the merged policy's category renumber[i].
        let mut renumber = Vec::with_capacity(policy.categories.len());
        for category in policy.categories {
            match category_at.get(&category.name) {
                Some((i, _)) if merged.categories[*i] == category => renumber.push(*i),
                Some((_, from)) => {
                    return Err(conflict("category", &category.name, from, &path));
                }
                None => {
                    let i = merged.categories.len();
                    category_at.insert(category.name.clone(), (i, path.clone()));
                    merged.categories.push(category);
                    renumber.push(i);
                }
            }
        }
        for (rule, compiled) in policy.rules.into_iter().zip(rules.iter_mut()) {
            if let Some(from) = rule_from.get(&rule.name) {
                return Err(conflict("rule", &rule.name, from, &path));
            }
            rule_from.insert(rule.name.clone(), path.clone());
            compiled.renumber(&renumber);
            merged.rules.push(rule);
        }
        merged_rules.extend(rules);
    }
    let compiled = super::compile::compile(
        ParsedPolicy {
            policy: merged,
            rules: merged_rules,
        },
        "the merged policy directories",
    )?;
    Ok(PolicySet {
        compiled,
        files,
        version: String::new(),
    })
}

fn conflict(what: &str, name: &str, first: &str, second: &str) -> PolicyError {
    PolicyError::Invalid {
        source_name: second.to_owned(),
        at: None,
        message: format!("{what} `{name}` is also defined, differently, in {first}"),
        hint: format!(
            "policy files in one directory share {what} names: give one a new name, or make both definitions the same"
        ),
        needle: super::Needle::first(format!("name: {name}")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempdir::Dir {
        let d = tempdir::Dir::new();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    const A: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: a}\nselect: {comms: [claude]}\ncategories:\n  - {name: timezone, env: [TZ]}\nrules:\n  - {name: r1, probed: {any_of: [timezone]}, within: 1m}\n";
    const B: &str = "apiVersion: probectl.dev/v1alpha1\nkind: Policy\nmetadata: {name: b}\nselect: {comms: [npm]}\ncategories:\n  - {name: timezone, env: [TZ]}\n  - {name: proxy, env: [HTTPS_PROXY]}\nrules:\n  - {name: r2, probed: {any_of: [proxy]}, within: 1m}\n";

    #[test]
    fn files_merge_and_identical_categories_are_shared() {
        let d = dir_with(&[("a.yaml", A), ("b.yml", B), ("notes.txt", "not yaml")]);
        let set = load_dirs(&[d.path().to_owned()]).unwrap();
        assert_eq!(set.files.len(), 2);
        assert_eq!(set.compiled.name, "a + b");
        let cats: Vec<&str> = set
            .compiled
            .categories
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cats, ["timezone", "proxy"]);
        assert_eq!(set.compiled.rules.len(), 2);
        assert_eq!(set.compiled.kernel.select_comms.len(), 2);
        let again = load_dirs(&[d.path().to_owned()]).unwrap();
        assert_eq!(set.version, again.version, "same files, same version");
        std::fs::write(d.path().join("b.yml"), B.replace("npm", "pnpm")).unwrap();
        let changed = load_dirs(&[d.path().to_owned()]).unwrap();
        assert_ne!(set.version, changed.version);
    }

    /// Rules are compiled once, against their own file's categories, and renumbered
    /// to the merged list: `proxy` is category 0 in c.yaml and 1 once merged.
    #[test]
    fn merged_rules_point_at_the_merged_categories() {
        let c = B.replace(
            "  - {name: timezone, env: [TZ]}\n  - {name: proxy, env: [HTTPS_PROXY]}\n",
            "  - {name: proxy, env: [HTTPS_PROXY]}\n  - {name: timezone, env: [TZ]}\n",
        );
        assert_ne!(c, B);
        let d = dir_with(&[("a.yaml", A), ("c.yaml", &c)]);
        let set = load_dirs(&[d.path().to_owned()]).unwrap();
        let cats = &set.compiled.categories;
        let r2 = set.compiled.rules.iter().find(|r| r.name == "r2").unwrap();
        assert_eq!(cats[r2.any_of[0]].name, "proxy");
        let r1 = set.compiled.rules.iter().find(|r| r.name == "r1").unwrap();
        assert_eq!(cats[r1.any_of[0]].name, "timezone");
    }

    #[test]
    fn a_category_defined_twice_differently_is_an_error_naming_both_files() {
        let b = B.replace(
            "{name: timezone, env: [TZ]}",
            "{name: timezone, env: [TZ, LC_TIME]}",
        );
        let d = dir_with(&[("a.yaml", A), ("b.yaml", &b)]);
        let err = load_dirs(&[d.path().to_owned()]).unwrap_err().to_string();
        assert!(
            err.contains("b.yaml") && err.contains("a.yaml") && err.contains("`timezone`"),
            "{err}"
        );
    }

    #[test]
    fn no_files_means_the_built_in_policy_and_a_missing_dir_is_an_error() {
        let d = dir_with(&[]);
        let set = load_dirs(&[d.path().to_owned()]).unwrap();
        assert_eq!(set.files[0].path, DEFAULT_POLICY_SOURCE);
        let err = load_dirs(&[Path::new("/nonexistent/probectl").to_owned()]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/probectl"), "{err}");
    }

    /// A private scratch directory, removed on drop.
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "probectl-merge-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
