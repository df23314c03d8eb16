//! How much of each kernel map a compiled policy fills (shown by `policy check`, and
//! checked once more by `Sensors::apply_policy` before it writes). The capacity errors
//! themselves come while the policy compiles (`limits::over_capacity`), so `policy
//! check`, a start and a reload refuse the same policy with the same error, before any
//! map is touched.

use probe_common::{
    MAP_BASENAMES, MAP_ENV_NAMES, MAP_ENV_PREFIXES, MAP_INODES, MAP_OWN_HOME_PATHS, MAP_PATHS,
    MAP_SELECT_COMMS, MAP_SELECT_UIDS, MAX_ENV_PREFIXES, MAX_POLICY_ENTRIES, MAX_POLICY_INODES,
};
use serde::Serialize;

use super::{CompiledPolicy, FileIndex};

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
                map: MAP_OWN_HOME_PATHS,
                used: k.own_home_paths.len(),
                capacity: entries,
            },
            MapUse {
                map: MAP_BASENAMES,
                used: policy.classifier.basenames().len(),
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
