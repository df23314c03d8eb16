//! Summarising identical repeated records before they reach the sinks: a shell loop
//! that runs `cat /etc/timezone` ten thousand times should cost a SIEM a handful of
//! records and a count, not ten thousand. Per process tree and per kind of record,
//! records that differ only in pid and time are identical; in each window the first
//! `keep` pass, the rest are counted, and when the window ends a `repeated` record
//! carries the count (with the first and last time). Rule matches, reloads, sensor
//! changes and losses always pass. Subscribers (`run`, `watch`) still see everything.

use std::collections::HashMap;

use crate::records::{Body, Header, Kind, Record, RepeatedRecord};
use crate::time::Stamp;

/// Windows open at once; past it, records pass unsummarised (a flood of distinct
/// records must not grow this map without end).
const MAX_WINDOWS: usize = 65_536;

struct Window {
    start_ns: u64,
    passed: u32,
    suppressed: u64,
    first_time: Stamp,
    last_time: Stamp,
    record_type: Kind,
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
    pub fn admit(&mut self, tree: u32, record: &Record, now_ns: u64) -> bool {
        if self.keep == 0 {
            return true;
        }
        let Some(like) = fingerprint(&record.body) else {
            return true;
        };
        let time = record.header.time;
        let key = (tree, like);
        if !self.windows.contains_key(&key) && self.windows.len() >= MAX_WINDOWS {
            return true;
        }
        let w = self.windows.entry(key).or_insert_with(|| Window {
            start_ns: now_ns,
            passed: 0,
            suppressed: 0,
            first_time: time,
            last_time: time,
            record_type: record.body.kind(),
        });
        if w.passed < self.keep {
            w.passed += 1;
            return true;
        }
        if w.suppressed == 0 {
            w.first_time = time;
        }
        w.suppressed += 1;
        w.last_time = time;
        self.summarised += 1;
        false
    }

    /// `repeated` records for the windows that ended by `now_ns` with records held
    /// back, in the order they started; ended windows are forgotten (the map only
    /// holds the current window's keys).
    pub fn due(&mut self, now_ns: u64) -> Vec<Record> {
        let window_ns = self.window_ns;
        let mut out: Vec<(u32, RepeatedRecord)> = Vec::new();
        self.windows.retain(|(tree, like), w| {
            if now_ns.saturating_sub(w.start_ns) < window_ns {
                return true;
            }
            if w.suppressed > 0 {
                out.push((
                    *tree,
                    RepeatedRecord {
                        record_type: w.record_type,
                        like: like.clone(),
                        count: w.suppressed,
                        first_time: w.first_time,
                        last_time: w.last_time,
                        window_ms: window_ns / 1_000_000,
                    },
                ));
            }
            false
        });
        out.sort_by_key(|(_, r)| r.first_time);
        out.into_iter()
            .map(|(tree, r)| Record {
                header: Header {
                    tree: Some(tree),
                    ..Header::now()
                },
                body: Body::Repeated(r),
            })
            .collect()
    }
}

/// What makes two records of one tree "the same" (everything but pid and time), or
/// `None` for records that always pass.
fn fingerprint(body: &Body) -> Option<String> {
    Some(match body {
        Body::Exec(e) => format!("{} {}", e.exe, e.argv.join(" ")),
        Body::Probe(p) => format!("{}: {} {} -> {}", p.process, p.how, p.target, p.result),
        Body::Connect(c) => format!("{}: {} -> {}", c.process, c.destination, c.result),
        Body::ConnectOutcome(o) => format!("{} {}", o.destination, o.outcome),
        Body::DnsQuery(q) => format!("{}: {}", q.process, q.names.join(",")),
        Body::DnsAnswer(a) => format!("{} {}", a.name, a.addresses.join(",")),
        Body::FirstBytes(f) => format!(
            "{}: {} {:?} {:?}",
            f.process, f.destination, f.tls_server_name, f.http
        ),
        Body::Exit(e) => format!("code {:?}", e.exit_code),
        Body::RuleMatch(_)
        | Body::Blocked(_)
        | Body::WouldBlock(_)
        | Body::PolicyReload(_)
        | Body::Sensor(_)
        | Body::Watching(_)
        | Body::Report(_)
        | Body::Loss(_)
        | Body::Repeated(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ExitRecord;

    fn exit(pid: u32, at_ns: u64) -> Record {
        Record {
            header: Header {
                time: Stamp::from_boot_ns(at_ns),
                offset_ms: None,
                pid: Some(pid),
                tree: None,
            },
            body: Body::Exit(ExitRecord { exit_code: Some(0) }),
        }
    }

    #[test]
    fn repeats_past_keep_are_counted_and_summarised_when_the_window_ends() {
        let mut r = Repeats::new(2, std::time::Duration::from_secs(10));
        let s = 1_000_000_000u64;
        let admitted: Vec<bool> = (0..5)
            .map(|i| r.admit(7, &exit(100 + i as u32, i * s), i * s))
            .collect();
        assert_eq!(admitted, [true, true, false, false, false]);
        assert!(
            r.admit(8, &exit(200, 0), 0),
            "another tree has its own window"
        );
        assert!(r.due(9 * s).is_empty(), "the window is still open");
        let due = r.due(10 * s);
        assert_eq!(
            due.len(),
            1,
            "tree 8 passed everything: nothing to summarise"
        );
        let Body::Repeated(rep) = &due[0].body else {
            panic!("a repeated record: {:?}", due[0]);
        };
        assert_eq!(due[0].header.tree, Some(7));
        assert_eq!((rep.count, rep.record_type), (3, Kind::Exit));
        assert_eq!(
            (rep.first_time.boot_ns(), rep.last_time.boot_ns()),
            (2 * s, 4 * s)
        );
        assert!(
            r.admit(7, &exit(1, 11 * s), 11 * s),
            "a new window starts afresh"
        );
        assert_eq!(r.summarised, 3);
    }

    #[test]
    fn keep_zero_turns_it_off() {
        let mut r = Repeats::new(0, std::time::Duration::from_secs(10));
        assert!((0..100).all(|i| r.admit(1, &exit(i, 0), 0)));
    }
}
