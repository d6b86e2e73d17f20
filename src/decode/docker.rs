//! Docker's `json-file` log format: one JSON object per line,
//!
//! ```text
//! {"log":"hello world\n","stream":"stdout","time":"2026-11-26T01:02:03.123456789Z"}
//! ```
//!
//! Fields may come in any order; others (`attrs`, ...) are skipped. Docker
//! splits a long line into 16 KiB chunks: every chunk but the last has a
//! `log` without the trailing `\n`.
//!
//! The parser is a small hand-written scanner, not a general JSON parser:
//! it finds the three fields with `memchr`, borrowing their raw (still
//! escaped) bytes, and skips other values without building them. The `log`
//! string is unescaped only when it holds an escape other than its final
//! `\n` — the common case costs no copy and no allocation. Lone UTF-16
//! surrogates in `\u` escapes become U+FFFD (as Go's decoder does); any
//! other malformed escape makes the line undecodable.

use super::timestamp::parse_rfc3339;
use crate::event::{Stream, Timestamp};

/// A JSON string as it appears between its quotes, escapes not yet resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawStr<'a> {
    pub raw: &'a [u8],
    /// Index in `raw` of the first `\`, if any.
    pub first_escape: Option<usize>,
}

/// The fields of one docker line, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DockerLine<'a> {
    pub log: RawStr<'a>,
    pub stream: Option<Stream>,
    /// `None` when the field is absent or not an RFC 3339 time.
    pub time: Option<Timestamp>,
}

/// Parse one docker json-file line. `None` unless it is a single JSON
/// object (surrounding whitespace allowed) with a string `log` field.
pub fn parse(line: &[u8]) -> Option<DockerLine<'_>> {
    let mut s = Scanner { b: line, i: 0 };
    s.skip_ws();
    s.expect(b'{')?;
    s.skip_ws();
    let mut log = None;
    let mut stream = None;
    let mut time = None;
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.expect(b'"')?;
            let key = s.string()?;
            s.skip_ws();
            s.expect(b':')?;
            s.skip_ws();
            let name = if key.first_escape.is_none() {
                key.raw
            } else {
                b""
            };
            match name {
                b"log" => {
                    s.expect(b'"')?;
                    log = Some(s.string()?);
                }
                // Other fields are only metadata: a value of another type
                // is skipped, not a reason to reject the line.
                b"stream" => {
                    stream = match s.string_or_skip()? {
                        Some(b"stdout") => Some(Stream::Stdout),
                        Some(b"stderr") => Some(Stream::Stderr),
                        _ => None,
                    };
                }
                b"time" => time = s.string_or_skip()?.and_then(parse_rfc3339),
                _ => s.skip_value()?,
            }
            s.skip_ws();
            match s.next()? {
                b',' => s.skip_ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.skip_ws();
    if s.i != line.len() {
        return None;
    }
    Some(DockerLine {
        log: log?,
        stream,
        time,
    })
}

/// What the `log` string holds, and whether it ends the logical line.
#[derive(Debug, PartialEq, Eq)]
pub enum LogText<'a> {
    /// No escape but (possibly) the final `\n`: the bytes, borrowed.
    Borrowed(&'a [u8]),
    /// Escapes were resolved into the scratch buffer passed to [`LogText::resolve`].
    Unescaped,
}

impl<'a> RawStr<'a> {
    /// Resolve the string, stripping one final newline.
    ///
    /// Returns the text source and whether it ended in `\n` (the line is
    /// complete). `scratch` is cleared and used only when needed. `None` if
    /// an escape is malformed.
    pub fn resolve(self, scratch: &mut Vec<u8>) -> Option<(LogText<'a>, bool)> {
        let raw = self.raw;
        match self.first_escape {
            None => Some((LogText::Borrowed(raw), false)),
            Some(e) if e + 2 == raw.len() && raw[e + 1] == b'n' => {
                Some((LogText::Borrowed(&raw[..e]), true))
            }
            Some(e) => {
                scratch.clear();
                unescape(raw, e, scratch)?;
                let complete = scratch.last() == Some(&b'\n');
                if complete {
                    scratch.pop();
                }
                Some((LogText::Unescaped, complete))
            }
        }
    }
}

/// Unescape a JSON string body into `out`; `first` is the index of the first `\`.
fn unescape(raw: &[u8], first: usize, out: &mut Vec<u8>) -> Option<()> {
    out.reserve(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut i = first;
    loop {
        // raw[i] == b'\\'
        let c = *raw.get(i + 1)?;
        i += 2;
        match c {
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'/' => out.push(b'/'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let hi = hex4(raw.get(i..i + 4)?)?;
                i += 4;
                let ch = if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate: a low one should follow as `\uXXXX`.
                    let lo = match raw.get(i..i + 6) {
                        Some([b'\\', b'u', h @ ..]) => hex4(h)?,
                        _ => 0,
                    };
                    if (0xDC00..0xE000).contains(&lo) {
                        i += 6;
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                    } else {
                        None
                    }
                } else {
                    char::from_u32(hi)
                };
                let ch = ch.unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
            }
            _ => return None,
        }
        match memchr::memchr(b'\\', &raw[i..]) {
            Some(n) => {
                out.extend_from_slice(&raw[i..i + n]);
                i += n;
            }
            None => {
                out.extend_from_slice(&raw[i..]);
                return Some(());
            }
        }
    }
}

