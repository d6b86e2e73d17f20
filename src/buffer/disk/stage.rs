//! The disk queue as a pipeline stage: a writer between the batcher and the
//! queue, a reader between the queue and the sink, and the acks in between.
//!
//! ```text
//! Batcher ─batches─► writer ─push─► Queue ─read─► reader ─batches─► sink
//!                      │ fsync                                       │ acks
//!                      ▼                                             ▼
//!            Checkpointer.delivered(origins)                 Queue::ack(record id)
//! ```
//!
//! Checkpoint coupling: the writer keeps the origins of the spans it pushed
//! and hands them to the checkpoint store only after the fsync that made
//! their record durable; from then on the queue owns delivery.
//!
//! The reader gives the sink batches whose first span's origin is `{file:
//! DISK_ORIGIN_FILE, seq: record id}`; the sink's acks
//! (`Acknowledger::delivered`) are routed to [`Queue::ack`] by
//! [`DiskAcks`].
//!
//! # Record payload
//! One record is one batch. The writer writes version 2; the reader reads
//! both versions ([`decode_batch`]), so a buffer written before the upgrade
//! is still delivered. All integers are `u32` LE.
//!
//! ```text
//! version 2 (this version writes it)
//! offset   size  field
//! 0        4     marker  u32::MAX (V2_MARKER)
//! 4        4     flags   bit 0: the body is gzip'd (FLAG_GZIP); other bits 0
//! 8        4     n       items, >= 1
//! 12       4     raw     length of the uncompressed NDJSON body
//! 16       4n    offsets item starts in the uncompressed body: the first
//!                        0, strictly ascending, each < raw
//! 16+4n    ..    body    the NDJSON body, one gzip member if FLAG_GZIP
//!                        (sent as the bulk request's body as it is), else
//!                        the raw bytes (exactly `raw` of them)
//!
//! version 1 (written by earlier versions; read, never written)
//! 0        4     n       items, >= 1
//! 4        4n    offsets item starts in the body: the first 0, ascending,
//!                        each < the body's length
//! 4+4n     ..    body    the NDJSON body
//! ```
//!
//! A version-1 payload never starts with `u32::MAX`: `n` offsets of 4
//! bytes would not fit in a record ([`super::record::MAX_RECORD_BYTES`]).
//! The writer compresses at the sink's `compression: {gzip: N}` level (0:
//! the raw body, flag clear), once per batch, on the blocking pool; the
//! record then holds ~4x fewer bytes to write, CRC, read back and copy. The
//! reader does not decompress: a version-2 record becomes a *packed*
//! [`Batch`] (spans without bodies, their lengths and the body in
//! `Batch::packed`), whose body the sink sends as it is when the whole
//! batch goes in one request, and gunzips into the spans only when items
//! must go apart (a 413 split, item retries, dead letters). A record whose
//! body then does not gunzip (which the CRC makes a bug) is logged, counted
//! in `lost_records` and acknowledged (`Acknowledger::lost`), never a crash
//! loop. An older logship cannot read version-2 records: it skips each as
//! "not a batch" (counted lost, and their lines are not read again), so
//! the buffer must be drained before a downgrade.
//!
//! Full queue: `when_full: block` waits for acks to free segments (the
//! batcher's channel fills, the tailers stop reading); `drop_newest` drops
//! the batch, counts its events and releases its file offsets (those lines
//! are given up). A failed write (ENOSPC…) is logged and counted, nothing
//! partial stays in the segment, and the push is retried every second:
//! the same backpressure as full, recovering by itself when space returns.
//!
//! A queue nobody writes to (a leftover, see `leftover`) is read after
//! [`DiskBuffer::close_writing`], waited on with [`DiskBuffer::all_acked`]
//! and removed with [`DiskBuffer::remove_drained`]. Opened with a
//! `max_bytes` below what its segments already take (the setting was
//! lowered), it keeps and sends everything and is full until acks bring it
//! below; that is logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{OpenError, Options, PushError, Queue, Stats, add};
use crate::buffer::{Acknowledger, Batch, PackedBodies};
use crate::config::WhenFull;
use crate::event::{EncodedSpan, FileKey, SpanOrigin, span_pool};

/// The `SpanOrigin::file` of spans read back from the disk queue; their
/// `seq` is the record id. Never a real file key (those count up from 0).
pub const DISK_ORIGIN_FILE: FileKey = u64::MAX;

/// How long a blocked writer waits before retrying a failed write.
const RETRY_WRITE: Duration = Duration::from_secs(1);

