//! Encoder tests: every item parses back as the bulk pair we promise.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::event::Timestamp;

const NODE: &str = "node-1";
const FILE: FileIdentity = FileIdentity {
    dev: 64769,
    ino: 42,
    fingerprint: 0x0123_4567_89ab_cdef,
};
const PATH: &str = "/var/log/pods/ns_pod_uid/app/0.log";

fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, nanos: u32) -> Timestamp {
    Timestamp {
        secs: Utc
            .with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp(),
        nanos,
    }
}

fn line(message: &[u8], offset: u64) -> DecodedLine<'_> {
    DecodedLine {
        timestamp: ts(2026, 11, 26, 1, 2, 3, 123_456_789),
        stream: Some(Stream::Stdout),
        message,
        flags: LineFlags::empty(),
        offset,
        end: offset + message.len() as u64 + 1,
    }
}

/// The action and document of item `i`, parsed, after checking the item is
/// exactly two `\n`-terminated lines.
fn parse_item(span: &EncodedSpan, i: usize) -> (Value, Value) {
    let item = span.item(i);
    assert_eq!(item.last(), Some(&b'\n'), "item ends with a newline");
    let text = std::str::from_utf8(item).expect("item is UTF-8");
    let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
    assert_eq!(lines.len(), 2, "action line + document line: {text:?}");
    let action = serde_json::from_str(lines[0]).expect("action line is JSON");
    let doc = serde_json::from_str(lines[1]).expect("document line is JSON");
    (action, doc)
}

fn encode_one(
    encoder: &mut Encoder,
    file: &FileContext,
    l: &DecodedLine<'_>,
) -> (Value, Value, EncodeOutcome) {
    let mut span = EncodedSpan::default();
    let outcome = encoder.encode(file, l, &mut span);
    assert_eq!(span.len(), 1);
    assert_eq!(span.items[0], 0);
    let (action, doc) = parse_item(&span, 0);
    (action, doc, outcome)
}

#[test]
fn document_has_every_field() {
    let mut encoder = Encoder::new(NODE, "logs-%Y.%m.%d").unwrap();
    let file = encoder.file_context(Path::new(PATH), FILE, 2);
    let l = line(b"hello world", 1234);
    let (action, doc, outcome) = encode_one(&mut encoder, &file, &l);

    assert_eq!(
        outcome,
        EncodeOutcome {
            invalid_utf8: false
        }
    );
    let id = document_id(NODE, FILE, 2, 1234);
    assert_eq!(
        action,
        json!({"create": {"_index": "logs-2026.11.26", "_id": id.as_str()}})
    );
    assert_eq!(
        doc,
        json!({
            "@timestamp": "2026-11-26T01:02:03.123456789Z",
            "message": "hello world",
            "stream": "stdout",
            "log": {"file": {"path": PATH}, "offset": 1234},
            "host": {"name": NODE},
            "agent": {"type": "logship", "version": env!("CARGO_PKG_VERSION")},
        })
    );
}

#[test]
fn messages_round_trip_through_json() {
    let mut encoder = Encoder::new(NODE, "logs-%Y.%m.%d").unwrap();
    let file = encoder.file_context(Path::new(PATH), FILE, 0);
    let messages = [
        "",
        r#"{"level":"info","msg":"said \"hi\"","path":"C:\\temp\\x"}"#,
        "tab\tnewline\ncr\rbell\u{7}nul\u{0}esc\u{1b}del\u{7f}ff\u{c}bs\u{8}unit\u{1f}",
        "Grüße aus Köln — 日本語のログ ✓",
        "emoji 😀🚀 and a ZWJ family 👨‍👩‍👧 and U+2028\u{2028}",
        "ends with a backslash \\",
        "\"",
        "a",
    ];
    let mut span = EncodedSpan::default();
    for (i, m) in messages.iter().enumerate() {
        let outcome = encoder.encode(&file, &line(m.as_bytes(), i as u64 * 100), &mut span);
        assert!(!outcome.invalid_utf8, "{m:?}");
    }
    assert_eq!(span.len(), messages.len());
    for (i, m) in messages.iter().enumerate() {
        let (_, doc) = parse_item(&span, i);
        assert_eq!(doc["message"], *m, "item {i}");
        assert_eq!(doc["log"]["offset"], i as u64 * 100);
        assert!(doc["log"].get("flags").is_none(), "no flags on valid lines");
    }
}

#[test]
fn invalid_utf8_is_replaced_and_flagged() {
    let mut encoder = Encoder::new(NODE, "logs").unwrap();
    let file = encoder.file_context(Path::new(PATH), FILE, 0);
    let raw: &[u8] = b"bad \xff\xfe byte, cut \xe6\x97 char, \"quoted\"\n";
    let (_, doc, outcome) = encode_one(&mut encoder, &file, &line(raw, 7));
    assert_eq!(outcome, EncodeOutcome { invalid_utf8: true });
    assert_eq!(doc["message"], String::from_utf8_lossy(raw).as_ref());
    assert!(doc["message"].as_str().unwrap().contains('\u{FFFD}'));
    assert_eq!(doc["log"]["flags"], json!(["invalid_utf8"]));
}

