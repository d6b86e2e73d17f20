//! The CRI log line format written by containerd and CRI-O:
//!
//! ```text
//! <RFC3339Nano time> <stdout|stderr> <P|F>[:tag...] <content>
//! 2026-11-26T01:02:03.123456789Z stdout F hello world
//! 2026-11-26T01:02:03.123456789+02:00 stderr P:x first 16 KiB of a long line
//! ```
//!
//! `P` marks a partial line (the runtime split a long line: containerd at
//! 16 KiB, CRI-O at 8 KiB); the logical line ends with the next `F` part.
//! More tags may follow the `P`/`F` after `:` and are ignored. The content
//! is everything after the single space following the tags, possibly empty
//! (and the space may be missing when it is). Parsing borrows; joining the
//! parts is the decoder's job.

use super::timestamp::parse_rfc3339_prefix;
use crate::event::{Stream, Timestamp};

/// One parsed CRI line; `content` borrows from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub timestamp: Timestamp,
    pub stream: Stream,
    /// `true` for a `P` part, `false` for `F` (the line is complete).
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parse one CRI line; `None` if it is not in CRI format.
pub fn parse(line: &[u8]) -> Option<CriLine<'_>> {
    let (timestamp, n) = parse_rfc3339_prefix(line)?;
    let rest = line.get(n..)?.strip_prefix(b" ")?;
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr ") {
        (Stream::Stderr, r)
    } else {
        return None;
    };
    let (tags, content) = match memchr::memchr(b' ', rest) {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let partial = match tags.first()? {
        b'P' => true,
        b'F' => false,
        _ => return None,
    };
    if tags.len() > 1 && tags[1] != b':' {
        return None;
    }
    Some(CriLine {
        timestamp,
        stream,
        partial,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        let l = parse(b"1970-01-01T00:00:01.5Z stderr P hello world").unwrap();
        assert_eq!(
            l.timestamp,
            Timestamp {
                secs: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(l.stream, Stream::Stderr);
        assert!(l.partial);
        assert_eq!(l.content, b"hello world");
    }

    #[test]
    fn content_keeps_inner_and_trailing_spaces() {
        let l = parse(b"2026-11-26T01:02:03Z stdout F  two  spaces ").unwrap();
        assert_eq!(l.content, b" two  spaces ");
    }

    #[test]
    fn tags_after_colon_are_accepted() {
        let l = parse(b"2026-11-26T01:02:03Z stdout F:x:y msg").unwrap();
        assert!(!l.partial);
        assert_eq!(l.content, b"msg");
        let l = parse(b"2026-11-26T01:02:03Z stdout P:tag msg").unwrap();
        assert!(l.partial);
    }

    #[test]
    fn empty_content_with_or_without_space() {
        assert_eq!(
            parse(b"2026-11-26T01:02:03Z stdout F ").unwrap().content,
            b""
        );
        assert_eq!(
            parse(b"2026-11-26T01:02:03Z stdout F").unwrap().content,
            b""
        );
    }

    #[test]
    fn rejects_non_cri() {
        for l in [
            &b""[..],
            b"hello",
            b"2026-11-26T01:02:03Z stdin F x",
            b"2026-11-26T01:02:03Z stdout X x",
            b"2026-11-26T01:02:03Z stdout FF x",
            b"2026-11-26T01:02:03Z stdout  x",
            b"2026-11-26T01:02:03Z stdout ",
            b"2026-11-26T01:02:03Zstdout F x",
            b"2026-11-26 01:02:03Z stdout F x",
        ] {
            assert_eq!(parse(l), None, "{:?}", String::from_utf8_lossy(l));
        }
    }
}