struct State {
    queue: Queue,
    /// Origins of spans pushed but not yet fsync'd.
    pending: Vec<SpanOrigin>,
    /// The directory was removed ([`DiskBuffer::remove_drained`]): nothing
    /// is flushed any more.
    removed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when acks free room.
    space: Notify,
    /// Signalled when a record was pushed or the writer finished.
    data: Notify,
    writer_done: AtomicBool,
    stats: Arc<Stats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A disk queue shared by its writer, reader and acknowledger.
#[derive(Clone)]
pub struct DiskBuffer {
    shared: Arc<Shared>,
}

impl DiskBuffer {
    pub fn open(dir: &std::path::Path, max_bytes: u64) -> Result<Self, OpenError> {
        let stats = Arc::new(Stats::default());
        let queue = Queue::open(dir, Options::new(max_bytes), stats.clone())?;
        if queue.disk_bytes() > max_bytes {
            tracing::warn!(
                dir = %dir.display(),
                disk_bytes = queue.disk_bytes(),
                max_bytes,
                "disk buffer holds more than max_bytes (written under a larger setting): \
                 all of it is kept and sent; it counts as full until acknowledgements bring it below"
            );
        }
        Ok(DiskBuffer {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue,
                    pending: Vec::new(),
                    removed: false,
                }),
                space: Notify::new(),
                data: Notify::new(),
                writer_done: AtomicBool::new(false),
                stats,
            }),
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// What the sink acknowledges to.
    pub fn acknowledger(&self) -> Arc<dyn Acknowledger> {
        Arc::new(DiskAcks {
            shared: self.shared.clone(),
        })
    }

    /// Test seam: see [`Queue::inject_write_error`].
    #[doc(hidden)]
    pub fn inject_write_error(&self, kind: Option<std::io::ErrorKind>) {
        self.shared.lock().queue.inject_write_error(kind);
    }

    /// Fsyncs and writes the ledger; then tells `checkpoints` about the
    /// spans that became durable. On failure the spans stay pending.
    pub async fn flush(&self, checkpoints: &dyn Acknowledger) {
        let shared = self.shared.clone();
        let res = tokio::task::spawn_blocking(move || {
            // Records pushed before the descriptor is duplicated are the ones
            // its fsync covers; the lock is not held while syncing.
            let (job, durable) = {
                let mut st = shared.lock();
                if st.removed {
                    return Ok(Vec::new());
                }
                let job = st.queue.begin_flush()?;
                (job, std::mem::take(&mut st.pending))
            };
            match job.run() {
                Ok(()) => Ok(durable),
                Err(e) => {
                    let mut st = shared.lock();
                    st.queue.flush_failed(&job);
                    let later = std::mem::replace(&mut st.pending, durable);
                    st.pending.extend(later);
                    Err(e)
                }
            }
        })
        .await;
        match res {
            Ok(Ok(durable)) => {
                if !durable.is_empty() {
                    checkpoints.delivered(&durable);
                }
            }
            Ok(Err(e)) => {
                add(&self.shared.stats.write_errors, 1);
                tracing::error!(error = %e, "disk buffer fsync/ledger write failed; will retry");
            }
            Err(e) => tracing::error!(error = %e, "disk buffer flush task failed"),
        }
    }

    /// Declares that nothing will be pushed (a leftover queue has no
    /// writer): [`run_reader`](Self::run_reader) then ends once every
    /// record was read.
    pub fn close_writing(&self) {
        self.shared.writer_done.store(true, Ordering::Release);
        self.shared.data.notify_one();
    }

    /// True if some record is not acknowledged yet.
    pub fn has_unacked(&self) -> bool {
        self.shared.lock().queue.has_unacked()
    }

    /// Waits until every record is acknowledged (`true`), or `stop` is
    /// cancelled first (`false`).
    pub async fn all_acked(&self, stop: &CancellationToken) -> bool {
        loop {
            if !self.has_unacked() {
                return true;
            }
            // Acks signal `space` (also waited on by a writer blocked on a
            // full queue, which may take the signal): the sleep is the net.
            tokio::select! {
                _ = self.shared.space.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.cancelled() => return false,
            }
        }
    }

    /// Blocking. Removes the queue's directory if every record is
    /// acknowledged ([`Queue::remove_files`]); `Ok(false)` if some is not.
    /// Afterwards [`flush`](Self::flush) does nothing. Once the ledger saying
    /// so is written, a failed removal is not tried again: nothing
    /// undelivered is left, and a reopen reads nothing.
    pub fn remove_drained(&self) -> std::io::Result<bool> {
        let mut st = self.shared.lock();
        if st.removed {
            return Ok(true);
        }
        if st.queue.has_unacked() {
            return Ok(false);
        }
        st.queue.flush()?;
        st.removed = true;
        st.queue.remove_files().map(|()| true)
    }

