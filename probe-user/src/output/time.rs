//! Kernel timestamps (CLOCK_BOOTTIME ns) to wall-clock UTC for output.

use nix::time::{ClockId, clock_gettime};

/// Converts boot-time nanoseconds to Unix-epoch nanoseconds using an offset measured
/// once at start (suspend during a run shifts both clocks alike).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

fn now_ns(id: ClockId) -> i128 {
    clock_gettime(id)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0)
}

impl WallClock {
    pub fn new() -> Self {
        Self {
            offset_ns: now_ns(ClockId::CLOCK_REALTIME) - now_ns(ClockId::CLOCK_BOOTTIME),
        }
    }

    pub fn boot_now_ns() -> u64 {
        now_ns(ClockId::CLOCK_BOOTTIME) as u64
    }

    /// RFC 3339 UTC with microseconds, e.g. `2026-11-24T20:46:29.123456Z`.
    pub fn rfc3339(&self, ktime_ns: u64) -> String {
        format_utc(ktime_ns as i128 + self.offset_ns)
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

pub fn format_utc(epoch_ns: i128) -> String {
    let secs = epoch_ns.div_euclid(1_000_000_000) as i64;
    let micros = (epoch_ns.rem_euclid(1_000_000_000) / 1_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::format_utc;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-24T20:46:29.5Z
        assert_eq!(
            format_utc(1_795_553_189_500_000_000),
            "2026-11-24T20:46:29.500000Z"
        );
        assert_eq!(
            format_utc(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