#[test]
fn stream_is_omitted_when_unknown_and_named_otherwise() {
    let mut encoder = Encoder::new(NODE, "logs").unwrap();
    let file = encoder.file_context(Path::new(PATH), FILE, 0);
    for (stream, want) in [
        (None, None),
        (Some(Stream::Stdout), Some("stdout")),
        (Some(Stream::Stderr), Some("stderr")),
    ] {
        let l = DecodedLine {
            stream,
            ..line(b"x", 0)
        };
        let (_, doc, _) = encode_one(&mut encoder, &file, &l);
        assert_eq!(doc.get("stream").and_then(Value::as_str), want);
    }
}

#[test]
fn flags_are_listed_by_name_in_order() {
    let mut encoder = Encoder::new(NODE, "logs").unwrap();
    let file = encoder.file_context(Path::new(PATH), FILE, 0);
    let flags = LineFlags::TRUNCATED.union(LineFlags::INCOMPLETE);
    let l = DecodedLine {
        flags,
        ..line(b"cut", 0)
    };
    let (_, doc, _) = encode_one(&mut encoder, &file, &l);
    assert_eq!(doc["log"]["flags"], json!(["truncated", "incomplete"]));

    // Our own invalid_utf8 joins the decoder's flags in LineFlags order.
    let l = DecodedLine {
        flags: LineFlags::TRUNCATED.union(LineFlags::UNPARSED),
        ..line(b"\xc0", 0)
    };
    let (_, doc, _) = encode_one(&mut encoder, &file, &l);
    let want: Vec<&str> = LineFlags::TRUNCATED
        .union(LineFlags::UNPARSED)
        .union(LineFlags::INVALID_UTF8)
        .names()
        .collect();
    assert_eq!(doc["log"]["flags"], json!(want));
    assert_eq!(want, ["truncated", "invalid_utf8", "unparsed"]);
}

#[test]
fn timestamps_are_rfc3339_nanos_utc() {
    let mut encoder = Encoder::new(NODE, "logs").unwrap();
    let file = encoder.file_context(Path::new(PATH), FILE, 0);
    let mut rng = fastrand::Rng::with_seed(9);
    let end = Utc
        .with_ymd_and_hms(2200, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    for _ in 0..500 {
        let timestamp = Timestamp {
            secs: rng.i64(0..end),
            nanos: rng.u32(0..1_000_000_000),
        };
        let l = DecodedLine {
            timestamp,
            ..line(b"t", 0)
        };
        let (_, doc, _) = encode_one(&mut encoder, &file, &l);
        let want = DateTime::from_timestamp(timestamp.secs, timestamp.nanos)
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::Nanos, true);
        assert_eq!(doc["@timestamp"], want);
    }
}

#[test]
fn paths_and_node_names_are_escaped() {
    let node = "node \"quoted\" \\ é";
    let mut encoder = Encoder::new(node, "logs").unwrap();
    let path = OsStr::from_bytes(b"/var/log/we\"ird\\dir/bad\xffname\n.log");
    let file = encoder.file_context(Path::new(path), FILE, 0);
    let (_, doc, outcome) = encode_one(&mut encoder, &file, &line(b"m", 0));
    assert!(
        !outcome.invalid_utf8,
        "the path's bytes are not the message's"
    );
    assert!(doc["log"].get("flags").is_none());
    assert_eq!(
        doc["log"]["file"]["path"],
        String::from_utf8_lossy(path.as_bytes()).as_ref()
    );
    assert_eq!(doc["host"]["name"], node);
}

#[test]
fn ids_follow_node_file_generation_and_offset() {
    let mut encoder = Encoder::new(NODE, "logs").unwrap();
    let gen0 = encoder.file_context(Path::new(PATH), FILE, 0);
    let gen1 = encoder.file_context(Path::new(PATH), FILE, 1);
    let renamed = encoder.file_context(Path::new("/elsewhere/0.log.20261126"), FILE, 0);
    let id_of = |encoder: &mut Encoder, file: &FileContext, offset: u64| {
        let (action, _, _) = encode_one(encoder, file, &line(b"same text", offset));
        action["create"]["_id"].as_str().unwrap().to_owned()
    };
    let a = id_of(&mut encoder, &gen0, 10);
    assert_eq!(a, document_id(NODE, FILE, 0, 10).as_str());
    assert_eq!(a, id_of(&mut encoder, &gen0, 10), "same line, same id");
    assert_eq!(
        a,
        id_of(&mut encoder, &renamed, 10),
        "a rename keeps identity and ids"
    );
    assert_ne!(
        a,
        id_of(&mut encoder, &gen1, 10),
        "copytruncate: new generation, new id"
    );
    assert_ne!(a, id_of(&mut encoder, &gen0, 11));

    // Another process (a fresh encoder) on the same node agrees; another node does not.
    let mut restarted = Encoder::new(NODE, "logs").unwrap();
    let again = restarted.file_context(Path::new(PATH), FILE, 0);
    assert_eq!(a, id_of(&mut restarted, &again, 10));
    let mut other_node = Encoder::new("node-2", "logs").unwrap();
    let other = other_node.file_context(Path::new(PATH), FILE, 0);
    assert_ne!(a, id_of(&mut other_node, &other, 10));
}

