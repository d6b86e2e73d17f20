//! The values that flow between stages.
//!
//! A physical line read from a file becomes, after decoding, a [`DecodedLine`]
//! that borrows its message from the reader's buffer (or the decoder's
//! partial-line buffer). The encoder turns decoded lines into bulk pairs inside
//! an [`EncodedSpan`]: the documents of one contiguous byte range of one file
//! generation. Spans are the unit of acknowledgement: a file's checkpoint moves
//! to a span's `end` once that span and every earlier span of the same file
//! were delivered (the ack watermark, see `tail::watermark`).
//!
//! Nothing here allocates per line; per-line data is borrowed.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identity of a file that survives renames: device and inode, plus a
/// fingerprint of its first line so that a reused inode after a restart is
/// not mistaken for the file a checkpoint was written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: u64,
}

impl fmt::Display for FileIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{:016x}", self.dev, self.ino, self.fingerprint)
    }
}

/// Incremented each time a file is truncated in place (copytruncate), so new
/// content at an old offset gets a new document `_id`.
pub type Generation = u32;

/// Process-local handle of one followed file (one per identity per run).
/// Never persisted; checkpoints are keyed by [`FileIdentity`].
pub type FileKey = u64;

/// Which output stream of a container a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A point in time as seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }
}

/// Flags attached to a line; shipped as `log.flags` when any is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct LineFlags(u8);

impl LineFlags {
    /// The line was longer than `max_line_bytes`; the rest was dropped.
    pub const TRUNCATED: LineFlags = LineFlags(1);
    /// The line was not valid UTF-8; invalid bytes became U+FFFD.
    pub const INVALID_UTF8: LineFlags = LineFlags(2);
    /// The line did not parse in the file's format and is shipped as plain text.
    pub const UNPARSED: LineFlags = LineFlags(4);
    /// The file ended (deleted or shutdown) inside a partial line; what was
    /// read is shipped.
    pub const INCOMPLETE: LineFlags = LineFlags(8);
    /// Several physical lines joined into one event (`decode::multiline`).
    pub const MULTILINE: LineFlags = LineFlags(16);

    pub const fn empty() -> Self {
        LineFlags(0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn contains(self, other: LineFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn insert(&mut self, other: LineFlags) {
        self.0 |= other.0;
    }
    pub const fn union(self, other: LineFlags) -> LineFlags {
        LineFlags(self.0 | other.0)
    }
    /// Names as shipped in `log.flags`, in a fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (Self::TRUNCATED, "truncated"),
            (Self::INVALID_UTF8, "invalid_utf8"),
            (Self::UNPARSED, "unparsed"),
            (Self::INCOMPLETE, "incomplete"),
            (Self::MULTILINE, "multiline"),
        ]
        .into_iter()
        .filter(move |(f, _)| self.contains(*f))
        .map(|(_, n)| n)
    }
}

/// One logical log line after decoding.
///
/// `offset` is the byte offset of the first physical line that makes it up
/// (the `_id` is derived from it); `end` is the offset just past the last
/// physical line consumed, i.e. where a reader resumes once this line is
/// delivered.
#[derive(Clone, Copy, Debug)]
pub struct DecodedLine<'a> {
    pub timestamp: Timestamp,
    pub stream: Option<Stream>,
    /// Raw message bytes (no trailing newline). May be invalid UTF-8: the
    /// encoder replaces invalid sequences and sets [`LineFlags::INVALID_UTF8`].
    pub message: &'a [u8],
    pub flags: LineFlags,
    pub offset: u64,
    pub end: u64,
}

/// Where a span of encoded documents came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanOrigin {
    pub file: FileKey,
    pub generation: Generation,
    /// Per-file sequence number of this span, issued by the watermark.
    pub seq: u64,
    /// Offset just past the last line in this span.
    pub end: u64,
}

/// Bulk pairs (`create` action line + document line) for consecutive lines
/// of one file generation.
#[derive(Debug, Default)]
pub struct EncodedSpan {
    pub origin: Option<SpanOrigin>,
    /// NDJSON: for each item an action line and a document line, each ending in `\n`.
    pub body: Vec<u8>,
    /// Start offset in `body` of each item's action line. Item `i` spans
    /// `items[i]..items[i + 1]` (or `..body.len()` for the last).
    pub items: Vec<u32>,
}

impl Drop for EncodedSpan {
    fn drop(&mut self) {
        span_pool::give(std::mem::take(&mut self.body));
    }
}

/// Recycles span bodies.
///
/// Spans are allocated and freed at a high rate (one per ~256 KiB of NDJSON)
/// and live across threads (tailer → batcher → sink task); with glibc's
/// per-thread arenas that churn fragments the heap and peak RSS grows to
/// twice the live set. Bodies of dropped spans are kept here (at most
/// [`span_pool::MAX_POOLED`]) and handed to the next span instead.
pub mod span_pool {
    use crate::pool::Pool;

    /// Bodies kept for reuse at most; beyond that they are freed.
    pub const MAX_POOLED: usize = 32;
    static POOL: Pool<Vec<u8>> = Pool::new(MAX_POOLED);

    /// Frees the pooled bodies if none was taken since the last call (an
    /// idle agent holds no pool); called with the periodic heap trim.
    pub fn release_if_unused() {
        POOL.release_if_unused();
    }

    /// A cleared buffer with at least `capacity` bytes of room.
    pub fn take(capacity: usize) -> Vec<u8> {
        match POOL.take() {
            Some(mut v) => {
                v.reserve_exact(capacity);
                v
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Returns a buffer for reuse (dropped if the pool is full or it is empty).
    pub fn give(mut body: Vec<u8>) {
        if body.capacity() == 0 {
            return;
        }
        body.clear();
        POOL.give(body);
    }
}

impl EncodedSpan {
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// The bytes of item `i` (action line and document line).
    pub fn item(&self, i: usize) -> &[u8] {
        let start = self.items[i] as usize;
        let end = self
            .items
            .get(i + 1)
            .map(|&e| e as usize)
            .unwrap_or(self.body.len());
        &self.body[start..end]
    }
}
