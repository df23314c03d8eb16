//! Distinct kernel keys while a policy compiles: each key once, with the index of its
//! entry, under the kernel map's capacity (an error names the map and the entry that
//! did not fit).

use std::collections::HashMap;

use super::PolicyError;

/// Distinct kernel keys so far, each with the index of its entry; over `capacity` is
/// an error naming the map and the entry that did not fit.
pub(super) struct Distinct<K> {
    map: &'static str,
    pub(super) capacity: usize,
    index: HashMap<K, usize>,
}

impl<K: Eq + std::hash::Hash> Distinct<K> {
    pub(super) fn new(map: &'static str, capacity: u32) -> Self {
        Self {
            map,
            capacity: capacity as usize,
            index: HashMap::new(),
        }
    }

    /// The entry index of `key`, or `None` for a new key that gets index `len`.
    pub(super) fn get_or_add(
        &mut self,
        key: K,
        len: usize,
        what: &str,
        written: &str,
        source_name: &str,
    ) -> Result<Option<usize>, PolicyError> {
        if let Some(&i) = self.index.get(&key) {
            return Ok(Some(i));
        }
        if self.index.len() >= self.capacity {
            return Err(super::limits::over_capacity(
                self.map,
                self.capacity,
                what,
                written,
                source_name,
            ));
        }
        self.index.insert(key, len);
        Ok(None)
    }

    /// `get_or_add`, and for a new key its entry pushed onto `entries` (made by
    /// `make`), so the index and the entries stay in step.
    pub(super) fn push_new<V>(
        &mut self,
        key: K,
        entries: &mut Vec<V>,
        make: impl FnOnce() -> V,
        what: &str,
        written: &str,
        source_name: &str,
    ) -> Result<Option<usize>, PolicyError> {
        let found = self.get_or_add(key, entries.len(), what, written, source_name)?;
        if found.is_none() {
            entries.push(make());
        }
        Ok(found)
    }
}
