//! Summarising identical repeated records before they reach the sinks: a shell loop
//! that runs `cat /etc/timezone` ten thousand times should cost a SIEM a handful of
//! records and a count, not ten thousand. Per process tree and per kind of record,
//! records that differ only in pid and time are identical; in each window the first
//! `keep` pass, the rest are counted, and when the window ends a `repeated` record
//! carries the count (with the first and last time). Rule matches, reloads, sensor
//! changes and losses always pass. Subscribers (`run`, `watch`) still see everything.

use std::collections::HashMap;

use serde::Serialize;

use crate::correlate::Record;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RepeatedRecord {
    pub time: String,
    /// The process tree (its root pid) the records came from.
    pub tree: u32,
    /// The kind of record (`probe`, `exec`, ...).
    pub record_type: &'static str,
    /// What the records had in common (`cat: openat /etc/timezone -> ok`).
    pub like: String,
    /// Records not written.
    pub count: u64,
    pub first_time: String,
    pub last_time: String,
    pub window_ms: u64,
}

struct Window {
    start_ns: u64,
    passed: u32,
    suppressed: u64,
    first_time: String,
    last_time: String,
    record_type: &'static str,
}

pub struct Repeats {
    keep: u32,
    window_ns: u64,
    windows: HashMap<(u32, String), Window>,
    /// Records summarised so far (not written individually).
    pub summarised: u64,
}

impl Repeats {
    /// `keep == 0` turns summarising off.
    pub fn new(keep: u32, window: std::time::Duration) -> Self {
        Self {
            keep,
            window_ns: window.as_nanos() as u64,
            windows: HashMap::new(),
            summarised: 0,
        }
    }

    /// Whether `record` goes to the sinks (false: counted in its window).
    pub fn admit(&mut self, tree: u32, record: &Record, time: &str, now_ns: u64) -> bool {
        if self.keep == 0 {
            return true;
        }
        let Some((record_type, like)) = fingerprint(record) else {
            return true;
        };
        let w = self.windows.entry((tree, like)).or_insert_with(|| Window {
            start_ns: now_ns,
            passed: 0,
            suppressed: 0,
            first_time: time.to_owned(),
            last_time: time.to_owned(),
            record_type,
        });
        if w.passed < self.keep {
            w.passed += 1;
            return true;
        }
        if w.suppressed == 0 {
            w.first_time = time.to_owned();
        }
        w.suppressed += 1;
        w.last_time = time.to_owned();
        self.summarised += 1;
        false
    }

    /// Summaries of the windows that ended by `now_ns` with records held back; ended
    /// windows are forgotten (the map only holds the current window's keys).
    pub fn due(&mut self, now_ns: u64, time: &str) -> Vec<RepeatedRecord> {
        let window_ns = self.window_ns;
        let mut out = Vec::new();
        self.windows.retain(|(tree, like), w| {
            if now_ns.saturating_sub(w.start_ns) < window_ns {
                return true;
            }
            if w.suppressed > 0 {
                out.push(RepeatedRecord {
                    time: time.to_owned(),
                    tree: *tree,
                    record_type: w.record_type,
                    like: like.clone(),
                    count: w.suppressed,
                    first_time: std::mem::take(&mut w.first_time),
                    last_time: std::mem::take(&mut w.last_time),
                    window_ms: window_ns / 1_000_000,
                });
            }
            false
        });
        out.sort_by(|a, b| a.first_time.cmp(&b.first_time));
        out
    }
}

/// What makes two records of one tree "the same", or `None` for records that always
/// pass.
fn fingerprint(record: &Record) -> Option<(&'static str, String)> {
    Some(match record {
        Record::Exec(e) => ("exec", format!("{} {}", e.exe, e.argv.join(" "))),
        Record::Probe(p) => (
            "probe",
            format!("{}: {} {} -> {}", p.process, p.how, p.target, p.result),
        ),
        Record::Connect(c) => (
            "connect",
            format!(
                "{}: {}:{} -> {}",
                c.process, c.destination.address, c.destination.port, c.result
            ),
        ),
        Record::ConnectOutcome(o) => (
            "connect_outcome",
            format!(
                "{}:{} {}",
                o.destination.address, o.destination.port, o.outcome
            ),
        ),
        Record::DnsQuery(q) => ("dns_query", format!("{}: {}", q.process, q.names.join(","))),
        Record::DnsAnswer(a) => (
            "dns_answer",
            format!("{} {}", a.name, a.addresses.join(",")),
        ),
        Record::Exit(e) => ("exit", format!("code {:?}", e.exit_code)),
        Record::RuleMatch(_)
        | Record::PolicyReload(_)
        | Record::Sensor(_)
        | Record::Watching(_)
        | Record::Report(_)
        | Record::Loss(_)
        | Record::Repeated(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::ExitRecord;

    fn exit(pid: u32) -> Record {
        Record::Exit(ExitRecord {
            time: String::new(),
            offset_ms: 0.0,
            pid,
            exit_code: Some(0),
        })
    }

    #[test]
    fn repeats_past_keep_are_counted_and_summarised_when_the_window_ends() {
        let mut r = Repeats::new(2, std::time::Duration::from_secs(10));
        let s = 1_000_000_000u64;
        let admitted: Vec<bool> = (0..5)
            .map(|i| r.admit(7, &exit(100 + i), &format!("t{i}"), i as u64 * s))
            .collect();
        assert_eq!(admitted, [true, true, false, false, false]);
        assert!(
            r.admit(8, &exit(200), "t", 0),
            "another tree has its own window"
        );
        assert!(r.due(9 * s, "now").is_empty(), "the window is still open");
        let due = r.due(10 * s, "now");
        assert_eq!(
            due.len(),
            1,
            "tree 8 passed everything: nothing to summarise"
        );
        assert_eq!(
            (due[0].tree, due[0].count, due[0].record_type),
            (7, 3, "exit")
        );
        assert_eq!(
            (due[0].first_time.as_str(), due[0].last_time.as_str()),
            ("t2", "t4")
        );
        assert!(
            r.admit(7, &exit(1), "t", 11 * s),
            "a new window starts afresh"
        );
        assert_eq!(r.summarised, 3);
    }

    #[test]
    fn keep_zero_turns_it_off() {
        let mut r = Repeats::new(0, std::time::Duration::from_secs(10));
        assert!((0..100).all(|i| r.admit(1, &exit(i), "t", 0)));
    }
}
