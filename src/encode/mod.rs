//! Encoding: decoded lines → bulk pairs (`create` action + ECS document).
//!
//! Owns the bytes Elasticsearch receives for each line. One [`Encoder`] per
//! tailer appends, per line, exactly one bulk item to an [`EncodedSpan`]:
//!
//! ```text
//! {"create":{"_index":"logs-2026.11.26","_id":"<22 chars>"}}\n
//! {"@timestamp":"2026-11-26T01:02:03.123456789Z","message":"…","stream":"stdout",
//!  "log":{"file":{"path":"/var/log/pods/…/0.log"},"offset":1234,"flags":["truncated"]},
//!  "host":{"name":"node-1"},"agent":{"type":"logship","version":"<crate version>"}}\n
//! ```
//!
//! (the document is one line). `stream` is omitted when unknown, `log.flags`
//! when no flag is set. Promises:
//! - every item is valid NDJSON whatever the input bytes: invalid UTF-8 in a
//!   message becomes U+FFFD and adds the `invalid_utf8` flag
//!   ([`EncodeOutcome::invalid_utf8`]); non-UTF-8 paths are converted lossily;
//! - `_id` is deterministic in (node name, file identity, generation, line
//!   offset) — see [`id`] for the stable format;
//! - `@timestamp` is RFC 3339 UTC with nine fraction digits ([`timestamp`]);
//! - the index name comes from a strftime template over `@timestamp`,
//!   validated up front and formatted at most once per day or hour
//!   ([`index`]); `{field}` placeholders in it are resolved once per file
//!   context (per stream for `{stream}`) from the fields the document
//!   carries: `host.name`, `log.file.path`, `stream`, and any field of the
//!   Kubernetes metadata given to [`Encoder::file_context_with`] (looked up
//!   by dotted path; `kubernetes.labels.<key>` takes the rest as one key).
//!
//! The hot path allocates nothing per line (it appends to the caller's
//! buffer): everything per file (`log.file.path`, `host`, `agent`, the `_id`
//! key) is serialised once in [`FileContext`], the action line prefix once
//! per index name. Kubernetes metadata (`container.*`, `kubernetes.*`) arrives
//! pre-serialised per file ([`Encoder::file_context_with`]) and is spliced in
//! after `host`.
//!
//! A file context made with [`FileContext::with_json_messages`] (a pod
//! annotated `logship.io/format: json`) also parses every message that is a
//! JSON object and writes it, compacted, as `"<target>":{…}` after `stream`
//! (`message` keeps the line as written). Keys repeated in the message keep
//! their last value, so the document never has a key twice; numbers outside
//! the 64-bit integer range become doubles. A message that is not a JSON
//! object (or not valid JSON, or nested over 128 deep) is shipped without
//! the target and counted ([`Encoder::take_json_parse_failures`]). Only such
//! files pay for the parse (and its allocations); the others see one branch
//! per line. Does not decide batch boundaries or compress.

pub mod escape;
pub mod id;
pub mod index;
pub mod timestamp;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::{DecodedLine, EncodedSpan, FileIdentity, Generation, LineFlags, Stream};

pub use escape::{escape_bytes_lossy, escape_str, is_utf8, write_json_str};
pub use id::{DOCUMENT_ID_LEN, DocumentId, FileIdKey, JournalIdKey, document_id};
pub use index::{
    FieldTemplate, Granularity, IndexName, IndexTemplate, KNOWN_FIELDS, known_field,
    validate_index_template,
};
pub use timestamp::{TIMESTAMP_LEN, TimestampFormatter, format_timestamp, timestamp_bytes};

/// Error in an index name template.
#[derive(Debug, thiserror::Error)]
#[error("invalid index template {template:?}: {reason}")]
pub struct IndexTemplateError {
    pub template: String,
    pub reason: String,
}

/// What encoding one line found out, for the caller's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOutcome {
    pub invalid_utf8: bool,
}

/// Per-file encoding state: the parts of every document that do not change
/// from line to line, serialised once.
#[derive(Clone, Debug)]
pub struct FileContext {
    id_key: FileIdKey,
    /// `,"log":{"file":{"path":"…"},"offset":`
    log_prefix: Box<[u8]>,
    /// `},"host":{"name":"…"}<extra>,"agent":{"type":"logship","version":"…"}}\n`
    /// (the `}` closes `log`; `<extra>` is the file's Kubernetes metadata).
    doc_tail: Box<[u8]>,
    /// Unique per context, so the encoder knows when its cached names are stale.
    uid: u64,
    /// For templates with fields: the template resolved for lines without a
    /// stream, stdout, stderr (in that order).
    index: Option<Arc<[IndexTemplate; 3]>>,
    /// `,"<target>":` when messages that are JSON objects are parsed into
    /// `<target>` ([`FileContext::with_json_messages`]).
    json_member: Option<Box<[u8]>>,
}

