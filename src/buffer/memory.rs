//! In-memory batching between the tailers and the sink.
//!
//! The batcher owns at most one open batch. A span is added unless it would
//! push the batch past `max_bytes` or `max_events`, in which case the open
//! batch is sent first (a single span larger than the limits travels alone;
//! tailers keep spans far below the limits). A non-empty batch is sent at the
//! latest `timeout` after its first span arrived.
//!
//! What blocks: finished batches are handed on (compressed, then sent into
//! the sink's bounded channel, in order) by tasks of their own while the
//! next one fills; when `ahead` of them are out and the next one is full,
//! `run` waits and does not receive spans, so the tailers' bounded sends
//! block in turn.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::Batch;
use crate::config::BatchConfig;
use crate::event::EncodedSpan;

pub struct Batcher {
    max_bytes: usize,
    max_events: usize,
    timeout: Duration,
    /// Compress each finished batch at this gzip level before handing it
    /// on ([`Batch::pack`]).
    pack_level: Option<u32>,
    /// Finished batches being compressed or waiting to be handed on, at
    /// most (they compress in parallel and are handed on in order).
    ahead: usize,
}

impl Batcher {
    pub fn new(cfg: &BatchConfig) -> Self {
        Batcher {
            max_bytes: cfg.max_bytes.max(1),
            max_events: cfg.max_events.max(1),
            timeout: cfg.timeout,
            pack_level: None,
            ahead: 1,
        }
    }

    /// Each finished batch is compressed here (on the blocking pool) into
    /// the body the sink sends, before it waits for the sink: the waiting
    /// batch costs its gzip'd size (~4x less), and the sink, when a request
    /// slot frees, sends at once while the next batch compresses beside the
    /// requests in flight. Up to `ahead` finished batches compress at once
    /// (the sink's `concurrency`: as many gzips in parallel as when the
    /// sink compressed each request). Level 0 (no compression) packs
    /// nothing: the bodies stay in the spans.
    pub fn packing(mut self, gzip_level: u32, ahead: usize) -> Self {
        self.pack_level = (gzip_level > 0).then_some(gzip_level);
        self.ahead = ahead.max(1);
        self
    }

    fn fits(&self, batch: &Batch, span: &EncodedSpan) -> bool {
        batch.is_empty()
            || (batch.body_bytes + span.body.len() <= self.max_bytes
                && batch.events + span.items.len() <= self.max_events)
    }

    fn full(&self, batch: &Batch) -> bool {
        batch.body_bytes >= self.max_bytes || batch.events >= self.max_events
    }

    /// Runs until `spans` is closed and drained; then sends the last batch
    /// and returns (dropping `out`, which tells the sink no more will come).
    ///
    /// A finished batch is handed on by a task of its own (compressed if
    /// [`packing`](Self::packing), then sent when the sink's channel has
    /// room) while the next one fills: gathering spans never waits for a
    /// gzip or for the sink, so the tailers keep both cores busy during a
    /// catch-up. Batches are handed on in order. Memory: besides the sink's
    /// `concurrency` batches and the one in its channel, up to `ahead`
    /// batches are being compressed or wait (gzip'd) to be sent, and one
    /// fills here (when `ahead` are out, it waits full, and `run` receives
    /// no spans: the tailers' bounded sends block in turn).
    pub async fn run(self, mut spans: mpsc::Receiver<EncodedSpan>, out: mpsc::Sender<Batch>) {
        let mut carried: Option<EncodedSpan> = None;
        // One permit per batch being handed on: at most `ahead`.
        let ahead = Arc::new(Semaphore::new(self.ahead));
        // Told when the batch before the next one is in the channel.
        let mut before: Option<oneshot::Receiver<()>> = None;
        loop {
            let first = match carried.take() {
                Some(span) => span,
                None => match spans.recv().await {
                    Some(span) => span,
                    None => break,
                },
            };
            if first.is_empty() {
                continue;
            }
            let mut batch = Batch::default();
            batch.push(first);
            let deadline = Instant::now() + self.timeout;
            let mut closed = false;
            while !self.full(&batch) {
                let span = tokio::select! {
                    s = spans.recv() => s,
                    _ = tokio::time::sleep_until(deadline) => break,
                };
                match span {
                    None => {
                        closed = true;
                        break;
                    }
                    Some(span) if span.is_empty() => {}
                    Some(span) if self.fits(&batch, &span) => batch.push(span),
                    Some(span) => {
                        carried = Some(span);
                        break;
                    }
                }
            }
            let Ok(permit) = ahead.clone().acquire_owned().await else {
                return;
            };
            if out.is_closed() {
                // The sink is gone.
                return;
            }
            let (sent, next) = oneshot::channel();
            tokio::spawn(hand_on(
                batch,
                self.pack_level,
                before.replace(next),
                sent,
                out.clone(),
                permit,
            ));
            if closed {
                break;
            }
        }
        // Every batch handed on (or given up) before `out` goes.
        let _ = ahead.acquire_many(self.ahead as u32).await;
    }
}

