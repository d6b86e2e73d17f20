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
//!   ([`index`]).
//!
//! The hot path allocates nothing per line (it appends to the caller's
//! buffer): everything per file (`log.file.path`, `host`, `agent`, the `_id`
//! key) is serialised once in [`FileContext`], the action line prefix once
//! per index name. Kubernetes metadata (`container.*`, `kubernetes.*`) arrives
//! pre-serialised per file ([`Encoder::file_context_with`]) and is spliced in
//! after `host`. Does not decide batch boundaries or compress.

pub mod escape;
pub mod id;
pub mod index;
pub mod timestamp;

use std::path::Path;

use crate::event::{DecodedLine, EncodedSpan, FileIdentity, Generation, LineFlags, Stream};

pub use escape::{escape_bytes_lossy, escape_str, is_utf8, write_json_str};
pub use id::{DOCUMENT_ID_LEN, DocumentId, FileIdKey, document_id};
pub use index::{Granularity, IndexName, IndexTemplate, validate_index_template};
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
}

/// Writes bulk pairs. One per tailer (it caches the current index name).
#[derive(Debug)]
pub struct Encoder {
    node_name: String,
    /// `},"host":{"name":"…"}` (the `}` closes `log`).
    host_part: Box<[u8]>,
    /// `,"agent":{"type":"logship","version":"…"}}\n`
    agent_part: Box<[u8]>,
    index: IndexName,
    /// `{"create":{"_index":"<current name>","_id":"`
    action_prefix: Vec<u8>,
    /// [`IndexName`] version `action_prefix` was built for (0 = none yet).
    action_version: u64,
    timestamps: TimestampFormatter,
}

const AGENT_TYPE: &str = "logship";
const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Encoder {
    pub fn new(node_name: &str, index_template: &str) -> Result<Self, IndexTemplateError> {
        let template = IndexTemplate::parse(index_template)?;
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
            index: IndexName::new(template),
            action_prefix: Vec::new(),
            action_version: 0,
            timestamps: TimestampFormatter::default(),
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
        debug_assert!(
            u32::try_from(out.body.len()).is_ok(),
            "span body over 4 GiB"
        );
        out.items.push(out.body.len() as u32);

        let (name, version) = self.index.for_event(line.timestamp);
        if version != self.action_version {
            self.action_prefix.clear();
            self.action_prefix
                .extend_from_slice(br#"{"create":{"_index":"#);
            write_json_str(&mut self.action_prefix, name);
            self.action_prefix.extend_from_slice(br#","_id":""#);
            self.action_version = version;
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
        body.extend_from_slice(b"\",\"message\":\"");
        let invalid_utf8 = escape_bytes_lossy(body, line.message);
        body.push(b'"');
        match line.stream {
            Some(Stream::Stdout) => body.extend_from_slice(br#","stream":"stdout""#),
            Some(Stream::Stderr) => body.extend_from_slice(br#","stream":"stderr""#),
            None => {}
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

    /// The node name every document carries as `host.name`.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn index_template(&self) -> &IndexTemplate {
        self.index.template()
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