    /// Moves batches from the batcher into the queue until `batches` closes;
    /// then flushes one last time. Each batch's body is stored gzip'd at
    /// `gzip_level` (the sink's; 0: as it is), see the module doc.
    pub async fn run_writer(
        self,
        mut batches: mpsc::Receiver<Batch>,
        checkpoints: Arc<dyn Acknowledger>,
        when_full: WhenFull,
        fsync_interval: Duration,
        gzip_level: u32,
    ) {
        let period = if fsync_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            fsync_interval
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut head = Vec::new();
        loop {
            let batch = tokio::select! {
                b = batches.recv() => b,
                _ = tick.tick() => {
                    self.flush(&*checkpoints).await;
                    continue;
                }
            };
            let Some(batch) = batch else { break };
            if batch.is_empty() {
                continue;
            }
            head = self
                .push(head, batch, gzip_level, &*checkpoints, when_full)
                .await;
            if fsync_interval.is_zero() {
                self.flush(&*checkpoints).await;
            }
        }
        self.flush(&*checkpoints).await;
        self.shared.writer_done.store(true, Ordering::Release);
        self.shared.data.notify_one();
    }

    /// Pushes `batch` as one record, waiting (or dropping) while full;
    /// returns the head buffer for reuse. The record is encoded (and its
    /// body compressed) once, on the first attempt; retries write the same
    /// bytes.
    async fn push(
        &self,
        mut head: Vec<u8>,
        batch: Batch,
        gzip_level: u32,
        checkpoints: &dyn Acknowledger,
        when_full: WhenFull,
    ) -> Vec<u8> {
        let events = batch.events as u64;
        let mut origins = Some(batch.origins());
        // `Err` until the first attempt encodes it.
        let mut record: Result<Record, Batch> = Err(batch);
        let mut failing = false;
        loop {
            let shared = self.shared.clone();
            let (buf, r, res) = match tokio::task::spawn_blocking(move || {
                let record =
                    record.unwrap_or_else(|batch| Record::encode(batch, gzip_level, &mut head));
                let res = shared.lock().queue.push_parts(&record.parts(&head));
                (head, record, res)
            })
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "disk buffer write task failed");
                    return Vec::new();
                }
            };
            head = buf;
            record = Ok(r);
            match res {
                Ok(_) => {
                    if failing {
                        tracing::info!("disk buffer writes succeed again");
                    }
                    let origins = origins.take().unwrap_or_default();
                    self.shared.lock().pending.extend(origins);
                    self.shared.data.notify_one();
                    return head;
                }
                Err(PushError::Full) if when_full == WhenFull::DropNewest => {
                    add(&self.shared.stats.dropped_events, events);
                    tracing::warn!(
                        events,
                        "disk buffer full: dropped a batch (when_full: drop_newest)"
                    );
                    // Given up: let the files' checkpoints move past these lines.
                    checkpoints.delivered(&origins.take().unwrap_or_default());
                    return head;
                }
                Err(PushError::Full) => {
                    // Durable progress must go on while blocked.
                    self.flush(checkpoints).await;
                    let _ = tokio::time::timeout(RETRY_WRITE, self.shared.space.notified()).await;
                }
                Err(e @ PushError::Io { .. }) => {
                    if !failing {
                        tracing::error!(error = %e, "disk buffer write failed; holding input (backpressure) and retrying every second");
                        failing = true;
                    }
                    self.flush(checkpoints).await;
                    tokio::time::sleep(RETRY_WRITE).await;
                }
            }
        }
    }

    /// Feeds the sink from the queue until the writer is done and every
    /// record was read, or the sink goes away.
    ///
    /// `stop` (shutdown after the writer finished) ends it between records:
    /// what is not read stays on disk for the next start.
    pub async fn run_reader(self, out: mpsc::Sender<Batch>, stop: CancellationToken) {
        let mut payload = Vec::new();
        loop {
            let slot = tokio::select! {
                s = out.reserve() => s,
                _ = stop.cancelled() => return,
            };
            let Ok(slot) = slot else {
                return;
            };
            loop {
                let shared = self.shared.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let mut st = shared.lock();
                    let r = st.queue.read_next(&mut payload);
                    (payload, r)
                })
                .await;
                let Ok((buf, res)) = res else { return };
                payload = buf;
                match res {
                    Ok(Some(id)) => match decode_batch(id, &payload) {
                        Some(batch) => {
                            slot.send(batch);
                            break;
                        }
                        None => {
                            add(&self.shared.stats.lost_records, 1);
                            tracing::error!(
                                record = id,
                                "disk buffer: record is not a batch; skipped"
                            );
                            self.shared.lock().queue.ack(id);
                        }
                    },
                    Ok(None) => {
                        if self.shared.writer_done.load(Ordering::Acquire)
                            && !self.shared.lock().queue.has_unread()
                        {
                            return;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = self.shared.data.notified() => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "disk buffer read failed; retrying");
                        tokio::time::sleep(RETRY_WRITE).await;
                    }
                }
            }
        }
    }
}

