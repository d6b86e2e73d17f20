//! Byte sizes and durations as written in the config file.
//!
//! A size is a plain integer (bytes) or an integer with a unit, optionally
//! separated by a space: `B`; decimal `KB` `MB` `GB` (powers of 1000); binary
//! `KiB` `MiB` `GiB`, also written `Ki` `Mi` `Gi` as in Kubernetes (powers of
//! 1024). Units are case-insensitive. Fractions are not accepted.
//!
//! A duration is a string with a unit, parsed by `humantime` (`250ms`, `5s`,
//! `1m 30s`); a bare number is refused because its unit would be a guess.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("ki", 1 << 10),
    ("mi", 1 << 20),
    ("gi", 1 << 30),
];

/// Parses `"5MiB"`, `"512 KB"`, `"1048576"` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || {
        format!(
            "invalid size {text:?}: expected a whole number of bytes, optionally with a unit (KiB, MiB, GiB, KB, MB, GB)"
        )
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let multiplier = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, m)| *m)
            .ok_or_else(bad)?
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// `deserialize_with` for a size field (integer or string with unit).
pub fn deserialize_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct SizeVisitor;
    impl Visitor<'_> for SizeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size in bytes such as 1048576 or \"1MiB\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(SizeVisitor)
}

/// `deserialize_with` for a duration field (`"250ms"`, `"5s"`).
pub fn deserialize_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration with a unit such as \"250ms\", \"5s\" or \"1m\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v.trim()).map_err(|e| {
                E::custom(format!(
                    "invalid duration {v:?}: {e} (write e.g. \"250ms\", \"5s\", \"1m\")"
                ))
            })
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration {v}: a unit is required (write e.g. \"{v}s\" or \"{v}ms\")"
            )))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration {v}: a unit is required (write e.g. \"5s\")"
            )))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration {v}: a unit is required (write e.g. \"1500ms\")"
            )))
        }
    }
    deserializer.deserialize_any(DurationVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("5 MiB"), Ok(5 << 20));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2Gi"), Ok(2 << 30));
        assert_eq!(parse_size("512KB"), Ok(512_000));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("1gb"), Ok(1_000_000_000));
        assert_eq!(parse_size("100B"), Ok(100));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_text() {
        for bad in ["", "MiB", "1.5MiB", "1 TB", "-1", "12 34", "1MiBs"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(&format!("{:?}", bad.trim())), "{bad}: {err}");
        }
        assert!(
            parse_size("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[derive(serde::Deserialize, Debug)]
    struct Probe {
        #[serde(deserialize_with = "deserialize_size")]
        size: u64,
        #[serde(deserialize_with = "deserialize_duration")]
        wait: Duration,
    }

    #[test]
    fn deserializes_from_yaml_scalars() {
        let p: Probe = serde_yaml_ng::from_str("size: 5MiB\nwait: 250ms").unwrap();
        assert_eq!((p.size, p.wait), (5 << 20, Duration::from_millis(250)));
        let p: Probe = serde_yaml_ng::from_str("size: 4096\nwait: 1m 30s").unwrap();
        assert_eq!((p.size, p.wait), (4096, Duration::from_secs(90)));
        let err = serde_yaml_ng::from_str::<Probe>("size: 1\nwait: 5").unwrap_err();
        assert!(err.to_string().contains("unit is required"), "{err}");
        let err = serde_yaml_ng::from_str::<Probe>("size: -3\nwait: 5s").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }
}
