//! Values waiting for their partner event, found by key in constant time and bounded
//! in number. A non-blocking connect waits for its TCP outcome; an outcome that came
//! first (a loopback handshake ends inside connect(2)) waits for its connect. A
//! watched program can make 50,000 connects a second: neither side may cost a scan
//! of what is kept, and what never finds its partner must not pile up.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
pub struct Pending<K, V> {
    by_key: HashMap<K, VecDeque<(u64, V)>>,
    /// Every push in order, for eviction; entries already taken are skipped there.
    order: VecDeque<(K, u64)>,
    next: u64,
    cap: usize,
    /// Values let go unmatched because the bound was reached.
    pub evicted: u64,
}

impl<K: Eq + Hash + Clone, V> Pending<K, V> {
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            by_key: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            cap: cap.max(1),
            evicted: 0,
        }
    }

    pub fn push(&mut self, key: K, value: V) {
        while self.order.len() >= self.cap {
            let Some((old_key, n)) = self.order.pop_front() else {
                break;
            };
            // Entries of one key are in push order, so the oldest is at the front;
            // if it is not `n`, `n` was taken already.
            if let Some(q) = self.by_key.get_mut(&old_key)
                && q.front().is_some_and(|(m, _)| *m == n)
            {
                q.pop_front();
                self.evicted += 1;
                if q.is_empty() {
                    self.by_key.remove(&old_key);
                }
            }
        }
        self.next += 1;
        self.by_key
            .entry(key.clone())
            .or_default()
            .push_back((self.next, value));
        self.order.push_back((key, self.next));
    }

    /// The most recent value for `key`.
    pub fn take_latest(&mut self, key: &K) -> Option<V> {
        let q = self.by_key.get_mut(key)?;
        let (_, v) = q.pop_back()?;
        if q.is_empty() {
            self.by_key.remove(key);
        }
        Some(v)
    }

    /// The oldest value for `key`.
    pub fn take_oldest(&mut self, key: &K) -> Option<V> {
        let q = self.by_key.get_mut(key)?;
        let (_, v) = q.pop_front()?;
        if q.is_empty() {
            self.by_key.remove(key);
        }
        Some(v)
    }

    /// Drops every value whose key `keep` rejects (evicted trees).
    pub fn retain_keys(&mut self, keep: impl Fn(&K) -> bool) {
        self.by_key.retain(|k, _| keep(k));
        self.order.retain(|(k, _)| keep(k));
    }

    /// Values waiting now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.values().map(VecDeque::len).sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_and_oldest_per_key_within_the_bound() {
        let mut p: Pending<u32, &str> = Pending::with_capacity(3);
        p.push(1, "a");
        p.push(1, "b");
        p.push(2, "c");
        assert_eq!(p.take_latest(&1), Some("b"));
        // The bound counts pushes still in the order queue: "b" was taken, so the
        // next push evicts only what is still waiting at the front ("a").
        p.push(3, "d");
        assert_eq!(p.evicted, 1);
        assert_eq!(p.take_oldest(&1), None);
        assert_eq!(p.take_oldest(&2), Some("c"));
        assert_eq!(p.take_oldest(&3), Some("d"));
        assert!(p.is_empty());
    }

    #[test]
    fn many_pushes_stay_bounded() {
        let mut p: Pending<u32, u32> = Pending::with_capacity(1000);
        for i in 0..100_000 {
            p.push(i % 7, i);
        }
        assert!(p.len() <= 1000);
        assert_eq!(p.evicted, 99_000);
    }
}