/// Compresses `batch` (if `pack_level`), waits until the batch before it is
/// in the channel (`before`), sends it and says so (`sent`). If the batch
/// before was not sent (the sink is gone), neither is this one.
async fn hand_on(
    batch: Batch,
    pack_level: Option<u32>,
    before: Option<oneshot::Receiver<()>>,
    sent: oneshot::Sender<()>,
    out: mpsc::Sender<Batch>,
    _permit: OwnedSemaphorePermit,
) {
    let batch = match pack_level {
        Some(level) => match pack(batch, level).await {
            Some(packed) => packed,
            None => return,
        },
        None => batch,
    };
    if let Some(before) = before
        && before.await.is_err()
    {
        return;
    }
    if out.send(batch).await.is_ok() {
        let _ = sent.send(());
    }
}

/// [`Batch::pack`] on the blocking pool. A failure (or a panic while
/// compressing, before any body was freed) leaves the batch as it was: the
/// sink then builds its body itself.
async fn pack(batch: Batch, level: u32) -> Option<Batch> {
    let packed = tokio::task::spawn_blocking(move || {
        let mut batch = batch;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batch.pack(level)));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot compress a batch ahead; the sink will")
            }
            Err(_) => tracing::error!("compressing a batch panicked; the sink will compress it"),
        }
        batch
    })
    .await;
    match packed {
        Ok(batch) => Some(batch),
        // Only if the runtime is shutting down (the task was cancelled
        // before it ran; a panic inside is caught above): nothing is sent
        // any more, and its lines, not acknowledged, are read again.
        Err(e) => {
            tracing::error!(error = %e, "batch compression task failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(items: usize, bytes_each: usize) -> EncodedSpan {
        let mut s = EncodedSpan::default();
        for _ in 0..items {
            s.items.push(s.body.len() as u32);
            s.body.extend(std::iter::repeat_n(b'x', bytes_each));
        }
        s
    }

    #[tokio::test(start_paused = true)]
    async fn batches_respect_limits_and_timeout() {
        let cfg = BatchConfig {
            max_bytes: 1000,
            max_events: 10,
            timeout: Duration::from_secs(1),
        };
        let (stx, srx) = mpsc::channel(16);
        let (btx, mut brx) = mpsc::channel(16);
        tokio::spawn(Batcher::new(&cfg).run(srx, btx));
        // 4 items of 100 bytes, three times: the third does not fit under 10 events.
        for _ in 0..3 {
            stx.send(span(4, 100)).await.unwrap();
        }
        let b = brx.recv().await.unwrap();
        assert_eq!((b.events, b.body_bytes), (8, 800));
        // The remaining span leaves on the timeout.
        let b = brx.recv().await.unwrap();
        assert_eq!((b.events, b.body_bytes), (4, 400));
        // Closing the input flushes and closes the output.
        stx.send(span(1, 10)).await.unwrap();
        drop(stx);
        let b = brx.recv().await.unwrap();
        assert_eq!(b.events, 1);
        assert!(brx.recv().await.is_none(), "output closed");
    }

    /// A packing batcher hands on each batch as its gzip'd body, the spans'
    /// bodies freed, in order.
    #[tokio::test]
    async fn packed_batches_hold_the_gzip_of_their_spans_in_order() {
        use std::io::Read;
        let cfg = BatchConfig {
            max_bytes: 1000,
            max_events: 10,
            timeout: Duration::from_secs(1),
        };
        let (stx, srx) = mpsc::channel(16);
        let (btx, mut brx) = mpsc::channel(1);
        tokio::spawn(Batcher::new(&cfg).packing(1, 2).run(srx, btx));
        let mut sent = Vec::new();
        for i in 0..9u8 {
            let mut s = span(3, 100);
            s.body.iter_mut().for_each(|b| *b = b'a' + i);
            sent.push(s.body.clone());
            stx.send(s).await.unwrap();
        }
        drop(stx);
        let mut got = Vec::new();
        while let Some(b) = brx.recv().await {
            let packed = b.packed.as_ref().expect("packed");
            assert!(packed.gzip);
            assert!(b.spans.iter().all(|s| s.body.is_empty()), "bodies freed");
            assert_eq!(packed.lens.iter().sum::<usize>(), b.body_bytes);
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&packed.bytes[..])
                .read_to_end(&mut raw)
                .unwrap();
            assert_eq!(raw.len(), b.body_bytes);
            got.extend(raw.chunks(300).map(<[u8]>::to_vec));
        }
        assert_eq!(got, sent);
    }
}
