//! How much of each kernel map a compiled policy fills. The checks run while the
//! policy compiles, so `probectl policy check`, a start and a reload refuse the same
//! policy with the same error, before any map is touched.

use std::collections::HashSet;

use probe_common::{
    MAP_BASENAMES, MAP_ENV_NAMES, MAP_ENV_PREFIXES, MAP_INODES, MAP_PATHS, MAP_SELECT_COMMS,
    MAP_SELECT_UIDS, MAX_ENV_PREFIXES, MAX_POLICY_ENTRIES, MAX_POLICY_INODES,
};
use serde::Serialize;

use super::limits::{Limit, MAX_CATEGORY_ENTRIES};
use super::{Classifier, CompiledPolicy, FileIndex, Needle, PolicyError};

/// One kernel map's use by a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MapUse {
    pub map: &'static str,
    pub used: usize,
    pub capacity: usize,
}

/// Every policy map's use, for `policy check` and `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelCapacity(pub Vec<MapUse>);

impl KernelCapacity {
    /// What `policy` needs (and, with its file index, `INODES`).
    pub fn of(policy: &CompiledPolicy, index: Option<&FileIndex>) -> Self {
        let k = &policy.kernel;
        let entries = MAX_POLICY_ENTRIES as usize;
        let mut maps = vec![
            MapUse {
                map: MAP_ENV_NAMES,
                used: k.env_names.len(),
                capacity: entries,
            },
            MapUse {
                map: MAP_ENV_PREFIXES,
                used: k.env_prefixes.len(),
                capacity: MAX_ENV_PREFIXES as usize,
            },
            MapUse {
                map: MAP_PATHS,
                used: k.paths.len(),
                capacity: entries,
            },
            MapUse {
                map: MAP_BASENAMES,
                used: basenames(&policy.classifier).len(),
                capacity: entries,
            },
            MapUse {
                map: MAP_SELECT_COMMS,
                used: k.select_comms.len(),
                capacity: entries,
            },
            MapUse {
                map: MAP_SELECT_UIDS,
                used: k.select_uids.len(),
                capacity: entries,
            },
        ];
        if let Some(index) = index {
            maps.push(MapUse {
                map: MAP_INODES,
                used: index.inodes.len(),
                capacity: MAX_POLICY_INODES as usize,
            });
        }
        Self(maps)
    }
}

impl std::fmt::Display for KernelCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} {}/{}", m.map, m.used, m.capacity)?;
        }
        Ok(())
    }
}

/// The distinct `BASENAMES` keys of the exact policy paths.
pub(super) fn basenames(classifier: &Classifier) -> Vec<probe_common::BasenameKey> {
    let mut seen = HashSet::new();
    classifier
        .exact_paths()
        .filter_map(|path| std::path::Path::new(path).file_name())
        .map(|name| super::basename_key(name.as_encoded_bytes()))
        .filter(|key| seen.insert(*key))
        .collect()
}

/// `BASENAMES` holds every distinct last component of an exact path.
pub(super) fn check_basenames(
    classifier: &Classifier,
    source_name: &str,
) -> Result<(), PolicyError> {
    let n = basenames(classifier).len();
    if n > MAX_POLICY_ENTRIES as usize {
        return Err(over(
            MAP_BASENAMES,
            MAX_POLICY_ENTRIES as usize,
            "distinct file names (last path components)",
            "",
            source_name,
        ));
    }
    Ok(())
}

/// More distinct `what` than kernel map `map` holds; `written` is the first entry that
/// did not fit, as the policy spells it (to place the error).
pub(super) fn over(
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
            .then(|| Needle::first(written))
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
        needle: Needle::first(written),
    }
}
