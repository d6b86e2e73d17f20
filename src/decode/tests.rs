//! Behaviour of [`LineDecoder`] as its owner sees it: physical lines in,
//! logical lines out.

use super::*;
use crate::event::Stream;
use chrono::DateTime;

const NOW: Timestamp = Timestamp {
    secs: 1_800_000_000,
    nanos: 7,
};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    timestamp: Timestamp,
    stream: Option<Stream>,
    message: Vec<u8>,
    flags: LineFlags,
    offset: u64,
    end: u64,
}

impl Line {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.message).unwrap()
    }
}

/// Feeds lines as a reader would (each followed by `\n`) and records output.
struct Feeder {
    decoder: LineDecoder,
    offset: u64,
    out: Vec<Line>,
}

impl Feeder {
    fn new(format: SourceFormat, max_line_bytes: usize) -> Self {
        Feeder {
            decoder: LineDecoder::new(format, max_line_bytes),
            offset: 0,
            out: Vec::new(),
        }
    }

    fn feed_with(&mut self, line: &[u8], cut: bool) -> Vec<Line> {
        let next = self.offset + line.len() as u64 + 1;
        let mut got = Vec::new();
        self.decoder
            .decode(line, self.offset, next, cut, NOW, &mut |l| {
                got.push(owned(l))
            });
        self.offset = next;
        self.out.extend(got.iter().cloned());
        got
    }

    fn feed(&mut self, line: impl AsRef<[u8]>) -> Vec<Line> {
        self.feed_with(line.as_ref(), false)
    }

    fn feed_all<I: IntoIterator<Item = T>, T: AsRef<[u8]>>(&mut self, lines: I) -> &[Line] {
        for l in lines {
            self.feed(l);
        }
        &self.out
    }

    fn finish(&mut self) -> Vec<Line> {
        let mut got = Vec::new();
        self.decoder.finish(NOW, &mut |l| got.push(owned(l)));
        self.out.extend(got.iter().cloned());
        got
    }
}

fn owned(l: &DecodedLine<'_>) -> Line {
    Line {
        timestamp: l.timestamp,
        stream: l.stream,
        message: l.message.to_vec(),
        flags: l.flags,
        offset: l.offset,
        end: l.end,
    }
}

fn chrono_ts(s: &str) -> Timestamp {
    let dt = DateTime::parse_from_rfc3339(s).unwrap();
    Timestamp {
        secs: dt.timestamp(),
        nanos: dt.timestamp_subsec_nanos(),
    }
}

/// The emitted ranges tile `[0, total)`: in order, no gap, no overlap.
fn assert_tiles(lines: &[Line], total: u64) {
    let mut at = 0;
    for l in lines {
        assert_eq!(l.offset, at, "gap or overlap before {l:?}");
        assert!(l.end > l.offset);
        at = l.end;
    }
    assert_eq!(at, total);
}

const T: &str = "2026-11-26T01:02:03.123456789Z";

// ---------------------------------------------------------------- CRI

#[test]
fn cri_time_zones_and_fraction_lengths() {
    let mut f = Feeder::new(SourceFormat::Cri, 1024);
    let times = [
        "2026-11-26T01:02:03Z",
        "2026-11-26T01:02:03.123Z",
        "2026-11-26T01:02:03.123456+02:00",
        "2026-11-26T01:02:03.123456789-05:30",
        "2026-11-26T01:02:03.123456789123+02:00",
        "2026-11-26T01:02:03-05:30",
    ];
    for t in times {
        f.feed(format!("{t} stdout F at {t}"));
    }
    assert_eq!(f.out.len(), times.len());
    for (l, t) in f.out.iter().zip(times) {
        assert_eq!(l.timestamp, chrono_ts(t), "{t}");
        assert_eq!(l.text(), format!("at {t}"));
        assert_eq!(l.stream, Some(Stream::Stdout));
        assert!(l.flags.is_empty());
    }
    // Twelve fraction digits: the last three are ignored.
    assert_eq!(f.out[4].timestamp.nanos, 123_456_789);
}

#[test]
fn cri_complete_line_is_a_slice_of_the_input() {
    let mut d = LineDecoder::new(SourceFormat::Cri, 1024);
    let line = format!("{T} stderr F hello world");
    let input = line.as_bytes().as_ptr_range();
    let mut seen = 0;
    d.decode(line.as_bytes(), 100, 200, false, NOW, &mut |l| {
        seen += 1;
        assert_eq!(l.message, b"hello world");
        assert!(input.contains(&l.message.as_ptr()), "message was copied");
        assert_eq!((l.offset, l.end), (100, 200));
        assert_eq!(l.stream, Some(Stream::Stderr));
    });
    assert_eq!(seen, 1);
}

