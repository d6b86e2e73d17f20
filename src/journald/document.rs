//! Journal entries → bulk items (`create` action + ECS document).
//!
//! ```text
//! {"create":{"_index":"logs-2026.11.26","_id":"<22 chars>"}}\n
//! {"@timestamp":"2026-11-26T01:02:03.123456000Z","message":"Started …",
//!  "process":{"pid":412},"systemd":{"unit":"ssh.service"},
//!  "host":{"name":"node-1","hostname":"node-1.example"},
//!  "journald":{"__CURSOR":"s=…","_BOOT_ID":"…","_COMM":"sshd",…,
//!              "base64":{"FIELD":"<standard base64 of the raw bytes>"}},
//!  "log":{"syslog":{"priority":6},"level":"info","flags":["invalid_utf8"]},
//!  "agent":{"type":"logship","version":"…"}}\n
//! ```
//!
//! * `@timestamp` is `__REALTIME_TIMESTAMP` (when journald received the
//!   entry; falls back to the cursor's `t=`), so a re-read entry gets the
//!   same index; `_id` is [`JournalIdKey`] of the node, the cursor's seqnum
//!   id and boot id, and the seqnum.
//! * Mapped fields: `MESSAGE` → `message`, `PRIORITY` → `log.syslog.priority`
//!   and `log.level` (`emerg` … `debug`), `_PID` → `process.pid`,
//!   `_SYSTEMD_UNIT` → `systemd.unit`, `_HOSTNAME` → `host.hostname`
//!   (`host.name` is the node name, as for files). Every other field goes
//!   under `journald.` with its journal name (`journald._COMM`,
//!   `journald.SYSLOG_IDENTIFIER`, `journald.__CURSOR`); journal field names
//!   are `[A-Z0-9_]`, so they never collide with `base64`. A PRIORITY or
//!   `_PID` that does not parse, and a mapped field given more than once,
//!   is kept under `journald.` as well.
//! * A field given more than once becomes a JSON array (in order).
//! * Binary values: a value that is valid UTF-8 (newlines, control
//!   characters) is a plain JSON string. One that is not is written with
//!   invalid sequences replaced by U+FFFD (as file lines are), the entry is
//!   flagged `log.flags: ["invalid_utf8"]`, and the exact bytes are kept as
//!   standard base64 in `journald.base64.<FIELD>` (an array if repeated):
//!   nothing is lost, and the readable text stays searchable.

use base64::Engine;

use super::cursor::Cursor;
use super::export::FieldRange;
use crate::encode::{
    FieldTemplate, IndexName, IndexTemplateError, JournalIdKey, TimestampFormatter,
    escape_bytes_lossy, is_utf8, write_json_str,
};
use crate::event::{EncodedSpan, Timestamp};

/// What encoding one entry found out.
#[derive(Debug)]
pub struct Encoded {
    pub cursor: Cursor,
    pub invalid_utf8: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("journal entry without a valid __CURSOR")]
    NoCursor,
}

/// Writes bulk items for journal entries of one source.
#[derive(Debug)]
pub struct JournalEncoder {
    node_name: String,
    /// `,"host":{"name":"<node>"`
    host_part: Box<[u8]>,
    /// `,"agent":{"type":"logship","version":"…"}}\n`
    agent_part: Box<[u8]>,
    index: IndexName,
    /// `{"create":{"_index":"<name>","_id":"` and the index version it is for.
    action_prefix: Vec<u8>,
    action_version: u64,
    timestamps: TimestampFormatter,
    /// The key of the last entry's seqnum id and boot id.
    id_key: Option<(String, String, JournalIdKey)>,
    /// Non-UTF-8 values of the entry being written: (name, value) ranges.
    binary: Vec<usize>,
}

const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

impl JournalEncoder {
    /// `index_template` as `sink.elasticsearch.index`; `{field}`
    /// placeholders other than `host.name` take their fallback.
    pub fn new(node_name: &str, index_template: &str) -> Result<Self, IndexTemplateError> {
        let fields = FieldTemplate::parse(index_template)?;
        let template = fields.resolve(&|key| (key == "host.name").then_some(node_name));
        let mut host_part = br#","host":{"name":"#.to_vec();
        write_json_str(&mut host_part, node_name);
        let mut agent_part = br#","agent":{"type":"logship","version":"#.to_vec();
        write_json_str(&mut agent_part, env!("CARGO_PKG_VERSION"));
        agent_part.extend_from_slice(b"}}\n");
        Ok(JournalEncoder {
            node_name: node_name.to_owned(),
            host_part: host_part.into_boxed_slice(),
            agent_part: agent_part.into_boxed_slice(),
            index: IndexName::new(template),
            action_prefix: Vec::new(),
            action_version: 0,
            timestamps: TimestampFormatter::default(),
            id_key: None,
            binary: Vec::new(),
        })
    }

