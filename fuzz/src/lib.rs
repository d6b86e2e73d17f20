//! The harness shared by the fuzz targets: arbitrary bytes, split into
//! lines the way the reader splits a file, go through a `LineDecoder`, and
//! the decoder's promises are checked on what comes out.

use logship::config::SourceFormat;
use logship::decode::LineDecoder;
use logship::event::{LineFlags, Timestamp};

/// Decode `data` and panic if an invariant breaks.
///
/// The first byte picks `max_line_bytes` (1..=256, small so that cutting is
/// exercised), the second which lines the reader reports as cut; the rest is
/// the file, split at `\n` (a last line without `\n` counts as a line).
pub fn check(format: SourceFormat, data: &[u8]) {
    let [limit, cut_mask, file @ ..] = data else {
        return;
    };
    let max_line_bytes = 1 + usize::from(*limit);
    let now = Timestamp {
        secs: 1_800_000_000,
        nanos: 0,
    };
    let mut decoder = LineDecoder::new(format, max_line_bytes);

    // Expected next offset: emitted ranges must tile the file.
    let mut at = 0u64;
    let mut truncated = 0u64;
    let mut unparsed = 0u64;
    let mut emit = |l: &logship::event::DecodedLine<'_>| {
        assert_eq!(l.offset, at, "emitted lines must tile the input in order");
        assert!(l.end > l.offset, "empty range {}..{}", l.offset, l.end);
        assert!(
            l.message.len() <= max_line_bytes,
            "message of {} bytes over the limit {max_line_bytes}",
            l.message.len()
        );
        truncated += u64::from(l.flags.contains(LineFlags::TRUNCATED));
        unparsed += u64::from(l.flags.contains(LineFlags::UNPARSED));
        at = l.end;
    };

    let mut offset = 0u64;
    for (i, line) in file.split(|&b| b == b'\n').enumerate() {
        let next = offset + line.len() as u64 + 1;
        let cut = cut_mask & (1 << (i % 8)) != 0 && i % 3 == 0;
        decoder.decode(line, offset, next, cut, now, &mut emit);
        offset = next;
    }
    decoder.finish(now, &mut emit);
    assert!(!decoder.has_partial(), "finish must release the held line");
    assert_eq!(at, offset, "every line must be emitted by finish");
    let stats = decoder.take_stats();
    assert_eq!(stats.truncated_lines, truncated);
    assert_eq!(stats.unparsed_lines, unparsed);
}

/// Differential check of the docker scanner against serde_json: a line that
/// serde_json reads as an object with a string `log` must decode to exactly
/// that string (minus one final `\n`).
pub fn check_docker_against_serde(line: &[u8]) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(line)
    else {
        return;
    };
    // serde_json keeps the last of repeated keys; the scanner reads the
    // first `log` (docker never repeats one): no common answer to check.
    if serde_json::from_slice::<TopKeys>(line).is_ok_and(|k| k.repeated) {
        return;
    }
    let Some(serde_json::Value::String(log)) = map.get("log") else {
        return;
    };
    let mut decoder = LineDecoder::new(SourceFormat::Docker, usize::MAX / 2);
    let mut got = Vec::new();
    let now = Timestamp::default();
    decoder.decode(line, 0, line.len() as u64 + 1, false, now, &mut |l| {
        assert!(
            l.flags.is_empty(),
            "valid docker line flagged {:?}",
            l.flags
        );
        got.push(l.message.to_vec());
    });
    decoder.finish(now, &mut |l| got.push(l.message.to_vec()));
    let want = log.strip_suffix('\n').unwrap_or(log);
    assert_eq!(got, [want.as_bytes()]);
}

/// Whether an object's top-level keys repeat.
struct TopKeys {
    repeated: bool,
}

impl<'de> serde::Deserialize<'de> for TopKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TopKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TopKeys, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut repeated = false;
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    repeated |= !seen.insert(key);
                }
                Ok(TopKeys { repeated })
            }
        }
        d.deserialize_map(V)
    }
}