#[test]
fn cri_partial_parts_join_with_first_offset_and_last_end() {
    let mut f = Feeder::new(SourceFormat::Cri, 1024);
    let p1 = "2026-11-26T01:02:03.1Z stdout P first ";
    let p2 = "2026-11-26T01:02:03.2Z stdout P:x second ";
    let fin = "2026-11-26T01:02:03.3Z stdout F third";
    f.feed(format!("{T} stdout F before"));
    let start = f.offset;
    assert!(f.feed(p1).is_empty());
    assert!(f.decoder.has_partial());
    assert!(f.feed(p2).is_empty());
    let got = f.feed(fin);
    assert!(!f.decoder.has_partial());
    assert_eq!(got.len(), 1);
    let l = &got[0];
    assert_eq!(l.text(), "first second third");
    assert_eq!(l.offset, start);
    assert_eq!(l.end, f.offset);
    assert_eq!(l.timestamp, chrono_ts("2026-11-26T01:02:03.1Z"));
    assert!(l.flags.is_empty());
    assert_tiles(&f.out, f.offset);
}

/// A long line split the way a runtime splits it, at `chunk` bytes.
fn split_cri(msg: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = msg
        .chunks(chunk)
        .map(|c| [format!("{T} stdout P ").as_bytes(), c].concat())
        .collect();
    let last = parts.len() - 1;
    if msg.len().is_multiple_of(chunk) {
        parts.push(format!("{T} stdout F").into_bytes());
    } else {
        parts[last][T.len() + 8] = b'F';
    }
    parts
}

fn long_message(len: usize) -> Vec<u8> {
    "0123456789 é中😀 {\"k\":\"v\"} "
        .bytes()
        .cycle()
        .take(len)
        .collect()
}

#[test]
fn containerd_16k_and_crio_8k_splits_are_rejoined() {
    for (chunk, len) in [
        (16 * 1024, 40_000),
        (16 * 1024, 32 * 1024),
        (8 * 1024, 20_000),
        (8 * 1024, 8 * 1024 + 1),
    ] {
        let msg = long_message(len);
        let parts = split_cri(&msg, chunk);
        assert!(parts.len() >= 2);
        let mut f = Feeder::new(SourceFormat::Auto, 1 << 20);
        let out = f.feed_all(&parts);
        assert_eq!(out.len(), 1, "chunk {chunk} len {len}");
        assert_eq!(out[0].message, msg);
        assert!(out[0].flags.is_empty());
        assert_tiles(&f.out, f.offset);
    }
}

#[test]
fn partial_line_over_the_limit_is_cut_once_and_counted() {
    let max = 10_000;
    let msg = long_message(40_000);
    let parts = split_cri(&msg, 16 * 1024);
    let mut f = Feeder::new(SourceFormat::Cri, max);
    for p in &parts[..parts.len() - 1] {
        assert!(f.feed(p).is_empty(), "nothing is emitted before the F");
        assert!(f.decoder.assembler.held_capacity() <= max);
    }
    let got = f.feed(&parts[parts.len() - 1]);
    assert_eq!(got.len(), 1);
    let l = &got[0];
    assert!(l.flags.contains(LineFlags::TRUNCATED));
    assert!(l.message.len() <= max && l.message.len() > max - 4);
    assert_eq!(l.message, msg[..l.message.len()]);
    assert!(
        std::str::from_utf8(&l.message).is_ok(),
        "cut on a char boundary"
    );
    assert_eq!((l.offset, l.end), (0, f.offset));
    let stats = f.decoder.take_stats();
    assert_eq!(stats.truncated_lines, 1);
    assert_eq!(stats.dropped_bytes, (msg.len() - l.message.len()) as u64);
    assert_eq!(
        f.decoder.take_stats(),
        DecodeStats::default(),
        "take resets"
    );
}

#[test]
fn complete_line_over_the_limit_is_cut() {
    let mut f = Feeder::new(SourceFormat::Cri, 8);
    let got = f.feed(format!("{T} stdout F abcdefé中文"));
    assert_eq!(got[0].text(), "abcdefé");
    assert!(got[0].flags.contains(LineFlags::TRUNCATED));
    let s = f.decoder.take_stats();
    assert_eq!((s.truncated_lines, s.dropped_bytes), (1, 6));
}