/// Routes the sink's acks to the queue.
struct DiskAcks {
    shared: Arc<Shared>,
}

impl Acknowledger for DiskAcks {
    fn delivered(&self, spans: &[SpanOrigin]) {
        {
            let mut st = self.shared.lock();
            for s in spans.iter().filter(|s| s.file == DISK_ORIGIN_FILE) {
                st.queue.ack(s.seq);
            }
        }
        self.shared.space.notify_one();
    }

    /// A record whose documents the sink could not restore (logged there):
    /// counted in `lost_records`, and acknowledged so that the queue moves on.
    fn lost(&self, spans: &[SpanOrigin]) {
        let records = spans.iter().filter(|s| s.file == DISK_ORIGIN_FILE).count();
        add(&self.shared.stats.lost_records, records as u64);
        self.delivered(spans);
    }
}

/// First `u32` of a version-2 payload (module doc, "Record payload").
pub const V2_MARKER: u32 = u32::MAX;
/// Version-2 flag: the body is gzip'd.
pub const FLAG_GZIP: u32 = 1;
/// Bytes of a version-2 head before the item offsets.
const V2_FIXED_HEAD: usize = 16;

/// A batch's record payload after its head, as [`DiskBuffer::push`]
/// writes it.
enum Record {
    /// The head says "raw": the spans' bodies are the body, written as
    /// they are.
    Raw(Batch),
    /// This is the body (gzip'd if the head says so). The batch is gone
    /// (its spans' bodies went back to the pool).
    Body(bytes::Bytes),
}

impl Record {
    /// Compresses `batch`'s body at `gzip_level` (0: not) and writes the
    /// matching version-2 head into `head`. A failed compression (none is
    /// expected from in-memory buffers) is logged and stores the body raw.
    /// A batch the batcher packed already ([`Batch::pack`]) is stored as
    /// packed (the batcher compresses at the same level).
    fn encode(batch: Batch, gzip_level: u32, head: &mut Vec<u8>) -> Record {
        if let Some(packed) = &batch.packed {
            encode_batch_head(&batch, packed.gzip, head);
            return Record::Body(packed.bytes.clone());
        }
        let gz = gzip_body(&batch, gzip_level);
        encode_batch_head(&batch, gz.is_some(), head);
        match gz {
            Some(gz) => Record::Body(gz.into()),
            None => Record::Raw(batch),
        }
    }

    /// The whole payload, `head` first, as the slices to write.
    fn parts<'a>(&'a self, head: &'a [u8]) -> Vec<&'a [u8]> {
        match self {
            Record::Raw(batch) => {
                let mut parts = Vec::with_capacity(batch.spans.len() + 1);
                parts.push(head);
                parts.extend(batch.spans.iter().map(|s| s.body.as_slice()));
                parts
            }
            Record::Body(body) => vec![head, &body[..]],
        }
    }
}

/// The gzip of `batch`'s body at `level`, or `None` at level 0 or if it
/// failed (logged).
fn gzip_body(batch: &Batch, level: u32) -> Option<Vec<u8>> {
    if level == 0 {
        return None;
    }
    let bodies = batch.spans.iter().map(|s| s.body.as_slice());
    match crate::sink::elasticsearch::gzip::gzip(bodies, batch.body_bytes, level) {
        Ok(gz) => Some(gz),
        Err(e) => {
            tracing::warn!(error = %e, "disk buffer: cannot gzip a batch; it is stored uncompressed");
            None
        }
    }
}

/// Serialises `batch` as one version-2 record payload (cleared first),
/// its body gzip'd at `gzip_level` (0: raw), as the writer stores it (the
/// writer writes the head and the body without joining them).
pub fn encode_batch(batch: &Batch, gzip_level: u32, out: &mut Vec<u8>) {
    match gzip_body(batch, gzip_level) {
        Some(gz) => {
            encode_batch_head(batch, true, out);
            out.extend_from_slice(&gz);
        }
        None => {
            encode_batch_head(batch, false, out);
            for span in &batch.spans {
                out.extend_from_slice(&span.body);
            }
        }
    }
}

/// The version-2 head of a batch's record payload (cleared first): marker,
/// flags (`gzip`: the body that follows is gzip'd), item count, raw body
/// length, item offsets.
pub fn encode_batch_head(batch: &Batch, gzip: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&V2_MARKER.to_le_bytes());
    let flags = if gzip { FLAG_GZIP } else { 0 };
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(batch.events as u32).to_le_bytes());
    out.extend_from_slice(&(batch.body_bytes as u32).to_le_bytes());
    encode_offsets(batch, out);
}

