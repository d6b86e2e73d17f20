//! In-memory batching between the tailers and the sink.
//!
//! The batcher owns at most one open batch. A span is added unless it would
//! push the batch past `max_bytes` or `max_events`, in which case the open
//! batch is sent first (a single span larger than the limits travels alone;
//! tailers keep spans far below the limits). A non-empty batch is sent at the
//! latest `timeout` after its first span arrived.
//!
//! What blocks: `run` waits on the sink's bounded channel when the sink has no
//! room, and while it waits it does not receive spans, so the tailers' bounded
//! sends block in turn.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Batch;
use crate::config::BatchConfig;
use crate::event::EncodedSpan;

pub struct Batcher {
    max_bytes: usize,
    max_events: usize,
    timeout: Duration,
}

impl Batcher {
    pub fn new(cfg: &BatchConfig) -> Self {
        Batcher {
            max_bytes: cfg.max_bytes.max(1),
            max_events: cfg.max_events.max(1),
            timeout: cfg.timeout,
        }
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
    /// A batch is only started once the sink's channel has room for it
    /// (`reserve`), so at most one finished batch waits in the channel and
    /// none waits in here: memory holds `concurrency + 1` batches at most.
    pub async fn run(self, mut spans: mpsc::Receiver<EncodedSpan>, out: mpsc::Sender<Batch>) {
        let mut carried: Option<EncodedSpan> = None;
        loop {
            let Ok(slot) = out.reserve().await else {
                return;
            };
            let first = match carried.take() {
                Some(span) => span,
                None => match spans.recv().await {
                    Some(span) => span,
                    None => return,
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
            slot.send(batch);
            if closed {
                return;
            }
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
}