#[test]
fn reader_cut_flags_the_line_truncated() {
    let mut f = Feeder::new(SourceFormat::Cri, 1024);
    let got = f.feed_with(format!("{T} stdout F short").as_bytes(), true);
    assert!(got[0].flags.contains(LineFlags::TRUNCATED));
    // A cut part: the rest of the logical line is dropped, the line still ends at its F.
    assert!(
        f.feed_with(format!("{T} stdout P aaa").as_bytes(), true)
            .is_empty()
    );
    let got = f.feed(format!("{T} stdout F bbb"));
    assert_eq!(got[0].text(), "aaa");
    assert!(got[0].flags.contains(LineFlags::TRUNCATED));
    let s = f.decoder.take_stats();
    assert_eq!((s.truncated_lines, s.dropped_bytes), (2, 3));
}

#[test]
fn tags_and_empty_content() {
    let mut f = Feeder::new(SourceFormat::Auto, 1024);
    let out = f.feed_all([
        format!("{T} stdout F:x tagged"),
        format!("{T} stdout F "),
        format!("{T} stdout F"),
        format!("{T} stdout P "),
        format!("{T} stdout F"),
    ]);
    let texts: Vec<_> = out.iter().map(Line::text).collect();
    assert_eq!(texts, ["tagged", "", "", ""]);
    assert!(out.iter().all(|l| l.flags.is_empty()));
    assert_tiles(&f.out, f.offset);
}

#[test]
fn cri_keeps_carriage_return_in_content() {
    let mut f = Feeder::new(SourceFormat::Cri, 1024);
    assert_eq!(f.feed(format!("{T} stdout F dos\r"))[0].text(), "dos\r");
}

#[test]
fn partial_of_one_stream_interrupted_by_another_is_emitted_incomplete() {
    let mut f = Feeder::new(SourceFormat::Cri, 1024);
    f.feed(format!("{T} stdout P out-part"));
    let got = f.feed(format!("{T} stderr F err-line"));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].text(), "out-part");
    assert_eq!(got[0].stream, Some(Stream::Stdout));
    assert!(got[0].flags.contains(LineFlags::INCOMPLETE));
    assert_eq!(got[1].text(), "err-line");
    assert!(got[1].flags.is_empty());
    assert_tiles(&f.out, f.offset);
}

#[test]
fn garbage_in_a_cri_file_is_shipped_unparsed() {
    let mut f = Feeder::new(SourceFormat::Auto, 1024);
    let out = f.feed_all([
        format!("{T} stdout F one"),
        "garbage \u{1} line\r".to_string(),
        format!("{T} stdout P held"),
        "2026-11-26T01:02:03Z stdin F not a stream".to_string(),
        format!("{T} stdout F two"),
        String::new(),
    ]);
    let texts: Vec<_> = out.iter().map(Line::text).collect();
    assert_eq!(
        texts,
        [
            "one",
            "garbage \u{1} line",
            "held",
            "2026-11-26T01:02:03Z stdin F not a stream",
            "two",
            ""
        ]
    );
    let flags: Vec<_> = out.iter().map(|l| l.flags).collect();
    assert_eq!(
        flags,
        [
            LineFlags::empty(),
            LineFlags::UNPARSED,
            LineFlags::INCOMPLETE,
            LineFlags::UNPARSED,
            LineFlags::empty(),
            LineFlags::UNPARSED
        ]
    );
    assert_eq!(out[1].timestamp, NOW);
    assert_eq!(out[1].stream, None);
    assert_eq!(f.decoder.take_stats().unparsed_lines, 3);
    assert_tiles(&f.out, f.offset);
}

// ---------------------------------------------------------------- docker

