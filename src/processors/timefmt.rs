//! Formats of the `timestamp` step.
//!
//! `rfc3339` (any fraction, `Z` or an offset), `unix` (seconds, with an
//! optional fraction), `unix_ms` (milliseconds), or a chrono strftime
//! pattern. A pattern without an offset (`%z`, `%:z`, `%#z`) reads the time
//! as UTC. A pattern is checked at load: it must format a known instant and
//! read it back (so it names at least a date and a time of day).

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDateTime};

use crate::event::Timestamp;

#[derive(Debug)]
pub(super) enum TimeFormat {
    Rfc3339,
    Unix,
    UnixMs,
    Pattern { pattern: String, offset: bool },
}

impl TimeFormat {
    pub(super) fn new(format: &str) -> Result<TimeFormat, String> {
        match format {
            "rfc3339" => return Ok(TimeFormat::Rfc3339),
            "unix" => return Ok(TimeFormat::Unix),
            "unix_ms" => return Ok(TimeFormat::UnixMs),
            _ => {}
        }
        if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
            return Err(format!(
                "{format:?} is not rfc3339, unix, unix_ms or a valid strftime pattern"
            ));
        }
        let offset = ["%z", "%:z", "%::z", "%#z"]
            .iter()
            .any(|z| format.contains(z));
        let parsed = TimeFormat::Pattern {
            pattern: format.to_owned(),
            offset,
        };
        // 2026-11-26T01:02:03Z, formatted and read back.
        let sample = DateTime::from_timestamp(1_795_654_923, 0).unwrap_or_default();
        let mut text = String::new();
        use std::fmt::Write as _;
        let back = write!(text, "{}", sample.format(format))
            .ok()
            .and_then(|()| parsed.parse(text.as_bytes()));
        if back.map(|t| t.secs) != Some(sample.timestamp()) {
            return Err(format!(
                "strftime pattern {format:?} does not read back the instant it writes (it needs a full date and time of day, e.g. %d/%b/%Y:%H:%M:%S %z)"
            ));
        }
        Ok(parsed)
    }

    /// The instant `value` names, if it is one in this format.
    pub(super) fn parse(&self, value: &[u8]) -> Option<Timestamp> {
        let text = std::str::from_utf8(value).ok()?.trim();
        let from = |d: DateTime<chrono::Utc>| Timestamp {
            secs: d.timestamp(),
            nanos: d.timestamp_subsec_nanos(),
        };
        match self {
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|d| from(d.to_utc())),
            TimeFormat::Unix => {
                let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
                let secs: i64 = whole.parse().ok()?;
                if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let nanos = if fraction.is_empty() {
                    0
                } else {
                    fraction.parse::<u32>().ok()? * 10u32.pow(9 - fraction.len() as u32)
                };
                (secs >= 0 || nanos == 0).then_some(Timestamp { secs, nanos })
            }
            TimeFormat::UnixMs => {
                let ms: i64 = text.parse().ok()?;
                Some(Timestamp {
                    secs: ms.div_euclid(1000),
                    nanos: (ms.rem_euclid(1000) * 1_000_000) as u32,
                })
            }
            TimeFormat::Pattern { pattern, offset } => {
                if *offset {
                    DateTime::parse_from_str(text, pattern)
                        .ok()
                        .map(|d| from(d.to_utc()))
                } else {
                    NaiveDateTime::parse_from_str(text, pattern)
                        .ok()
                        .map(|d| from(d.and_utc()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(format: &str, value: &str) -> Option<(i64, u32)> {
        TimeFormat::new(format)
            .unwrap()
            .parse(value.as_bytes())
            .map(|t| (t.secs, t.nanos))
    }

    #[test]
    fn each_format_reads_its_instant() {
        let want = 1_795_654_923;
        assert_eq!(
            ts("%d/%b/%Y:%H:%M:%S %z", "26/Nov/2026:02:02:03 +0100"),
            Some((want, 0))
        );
        assert_eq!(
            ts("%Y-%m-%d %H:%M:%S", "2026-11-26 01:02:03"),
            Some((want, 0))
        );
        assert_eq!(
            ts("rfc3339", "2026-11-26T01:02:03.5Z"),
            Some((want, 500_000_000))
        );
        assert_eq!(ts("unix", "1795654923.25"), Some((want, 250_000_000)));
        assert_eq!(ts("unix_ms", "1795654923250"), Some((want, 250_000_000)));
    }

    #[test]
    fn other_text_is_not_an_instant() {
        assert_eq!(ts("%d/%b/%Y:%H:%M:%S %z", "yesterday"), None);
        assert_eq!(ts("unix", "12a"), None);
        assert_eq!(ts("rfc3339", "2026-11-26"), None);
    }

    #[test]
    fn patterns_that_cannot_name_an_instant_are_refused() {
        assert!(TimeFormat::new("%Y-%m-%d").is_err());
        assert!(TimeFormat::new("%Q").is_err());
        assert!(TimeFormat::new("%H:%M").is_err());
    }
}
