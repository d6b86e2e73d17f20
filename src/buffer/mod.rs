//! Buffer: holds encoded spans between encode and ship.
//!
//! This buffer is in memory: [`memory::Batcher`] gathers
//! [`EncodedSpan`]s from the tailers into [`Batch`]es bounded by bytes,
//! events and a timeout, and hands them to the sink over a bounded channel.
//! Every channel is bounded, so when the sink is slow the batcher blocks, the
//! tailers' sends block, and the tailers stop reading: the files hold the
//! backlog. With `buffer: {type: disk}` the [`disk`] queue sits between the
//! batcher and the sink (see `disk::stage`): batches are appended to segment
//! files, file checkpoints advance once a batch is fsync'd, and the sink is
//! fed from the queue. A queue left on disk by an earlier `disk` config is
//! drained by the memory pipeline too (`disk::leftover`): its records'
//! checkpoints are already past them.

pub mod disk;
pub mod memory;

use crate::event::{EncodedSpan, SpanOrigin};

/// Spans to be sent in one bulk request.
#[derive(Debug, Default)]
pub struct Batch {
    pub spans: Vec<EncodedSpan>,
    /// Sum of the spans' body lengths (the uncompressed bulk body size).
    pub body_bytes: usize,
    /// Number of bulk items.
    pub events: usize,
    /// Set by the sink while a request for the whole batch is in flight,
    /// and by the disk buffer's reader for a record stored gzip'd
    /// (`disk::stage`): the spans' bodies are then empty and kept only as
    /// the whole batch's (gzip'd) bulk body, sent as it is, and restored from
    /// it if items must be sent apart or dead-lettered
    /// (`sink::elasticsearch::request::{pack, unpack}`). `body_bytes` and
    /// the spans' `items` stay those of the restored bodies.
    pub packed: Option<PackedBodies>,
}

/// The bodies of a batch's spans, as one (gzip'd) bulk request body.
#[derive(Debug)]
pub struct PackedBodies {
    /// All the spans' bodies, concatenated in order (gzip'd if `gzip`).
    pub bytes: bytes::Bytes,
    pub gzip: bool,
    /// Each span's body length.
    pub lens: Vec<usize>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }
    pub fn push(&mut self, span: EncodedSpan) {
        self.body_bytes += span.body.len();
        self.events += span.items.len();
        self.spans.push(span);
    }
    /// Origins of the spans in this batch, for acknowledgement.
    pub fn origins(&self) -> Vec<SpanOrigin> {
        self.spans.iter().filter_map(|s| s.origin).collect()
    }

    /// Makes the whole batch's bulk body now (gzip'd at `level`, as is at
    /// 0) and keeps only it: the spans' bodies go back to the span pool
    /// ([`PackedBodies`]; the sink sends the body as it is and restores the
    /// spans only if items must go apart). Blocking (a gzip of a few MiB).
    /// Does nothing if already packed or if the spans' bodies hold bytes
    /// outside their items.
    pub fn pack(&mut self, level: u32) -> std::io::Result<()> {
        if !self.can_pack() {
            return Ok(());
        }
        let bodies = self.spans.iter().map(|s| s.body.as_slice());
        let bytes = if level == 0 {
            bodies.collect::<Vec<&[u8]>>().concat()
        } else {
            crate::sink::elasticsearch::gzip::gzip(bodies, self.body_bytes, level)?
        };
        self.keep_packed(bytes.into(), level > 0);
        Ok(())
    }

    /// Not packed yet, and the spans' bodies hold their items and nothing
    /// else (so a body of every item is the whole of them).
    pub fn can_pack(&self) -> bool {
        self.packed.is_none()
            && self.spans.iter().all(|s| s.items.first() == Some(&0))
            && self.spans.iter().map(|s| s.body.len()).sum::<usize>() == self.body_bytes
    }

    /// Frees the spans' bodies (to the span pool), keeping `bytes`, the
    /// bulk body of every item (gzip'd if `gzip`), to restore them from.
    /// The caller checked [`can_pack`](Self::can_pack).
    pub fn keep_packed(&mut self, bytes: bytes::Bytes, gzip: bool) {
        let lens = self
            .spans
            .iter_mut()
            .map(|span| {
                let len = span.body.len();
                crate::event::span_pool::give(std::mem::take(&mut span.body));
                len
            })
            .collect();
        self.packed = Some(PackedBodies { bytes, gzip, lens });
    }
}

/// Told when spans are durably owned downstream: every item in them was
/// acknowledged by Elasticsearch (2xx or 409) or written to the dead-letter
/// file. Implemented by the checkpoint store.
pub trait Acknowledger: Send + Sync {
    fn delivered(&self, spans: &[SpanOrigin]);

    /// Told when spans are given up neither delivered nor dead-lettered,
    /// because their documents could not be restored (a disk buffer
    /// record whose stored body does not decompress: a bug). The caller
    /// has logged it; an owner that counts losses counts them. They are
    /// settled all the same: by default, as [`delivered`](Self::delivered).
    fn lost(&self, spans: &[SpanOrigin]) {
        self.delivered(spans);
    }
}