#[test]
fn index_name_follows_the_event_day_across_midnight() {
    let mut encoder = Encoder::new(NODE, "logs-%Y.%m.%d").unwrap();
    let file = encoder.file_context(Path::new(PATH), FILE, 0);
    let mut span = EncodedSpan::default();
    let times = [
        ts(2026, 12, 31, 23, 59, 59, 999_999_999),
        ts(2027, 1, 1, 0, 0, 0, 0),
        ts(2027, 1, 1, 12, 0, 0, 0),
        ts(2026, 12, 31, 23, 0, 0, 0),
    ];
    for (i, timestamp) in times.iter().enumerate() {
        let l = DecodedLine {
            timestamp: *timestamp,
            ..line(b"x", i as u64)
        };
        encoder.encode(&file, &l, &mut span);
    }
    let names: Vec<String> = (0..span.len())
        .map(|i| {
            parse_item(&span, i).0["create"]["_index"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "logs-2026.12.31",
            "logs-2027.01.01",
            "logs-2027.01.01",
            "logs-2026.12.31"
        ]
    );
}

#[test]
fn items_index_the_body_and_spans_accumulate() {
    let mut encoder = Encoder::new(NODE, "logs").unwrap();
    let file = encoder.file_context(Path::new(PATH), FILE, 0);
    let mut span = EncodedSpan::default();
    let messages: Vec<String> = (0..50).map(|i| "m".repeat(i)).collect();
    for (i, m) in messages.iter().enumerate() {
        encoder.encode(&file, &line(m.as_bytes(), i as u64), &mut span);
    }
    assert_eq!(span.len(), messages.len());
    // The whole body is NDJSON: two lines per item, nothing in between.
    let lines = span
        .body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(lines, 2 * messages.len());
    for (i, m) in messages.iter().enumerate() {
        let (_, doc) = parse_item(&span, i);
        assert_eq!(doc["message"], m.as_str());
    }
}

#[test]
fn encoder_rejects_bad_templates() {
    let err = Encoder::new(NODE, "Logs-%M").unwrap_err();
    assert_eq!(err.template, "Logs-%M");
    assert!(err.to_string().contains("Logs-%M"));
}

#[test]
fn write_u64_matches_display() {
    for v in [0, 1, 9, 10, 99, 100, 1234, u64::from(u32::MAX), u64::MAX] {
        let mut out = Vec::new();
        write_u64(&mut out, v);
        assert_eq!(out, v.to_string().as_bytes());
    }
}

#[test]
fn index_fields_resolve_per_file_and_per_stream() {
    let mut encoder = Encoder::new(NODE, "logs-{kubernetes.namespace:-none}-{stream}-%Y").unwrap();
    let in_ns = encoder.file_context_with(
        Path::new(PATH),
        FILE,
        0,
        br#","kubernetes":{"namespace":"Team-A","labels":{"app.kubernetes.io/name":"web"}}"#,
    );
    let plain = encoder.file_context(Path::new(PATH), FILE, 0);
    let index_of = |encoder: &mut Encoder, file: &FileContext, stream| {
        let mut l = line(b"m", 1);
        l.stream = stream;
        let (action, _, _) = encode_one(encoder, file, &l);
        action["create"]["_index"].as_str().unwrap().to_string()
    };
    // Alternating contexts and streams never reuse a stale name.
    for _ in 0..2 {
        assert_eq!(
            index_of(&mut encoder, &in_ns, Some(Stream::Stdout)),
            "logs-team-a-stdout-2026"
        );
        assert_eq!(
            index_of(&mut encoder, &in_ns, Some(Stream::Stderr)),
            "logs-team-a-stderr-2026"
        );
        assert_eq!(
            index_of(&mut encoder, &plain, None),
            "logs-none-unknown-2026"
        );
    }
}

#[test]
fn index_fields_read_dotted_label_keys_from_the_metadata() {
    let mut encoder =
        Encoder::new(NODE, "logs-{kubernetes.labels.app.kubernetes.io/name}").unwrap();
    let file = encoder.file_context_with(
        Path::new(PATH),
        FILE,
        0,
        br#","kubernetes":{"labels":{"app.kubernetes.io/name":"Web"}}"#,
    );
    let (action, _, _) = encode_one(&mut encoder, &file, &line(b"m", 1));
    assert_eq!(action["create"]["_index"], "logs-web");
}

/// A JSON value that refuses an object with a key twice, at any depth.
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NoDuplicateKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
                Ok(NoDuplicateKeys)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    map.next_value::<NoDuplicateKeys>()?;
                }
                Ok(NoDuplicateKeys)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn assert_no_duplicate_keys(span: &EncodedSpan, i: usize) {
    let item = std::str::from_utf8(span.item(i)).unwrap();
    for line in item.lines() {
        if let Err(e) = serde_json::from_str::<NoDuplicateKeys>(line) {
            panic!("{e}: {line}");
        }
    }
}

