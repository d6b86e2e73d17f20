//! Format auto-detection from a file's first non-empty line.
//!
//! A line starting with `{` that parses as docker json-file with a valid
//! `time` is docker (an application's own JSON log lines rarely carry both
//! `log` and an RFC 3339 `time`); a line that parses as CRI is CRI; anything
//! else is plain. The decision is made once per file and never revisited.

use super::{cri, docker};

/// A file format that auto-detection can settle on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectedFormat {
    Cri,
    Docker,
    Plain,
}

/// Detect the format of a file from one of its lines; `None` for an empty
/// (or blank) line, which says nothing.
pub fn detect(line: &[u8]) -> Option<DetectedFormat> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if line.first() == Some(&b'{') && docker::parse(line).is_some_and(|d| d.time.is_some()) {
        return Some(DetectedFormat::Docker);
    }
    if cri::parse(line).is_some() {
        return Some(DetectedFormat::Cri);
    }
    Some(DetectedFormat::Plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_format() {
        assert_eq!(
            detect(br#"{"log":"hi\n","stream":"stdout","time":"2026-11-26T01:02:03.5Z"}"#),
            Some(DetectedFormat::Docker)
        );
        assert_eq!(
            detect(b"2026-11-26T01:02:03.5+02:00 stdout F hi"),
            Some(DetectedFormat::Cri)
        );
        assert_eq!(
            detect(b"Nov 26 01:02:03 host sshd[1]: hi"),
            Some(DetectedFormat::Plain)
        );
        // An application's JSON log line is not docker.
        assert_eq!(
            detect(br#"{"level":"info","log":"x","ts":1}"#),
            Some(DetectedFormat::Plain)
        );
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b" \r"), None);
    }
}