impl FileContext {
    /// The `_id` of the line of this file generation starting at `offset`
    /// (what the encoder writes; `logship audit` needs it for lines a
    /// processor drops, which are not encoded).
    pub fn document_id(&self, offset: u64) -> DocumentId {
        self.id_key.document_id(offset)
    }

    /// The index templates resolved from this file's fields (for lines
    /// without a stream, stdout, stderr), if the index template has fields.
    pub fn index(&self) -> Option<&Arc<[IndexTemplate; 3]>> {
        self.index.as_ref()
    }

    /// The same context writing to other resolved index templates (a line
    /// read again must land in the index of its first copy).
    pub fn with_index(mut self, index: Option<Arc<[IndexTemplate; 3]>>) -> Self {
        self.index = index;
        self.uid = NEXT_CONTEXT_UID.fetch_add(1, Ordering::Relaxed);
        self
    }

    /// Messages that are JSON objects are also written as `<target>`'s
    /// value (see the module doc). The caller keeps `target` clear of the
    /// document's own top-level fields.
    pub fn with_json_messages(mut self, target: &str) -> Self {
        let mut member = Vec::with_capacity(target.len() + 4);
        member.push(b',');
        write_json_str(&mut member, target);
        member.push(b':');
        self.json_member = Some(member.into_boxed_slice());
        self
    }
}

static NEXT_CONTEXT_UID: AtomicU64 = AtomicU64::new(1);

fn stream_slot(stream: Option<Stream>) -> usize {
    match stream {
        None => 0,
        Some(Stream::Stdout) => 1,
        Some(Stream::Stderr) => 2,
    }
}

/// Per-file metadata members (`,"key":value…`, see
/// [`Encoder::file_context_with`]) as one JSON object (`Null` if none).
pub(crate) fn metadata_object(members: &[u8]) -> serde_json::Value {
    match members.strip_prefix(b",") {
        Some(members) => {
            let mut object = Vec::with_capacity(members.len() + 2);
            object.push(b'{');
            object.extend_from_slice(members);
            object.push(b'}');
            serde_json::from_slice(&object).unwrap_or_default()
        }
        None => serde_json::Value::Null,
    }
}

/// The string at dotted `path` in `root`; for `kubernetes.labels.<key>` and
/// `kubernetes.annotations.<key>` the rest of the path is one key (keys may
/// contain dots).
pub(crate) fn lookup_field<'v>(root: &'v serde_json::Value, path: &str) -> Option<&'v str> {
    for map in ["kubernetes.labels.", "kubernetes.annotations."] {
        if let Some(key) = path.strip_prefix(map) {
            let object = map
                .trim_end_matches('.')
                .split('.')
                .try_fold(root, |v, k| v.get(k))?;
            return object.get(key)?.as_str();
        }
    }
    path.split('.').try_fold(root, |v, k| v.get(k))?.as_str()
}

/// Writes bulk pairs. One per tailer (it caches the current index name).
#[derive(Debug)]
pub struct Encoder {
    node_name: String,
    /// `},"host":{"name":"…"}` (the `}` closes `log`).
    host_part: Box<[u8]>,
    /// `,"agent":{"type":"logship","version":"…"}}\n`
    agent_part: Box<[u8]>,
    fields: FieldTemplate,
    /// The current names per stream slot (only slot 0 without `{stream}`).
    index: [IndexName; 3],
    /// [`FileContext::uid`] the names were resolved for (0 = the template
    /// has no fields).
    index_uid: u64,
    /// `{"create":{"_index":"<current name>","_id":"`
    action_prefix: Vec<u8>,
    /// Stream slot and [`IndexName`] version `action_prefix` was built for
    /// (version 0 = none yet).
    action_version: (usize, u64),
    timestamps: TimestampFormatter,
    /// Messages of JSON-parsing files that were not a JSON object, since
    /// the last [`Encoder::take_json_parse_failures`].
    json_parse_failures: u64,
}