fn docker(log: &str, stream: &str) -> String {
    format!(r#"{{"log":"{log}","stream":"{stream}","time":"{T}"}}"#)
}

#[test]
fn docker_lines_with_escapes_and_extra_fields() {
    let mut f = Feeder::new(SourceFormat::Docker, 1024);
    let out = f.feed_all([
        docker(r"plain\n", "stdout"),
        docker(r#"{\"level\":\"info\"}\ttab \\ \/\n"#, "stderr"),
        docker(r"caf\u00e9 \u4e2d \ud83d\ude00\n", "stdout"),
        format!(r#"{{"attrs":{{"tag":"x}}"}},"time":"{T}","log":"extra fields\n","stream":"stdout","n":1}}"#),
        docker(r"no newline at all", "stdout"),
    ]);
    let texts: Vec<_> = out.iter().map(Line::text).collect();
    assert_eq!(
        texts,
        [
            "plain",
            "{\"level\":\"info\"}\ttab \\ /",
            "café 中 😀",
            "extra fields"
        ]
    );
    assert_eq!(out[1].stream, Some(Stream::Stderr));
    assert!(out.iter().all(|l| l.timestamp == chrono_ts(T)));
    assert!(f.decoder.has_partial());
    let last = f.finish();
    assert_eq!(last[0].text(), "no newline at all");
    assert!(last[0].flags.contains(LineFlags::INCOMPLETE));
    assert_tiles(&f.out, f.offset);
}

#[test]
fn docker_common_line_is_a_slice_of_the_input() {
    let mut d = LineDecoder::new(SourceFormat::Docker, 1024);
    let line = docker(r"hello\n", "stdout");
    let input = line.as_bytes().as_ptr_range();
    let mut seen = 0;
    d.decode(line.as_bytes(), 0, 1, false, NOW, &mut |l| {
        seen += 1;
        assert_eq!(l.message, b"hello");
        assert!(input.contains(&l.message.as_ptr()));
    });
    assert_eq!(seen, 1);
}

#[test]
fn docker_chunks_are_joined_until_the_newline() {
    let msg = long_message(40_000);
    let text = std::str::from_utf8(&msg).unwrap();
    let escaped = serde_json::to_string(text).unwrap();
    let escaped = &escaped[1..escaped.len() - 1];
    // Split the escaped text at char boundaries near 16 KiB, never inside an escape.
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut n = rest.len().min(16 * 1024);
        while !rest.is_char_boundary(n) {
            n -= 1;
        }
        let c = serde_json::to_string(&rest[..n]).unwrap();
        chunks.push(c[1..c.len() - 1].to_string());
        rest = &rest[n..];
    }
    assert_eq!(chunks.concat(), escaped);
    let last = chunks.len() - 1;
    chunks[last].push_str(r"\n");
    let mut f = Feeder::new(SourceFormat::Auto, 1 << 20);
    let out = f.feed_all(chunks.iter().map(|c| docker(c, "stdout")));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].message, msg);
    assert_tiles(&f.out, f.offset);
}

#[test]
fn docker_invalid_lines_are_shipped_whole_as_unparsed() {
    let mut f = Feeder::new(SourceFormat::Docker, 1024);
    let bad_escape = docker(r"bad \x escape\n", "stdout");
    let out = f.feed_all([
        bad_escape.clone(),
        "not json".to_string(),
        r#"{"log":"cut off"#.to_string(),
    ]);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].text(), bad_escape);
    assert_eq!(out[1].text(), "not json");
    assert!(out.iter().all(|l| l.flags == LineFlags::UNPARSED));
    assert_eq!(f.decoder.take_stats().unparsed_lines, 3);
}