/// Test seam: `batch` as a version-1 record payload (cleared first), as
/// logship wrote them before version 2, to test that they are still read.
#[doc(hidden)]
pub fn encode_batch_v1(batch: &Batch, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(batch.events as u32).to_le_bytes());
    encode_offsets(batch, out);
    for span in &batch.spans {
        out.extend_from_slice(&span.body);
    }
}

/// Appends the offset of every item of `batch` in its concatenated body.
fn encode_offsets(batch: &Batch, out: &mut Vec<u8>) {
    let mut base = 0u32;
    for (i, span) in batch.spans.iter().enumerate() {
        for &off in &span.items {
            out.extend_from_slice(&(base + off).to_le_bytes());
        }
        // A packed batch's spans keep their lengths apart from their bodies.
        let len = match &batch.packed {
            Some(p) => p.lens.get(i).copied().unwrap_or_default(),
            None => span.body.len(),
        };
        base += len as u32;
    }
}

/// Bodies of the spans a record is split into, at most (item boundaries
/// permitting): the size tailers produce, so bodies recycled through
/// `span_pool` stay small (a pooled 5 MiB batch body would pin memory).
const READ_SPAN_BYTES: usize = 192 * 1024;

/// The batch stored in record `id` (either version), or `None` if the
/// payload is not one. The first span carries the origin the sink
/// acknowledges (`seq` = `id`). A version-2 record gives a packed batch
/// (module doc): its spans have no bodies; `packed` holds the body as
/// stored, and the lengths of the spans' bodies once restored.
pub fn decode_batch(id: u64, payload: &[u8]) -> Option<Batch> {
    if u32_at(payload, 0)? == V2_MARKER {
        decode_v2(id, payload)
    } else {
        decode_v1(id, payload)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn decode_v1(id: u64, payload: &[u8]) -> Option<Batch> {
    let n = u32_at(payload, 0)? as usize;
    let offsets = Offsets::read(payload, 4, n)?;
    let body = payload.get(offsets.end()..)?;
    offsets.check(body.len(), false)?;
    Some(split_into_spans(id, &offsets, body.len(), |range| {
        let mut b = span_pool::take(range.len());
        b.extend_from_slice(&body[range]);
        b
    }))
}

fn decode_v2(id: u64, payload: &[u8]) -> Option<Batch> {
    let flags = u32_at(payload, 4)?;
    if flags & !FLAG_GZIP != 0 {
        return None;
    }
    let gzip = flags & FLAG_GZIP != 0;
    let n = u32_at(payload, 8)? as usize;
    let raw_len = u32_at(payload, 12)? as usize;
    let offsets = Offsets::read(payload, V2_FIXED_HEAD, n)?;
    let body = payload.get(offsets.end()..)?;
    offsets.check(raw_len, true)?;
    let plausible = if gzip {
        body.starts_with(&[0x1f, 0x8b])
    } else {
        body.len() == raw_len
    };
    if !plausible {
        return None;
    }
    let mut lens = Vec::new();
    let mut batch = split_into_spans(id, &offsets, raw_len, |range| {
        lens.push(range.len());
        Vec::new()
    });
    batch.body_bytes = raw_len;
    batch.packed = Some(PackedBodies {
        bytes: bytes::Bytes::copy_from_slice(body),
        gzip,
        lens,
    });
    Some(batch)
}

/// The item offsets of a record's head.
struct Offsets<'a> {
    /// `4 * n` bytes.
    bytes: &'a [u8],
    /// Where they start in the payload.
    at: usize,
}

impl<'a> Offsets<'a> {
    /// `n` (at least one) offsets at `at` in `payload`.
    fn read(payload: &'a [u8], at: usize, n: usize) -> Option<Self> {
        if n == 0 {
            return None;
        }
        let end = n.checked_mul(4)?.checked_add(at)?;
        Some(Offsets {
            bytes: payload.get(at..end)?,
            at,
        })
    }

    fn len(&self) -> usize {
        self.bytes.len() / 4
    }

    /// Where the body starts in the payload.
    fn end(&self) -> usize {
        self.at + self.bytes.len()
    }

    fn get(&self, i: usize) -> usize {
        let b = &self.bytes[4 * i..4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    }

    /// `Some` if the first is 0, each is below `body_len` and they ascend
    /// (`strictly`: no empty item).
    fn check(&self, body_len: usize, strictly: bool) -> Option<()> {
        let mut prev = 0usize;
        for i in 0..self.len() {
            let off = self.get(i);
            let descends = off < prev || (strictly && i > 0 && off == prev);
            if descends || off >= body_len || (i == 0 && off != 0) {
                return None;
            }
            prev = off;
        }
        Some(())
    }
}

/// The batch of the checked `offsets` into a body of `body_len` bytes:
/// spans of consecutive items up to [`READ_SPAN_BYTES`] each, whose bodies
/// `body_of` makes from their byte ranges.
fn split_into_spans(
    id: u64,
    offsets: &Offsets,
    body_len: usize,
    mut body_of: impl FnMut(std::ops::Range<usize>) -> Vec<u8>,
) -> Batch {
    let n = offsets.len();
    let mut batch = Batch::default();
    let mut i = 0;
    while i < n {
        let start = offsets.get(i);
        let mut j = i + 1;
        while j < n && offsets.get(j) - start < READ_SPAN_BYTES {
            j += 1;
        }
        let end = if j < n { offsets.get(j) } else { body_len };
        let mut span = EncodedSpan::default();
        if batch.spans.is_empty() {
            span.origin = Some(SpanOrigin {
                file: DISK_ORIGIN_FILE,
                generation: 0,
                seq: id,
                end: 0,
            });
        }
        span.body = body_of(start..end);
        span.items = (i..j).map(|k| (offsets.get(k) - start) as u32).collect();
        batch.push(span);
        i = j;
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records which origins the checkpoint store was told about.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<u64>>);
    impl Acknowledger for Recorder {
        fn delivered(&self, spans: &[SpanOrigin]) {
            self.0.lock().unwrap().extend(spans.iter().map(|s| s.seq));
        }
    }

    fn batch(seq: u64, bytes: usize) -> Batch {
        let mut s = EncodedSpan::default();
        s.origin = Some(SpanOrigin {
            file: 1,
            generation: 0,
            seq,
            end: seq * 10,
        });
        s.items.push(0);
        s.body.resize(bytes, b'x');
        let mut b = Batch::default();
        b.push(s);
        b
    }

    async fn wait_for(mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn checkpoints_follow_fsync_and_full_blocks_or_drops() {
        for when_full in [WhenFull::Block, WhenFull::DropNewest] {
            let dir = tempfile::tempdir().unwrap();
            let disk = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
            let rec = Arc::new(Recorder::default());
            let (tx, rx) = mpsc::channel(1);
            // Stored raw (gzip level 0): 300 KiB batches into a 1 MiB
            // buffer with no reader: three fit.
            let writer = tokio::spawn(disk.clone().run_writer(
                rx,
                rec.clone(),
                when_full,
                Duration::from_millis(20),
                0,
            ));
            let mut sent = 0;
            for seq in 0..6 {
                let r = tokio::time::timeout(
                    Duration::from_millis(500),
                    tx.send(batch(seq, 300 << 10)),
                )
                .await;
                if r.is_err() {
                    break;
                }
                sent += 1;
            }
            let durable = || rec.0.lock().unwrap().len();
            match when_full {
                WhenFull::Block => {
                    assert!(sent < 6, "the writer blocks, so the sender does too");
                    wait_for(|| durable() == 3).await;
                    // Reading and acking frees room; the blocked batch goes in.
                    let (otx, mut orx) = mpsc::channel(1);
                    tokio::spawn(disk.clone().run_reader(otx, CancellationToken::new()));
                    let acks = disk.acknowledger();
                    for _ in 0..3 {
                        let b = orx.recv().await.unwrap();
                        acks.delivered(&b.origins());
                    }
                    wait_for(|| durable() >= 4).await;
                }
                WhenFull::DropNewest => {
                    assert_eq!(sent, 6, "never blocks");
                    wait_for(|| durable() == 6).await;
                    assert_eq!(disk.stats().dropped_events.load(Ordering::Relaxed), 3);
                    assert_eq!(disk.stats().records_written.load(Ordering::Relaxed), 3);
                }
            }
            drop(tx);
            writer.abort();
        }
    }

    #[tokio::test]
    async fn write_errors_hold_checkpoints_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskBuffer::open(dir.path(), 1 << 30).unwrap();
        let rec = Arc::new(Recorder::default());
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(
            disk.clone()
                .run_writer(rx, rec.clone(), WhenFull::Block, Duration::ZERO, 1),
        );
        disk.inject_write_error(Some(std::io::ErrorKind::StorageFull));
        tx.send(batch(0, 100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            rec.0.lock().unwrap().is_empty(),
            "nothing durable while the disk is full"
        );
        assert!(disk.stats().write_errors.load(Ordering::Relaxed) >= 1);
        disk.inject_write_error(None);
        wait_for(|| rec.0.lock().unwrap().as_slice() == [0]).await;
    }

    /// A batch of `spans` spans of `items` items each, items numbered
    /// from `first`.
    fn ndjson_batch(spans: usize, items: usize, first: usize) -> Batch {
        let mut b = Batch::default();
        for k in 0..spans {
            let mut s = EncodedSpan::default();
            for j in 0..items {
                let n = first + k * items + j;
                s.items.push(s.body.len() as u32);
                s.body.extend_from_slice(
                    format!("{{\"create\":{{\"_id\":\"{n}\"}}}}\n{{\"m\":\"line {n}\"}}\n")
                        .as_bytes(),
                );
            }
            b.push(s);
        }
        b
    }

    /// Every item's bytes, in order (a batch with its bodies).
    fn items_of(b: &Batch) -> Vec<Vec<u8>> {
        assert!(b.packed.is_none());
        b.spans
            .iter()
            .flat_map(|s| (0..s.len()).map(move |i| s.item(i).to_vec()))
            .collect()
    }

    /// Every item's bytes, in order, of a packed batch: its body gunzip'd
    /// (if it is gzip) and cut by the spans' lengths and item offsets.
    fn unpacked_items(b: &Batch) -> Vec<Vec<u8>> {
        use std::io::Read;
        let packed = b.packed.as_ref().expect("a packed batch");
        assert!(b.spans.iter().all(|s| s.body.is_empty()));
        let mut body = Vec::new();
        if packed.gzip {
            flate2::read::GzDecoder::new(&packed.bytes[..])
                .read_to_end(&mut body)
                .unwrap();
        } else {
            body = packed.bytes.to_vec();
        }
        assert_eq!(body.len(), b.body_bytes);
        assert_eq!(packed.lens.iter().sum::<usize>(), b.body_bytes);
        assert_eq!(packed.lens.len(), b.spans.len());
        let mut items = Vec::new();
        let mut at = 0;
        for (span, &len) in b.spans.iter().zip(&packed.lens) {
            let span_body = &body[at..at + len];
            for (i, &start) in span.items.iter().enumerate() {
                let end = span.items.get(i + 1).map_or(len, |&e| e as usize);
                items.push(span_body[start as usize..end].to_vec());
            }
            at += len;
        }
        items
    }

    #[test]
    fn version_1_records_are_still_read() {
        let b = ndjson_batch(3, 2, 0);
        let mut p = Vec::new();
        encode_batch_v1(&b, &mut p);
        let back = decode_batch(9, &p).unwrap();
        assert!(back.packed.is_none(), "a version-1 record has its bodies");
        assert_eq!(back.events, 6);
        assert_eq!(items_of(&back), items_of(&b));
        assert_eq!(back.origins().len(), 1, "one ack per record");
        assert_eq!(back.origins()[0].seq, 9);
        // A large record comes back as several pool-sized spans.
        let mut big = Batch::default();
        for _ in 0..20 {
            let mut s = EncodedSpan::default();
            for _ in 0..4 {
                s.items.push(s.body.len() as u32);
                s.body.resize(s.body.len() + 50_000, b'y');
            }
            big.push(s);
        }
        encode_batch_v1(&big, &mut p);
        let back = decode_batch(1, &p).unwrap();
        assert_eq!((back.events, back.body_bytes), (80, 80 * 50_000));
        assert!(back.spans.len() > 1);
        assert!(
            back.spans
                .iter()
                .all(|s| s.body.len() <= READ_SPAN_BYTES + 50_000)
        );
        assert_eq!(back.origins().len(), 1);
        assert!(decode_batch(1, &p[..3]).is_none());
        assert!(decode_batch(1, &[0, 0, 0, 0]).is_none());
    }

    #[test]
    fn version_2_records_come_back_packed_gzip_or_raw() {
        // ~50 bytes an item: 8,000 items span two READ_SPAN_BYTES.
        for (spans, items) in [(1, 1), (3, 2), (40, 200)] {
            let b = ndjson_batch(spans, items, 0);
            for level in [0, 1, 6] {
                let what = format!("{spans}x{items} items, level {level}");
                let mut p = Vec::new();
                encode_batch(&b, level, &mut p);
                assert_eq!(u32_at(&p, 0), Some(V2_MARKER));
                let back = decode_batch(7, &p).unwrap();
                let packed = back.packed.as_ref().expect(&what);
                assert_eq!(packed.gzip, level > 0, "{what}");
                if level > 0 && b.events > 100 {
                    assert!(packed.bytes.len() < b.body_bytes / 3, "{what}");
                }
                assert_eq!((back.events, back.body_bytes), (b.events, b.body_bytes));
                assert_eq!(unpacked_items(&back), items_of(&b), "{what}");
                assert!(
                    back.spans
                        .iter()
                        .zip(&packed.lens)
                        .all(|(s, &len)| s.items[0] == 0 && len <= READ_SPAN_BYTES + 200),
                    "{what}"
                );
                assert_eq!(back.spans.len() > 1, spans * items > 1_000, "{what}");
                assert_eq!(back.origins().len(), 1, "one ack per record");
                assert_eq!(back.origins()[0].file, DISK_ORIGIN_FILE);
                assert_eq!(back.origins()[0].seq, 7);
            }
        }
    }

    #[test]
    fn malformed_version_2_heads_are_not_batches() {
        let b = ndjson_batch(2, 3, 0);
        let (mut gz, mut raw) = (Vec::new(), Vec::new());
        encode_batch(&b, 1, &mut gz);
        encode_batch(&b, 0, &mut raw);
        assert!(decode_batch(0, &gz).is_some() && decode_batch(0, &raw).is_some());
        let set = |p: &[u8], at: usize, v: u32| {
            let mut p = p.to_vec();
            p[at..at + 4].copy_from_slice(&v.to_le_bytes());
            p
        };
        let second_offset = u32_at(&raw, 20).unwrap();
        let raw_len = b.body_bytes as u32;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unknown flag", set(&gz, 4, FLAG_GZIP | 2)),
            ("no items", set(&raw, 8, 0)),
            ("more items than the head holds", set(&raw, 8, u32::MAX / 4)),
            ("first offset not 0", set(&raw, 16, 1)),
            ("an empty item", set(&raw, 20, 0)),
            ("descending", set(&raw, 24, second_offset - 1)),
            ("an offset past the body", set(&raw, 36, raw_len)),
            ("a raw body shorter than said", set(&raw, 12, raw_len + 1)),
            ("a raw body longer than said", set(&raw, 12, raw_len - 1)),
            ("gzip flag on a raw body", set(&raw, 4, FLAG_GZIP)),
            (
                "an offset past the gzip'd body's raw length",
                set(&gz, 12, second_offset),
            ),
            ("marker only", gz[..4].to_vec()),
            ("head cut in the offsets", gz[..18].to_vec()),
            ("gzip'd body missing", gz[..16 + 4 * 6].to_vec()),
        ];
        for (what, p) in cases {
            assert!(decode_batch(0, &p).is_none(), "{what}");
        }
    }

    #[tokio::test]
    async fn the_writer_stores_gzip_once_or_as_packed_and_the_reader_gives_packed_batches() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskBuffer::open(dir.path(), 1 << 30).unwrap();
        let rec = Arc::new(Recorder::default());
        let (tx, rx) = mpsc::channel(1);
        let writer = tokio::spawn(disk.clone().run_writer(
            rx,
            rec.clone(),
            WhenFull::Block,
            Duration::ZERO,
            1,
        ));
        // The first push fails and is retried: the record written is the
        // same batch, whole.
        disk.inject_write_error(Some(std::io::ErrorKind::StorageFull));
        let mut inputs: Vec<Batch> = (0..3).map(|i| ndjson_batch(10, 100, i * 1000)).collect();
        let want: Vec<Vec<Vec<u8>>> = inputs.iter().map(items_of).collect();
        let raw: usize = inputs.iter().map(|b| b.body_bytes).sum();
        // The batcher packs them (`Batch::pack`): stored as they come.
        inputs[1].pack(1).unwrap();
        assert!(inputs[1].packed.is_some());
        let mut inputs = inputs.into_iter();
        tx.send(inputs.next().unwrap()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        disk.inject_write_error(None);
        for b in inputs {
            tx.send(b).await.unwrap();
        }
        drop(tx);
        writer.await.unwrap();
        let stats = disk.stats();
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 3);
        assert!(stats.write_errors.load(Ordering::Relaxed) >= 1);
        let on_disk = stats.disk_bytes.load(Ordering::Relaxed) as usize;
        assert!(
            on_disk < raw / 3,
            "{on_disk} bytes on disk for {raw} of NDJSON"
        );

        let (otx, mut orx) = mpsc::channel(1);
        let reader = tokio::spawn(disk.clone().run_reader(otx, CancellationToken::new()));
        let acks = disk.acknowledger();
        let mut got = Vec::new();
        while let Some(b) = orx.recv().await {
            assert!(b.packed.as_ref().is_some_and(|p| p.gzip));
            got.push(unpacked_items(&b));
            acks.delivered(&b.origins());
        }
        reader.await.unwrap();
        assert_eq!(got, want);
        assert!(!disk.has_unacked());
        assert_eq!(stats.lost_records.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_record_given_up_as_lost_is_counted_and_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskBuffer::open(dir.path(), 1 << 30).unwrap();
        {
            let mut st = disk.shared.lock();
            let mut p = Vec::new();
            encode_batch(&ndjson_batch(1, 2, 0), 1, &mut p);
            st.queue.push(&p).unwrap();
            st.queue.push(&p).unwrap();
        }
        let acks = disk.acknowledger();
        let origin = |seq| SpanOrigin {
            file: DISK_ORIGIN_FILE,
            generation: 0,
            seq,
            end: 0,
        };
        acks.lost(&[origin(0)]);
        acks.delivered(&[origin(1)]);
        assert!(!disk.has_unacked());
        assert_eq!(disk.stats().lost_records.load(Ordering::Relaxed), 1);
    }
}