const AGENT_TYPE: &str = "logship";
const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Encoder {
    pub fn new(node_name: &str, index_template: &str) -> Result<Self, IndexTemplateError> {
        let fields = FieldTemplate::parse(index_template)?;
        let template = fields.fallback().clone();
        let mut host_part = Vec::new();
        host_part.extend_from_slice(br#"},"host":{"name":"#);
        write_json_str(&mut host_part, node_name);
        host_part.push(b'}');
        let mut agent_part = Vec::new();
        agent_part.extend_from_slice(br#","agent":{"type":"#);
        write_json_str(&mut agent_part, AGENT_TYPE);
        agent_part.extend_from_slice(br#","version":"#);
        write_json_str(&mut agent_part, AGENT_VERSION);
        agent_part.extend_from_slice(b"}}\n");
        Ok(Encoder {
            node_name: node_name.to_owned(),
            host_part: host_part.into_boxed_slice(),
            agent_part: agent_part.into_boxed_slice(),
            index: [
                IndexName::new(template.clone()),
                IndexName::new(template.clone()),
                IndexName::new(template),
            ],
            fields,
            index_uid: 0,
            action_prefix: Vec::new(),
            action_version: (0, 0),
            timestamps: TimestampFormatter::default(),
            json_parse_failures: 0,
        })
    }

    /// Serialises the per-file parts (`log.file.path`, `host`, `agent`) and the
    /// `_id` seed for this file generation.
    pub fn file_context(
        &self,
        path: &Path,
        identity: FileIdentity,
        generation: Generation,
    ) -> FileContext {
        self.file_context_with(path, identity, generation, &[])
    }

    /// Like [`Encoder::file_context`], with `extra` members spliced into
    /// every document after `host`: a run of `,"key":value` (the Kubernetes
    /// and container metadata, see `k8s::metadata`), or empty. The caller
    /// guarantees it is valid JSON in that shape.
    pub fn file_context_with(
        &self,
        path: &Path,
        identity: FileIdentity,
        generation: Generation,
        extra: &[u8],
    ) -> FileContext {
        let mut doc_tail =
            Vec::with_capacity(self.host_part.len() + extra.len() + self.agent_part.len());
        doc_tail.extend_from_slice(&self.host_part);
        doc_tail.extend_from_slice(extra);
        doc_tail.extend_from_slice(&self.agent_part);
        let index = self.fields.has_fields().then(|| {
            // The metadata as a JSON object, once per file, for `{field}`s.
            let metadata = metadata_object(extra);
            let path_text = path.to_string_lossy();
            let resolve = |stream: Option<&str>| {
                self.fields.resolve(&|name| match name {
                    "host.name" => Some(self.node_name.as_str()),
                    "log.file.path" => Some(&path_text),
                    "stream" => stream,
                    _ => lookup_field(&metadata, name),
                })
            };
            Arc::new([
                resolve(None),
                resolve(Some("stdout")),
                resolve(Some("stderr")),
            ])
        });
        let mut log_prefix = Vec::new();
        log_prefix.extend_from_slice(br#","log":{"file":{"path":"#);
        log_prefix.push(b'"');
        escape_bytes_lossy(&mut log_prefix, path.as_os_str().as_encoded_bytes());
        log_prefix.push(b'"');
        log_prefix.extend_from_slice(br#"},"offset":"#);
        FileContext {
            id_key: FileIdKey::new(&self.node_name, identity, generation),
            log_prefix: log_prefix.into_boxed_slice(),
            doc_tail: doc_tail.into_boxed_slice(),
            uid: NEXT_CONTEXT_UID.fetch_add(1, Ordering::Relaxed),
            index,
            json_member: None,
        }
    }

    /// Appends one bulk item (action line + document line) to `out`.
    ///
    /// `out.body` must stay under 4 GiB (item starts are `u32`); batches are
    /// a few MiB.
    pub fn encode(
        &mut self,
        file: &FileContext,
        line: &DecodedLine<'_>,
        out: &mut EncodedSpan,
    ) -> EncodeOutcome {
        self.encode_inner(file, line, out, None)
    }

    /// [`Encoder::encode`] for a line that went through processors: its
    /// `@timestamp` (which also picks the index) is `processed.timestamp`,
    /// `message` and `stream` are left out if asked, and
    /// `processed.members` (a run of `,"key":value`, valid JSON in that
    /// shape, no key logship writes itself) follows `stream`.
    pub fn encode_processed(
        &mut self,
        file: &FileContext,
        line: &DecodedLine<'_>,
        processed: &crate::processors::Processed<'_>,
        out: &mut EncodedSpan,
    ) -> EncodeOutcome {
        let line = DecodedLine {
            timestamp: processed.timestamp,
            ..*line
        };
        self.encode_inner(file, &line, out, Some(processed))
    }

    /// Both of the above; inlined into each, so `encode` pays nothing for
    /// processors.
    #[inline(always)]
    fn encode_inner(
        &mut self,
        file: &FileContext,
        line: &DecodedLine<'_>,
        out: &mut EncodedSpan,
        processed: Option<&crate::processors::Processed<'_>>,
    ) -> EncodeOutcome {
        debug_assert!(
            u32::try_from(out.body.len()).is_ok(),
            "span body over 4 GiB"
        );
        out.items.push(out.body.len() as u32);

        let slot = match &file.index {
            None => 0,
            Some(templates) => {
                if self.index_uid != file.uid {
                    self.index = templates.as_ref().clone().map(IndexName::new);
                    self.index_uid = file.uid;
                    self.action_version = (0, 0);
                }
                if self.fields.uses_stream() {
                    stream_slot(line.stream)
                } else {
                    0
                }
            }
        };
        let (name, version) = self.index[slot].for_event(line.timestamp);
        if (slot, version) != self.action_version {
            self.action_prefix.clear();
            self.action_prefix
                .extend_from_slice(br#"{"create":{"_index":"#);
            write_json_str(&mut self.action_prefix, name);
            self.action_prefix.extend_from_slice(br#","_id":""#);
            self.action_version = (slot, version);
        }

        let body = &mut out.body;
        // Everything but the escaped message, plus the message unescaped.
        body.reserve(
            self.action_prefix.len()
                + 160
                + line.message.len()
                + file.log_prefix.len()
                + file.doc_tail.len(),
        );
        body.extend_from_slice(&self.action_prefix);
        body.extend_from_slice(file.id_key.document_id(line.offset).as_bytes());
        body.extend_from_slice(b"\"}}\n{\"@timestamp\":\"");
        body.extend_from_slice(self.timestamps.format(line.timestamp));
        let (omit_message, omit_stream) =
            processed.map_or((false, false), |p| (p.omit_message, p.omit_stream));
        let invalid_utf8 = if omit_message {
            body.push(b'"');
            // Still flagged, as the message is the line's content.
            !is_utf8(line.message)
        } else {
            body.extend_from_slice(b"\",\"message\":\"");
            let invalid = escape_bytes_lossy(body, line.message);
            body.push(b'"');
            invalid
        };
        match line.stream {
            _ if omit_stream => {}
            Some(Stream::Stdout) => body.extend_from_slice(br#","stream":"stdout""#),
            Some(Stream::Stderr) => body.extend_from_slice(br#","stream":"stderr""#),
            None => {}
        }
        if let Some(member) = &file.json_member {
            self.write_json_message(body, member, line.message);
        }
        if let Some(p) = processed {
            body.extend_from_slice(p.members);
        }
        body.extend_from_slice(&file.log_prefix);
        write_u64(body, line.offset);
        let mut flags = line.flags;
        if invalid_utf8 {
            flags.insert(LineFlags::INVALID_UTF8);
        }
        if !flags.is_empty() {
            body.extend_from_slice(br#","flags":["#);
            for (i, name) in flags.names().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                write_json_str(body, name);
            }
            body.push(b']');
        }
        body.extend_from_slice(&file.doc_tail);
        EncodeOutcome { invalid_utf8 }
    }

    /// Appends `member` and `message` parsed as a JSON object, compacted; or
    /// nothing (counted) if it is not one.
    #[inline(never)]
    fn write_json_message(&mut self, body: &mut Vec<u8>, member: &[u8], message: &[u8]) {
        match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(message) {
            Ok(object) => {
                body.extend_from_slice(member);
                // Serialising a `Map` into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *body, &object);
            }
            Err(_) => self.json_parse_failures += 1,
        }
    }

    /// Messages that a JSON-parsing file context could not parse as a JSON
    /// object since the last call (they were shipped without the target).
    pub fn take_json_parse_failures(&mut self) -> u64 {
        std::mem::take(&mut self.json_parse_failures)
    }

    /// The node name every document carries as `host.name`.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The index template with every field at its fallback.
    pub fn index_template(&self) -> &IndexTemplate {
        self.fields.fallback()
    }
}

/// Appends `v` in decimal.
#[inline]
fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests;
