//! `@timestamp` formatting: RFC 3339 in UTC with exactly nine fraction digits
//! and `Z` (`2026-11-26T01:02:03.123456789Z`), written by hand with integer
//! arithmetic (days → civil date after Howard Hinnant's `civil_from_days`),
//! because it runs once per line.
//!
//! Promises: the same text chrono's `to_rfc3339_opts(Nanos, true)` gives for
//! every instant in years 0000–9999. Instants outside that range (which RFC
//! 3339's four-digit year cannot express) are clamped to its ends; so are the
//! index names derived from them, see [`clamp`].

use crate::event::Timestamp;

/// Length of a formatted timestamp: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub const TIMESTAMP_LEN: usize = 30;

const SECS_PER_DAY: i64 = 86_400;
const NANOS_PER_SEC: u32 = 1_000_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`).
pub(crate) const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// First second of 0000-01-01 and last second of 9999-12-31 (UTC).
const MIN_SECS: i64 = days_from_civil(0, 1, 1) * SECS_PER_DAY;
const MAX_SECS: i64 = days_from_civil(10_000, 1, 1) * SECS_PER_DAY - 1;

/// Civil date (year, month 1–12, day 1–31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u32; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe as i64 + i64::from(month <= 2);
    (year, month, day)
}

/// Normalises `nanos` ≥ 1 s into `secs` and clamps to years 0000–9999.
pub fn clamp(ts: Timestamp) -> Timestamp {
    let secs = ts.secs.saturating_add(i64::from(ts.nanos / NANOS_PER_SEC));
    let nanos = ts.nanos % NANOS_PER_SEC;
    if secs < MIN_SECS {
        Timestamp {
            secs: MIN_SECS,
            nanos: 0,
        }
    } else if secs > MAX_SECS {
        Timestamp {
            secs: MAX_SECS,
            nanos: NANOS_PER_SEC - 1,
        }
    } else {
        Timestamp { secs, nanos }
    }
}

#[inline(always)]
fn put2(buf: &mut [u8], at: usize, v: u32) {
    buf[at] = b'0' + (v / 10) as u8;
    buf[at + 1] = b'0' + (v % 10) as u8;
}

/// The timestamp as RFC 3339 text (see the module doc), as ASCII bytes.
#[inline]
pub fn timestamp_bytes(ts: Timestamp) -> [u8; TIMESTAMP_LEN] {
    let ts = clamp(ts);
    let days = ts.secs.div_euclid(SECS_PER_DAY);
    let secs_of_day = ts.secs.rem_euclid(SECS_PER_DAY) as u32;
    let (year, month, day) = civil_from_days(days);
    let year = year as u32; // 0..=9999 after clamping

    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    put2(&mut buf, 0, year / 100);
    put2(&mut buf, 2, year % 100);
    put2(&mut buf, 5, month);
    put2(&mut buf, 8, day);
    put2(&mut buf, 11, secs_of_day / 3600);
    put2(&mut buf, 14, secs_of_day / 60 % 60);
    put2(&mut buf, 17, secs_of_day % 60);
    put_nanos(&mut buf, ts.nanos);
    buf
}

/// Formats timestamps, redoing the date and time of day only when the second
/// changes (consecutive log lines mostly share it).
#[derive(Clone, Debug)]
pub struct TimestampFormatter {
    secs: Option<i64>,
    text: [u8; TIMESTAMP_LEN],
}

impl Default for TimestampFormatter {
    fn default() -> Self {
        TimestampFormatter {
            secs: None,
            text: [b'0'; TIMESTAMP_LEN],
        }
    }
}

impl TimestampFormatter {
    /// Same as [`timestamp_bytes`].
    #[inline]
    pub fn format(&mut self, ts: Timestamp) -> &[u8; TIMESTAMP_LEN] {
        let ts = clamp(ts);
        if self.secs == Some(ts.secs) {
            put_nanos(&mut self.text, ts.nanos);
        } else {
            self.text = timestamp_bytes(ts);
            self.secs = Some(ts.secs);
        }
        &self.text
    }
}

#[inline(always)]
fn put_nanos(buf: &mut [u8; TIMESTAMP_LEN], mut nanos: u32) {
    for i in (20..29).rev() {
        buf[i] = b'0' + (nanos % 10) as u8;
        nanos /= 10;
    }
}

/// The timestamp as RFC 3339 text, e.g. `2026-11-26T01:02:03.123456789Z`.
pub fn format_timestamp(ts: Timestamp) -> String {
    timestamp_bytes(ts).iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, SecondsFormat};

    fn chrono_text(ts: Timestamp) -> String {
        DateTime::from_timestamp(ts.secs, ts.nanos)
            .expect("instant in chrono's range")
            .to_rfc3339_opts(SecondsFormat::Nanos, true)
    }

    #[test]
    fn matches_chrono_on_random_instants_1970_to_2200() {
        let end = days_from_civil(2200, 1, 1) * SECS_PER_DAY;
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..200_000 {
            let ts = Timestamp {
                secs: rng.i64(0..end),
                nanos: rng.u32(0..NANOS_PER_SEC),
            };
            assert_eq!(format_timestamp(ts), chrono_text(ts), "{ts:?}");
        }
    }

    #[test]
    fn matches_chrono_around_day_month_and_leap_boundaries() {
        let dates = [
            (1970, 1, 1),
            (1972, 2, 29),
            (1972, 3, 1),
            (1999, 12, 31),
            (2000, 2, 29),
            (2000, 3, 1),
            (2024, 2, 29),
            (2100, 2, 28),
            (2100, 3, 1),
            (1969, 12, 31),
            (1600, 2, 29),
            (1, 1, 1),
        ];
        for (y, m, d) in dates {
            let midnight = days_from_civil(y, m, d) * SECS_PER_DAY;
            for secs in [
                midnight - 1,
                midnight,
                midnight + 1,
                midnight + SECS_PER_DAY - 1,
            ] {
                for nanos in [0, 1, 999_999_999, 123_000_000] {
                    let ts = Timestamp { secs, nanos };
                    assert_eq!(format_timestamp(ts), chrono_text(ts), "{ts:?}");
                }
            }
        }
    }

    #[test]
    fn formatter_with_its_cache_matches_plain_formatting() {
        let mut formatter = TimestampFormatter::default();
        let mut rng = fastrand::Rng::with_seed(4);
        let mut secs = 1_795_698_000;
        for _ in 0..10_000 {
            // Mostly the same second, sometimes the next, sometimes a jump back.
            match rng.u8(0..10) {
                0 => secs += 1,
                1 => secs -= rng.i64(0..100_000),
                _ => {}
            }
            let ts = Timestamp {
                secs,
                nanos: rng.u32(0..NANOS_PER_SEC),
            };
            assert_eq!(formatter.format(ts), &timestamp_bytes(ts), "{ts:?}");
        }
        let beyond = Timestamp {
            secs: i64::MAX,
            nanos: 3,
        };
        assert_eq!(formatter.format(beyond), &timestamp_bytes(beyond));
        assert_eq!(
            formatter.format(beyond),
            &timestamp_bytes(beyond),
            "clamped twice in a row"
        );
    }

    #[test]
    fn out_of_range_instants_are_clamped_to_four_digit_years() {
        let low = format_timestamp(Timestamp {
            secs: i64::MIN,
            nanos: 5,
        });
        assert_eq!(low, "0000-01-01T00:00:00.000000000Z");
        let high = format_timestamp(Timestamp {
            secs: i64::MAX,
            nanos: 0,
        });
        assert_eq!(high, "9999-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn nanos_of_a_second_or_more_carry_into_seconds() {
        let ts = Timestamp {
            secs: 59,
            nanos: 1_500_000_000,
        };
        assert_eq!(format_timestamp(ts), "1970-01-01T00:01:00.500000000Z");
    }
}
