//! Moving one kernel map from the entries of the policy in force to those of a new
//! one, so that a refused or failed update leaves it exactly as it was.
//!
//! Order: the entries leaving the policy are removed first (they are leaving anyway),
//! then the entries of both are overwritten in place where their value changes, then
//! the new ones are added. The map never holds more than the larger of the two
//! policies, so a policy that fits alone always fits (make-before-break over a full
//! map once left it full, and every later reload was refused). A write that still fails
//! midway is undone: what was added is removed, what was overwritten or removed is
//! written back.

use std::collections::HashMap;
use std::hash::Hash;

/// The two operations an update needs from a kernel map.
pub(super) trait MapWrite<K, V> {
    type Error;
    fn insert(&mut self, key: &K, value: &V) -> Result<(), Self::Error>;
    fn remove(&mut self, key: &K) -> Result<(), Self::Error>;
}

/// An update's error, and how undoing it went (`Err`: the map may hold a mix).
pub(super) type Failure<E> = (E, Result<(), E>);

/// One undoable step.
enum Done<K, V> {
    Removed(K, V),
    Overwrote(K, V),
    Added(K),
}

/// Puts `new` in place of `old` in `map`, which holds exactly `old`. On error the map
/// is restored to `old` and the error is returned with the result of the restoring
/// (`Err` when the map could not be restored: it may then hold a mix).
pub(super) fn update<K, V, M>(
    map: &mut M,
    old: &HashMap<K, V>,
    new: &HashMap<K, V>,
) -> Result<(), Failure<M::Error>>
where
    K: Eq + Hash + Clone,
    V: PartialEq + Clone,
    M: MapWrite<K, V>,
{
    let mut done: Vec<Done<K, V>> = Vec::new();
    let result = (|| {
        for (key, value) in old {
            if !new.contains_key(key) {
                map.remove(key)?;
                done.push(Done::Removed(key.clone(), value.clone()));
            }
        }
        for (key, value) in new {
            if let Some(before) = old.get(key)
                && before != value
            {
                map.insert(key, value)?;
                done.push(Done::Overwrote(key.clone(), before.clone()));
            }
        }
        for (key, value) in new {
            if !old.contains_key(key) {
                map.insert(key, value)?;
                done.push(Done::Added(key.clone()));
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(()),
        Err(err) => Err((err, undo(map, done))),
    }
}

/// Undoes `done`, newest first: added entries go before removed ones come back, so
/// the map never holds more than it did.
fn undo<K, V, M: MapWrite<K, V>>(map: &mut M, done: Vec<Done<K, V>>) -> Result<(), M::Error> {
    let mut first_error = None;
    for step in done.into_iter().rev() {
        let result = match &step {
            Done::Added(key) => map.remove(key),
            Done::Overwrote(key, value) | Done::Removed(key, value) => map.insert(key, value),
        };
        // Keep going: every entry restored is one fewer wrong.
        if let Err(err) = result {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map with a capacity that refuses the `fail_at`-th write (and, like a kernel
    /// map, any insert of a new key beyond its capacity).
    struct Fake {
        entries: HashMap<u32, u32>,
        capacity: usize,
        writes: usize,
        fail_at: Option<usize>,
        peak: usize,
    }

    impl MapWrite<u32, u32> for Fake {
        type Error = &'static str;
        fn insert(&mut self, key: &u32, value: &u32) -> Result<(), &'static str> {
            self.writes += 1;
            if self.fail_at == Some(self.writes) {
                return Err("injected failure");
            }
            if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
                return Err("map full");
            }
            self.entries.insert(*key, *value);
            self.peak = self.peak.max(self.entries.len());
            Ok(())
        }
        fn remove(&mut self, key: &u32) -> Result<(), &'static str> {
            self.writes += 1;
            if self.fail_at == Some(self.writes) {
                return Err("injected failure");
            }
            self.entries.remove(key);
            Ok(())
        }
    }

    fn fake(entries: &HashMap<u32, u32>, capacity: usize, fail_at: Option<usize>) -> Fake {
        Fake {
            entries: entries.clone(),
            capacity,
            writes: 0,
            fail_at,
            peak: entries.len(),
        }
    }

    #[test]
    fn a_full_map_moves_to_another_full_policy_without_overflowing() {
        let capacity = 1_024;
        let old: HashMap<u32, u32> = (0..1_024).map(|k| (k, 1)).collect();
        // Half the keys stay (half of those with a new value), half are new.
        let new: HashMap<u32, u32> = (512..1_536).map(|k| (k, 1 + k % 2)).collect();
        let mut map = fake(&old, capacity, None);
        update(&mut map, &old, &new).expect("fits");
        assert_eq!(map.entries, new);
        assert!(map.peak <= capacity, "peak {}", map.peak);
    }

    #[test]
    fn a_write_that_fails_midway_leaves_the_map_exactly_as_it_was() {
        let old: HashMap<u32, u32> = (0..100).map(|k| (k, 1)).collect();
        let new: HashMap<u32, u32> = (50..160).map(|k| (k, 2)).collect();
        // Every point of failure: removals, overwrites, additions.
        for fail_at in 1..=160 {
            let mut map = fake(&old, 128, Some(fail_at));
            let (err, restored) = update(&mut map, &old, &new).expect_err("fails");
            assert!(err == "injected failure" || err == "map full", "{err}");
            assert_eq!(restored, Ok(()), "failure at write {fail_at}");
            assert_eq!(map.entries, old, "failure at write {fail_at}");
            assert!(map.peak <= 128);
        }
    }

    #[test]
    fn unchanged_entries_are_not_written() {
        let old: HashMap<u32, u32> = (0..10).map(|k| (k, 1)).collect();
        let mut map = fake(&old, 10, None);
        update(&mut map, &old, &old).unwrap();
        assert_eq!(map.writes, 0);
    }
}