fn hex4(h: &[u8]) -> Option<u32> {
    if h.len() != 4 {
        return None;
    }
    h.iter().try_fold(0u32, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | d)
    })
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    /// After an opening quote: the string up to its closing quote, which is consumed.
    fn string(&mut self) -> Option<RawStr<'a>> {
        let start = self.i;
        let mut first_escape = None;
        loop {
            let n = memchr::memchr2(b'"', b'\\', &self.b[self.i..])?;
            self.i += n;
            if self.b[self.i] == b'"' {
                let raw = &self.b[start..self.i];
                self.i += 1;
                return Some(RawStr {
                    raw,
                    first_escape: first_escape.map(|e| e - start),
                });
            }
            first_escape.get_or_insert(self.i);
            // Skip the backslash and the byte it escapes.
            self.i += 2;
            if self.i > self.b.len() {
                return None;
            }
        }
    }

    /// A string value's raw bytes, or `None` after skipping a value of another type.
    fn string_or_skip(&mut self) -> Option<Option<&'a [u8]>> {
        if self.peek() == Some(b'"') {
            self.i += 1;
            Some(Some(self.string()?.raw))
        } else {
            self.skip_value().map(|()| None)
        }
    }

    /// Skip one JSON value without building it. Nesting is tracked by a
    /// counter (no recursion), and brackets are not checked to match: this
    /// only has to find where the value ends.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string().map(|_| ())
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.next()? {
                        b'"' => {
                            self.string()?;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {
                // A number or a literal: up to the next delimiter.
                let start = self.i;
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                ) {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(line: &str) -> Option<(Vec<u8>, bool)> {
        let d = parse(line.as_bytes())?;
        let mut scratch = Vec::new();
        let (text, complete) = d.log.resolve(&mut scratch)?;
        let bytes = match text {
            LogText::Borrowed(b) => b.to_vec(),
            LogText::Unescaped => scratch,
        };
        Some((bytes, complete))
    }

    #[test]
    fn parses_fields_in_any_order_and_skips_others() {
        let d = parse(
            br#"{"time":"2026-11-26T01:02:03Z","attrs":{"a":[1,{"b":"}"}],"c":null},"stream":"stderr","n":-1.5e3,"t":true,"log":"hi\n"}"#,
        )
        .unwrap();
        assert_eq!(d.stream, Some(Stream::Stderr));
        assert_eq!(d.log.raw, br"hi\n");
        assert!(d.time.is_some());
    }

    #[test]
    fn common_case_borrows() {
        let line = br#"{"log":"plain text\n","stream":"stdout","time":"2026-11-26T01:02:03Z"}"#;
        let d = parse(line).unwrap();
        let mut scratch = Vec::new();
        let (text, complete) = d.log.resolve(&mut scratch).unwrap();
        assert_eq!(text, LogText::Borrowed(b"plain text"));
        assert!(complete);
        assert_eq!(scratch.capacity(), 0, "no copy was made");
    }

    #[test]
    fn unescapes_like_serde_json() {
        for body in [
            r#"tab\there \"quoted\" back\\slash \/ \b\f\r\n"#,
            r#"caf\u00e9 \u4e2d\u6587 \u0041"#,
            r#"emoji \ud83d\ude00 and \uD834\uDD1E"#,
            r#"{\"level\":\"info\",\"msg\":\"x\"}\n"#,
            r#"ends with backslash n literal \\n"#,
            r#"\\"#,
            r#"\u0000"#,
        ] {
            let expected: String = serde_json::from_str(&format!("\"{body}\"")).unwrap();
            let (got, complete) = resolve(&format!(r#"{{"log":"{body}"}}"#)).unwrap();
            let want = expected.strip_suffix('\n').unwrap_or(&expected);
            assert_eq!(String::from_utf8(got).unwrap(), want, "{body}");
            assert_eq!(complete, expected.ends_with('\n'), "{body}");
        }
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let (got, _) = resolve(r#"{"log":"a\ud83db \ude00c \ud83d"}"#).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "a\u{fffd}b \u{fffd}c \u{fffd}"
        );
    }

    #[test]
    fn invalid_escapes_are_rejected() {
        for body in [r#"\x"#, r#"\u12"#, r#"\u12g4"#, r#"\ud83d\uzzzz"#] {
            assert_eq!(resolve(&format!(r#"{{"log":"{body}"}}"#)), None, "{body}");
        }
    }

    #[test]
    fn rejects_non_docker() {
        for l in [
            &b""[..],
            b"{",
            b"{}",
            br#"{"log":1}"#,
            br#"{"log":"x"} trailing"#,
            br#"{"log":"x""#,
            br#"{"log":"x\"}"#,
            br#"{"log" "x"}"#,
            br#"{"log":"x",}"#,
            br#"["log"]"#,
            br#"{"other":{"log":"x"}}"#,
        ] {
            assert_eq!(parse(l), None, "{:?}", String::from_utf8_lossy(l));
        }
    }

    #[test]
    fn unknown_stream_and_bad_time_are_tolerated() {
        for line in [
            &br#"{"log":"x","stream":"stdin","time":"yesterday"}"#[..],
            br#"{"log":"x","stream":null,"time":{"a":[0]}}"#,
        ] {
            let d = parse(line).unwrap();
            assert_eq!(d.stream, None);
            assert_eq!(d.time, None);
        }
    }
}
