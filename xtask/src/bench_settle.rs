//! One wait before every timed run, whatever the condition, so no run pays for the
//! one before it.
//!
//! Measured here: a workload started right after a probectl run had exited was 3-7%
//! slower for about half a second, with the CPUs already idle (the kernel tearing
//! down programs, maps and probes). The block table's "no monitor" runs came right
//! after such exits and the monitored ones did not, which flattered probectl by
//! several points.

use std::time::{Duration, Instant};

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
}
