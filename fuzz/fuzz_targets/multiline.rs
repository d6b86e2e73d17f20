#![no_main]
//! Arbitrary lines through the multiline joiner (`decode::multiline`).
//!
//! Input: byte 0 picks the rule (java, python, go, ruby, or a custom
//! `start`/`continue` pair), byte 1 `max_lines` (1–256), byte 2 `max_bytes`
//! in KiB (1–256); the rest is split at `\n` into lines, a line beginning
//! with `\x01` going to stderr (the byte removed). Checks: no panic; every
//! line comes out once, in order per stream, never mixed with the other
//! stream; an event's offset is its first line's and its end its last
//! line's; `multiline` flags exactly the events of several lines; no event
//! over `max_lines`; the held-back offset never passes an open group.

use libfuzzer_sys::fuzz_target;
use logship::decode::multiline::{Builtin, Joiner, MultilineConfig, RuleSpec};
use logship::event::{DecodedLine, LineFlags, Stream, Timestamp};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (max_lines, max_bytes) = (usize::from(data[1]) + 1, (usize::from(data[2]) + 1) << 10);
    let rule = match data[0] % 5 {
        4 => RuleSpec::Custom {
            start: Some(r"^\S".into()),
            cont: Some(r"^\s".into()),
        },
        r => RuleSpec::Builtin([Builtin::Java, Builtin::Python, Builtin::Go, Builtin::Ruby][r as usize]),
    };
    let config = MultilineConfig {
        rule,
        max_lines,
        max_bytes,
        timeout: std::time::Duration::from_secs(1),
    };
    // Compiling the patterns costs more than a run: once per rule.
    thread_local! {
        static RULES: std::cell::RefCell<std::collections::HashMap<u8, std::sync::Arc<logship::decode::multiline::Rules>>> =
            Default::default();
    }
    let rules = RULES.with(|r| {
        r.borrow_mut()
            .entry(data[0] % 5)
            .or_insert_with(|| config.compile().expect("built-in and fixed rules compile"))
            .with_limits(max_lines, max_bytes)
    });
    let mut joiner = Joiner::new(rules);
    // (stream, offset, end, message) per input line.
    let mut lines = Vec::new();
    let mut offset = 0u64;
    for raw in data[3..].split(|&b| b == b'\n') {
        let (stream, msg) = match raw.split_first() {
            Some((1, rest)) => (Stream::Stderr, rest),
            _ => (Stream::Stdout, raw),
        };
        let end = offset + raw.len() as u64 + 1;
        lines.push((stream, offset, end, msg.to_vec()));
        offset = end;
    }
    // (stream, offset, end, message, flags) per event.
    let mut events: Vec<(Stream, u64, u64, Vec<u8>, LineFlags)> = Vec::new();
    for (stream, offset, end, msg) in &lines {
        joiner.push(
            &DecodedLine {
                timestamp: Timestamp::default(),
                stream: Some(*stream),
                message: msg,
                flags: LineFlags::empty(),
                offset: *offset,
                end: *end,
            },
            &mut |d| {
                events.push((
                    d.stream.expect("a stream"),
                    d.offset,
                    d.end,
                    d.message.to_vec(),
                    d.flags,
                ))
            },
        );
        if let Some(held) = joiner.safe_offset() {
            assert!(held <= *offset, "held back past a line not handed out");
        }
    }
    joiner.flush(&mut |d| {
        events.push((d.stream.expect("a stream"), d.offset, d.end, d.message.to_vec(), d.flags))
    });
    assert_eq!(joiner.safe_offset(), None);
    for stream in [Stream::Stdout, Stream::Stderr] {
        let input: Vec<&(Stream, u64, u64, Vec<u8>)> =
            lines.iter().filter(|l| l.0 == stream).collect();
        let mut out: Vec<&(Stream, u64, u64, Vec<u8>, LineFlags)> =
            events.iter().filter(|e| e.0 == stream).collect();
        out.sort_by_key(|e| e.1);
        let mut i = 0;
        for (_, offset, end, message, flags) in out {
            let parts: Vec<&[u8]> = if input.get(i).is_some_and(|l| l.3.contains(&b'\n')) {
                unreachable!("input lines have no newline")
            } else {
                message.split(|&b| b == b'\n').collect()
            };
            assert!(parts.len() <= max_lines, "over max_lines");
            assert_eq!(flags.contains(LineFlags::MULTILINE), parts.len() > 1);
            assert_eq!(*offset, input[i].1, "an event's offset is its first line's");
            for part in &parts {
                assert_eq!(*part, input[i].3.as_slice(), "lines in order, once");
                i += 1;
            }
            assert_eq!(*end, input[i - 1].2, "an event's end is its last line's");
        }
        assert_eq!(i, input.len(), "every line handed out");
    }
});
