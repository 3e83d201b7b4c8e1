//! How long a database keeps its rows, as users write it: `none` or `30d`.

use std::sync::Arc;

/// A period that is not one; `what` names the period (`retention period`, `expiry`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error(
        "{what} '{text}' is not 'none' or a whole number with a unit: h, d, w, mo (30 days) \
         or y (365 days), as in 30d"
    )]
    Unit { what: String, text: String },
    #[error("{what} '{text}' needs a whole number before its unit, as in 30d")]
    Number { what: String, text: String },
    #[error("{what} '{text}' is too long; use 'none'")]
    TooLong { what: String, text: String },
    #[error("retention period '{0}' would keep nothing; give a positive period or 'none'")]
    KeepsNothing(String),
}

/// Parses a period written as `none` (`Ok(None)`) or a whole number and a unit: `h`, `d`, `w`,
/// `mo` (30 days) or `y` (365 days), as in `30d`. Returns the number, the unit and the
/// period in nanoseconds; `what` names the period in errors.
pub fn parse_period(s: &str, what: &str) -> Result<Option<(i64, String, i64)>, PeriodError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    let hours: i64 = match unit {
        "h" => 1,
        "d" => 24,
        "w" => 7 * 24,
        "mo" => 30 * 24,
        "y" => 365 * 24,
        _ => {
            return Err(PeriodError::Unit {
                what: what.to_string(),
                text: s.to_string(),
            });
        }
    };
    let n: i64 = number.parse().map_err(|_| PeriodError::Number {
        what: what.to_string(),
        text: s.to_string(),
    })?;
    let nanos = n
        .checked_mul(hours * 3_600_000_000_000)
        .filter(|&v| v < i64::MAX / 2)
        .ok_or_else(|| PeriodError::TooLong {
            what: what.to_string(),
            text: s.to_string(),
        })?;
    Ok(Some((n, unit.to_string(), nanos)))
}

/// How long a database keeps its rows: rows older than `now - retention` are not queried and
/// their files are deleted. Written as a whole number and a unit: `h`, `d`, `w`, `mo` (30
/// days) or `y` (365 days), as in `30d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    text: Arc<str>,
    nanos: i64,
}

impl Retention {
    /// Parses a retention period: `none` (keep forever: `Ok(None)`) or a duration like `30d`.
    pub fn parse(s: &str) -> Result<Option<Retention>, PeriodError> {
        let Some((n, unit, nanos)) = parse_period(s, "retention period")? else {
            return Ok(None);
        };
        if n == 0 {
            return Err(PeriodError::KeepsNothing(s.trim().to_string()));
        }
        Ok(Some(Retention {
            text: format!("{n}{unit}").into(),
            nanos,
        }))
    }

    /// The period in nanoseconds.
    pub fn nanos(&self) -> i64 {
        self.nanos
    }

    /// The earliest time (Unix nanoseconds) a row may have to be kept at `now`.
    pub fn cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(self.nanos)
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_periods() {
        let hour = 3_600_000_000_000;
        let of = |s: &str| Retention::parse(s).unwrap().unwrap();
        assert_eq!(of("12h").nanos(), 12 * hour);
        assert_eq!(of("30d").nanos(), 30 * 24 * hour);
        assert_eq!(of("2w").nanos(), 14 * 24 * hour);
        assert_eq!(of("1mo").nanos(), 30 * 24 * hour);
        assert_eq!(of(" 1y ").nanos(), 365 * 24 * hour);
        assert_eq!(of("7d").to_string(), "7d");
        assert_eq!(of("7d").cutoff(10 * 24 * hour), 3 * 24 * hour);
        assert_eq!(Retention::parse("none").unwrap(), None);
        for (bad, says) in [
            ("30", "unit"),
            ("d", "whole number"),
            ("1.5d", "unit"),
            ("-1d", "unit"),
            ("0d", "keep nothing"),
            ("30m", "unit"),
            ("99999999999y", "too long"),
        ] {
            let e = Retention::parse(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }
}