#[test]
fn the_duplicate_key_check_can_fail() {
    assert!(serde_json::from_str::<NoDuplicateKeys>(r#"{"a":{"b":1,"b":2}}"#).is_err());
    assert!(serde_json::from_str::<NoDuplicateKeys>(r#"{"a":{"b":1,"c":[{"b":2}]}}"#).is_ok());
}

#[test]
fn json_messages_go_under_the_target_and_keep_message() {
    let mut encoder = Encoder::new(NODE, "logs-%Y.%m.%d").unwrap();
    let file = encoder
        .file_context(Path::new(PATH), FILE, 0)
        .with_json_messages("json");
    let message = b"{\"level\":\"info\",\"level\":\"warn\", \"message\":\"inner\",\n \"n\":{\"a\":[1,2.5,{\"b\":null}],\"t\":true},\"big\":123456789012345678901234567890,\"u\":\"\\u00e9\\\"\"}  ";
    let mut span = EncodedSpan::default();
    encoder.encode(&file, &line(message, 7), &mut span);
    assert_no_duplicate_keys(&span, 0);
    let (_, doc) = parse_item(&span, 0);
    assert_eq!(doc["message"], std::str::from_utf8(message).unwrap());
    let expected: Value = json!({
        "level": "warn",
        "message": "inner",
        "n": {"a": [1, 2.5, {"b": null}], "t": true},
        "big": 1.2345678901234568e29,
        "u": "é\"",
    });
    assert_eq!(doc["json"], expected);
    assert_eq!(doc["stream"], "stdout");
    assert_eq!(doc["log"]["offset"], 7);
    assert_eq!(encoder.take_json_parse_failures(), 0);

    // A dotted target is one key; Elasticsearch expands it.
    let dotted = encoder
        .file_context(Path::new(PATH), FILE, 0)
        .with_json_messages("app.payload");
    let mut span = EncodedSpan::default();
    encoder.encode(&dotted, &line(br#"{"x":1}"#, 0), &mut span);
    let (_, doc) = parse_item(&span, 0);
    assert_eq!(doc["app.payload"], json!({"x": 1}));
}

#[test]
fn messages_that_are_not_json_objects_ship_unchanged_and_are_counted() {
    let mut encoder = Encoder::new(NODE, "logs-%Y.%m.%d").unwrap();
    let file = encoder
        .file_context(Path::new(PATH), FILE, 0)
        .with_json_messages("json");
    let bad: &[&[u8]] = &[
        b"plain text",
        b"[1,2]",
        b"\"a string\"",
        b"42",
        b"{\"a\":1} trailing",
        b"{\"a\":",
        b"{\"a\":\"\xff\"}",
        b"",
    ];
    let mut span = EncodedSpan::default();
    for (i, m) in bad.iter().enumerate() {
        encoder.encode(&file, &line(m, i as u64), &mut span);
    }
    // One that parses, among them.
    encoder.encode(&file, &line(br#"{"ok":1}"#, 99), &mut span);
    assert_eq!(encoder.take_json_parse_failures(), bad.len() as u64);
    assert_eq!(encoder.take_json_parse_failures(), 0, "taken");
    for (i, m) in bad.iter().enumerate() {
        let (_, doc) = parse_item(&span, i);
        assert_eq!(doc["message"], String::from_utf8_lossy(m).as_ref());
        assert!(doc.get("json").is_none(), "{doc}");
    }
    let (_, doc) = parse_item(&span, bad.len());
    assert_eq!(doc["json"]["ok"], 1);

    // Without the setting, a JSON message is only a message.
    let plain = encoder.file_context(Path::new(PATH), FILE, 0);
    let mut span = EncodedSpan::default();
    encoder.encode(&plain, &line(br#"{"ok":1}"#, 0), &mut span);
    let (_, doc) = parse_item(&span, 0);
    assert!(doc.get("json").is_none(), "{doc}");
    assert_eq!(encoder.take_json_parse_failures(), 0);
}
