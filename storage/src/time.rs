//! Time as storage divides it: hour partitions of the buffer, day folders of the lake, the
//! clock retention and the persister read, and how times are shown in messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Width of a buffer partition. An hour keeps the partition a one-hour query touches small
/// (100 hosts x 360 rows for TSBS) while a day of data is only 24 partitions.
pub const PARTITION_NANOS: i64 = 3_600_000_000_000;

/// Nanoseconds in a day: the span of a folder of files.
pub const DAY_NANOS: i64 = 24 * PARTITION_NANOS;

/// An inclusive range of nanosecond timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub min: i64,
    pub max: i64,
}

impl TimeRange {
    /// Every time.
    pub const ALL: TimeRange = TimeRange {
        min: i64::MIN,
        max: i64::MAX,
    };

    /// True if some time is in both ranges.
    pub fn overlaps(&self, min: i64, max: i64) -> bool {
        self.min <= max && min <= self.max
    }

    /// The share of `min..=max` (a source's time range) inside this range, from 0 to 1: about
    /// the share of the source's rows a scan of this range reads, its rows spread evenly.
    pub fn share_of(&self, min: i64, max: i64) -> f64 {
        if !self.overlaps(min, max) {
            return 0.0;
        }
        let span = (max as f64 - min as f64) + 1.0;
        let overlap = (self.max.min(max) as f64 - self.min.max(min) as f64) + 1.0;
        (overlap / span).clamp(0.0, 1.0)
    }
}

/// The time now, in Unix nanoseconds: the system clock, or one a test sets.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Clock(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64)
        }))
    }

    /// A clock that shows what `now` holds (tests move it by hand).
    pub fn manual(now: Arc<AtomicI64>) -> Self {
        Clock(Arc::new(move || now.load(Ordering::SeqCst)))
    }

    /// Unix nanoseconds.
    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian calendar; Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
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

/// A day count since 1970-01-01 as `YYYY-MM-DD`: how the lake names a day's folder.
pub fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `nanos` since the Unix epoch as `2026-01-01T00:00:00Z` (to the second), for messages.
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let s = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(secs.div_euclid(86_400)),
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `d` in the largest unit that holds it whole (`2d`, `36h`, `90s`, `1500ms`), for messages.
pub fn describe_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_their_largest_whole_unit() {
        use std::time::Duration;
        assert_eq!(describe_duration(Duration::from_secs(2 * 86_400)), "2d");
        assert_eq!(describe_duration(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(describe_duration(Duration::from_secs(90)), "90s");
        assert_eq!(describe_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn the_share_of_a_range_inside_another_is_its_overlap_over_its_span() {
        let r = TimeRange { min: 100, max: 199 };
        assert_eq!(r.share_of(100, 199), 1.0);
        assert_eq!(r.share_of(0, 99), 0.0);
        assert_eq!(r.share_of(200, 299), 0.0);
        assert_eq!(r.share_of(150, 249), 0.5);
        assert_eq!(r.share_of(150, 150), 1.0);
        assert_eq!(TimeRange::ALL.share_of(i64::MIN, i64::MAX), 1.0);
    }

    #[test]
    fn days_and_times_read_as_utc_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(date(20_454), "2026-01-01");
        assert_eq!(
            rfc3339(1_767_225_600_000_000_000 + 3_723_000_000_000),
            "2026-01-01T01:02:03Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