    /// Appends the bulk item of the entry whose `fields` index `buf`.
    pub fn encode(
        &mut self,
        buf: &[u8],
        fields: &[FieldRange],
        out: &mut EncodedSpan,
    ) -> Result<Encoded, EntryError> {
        let name = |f: &FieldRange| &buf[f.name.clone()];
        let value = |f: &FieldRange| &buf[f.value.clone()];
        let first = |n: &[u8]| fields.iter().find(|f| name(f) == n).map(value);
        let count = |n: &[u8]| fields.iter().filter(|f| name(f) == n).count();

        let cursor = first(b"__CURSOR")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(Cursor::parse)
            .ok_or(EntryError::NoCursor)?;
        let realtime = first(b"__REALTIME_TIMESTAMP")
            .and_then(parse_u64)
            .unwrap_or(cursor.realtime_usec);
        let ts = Timestamp {
            secs: i64::try_from(realtime / 1_000_000).unwrap_or(i64::MAX),
            nanos: (realtime % 1_000_000) as u32 * 1000,
        };
        let key = match &self.id_key {
            Some((s, b, key)) if *s == cursor.seqnum_id && *b == cursor.boot_id => *key,
            _ => {
                let key = JournalIdKey::new(&self.node_name, &cursor.seqnum_id, &cursor.boot_id);
                self.id_key = Some((cursor.seqnum_id.clone(), cursor.boot_id.clone(), key));
                key
            }
        };

        out.items.push(out.body.len() as u32);
        let body = &mut out.body;
        let (index, version) = self.index.for_event(ts);
        if version != self.action_version {
            self.action_prefix.clear();
            self.action_prefix
                .extend_from_slice(br#"{"create":{"_index":"#);
            write_json_str(&mut self.action_prefix, index);
            self.action_prefix.extend_from_slice(br#","_id":""#);
            self.action_version = version;
        }
        body.extend_from_slice(&self.action_prefix);
        body.extend_from_slice(key.document_id(cursor.seqnum).as_bytes());
        body.extend_from_slice(b"\"}}\n");

        body.extend_from_slice(br#"{"@timestamp":""#);
        body.extend_from_slice(self.timestamps.format(ts));
        body.push(b'"');
        let mut invalid = false;
        let single = |n: &[u8]| count(n) == 1;
        if let Some(message) = first(b"MESSAGE") {
            body.extend_from_slice(br#","message":"#);
            invalid |= write_value(body, message);
        }
        let pid = first(b"_PID").and_then(parse_u64);
        if let Some(pid) = pid {
            body.extend_from_slice(format!(r#","process":{{"pid":{pid}}}"#).as_bytes());
        }
        if let Some(unit) = first(b"_SYSTEMD_UNIT") {
            body.extend_from_slice(br#","systemd":{"unit":"#);
            invalid |= write_value(body, unit);
            body.push(b'}');
        }
        body.extend_from_slice(&self.host_part);
        if let Some(hostname) = first(b"_HOSTNAME") {
            body.extend_from_slice(br#","hostname":"#);
            invalid |= write_value(body, hostname);
        }
        body.push(b'}');
        let priority = first(b"PRIORITY")
            .and_then(parse_u64)
            .filter(|p| *p < LEVELS.len() as u64);

        // journald.*: every field not mapped above, arrays for repeats.
        self.binary.clear();
        let mut opened = false;
        for (i, f) in fields.iter().enumerate() {
            let n = name(f);
            let mapped = match n {
                b"MESSAGE" | b"_SYSTEMD_UNIT" | b"_HOSTNAME" | b"__REALTIME_TIMESTAMP" => single(n),
                b"_PID" => pid.is_some() && single(n),
                b"PRIORITY" => priority.is_some() && single(n),
                _ => false,
            };
            if mapped || fields[..i].iter().any(|g| name(g) == n) {
                continue;
            }
            body.extend_from_slice(if opened { b"," } else { br#","journald":{"# });
            opened = true;
            body.push(b'"');
            escape_bytes_lossy(body, n);
            body.extend_from_slice(b"\":");
            let repeated = fields[i + 1..].iter().any(|g| name(g) == n);
            if repeated {
                body.push(b'[');
            }
            for (j, g) in fields.iter().enumerate().skip(i) {
                if name(g) != n {
                    continue;
                }
                if j > i {
                    body.push(b',');
                }
                if write_value(body, value(g)) {
                    invalid = true;
                    self.binary.push(j);
                }
            }
            if repeated {
                body.push(b']');
            }
        }
        // Mapped fields that were not valid UTF-8 keep their bytes too.
        for (j, f) in fields.iter().enumerate() {
            let n = name(f);
            let is_mapped = matches!(n, b"MESSAGE" | b"_SYSTEMD_UNIT" | b"_HOSTNAME") && single(n);
            if is_mapped && !is_utf8(value(f)) {
                self.binary.push(j);
            }
        }
        if !self.binary.is_empty() {
            self.binary.sort_unstable();
            body.extend_from_slice(if opened { b"," } else { br#","journald":{"# });
            opened = true;
            body.extend_from_slice(br#""base64":{"#);
            let b64 = base64::engine::general_purpose::STANDARD;
            for (k, &i) in self.binary.iter().enumerate() {
                let n = name(&fields[i]);
                if self.binary[..k].iter().any(|&j| name(&fields[j]) == n) {
                    continue;
                }
                if k > 0 {
                    body.push(b',');
                }
                body.push(b'"');
                escape_bytes_lossy(body, n);
                body.extend_from_slice(b"\":");
                let repeated = count(n) > 1;
                if repeated {
                    body.push(b'[');
                }
                let values = self.binary[k..].iter().filter(|&&j| name(&fields[j]) == n);
                for (m, &j) in values.enumerate() {
                    if m > 0 {
                        body.push(b',');
                    }
                    body.push(b'"');
                    body.extend_from_slice(b64.encode(value(&fields[j])).as_bytes());
                    body.push(b'"');
                }
                if repeated {
                    body.push(b']');
                }
            }
            body.push(b'}');
        }
        if opened {
            body.push(b'}');
        }
        if priority.is_some() || invalid {
            body.extend_from_slice(br#","log":{"#);
            if let Some(p) = priority {
                body.extend_from_slice(
                    format!(
                        r#""syslog":{{"priority":{p}}},"level":"{}""#,
                        LEVELS[p as usize]
                    )
                    .as_bytes(),
                );
            }
            if invalid {
                if priority.is_some() {
                    body.push(b',');
                }
                body.extend_from_slice(br#""flags":["invalid_utf8"]"#);
            }
            body.push(b'}');
        }
        body.extend_from_slice(&self.agent_part);
        Ok(Encoded {
            cursor,
            invalid_utf8: invalid,
        })
    }
}

/// Writes `bytes` as a JSON string (invalid UTF-8 replaced); returns
/// whether anything was replaced.
fn write_value(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    out.push(b'"');
    let replaced = escape_bytes_lossy(out, bytes);
    out.push(b'"');
    replaced
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::super::export::parse_entry;
    use super::*;

    const CURSOR: &str = "s=777c20a2db2d46189dbb1993e98e951d;i=5;b=22222222222222222222222222222222;m=1388;t=60a24181e4005;x=77773c05bb42c3c";

    fn export(fields: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            if value.contains(&b'\n') || !is_utf8(value) {
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value);
                out.push(b'\n');
            } else {
                out.extend_from_slice(format!("{name}=").as_bytes());
                out.extend_from_slice(value);
                out.push(b'\n');
            }
        }
        out.push(b'\n');
        out
    }

    fn encode(fields: &[(&str, &[u8])]) -> (serde_json::Value, serde_json::Value) {
        let buf = export(fields);
        let mut ranges = Vec::new();
        parse_entry(&buf, &mut ranges).unwrap().unwrap();
        let mut enc = JournalEncoder::new("node-1", "logs-%Y.%m.%d").unwrap();
        let mut span = EncodedSpan::default();
        enc.encode(&buf, &ranges, &mut span).unwrap();
        let text = String::from_utf8(span.body.clone()).expect("valid UTF-8");
        let mut lines = text.lines();
        let action = serde_json::from_str(lines.next().unwrap()).unwrap();
        let doc = serde_json::from_str(lines.next().unwrap()).unwrap();
        (action, doc)
    }

    #[test]
    fn ecs_fields_and_the_rest_under_journald() {
        let (action, doc) = encode(&[
            ("__CURSOR", CURSOR.as_bytes()),
            ("__REALTIME_TIMESTAMP", b"1700000000123456"),
            ("_BOOT_ID", b"22222222222222222222222222222222"),
            ("PRIORITY", b"3"),
            ("_PID", b"412"),
            ("_SYSTEMD_UNIT", b"ssh.service"),
            ("_HOSTNAME", b"h1"),
            ("_COMM", b"sshd"),
            ("MESSAGE", b"line one\nline two"),
            ("TAG", b"a"),
            ("TAG", b"b"),
        ]);
        assert_eq!(action["create"]["_index"], "logs-2023.11.14");
        assert_eq!(action["create"]["_id"].as_str().unwrap().len(), 22);
        assert_eq!(doc["@timestamp"], "2023-11-14T22:13:20.123456000Z");
        assert_eq!(doc["message"], "line one\nline two");
        assert_eq!(doc["log"]["syslog"]["priority"], 3);
        assert_eq!(doc["log"]["level"], "err");
        assert_eq!(doc["process"]["pid"], 412);
        assert_eq!(doc["systemd"]["unit"], "ssh.service");
        assert_eq!(doc["host"]["name"], "node-1");
        assert_eq!(doc["host"]["hostname"], "h1");
        assert_eq!(doc["journald"]["_COMM"], "sshd");
        assert_eq!(doc["journald"]["__CURSOR"], CURSOR);
        assert_eq!(doc["journald"]["TAG"], serde_json::json!(["a", "b"]));
        assert!(doc["journald"].get("MESSAGE").is_none());
        assert!(doc["log"].get("flags").is_none());
    }

    #[test]
    fn non_utf8_values_are_readable_and_kept_exactly_in_base64() {
        let raw: &[u8] = b"bin\xff\x00x";
        let (_, doc) = encode(&[
            ("__CURSOR", CURSOR.as_bytes()),
            ("MESSAGE", raw),
            ("BLOB", b"\xfe\xfd"),
            ("BLOB", b"ok"),
            ("PRIORITY", b"loud"),
        ]);
        assert_eq!(doc["message"], "bin\u{fffd}\u{0}x");
        assert_eq!(doc["log"]["flags"], serde_json::json!(["invalid_utf8"]));
        let b64 = base64::engine::general_purpose::STANDARD;
        let kept = doc["journald"]["base64"]["MESSAGE"].as_str().unwrap();
        assert_eq!(b64.decode(kept).unwrap(), raw);
        let blobs = doc["journald"]["base64"]["BLOB"].as_array().unwrap();
        assert_eq!(blobs.len(), 1, "only the non-UTF-8 value: {doc}");
        assert_eq!(b64.decode(blobs[0].as_str().unwrap()).unwrap(), b"\xfe\xfd");
        assert_eq!(doc["journald"]["PRIORITY"], "loud");
        assert!(doc["log"].get("syslog").is_none());
    }

    #[test]
    fn the_id_is_the_same_for_the_same_entry_and_differs_by_seqnum_and_node() {
        let id = |node: &str, cursor: &str| {
            let buf = export(&[("__CURSOR", cursor.as_bytes()), ("MESSAGE", b"m")]);
            let mut ranges = Vec::new();
            parse_entry(&buf, &mut ranges).unwrap().unwrap();
            let mut enc = JournalEncoder::new(node, "logs").unwrap();
            let mut span = EncodedSpan::default();
            enc.encode(&buf, &ranges, &mut span).unwrap();
            let action: serde_json::Value =
                serde_json::from_slice(span.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
            action["create"]["_id"].as_str().unwrap().to_owned()
        };
        let other_seqnum = CURSOR.replace(";i=5;", ";i=6;");
        // The cursor's hash part may differ for the same entry read from
        // another file copy; only s, i and b count.
        let same_entry = CURSOR.replace("x=77773c05bb42c3c", "x=1");
        assert_eq!(id("n", CURSOR), id("n", &same_entry));
        assert_ne!(id("n", CURSOR), id("n", &other_seqnum));
        assert_ne!(id("n", CURSOR), id("m", CURSOR));
        let buf = export(&[("MESSAGE", b"no cursor")]);
        let mut ranges = Vec::new();
        parse_entry(&buf, &mut ranges).unwrap().unwrap();
        let mut enc = JournalEncoder::new("n", "logs").unwrap();
        let err = enc.encode(&buf, &ranges, &mut EncodedSpan::default());
        assert_eq!(err.unwrap_err(), EntryError::NoCursor);
    }
}
