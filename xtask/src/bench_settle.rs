//! One wait before every timed run, whatever the condition, so no run pays for the
//! one before it.
//!
//! Measured here: a workload started right after a probectl run had exited was 3-7%
//! slower for about half a second, with the CPUs already idle (the kernel tearing
//! down programs, maps and probes). The block table's "no monitor" runs came right
//! after such exits and the monitored ones did not, which flattered probectl by
//! several points.
//!
//! Found later: that slow-down was probectl's programs, still attached. probectl hands
//! its descriptors to a detached grandchild at exit (`teardown::close_in_background`),
//! which closes them one RCU grace period after another: here for about 6 s after
//! probectl's exit, its syscall tracepoints and cgroup hooks stay on every process.
//! A pause of 1 s did not cover that, so a "no monitor" run that followed a probectl
//! run was measured with most of probectl attached. `settle` now first waits for
//! every process of the measured binary that is not the bench's own child (a
//! background monitor is) to be gone.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The probectl binary being measured (`measuring`).
static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Tells `settle` which binary's teardown grandchildren to wait for.
pub fn measuring(probectl: &std::path::Path) {
    let path = std::fs::canonicalize(probectl).unwrap_or_else(|_| probectl.to_owned());
    let _ = BINARY.set(path);
}

/// Longer than any teardown measured here (about 6 s).
const TEARDOWN_MAX: Duration = Duration::from_secs(30);

/// Longer than the slow-down measured after a probectl exit.
const PAUSE: Duration = Duration::from_millis(1000);
/// Then wait for this much idle CPU over one window, at most `MAX_WAIT`.
const IDLE: f64 = 0.9;
const WINDOW: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Waits `PAUSE`, then until the CPUs are `IDLE` over one `WINDOW` (a background
/// monitor's start-up done), for at most `MAX_WAIT`. A monitor that never goes
/// idle is measured anyway: its cost is part of the figure.
pub fn settle() {
    wait_for_teardowns();
    std::thread::sleep(PAUSE);
    let started = Instant::now();
    while started.elapsed() < MAX_WAIT {
        let Some(before) = cpu_times() else { return };
        std::thread::sleep(WINDOW);
        let Some(after) = cpu_times() else { return };
        let total = after.1.saturating_sub(before.1);
        let idle = after.0.saturating_sub(before.0);
        if total > 0 && idle as f64 / total as f64 >= IDLE {
            return;
        }
    }
}

/// Waits, at most `TEARDOWN_MAX`, until no process runs the measured binary other
/// than the bench's own children (a background monitor it started, which the
/// condition measures).
fn wait_for_teardowns() {
    let Some(binary) = BINARY.get() else { return };
    let started = Instant::now();
    while started.elapsed() < TEARDOWN_MAX && lingering(binary) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lingering(binary: &std::path::Path) -> bool {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let path = e.path();
        let is_it = std::fs::read_link(path.join("exe")).is_ok_and(|exe| exe == binary);
        is_it
            && std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|stat| parent_of(&stat))
                .is_some_and(|ppid| ppid != me)
    })
}

/// The parent pid from a /proc/PID/stat line (after the parenthesised name, which
/// may itself hold spaces and parentheses).
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// (idle + iowait, all) jiffies of the machine, from /proc/stat's first line.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let idle = v.get(3)? + v.get(4)?;
    Some((idle, v.iter().sum()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_idle_and_total_from_the_cpu_line() {
        assert_eq!(
            super::parse_cpu_line("cpu  10 0 5 80 5 0 0 0 0 0"),
            Some((85, 100))
        );
        assert_eq!(super::parse_cpu_line("cpu0 1 2 3 4 5"), None);
        assert_eq!(super::parse_cpu_line("cpu  1 x 3 4 5"), None);
    }

    #[test]
    fn reads_the_parent_after_a_hostile_name() {
        assert_eq!(super::parent_of("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(super::parent_of("42 (probectl) S 1 42"), Some(1));
        assert_eq!(super::parent_of("garbage"), None);
    }
}
