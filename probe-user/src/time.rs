//! Time as records carry it: a typed moment (`Stamp`) from the kernel's boot-time
//! clock, turned into wall-clock time once, and formatted (RFC 3339, epoch
//! milliseconds) only where a record is encoded.

use std::sync::OnceLock;

use nix::time::{ClockId, clock_gettime};

fn now_ns(id: ClockId) -> i128 {
    clock_gettime(id)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0)
}

/// Boot-time nanoseconds now (CLOCK_BOOTTIME, the clock the kernel stamps events
/// with).
pub fn boot_now_ns() -> u64 {
    now_ns(ClockId::CLOCK_BOOTTIME) as u64
}

/// Wall-clock minus boot-time, measured once per process: suspend shifts both
/// clocks alike, so one offset serves the whole run.
fn wall_offset_ns() -> i128 {
    static OFFSET: OnceLock<i128> = OnceLock::new();
    *OFFSET.get_or_init(|| now_ns(ClockId::CLOCK_REALTIME) - now_ns(ClockId::CLOCK_BOOTTIME))
}

/// A moment: the kernel's boot-time nanoseconds (what events carry), with the
/// wall-clock time it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    boot_ns: u64,
}

impl Stamp {
    /// The moment an event was stamped with (`EventHeader::ktime_ns`).
    pub fn from_boot_ns(boot_ns: u64) -> Self {
        Self { boot_ns }
    }

    pub fn now() -> Self {
        Self::from_boot_ns(boot_now_ns())
    }

    pub fn boot_ns(self) -> u64 {
        self.boot_ns
    }

    /// Nanoseconds since the Unix epoch.
    pub fn epoch_ns(self) -> i128 {
        self.boot_ns as i128 + wall_offset_ns()
    }

    /// Milliseconds since the Unix epoch.
    pub fn epoch_ms(self) -> i64 {
        self.epoch_ns().div_euclid(1_000_000) as i64
    }

    /// RFC 3339 UTC with microseconds, e.g. `2026-11-24T20:46:29.123456Z`.
    pub fn rfc3339(self) -> String {
        format_utc(self.epoch_ns())
    }

    /// Milliseconds from `base` to this moment.
    pub fn ms_since(self, base: Stamp) -> f64 {
        (self.boot_ns as f64 - base.boot_ns as f64) / 1e6
    }
}

/// RFC 3339 UTC with microseconds for nanoseconds since the epoch.
pub fn format_utc(epoch_ns: i128) -> String {
    match jiff::Timestamp::from_nanosecond(epoch_ns) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        // Outside jiff's range (years -9999..9999): no clock here gets there.
        Err(_) => String::from("0000-00-00T00:00:00.000000Z"),
    }
}

impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl schemars::JsonSchema for Stamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Stamp".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 UTC with microseconds",
        })
    }
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

    #[test]
    fn a_stamp_is_formatted_from_its_boot_time() {
        let a = super::Stamp::now();
        let b = super::Stamp::from_boot_ns(a.boot_ns() + 1_500_000);
        assert_eq!(b.ms_since(a), 1.5);
        // 1.5 ms apart: 1 or 2 whole milliseconds, by where `a` falls.
        assert!((1..=2).contains(&(b.epoch_ms() - a.epoch_ms())));
        assert!(a.rfc3339().ends_with('Z') && a.rfc3339().len() == 27);
    }
}
