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
//! The record payload is one batch: `n: u32 LE`, `n` item offsets (`u32
//! LE`, ascending, into the body), then the NDJSON body. The reader gives
//! the sink a batch of one span whose origin is `{file: DISK_ORIGIN_FILE,
//! seq: record id}`; the sink's acks (`Acknowledger::delivered`) are routed
//! to [`Queue::ack`] by [`DiskAcks`].
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
use crate::buffer::{Acknowledger, Batch};
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
    /// then flushes one last time.
    pub async fn run_writer(
        self,
        mut batches: mpsc::Receiver<Batch>,
        checkpoints: Arc<dyn Acknowledger>,
        when_full: WhenFull,
        fsync_interval: Duration,
    ) {
        let period = if fsync_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            fsync_interval
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut payload = Vec::new();
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
            encode_batch_head(&batch, &mut payload);
            let origins = batch.origins();
            let events = batch.events as u64;
            payload = self
                .push(payload, batch, origins, events, &*checkpoints, when_full)
                .await;
            if fsync_interval.is_zero() {
                self.flush(&*checkpoints).await;
            }
        }
        self.flush(&*checkpoints).await;
        self.shared.writer_done.store(true, Ordering::Release);
        self.shared.data.notify_one();
    }

    /// Pushes one record (`head`, then the bodies of `batch`'s spans),
    /// waiting (or dropping) while full; returns the head buffer for reuse.
    async fn push(
        &self,
        mut payload: Vec<u8>,
        mut batch: Batch,
        origins: Vec<SpanOrigin>,
        events: u64,
        checkpoints: &dyn Acknowledger,
        when_full: WhenFull,
    ) -> Vec<u8> {
        let mut failing = false;
        let mut origins = Some(origins);
        loop {
            let shared = self.shared.clone();
            let (buf, b, res) = match tokio::task::spawn_blocking(move || {
                let res = {
                    let mut parts: Vec<&[u8]> = Vec::with_capacity(batch.spans.len() + 1);
                    parts.push(&payload);
                    parts.extend(batch.spans.iter().map(|s| s.body.as_slice()));
                    shared.lock().queue.push_parts(&parts)
                };
                (payload, batch, res)
            })
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "disk buffer write task failed");
                    return Vec::new();
                }
            };
            payload = buf;
            batch = b;
            match res {
                Ok(_) => {
                    if failing {
                        tracing::info!("disk buffer writes succeed again");
                    }
                    let origins = origins.take().unwrap_or_default();
                    self.shared.lock().pending.extend(origins);
                    self.shared.data.notify_one();
                    return payload;
                }
                Err(PushError::Full) if when_full == WhenFull::DropNewest => {
                    add(&self.shared.stats.dropped_events, events);
                    tracing::warn!(
                        events,
                        "disk buffer full: dropped a batch (when_full: drop_newest)"
                    );
                    // Given up: let the files' checkpoints move past these lines.
                    checkpoints.delivered(&origins.take().unwrap_or_default());
                    return payload;
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

/// Serialises a batch as one record payload (cleared first): the head
/// ([`encode_batch_head`]) followed by the span bodies. The writer does not
/// call it: it writes the head and the bodies as they are.
pub fn encode_batch(batch: &Batch, out: &mut Vec<u8>) {
    encode_batch_head(batch, out);
    for span in &batch.spans {
        out.extend_from_slice(&span.body);
    }
}

/// The part of a batch's record payload before the bodies: the item count
/// and the item offsets (cleared first).
pub fn encode_batch_head(batch: &Batch, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(batch.events as u32).to_le_bytes());
    let mut base = 0u32;
    for span in &batch.spans {
        for &off in &span.items {
            out.extend_from_slice(&(base + off).to_le_bytes());
        }
        base += span.body.len() as u32;
    }
}

/// Bodies of the spans a record is split into, at most (item boundaries
/// permitting): the size tailers produce, so bodies recycled through
/// `span_pool` stay small (a pooled 5 MiB batch body would pin memory).
const READ_SPAN_BYTES: usize = 192 * 1024;

/// The batch stored in record `id`, or `None` if the payload is not one.
/// The first span carries the origin the sink acknowledges (`seq` = `id`).
pub fn decode_batch(id: u64, payload: &[u8]) -> Option<Batch> {
    let n = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?) as usize;
    let body_at = n.checked_mul(4)?.checked_add(4)?;
    let body = payload.get(body_at..)?;
    if n == 0 {
        return None;
    }
    let offset = |i: usize| -> usize {
        let b = &payload[4 + 4 * i..8 + 4 * i];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    };
    let mut prev = 0usize;
    for i in 0..n {
        let off = offset(i);
        if off < prev || off >= body.len() || (i == 0 && off != 0) {
            return None;
        }
        prev = off;
    }
    let mut batch = Batch::default();
    let mut i = 0;
    while i < n {
        let start = offset(i);
        let mut j = i + 1;
        while j < n && offset(j) - start < READ_SPAN_BYTES {
            j += 1;
        }
        let end = if j < n { offset(j) } else { body.len() };
        let mut span = EncodedSpan::default();
        if batch.spans.is_empty() {
            span.origin = Some(SpanOrigin {
                file: DISK_ORIGIN_FILE,
                generation: 0,
                seq: id,
                end: 0,
            });
        }
        span.body = span_pool::take(end - start);
        span.body.extend_from_slice(&body[start..end]);
        span.items = (i..j).map(|k| (offset(k) - start) as u32).collect();
        batch.push(span);
        i = j;
    }
    Some(batch)
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
            let writer = tokio::spawn(disk.clone().run_writer(
                rx,
                rec.clone(),
                when_full,
                Duration::from_millis(20),
            ));
            // 300 KiB batches into a 1 MiB buffer with no reader: three fit.
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
                .run_writer(rx, rec.clone(), WhenFull::Block, Duration::ZERO),
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

    #[test]
    fn batch_round_trip() {
        let mut b = Batch::default();
        for k in 0..3 {
            let mut s = EncodedSpan::default();
            for j in 0..2 {
                s.items.push(s.body.len() as u32);
                s.body
                    .extend_from_slice(format!("{{\"a\":{k}}}\n{{\"d\":{j}}}\n").as_bytes());
            }
            b.push(s);
        }
        let mut p = Vec::new();
        encode_batch(&b, &mut p);
        let back = decode_batch(9, &p).unwrap();
        assert_eq!(back.events, 6);
        let got: Vec<&[u8]> = back
            .spans
            .iter()
            .flat_map(|s| (0..s.len()).map(move |i| s.item(i)))
            .collect();
        let want: Vec<&[u8]> = b
            .spans
            .iter()
            .flat_map(|s| (0..s.len()).map(move |i| s.item(i)))
            .collect();
        assert_eq!(got, want);
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
        encode_batch(&big, &mut p);
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
}
