//! RFC 3339 timestamps (`2026-11-26T01:02:03.123456789+02:00`) → UTC
//! [`Timestamp`], by hand: fixed byte positions, no allocation, no chrono.
//!
//! Accepts `T`/`t` between date and time, `Z`/`z` or `±hh:mm` as the zone,
//! and a fraction of any length (digits past the ninth are ignored, i.e.
//! truncated to nanoseconds). Second `60` (a leap second) is accepted and
//! counts as the first second of the next minute. Anything else, including
//! out-of-range fields such as February 30, is rejected.

use crate::event::Timestamp;

/// Parse an RFC 3339 timestamp at the start of `b`.
///
/// Returns the instant and the number of bytes it took; the caller checks
/// what follows (a space in CRI, the end of the string in docker).
pub fn parse_rfc3339_prefix(b: &[u8]) -> Option<(Timestamp, usize)> {
    // Shortest form: `YYYY-MM-DDTHH:MM:SSZ`.
    if b.len() < 20 {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        if n < 9 {
            nanos *= 10u32.pow((9 - n) as u32);
        }
    }

    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let tz = b.get(i + 1..i + 6)?;
            if tz[2] != b':' {
                return None;
            }
            let oh = digits(&tz[0..2])?;
            let om = digits(&tz[3..5])?;
            if oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let off = i64::from(oh * 3600 + om * 60);
            if sign == b'-' { -off } else { off }
        }
        _ => return None,
    };

    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Some((Timestamp { secs, nanos }, i))
}

/// Parse a string that is exactly one RFC 3339 timestamp.
pub fn parse_rfc3339(b: &[u8]) -> Option<Timestamp> {
    match parse_rfc3339_prefix(b) {
        Some((ts, n)) if n == b.len() => Some(ts),
        _ => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). `month` is 1..=12, `day` 1..=31.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let year_of_era = y - era * 400; // [0, 399]
    let month_from_march = i64::from((month + 9) % 12); // March = 0
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// ASCII decimal digits → number; `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, FixedOffset, SecondsFormat, TimeZone, Utc};

    fn ts(s: &str) -> Option<Timestamp> {
        parse_rfc3339(s.as_bytes())
    }

    fn chrono_ts(s: &str) -> Timestamp {
        let dt = DateTime::parse_from_rfc3339(s).expect("chrono parses the test input");
        Timestamp {
            secs: dt.timestamp(),
            nanos: dt.timestamp_subsec_nanos(),
        }
    }

    #[test]
    fn zones_and_fractions_agree_with_chrono() {
        for s in [
            "2026-11-26T01:02:03Z",
            "2026-11-26T01:02:03.123Z",
            "2026-11-26T01:02:03.123456Z",
            "2026-11-26T01:02:03.123456789Z",
            "2026-11-26T01:02:03.1+02:00",
            "2026-11-26T01:02:03.000000001-05:30",
            "2026-01-01T00:30:00+02:00",
            "2024-02-29T23:59:59.999999999-23:59",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.5Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            assert_eq!(ts(s), Some(chrono_ts(s)), "{s}");
        }
    }

    #[test]
    fn offset_moves_the_instant_to_utc() {
        let utc = ts("2026-11-26T01:02:03Z").unwrap();
        let east = ts("2026-11-26T03:02:03+02:00").unwrap();
        let west = ts("2026-11-25T19:32:03-05:30").unwrap();
        assert_eq!(utc, east);
        assert_eq!(utc, west);
    }

    #[test]
    fn fraction_digits_beyond_nine_are_ignored() {
        let twelve = ts("2026-11-26T01:02:03.123456789987Z").unwrap();
        assert_eq!(twelve, ts("2026-11-26T01:02:03.123456789Z").unwrap());
        assert_eq!(twelve.nanos, 123_456_789);
        assert_eq!(ts("2026-11-26T01:02:03.5Z").unwrap().nanos, 500_000_000);
        assert_eq!(ts("2026-11-26T01:02:03Z").unwrap().nanos, 0);
    }

    #[test]
    fn prefix_reports_consumed_length() {
        let line = b"2026-11-26T01:02:03.123456789+02:00 stdout F hi";
        let (_, n) = parse_rfc3339_prefix(line).unwrap();
        assert_eq!(&line[n..n + 1], b" ");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "2026-11-26T01:02:03",
            "2026-11-26 01:02:03Z",
            "2026-13-26T01:02:03Z",
            "2026-02-29T01:02:03Z",
            "2026-11-31T01:02:03Z",
            "2026-11-26T24:02:03Z",
            "2026-11-26T01:60:03Z",
            "2026-11-26T01:02:61Z",
            "2026-11-26T01:02:03.Z",
            "2026-11-26T01:02:03+0200",
            "2026-11-26T01:02:03+02:60",
            "2026-11-26T01:02:03+02",
            "2026-11-26T01:02:03ZZ",
            "2026-1x-26T01:02:03Z",
            "+026-11-26T01:02:03Z",
        ] {
            assert_eq!(ts(s), None, "{s:?}");
        }
    }

    #[test]
    fn random_instants_agree_with_chrono() {
        let mut rng = fastrand::Rng::with_seed(0x10c5_4117);
        let min = Utc.with_ymd_and_hms(1, 1, 2, 0, 0, 0).unwrap().timestamp();
        let max = Utc
            .with_ymd_and_hms(9999, 12, 30, 0, 0, 0)
            .unwrap()
            .timestamp();
        for _ in 0..20_000 {
            let secs = if rng.bool() {
                rng.i64(min..max)
            } else {
                // Dense around the present, where real logs live.
                rng.i64(1_600_000_000..2_000_000_000)
            };
            let nanos = rng.u32(0..1_000_000_000);
            let offset_mins = rng.i32(-(23 * 60 + 59)..=(23 * 60 + 59));
            let zone = FixedOffset::east_opt(offset_mins * 60).unwrap();
            let dt = zone.timestamp_opt(secs, nanos).unwrap();
            let format = match rng.u8(0..4) {
                0 => SecondsFormat::Secs,
                1 => SecondsFormat::Millis,
                2 => SecondsFormat::Micros,
                _ => SecondsFormat::Nanos,
            };
            let text = dt.to_rfc3339_opts(format, offset_mins == 0 || rng.bool());
            let expected = chrono_ts(&text);
            assert_eq!(ts(&text), Some(expected), "{text}");
        }
    }
}