#[test]
fn docker_without_time_uses_read_time() {
    let mut f = Feeder::new(SourceFormat::Docker, 1024);
    let got = f.feed(r#"{"log":"x\n"}"#);
    assert_eq!(got[0].timestamp, NOW);
    assert_eq!(got[0].stream, None);
}

// ---------------------------------------------------------------- plain & auto

#[test]
fn plain_strips_one_carriage_return_and_uses_read_time() {
    let mut f = Feeder::new(SourceFormat::Plain, 1024);
    let out = f.feed_all(["dos\r", "two\r\r", "", "unix"]);
    let texts: Vec<_> = out.iter().map(Line::text).collect();
    assert_eq!(texts, ["dos", "two\r", "", "unix"]);
    assert!(out.iter().all(|l| l.timestamp == NOW && l.stream.is_none()));
    assert!(out.iter().all(|l| l.flags.is_empty()));
    assert_eq!(f.decoder.take_stats(), DecodeStats::default());
}

#[test]
fn plain_line_over_the_limit_is_cut() {
    let mut f = Feeder::new(SourceFormat::Plain, 4);
    let got = f.feed("abcdefgh");
    assert_eq!(got[0].text(), "abcd");
    assert!(got[0].flags.contains(LineFlags::TRUNCATED));
    assert_eq!(f.decoder.take_stats().dropped_bytes, 4);
}

#[test]
fn auto_detects_each_format_from_the_first_line() {
    let cases: [(Vec<String>, DetectedFormat); 3] = [
        (
            vec![format!("{T} stdout F cri"), r#"{"log":"x\n"}"#.to_string()],
            DetectedFormat::Cri,
        ),
        (
            vec![docker(r"docker\n", "stdout"), format!("{T} stdout F cri")],
            DetectedFormat::Docker,
        ),
        (
            vec!["plain".to_string(), format!("{T} stdout F looks like cri")],
            DetectedFormat::Plain,
        ),
    ];
    for (lines, format) in cases {
        let mut f = Feeder::new(SourceFormat::Auto, 1024);
        assert_eq!(f.decoder.format(), None);
        let out = f.feed_all(&lines).to_vec();
        assert_eq!(f.decoder.format(), Some(format));
        assert!(out[0].flags.is_empty());
        // The second line is in another format: it stays in the detected one.
        let expect_second = match format {
            DetectedFormat::Plain => LineFlags::empty(),
            _ => LineFlags::UNPARSED,
        };
        assert_eq!(out[1].flags, expect_second, "{format:?}");
        assert_eq!(out[1].text(), lines[1]);
    }
}

#[test]
fn auto_waits_past_blank_lines() {
    let mut f = Feeder::new(SourceFormat::Auto, 1024);
    let out = f
        .feed_all(["", "\r", format!("{T} stdout F x").as_str()])
        .to_vec();
    assert_eq!(f.decoder.format(), Some(DetectedFormat::Cri));
    assert_eq!(out.len(), 3);
    assert_eq!(out[2].text(), "x");
    assert!(out.iter().all(|l| l.flags.is_empty()));
}

// ---------------------------------------------------------------- finish & reset

#[test]
fn finish_emits_a_held_line_once() {
    let mut f = Feeder::new(SourceFormat::Cri, 1024);
    assert!(f.finish().is_empty(), "nothing held, nothing emitted");
    f.feed(format!("{T} stdout P part one "));
    f.feed(format!("{T} stdout P two"));
    let got = f.finish();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text(), "part one two");
    assert_eq!(got[0].flags, LineFlags::INCOMPLETE);
    assert_eq!((got[0].offset, got[0].end), (0, f.offset));
    assert!(!f.decoder.has_partial());
    assert!(f.finish().is_empty());
}

#[test]
fn reset_forgets_the_partial_and_keeps_the_format() {
    let mut f = Feeder::new(SourceFormat::Auto, 1024);
    f.feed(docker("chunk", "stdout"));
    assert!(f.decoder.has_partial());
    f.decoder.reset();
    assert!(!f.decoder.has_partial());
    assert!(f.finish().is_empty());
    // Still docker: a CRI line after the truncation is not re-detected.
    let got = f.feed(format!("{T} stdout F x"));
    assert_eq!(got[0].flags, LineFlags::UNPARSED);
    let got = f.feed(docker(r"fresh\n", "stdout"));
    assert_eq!(got[0].text(), "fresh");
}

// ---------------------------------------------------------------- properties

/// A random mix of every kind of line, through every format, with small
/// limits: output tiles the input, respects the limit, and nothing is held
/// after `finish`.
#[test]
fn random_mixes_tile_the_input_and_respect_the_limit() {
    let mut rng = fastrand::Rng::with_seed(42);
    let kinds = |rng: &mut fastrand::Rng| -> String {
        let body: String = (0..rng.usize(0..40))
            .map(|_| ['a', 'é', '中', ' ', '\\', '"', '😀'][rng.usize(0..7)])
            .collect();
        let esc = serde_json::to_string(&body).unwrap();
        let esc = &esc[1..esc.len() - 1];
        let stream = if rng.bool() { "stdout" } else { "stderr" };
        match rng.u8(0..6) {
            0 => format!("{T} {stream} F {body}"),
            1 => format!("{T} {stream} P {body}"),
            2 => docker(&format!(r"{esc}\n"), stream),
            3 => docker(esc, stream),
            4 => body,
            _ => format!("{{\"log\":\"{body}"),
        }
    };
    for round in 0..300 {
        let format = [
            SourceFormat::Auto,
            SourceFormat::Cri,
            SourceFormat::Docker,
            SourceFormat::Plain,
        ][round % 4];
        let max = rng.usize(1..64);
        let mut f = Feeder::new(format, max);
        for _ in 0..rng.usize(1..50) {
            let line = kinds(&mut rng);
            f.feed_with(line.as_bytes(), rng.u8(0..20) == 0);
        }
        f.finish();
        assert!(!f.decoder.has_partial());
        assert_tiles(&f.out, f.offset);
        assert!(f.out.iter().all(|l| l.message.len() <= max));
        let truncated = f
            .out
            .iter()
            .filter(|l| l.flags.contains(LineFlags::TRUNCATED))
            .count() as u64;
        assert_eq!(f.decoder.take_stats().truncated_lines, truncated);
    }
}
