//! Values of settings that the policy shows (`capture_value_prefix`): per process, the
//! value each policy name had in its environment at exec, credentials redacted. The
//! report shows them next to the names (`TZ=Asia/Shanghai`), and the proxy-bypass check
//! reads the proxy and relay a process was given.
//!
//! Names present at exec without a captured value are kept with an empty value, so a
//! child's exposure can be told apart from one passed down unchanged.
//!
//! A value is the one handed to exec: a program that changes its own environment
//! (setenv) and reads it back is shown the value it started with.

use std::collections::{BTreeMap, HashMap};

/// (process, name) pairs kept; further ones are counted, not kept.
pub const MAX_SHOWN_VALUES: usize = 16_384;

#[derive(Debug, Default)]
pub struct ShownValues {
    by_pid: HashMap<u32, BTreeMap<String, String>>,
    len: usize,
    /// Values not kept because the bound was reached.
    pub not_kept: u64,
}

impl ShownValues {
    /// `name` had `value` in `pid`'s environment at its latest exec.
    pub fn insert(&mut self, pid: u32, name: &str, value: &str) {
        if let Some(v) = self.by_pid.get_mut(&pid).and_then(|m| m.get_mut(name)) {
            value.clone_into(v);
            return;
        }
        if self.len >= MAX_SHOWN_VALUES {
            // No entry for the pid either: past the bound, a storm of new pids
            // leaves nothing behind.
            self.not_kept += 1;
            return;
        }
        self.by_pid
            .entry(pid)
            .or_default()
            .insert(name.to_owned(), value.to_owned());
        self.len += 1;
    }

    /// Lets go of the values of processes no longer in the process table (their tree
    /// expired), so a long-running daemon keeps room for the processes that come.
    pub fn retain_pids(&mut self, live: impl Fn(u32) -> bool) {
        let len = &mut self.len;
        self.by_pid.retain(|pid, values| {
            let keep = live(*pid);
            if !keep {
                *len -= values.len();
            }
            keep
        });
    }

    /// A new exec replaces the environment: the old image's values go.
    pub fn forget(&mut self, pid: u32) {
        if let Some(old) = self.by_pid.remove(&pid) {
            self.len -= old.len();
        }
    }

    /// A forked child starts with its parent's values.
    pub fn inherit(&mut self, parent: u32, child: u32) {
        let Some(of_parent) = self.by_pid.get(&parent).cloned() else {
            return;
        };
        self.forget(child);
        for (name, value) in of_parent {
            self.insert(child, &name, &value);
        }
    }

    /// The value shown for `name` in `pid`'s environment (none when not captured).
    pub fn get(&self, pid: u32, name: &str) -> Option<&str> {
        self.by_pid
            .get(&pid)?
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether `pid` had `name` at its exec, with `value` when one is given.
    pub fn exposed(&self, pid: u32, name: &str, value: Option<&str>) -> bool {
        self.by_pid
            .get(&pid)
            .and_then(|m| m.get(name))
            .is_some_and(|v| value.is_none_or(|value| v == value))
    }

    /// Every value `pid` was given, by name.
    pub fn of(&self, pid: u32) -> impl Iterator<Item = (&str, &str)> {
        self.by_pid
            .get(&pid)
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bounded_and_counted_and_replaced_by_a_new_exec() {
        let mut v = ShownValues::default();
        v.insert(1, "TZ", "UTC");
        v.insert(1, "TZ", "Asia/Shanghai");
        assert_eq!(v.get(1, "TZ"), Some("Asia/Shanghai"));
        for pid in 2..(MAX_SHOWN_VALUES as u32 + 11) {
            v.insert(pid, "TZ", "UTC");
        }
        assert_eq!(v.not_kept, 10);
        v.forget(1);
        assert_eq!(v.get(1, "TZ"), None);
        v.insert(99_999, "TZ", "UTC");
        assert_eq!(v.not_kept, 10, "room freed by the exec");
    }
}
