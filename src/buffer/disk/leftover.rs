//! A leftover disk buffer: `<data_dir>/buffer` still holding records that
//! Elasticsearch has not acknowledged, found by a pipeline that runs with
//! `buffer: {type: memory}` (the config was switched from `disk`, for a
//! restart or by a reload).
//!
//! Those records' file checkpoints moved past them when they were fsync'd,
//! so the files will not give their lines again: the queue holds the only
//! copy. [`Leftover`] drains it into the memory pipeline's sink:
//!
//! ```text
//! Batcher ──────────── batches ──┐
//!                                merge ─► sink ─acks─► split ─┬─► Checkpointer (file spans)
//! leftover queue ─► reader ──────┘                            └─► queue ledger (record ids)
//! ```
//!
//! [`merge`] feeds one sink from both, so they share its `concurrency`
//! slots (in-flight requests stay bounded; one dead-letter file, one
//! template install) and take turns while both have batches. Its own task
//! rather than a second sender on the batcher's channel: the reader would
//! then queue behind every batch the batcher hands on, and shutdown would
//! wait for both to drop their senders. Memory: the two one-batch channels
//! in front of `merge` hold one batch more than the memory pipeline alone.
//! Acknowledgements are made durable as in the disk pipeline: the ledger
//! is written by [`Leftover::close`] at shutdown and before the directory
//! goes.
//!
//! Once every record is acknowledged the directory is removed
//! ([`Queue::remove_files`](super::Queue::remove_files)) and `leftover disk
//! buffer drained` is logged with the record count. Removed rather than
//! left empty: "no `buffer/` directory" is the plain sign that nothing is
//! stranded there, and an empty queue would otherwise be opened again on
//! every start. A directory without unacknowledged records is removed as
//! soon as it is found.
//!
//! Stopped before it is empty (shutdown, reload), the reader stops between
//! records, the sink finishes what is in flight (up to the drain
//! deadline), and [`Leftover::close`] writes the ledger: the rest is sent
//! after the next start, by a memory pipeline draining it again or by a
//! disk pipeline, which simply continues the same queue. Replays of
//! records whose ack was not yet written are absorbed by their `_id`s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::stage::{DISK_ORIGIN_FILE, DiskBuffer};
use super::{OpenError, Stats};
use crate::buffer::{Acknowledger, Batch};
use crate::event::SpanOrigin;

/// The size a leftover queue is opened with. Nothing is pushed to it, so it
/// is never full; its segments are kept whatever their size.
const LEFTOVER_MAX_BYTES: u64 = u64::MAX;

/// A leftover disk buffer being drained (module doc). Clones share it.
#[derive(Clone)]
pub struct Leftover {
    disk: DiskBuffer,
    dir: PathBuf,
    /// Segment bytes when it was found.
    found_bytes: u64,
}

impl Leftover {
    /// Opens the queue in `dir` if there is one; `None` if `dir` does not
    /// exist or holds nothing unacknowledged (it is removed then).
    /// Blocking: waits up to [`LOCK_WAIT`](super::LOCK_WAIT) for another
    /// owner, e.g. the disk pipeline a reload replaces, to let it go.
    pub fn open(dir: &Path) -> Result<Option<Leftover>, OpenError> {
        match std::fs::metadata(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(OpenError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
        let disk = DiskBuffer::open(dir, LEFTOVER_MAX_BYTES)?;
        disk.close_writing();
        let stats = disk.stats();
        let records = stats.unacked_records.load(Ordering::Relaxed);
        let found_bytes = stats.disk_bytes.load(Ordering::Relaxed);
        if records == 0 {
            match disk.remove_drained() {
                Ok(_) => tracing::info!(
                    dir = %dir.display(),
                    "disk buffer directory holds nothing undelivered; removed"
                ),
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    "disk buffer directory holds nothing undelivered but could not be removed"
                ),
            }
            return Ok(None);
        }
        tracing::info!(
            dir = %dir.display(),
            records,
            bytes = found_bytes,
            "leftover disk buffer found (buffer type is memory): draining it into Elasticsearch alongside the pipeline"
        );
        Ok(Some(Leftover {
            disk,
            dir: dir.to_path_buf(),
            found_bytes,
        }))
    }

    /// The queue's counters (they describe the drain: `unacked_records`
    /// counts down).
    pub fn stats(&self) -> Arc<Stats> {
        self.disk.stats()
    }

    /// Bytes of segment files when it was found.
    pub fn found_bytes(&self) -> u64 {
        self.found_bytes
    }

    /// The acknowledger of a sink fed both by the pipeline and by this
    /// leftover: record acks go to the queue, file spans to `files`.
    pub fn split_acks(&self, files: Arc<dyn Acknowledger>) -> Arc<dyn Acknowledger> {
        Arc::new(SplitAcks {
            queue: self.disk.acknowledger(),
            files,
        })
    }

    /// Feeds `out` (the sink's channel) until every record was read and
    /// acknowledged, then removes the directory and logs `leftover disk
    /// buffer drained`. Returns early when `stop` is cancelled; what is not
    /// acknowledged then stays on disk (see [`close`](Self::close)).
    pub async fn drain(self, out: mpsc::Sender<Batch>, stop: CancellationToken) {
        self.disk.clone().run_reader(out, stop.clone()).await;
        if !self.disk.all_acked(&stop).await {
            return;
        }
        let disk = self.disk.clone();
        let removed = tokio::task::spawn_blocking(move || disk.remove_drained()).await;
        let stats = self.disk.stats();
        let records = stats.records_acked.load(Ordering::Relaxed);
        let lost_records = stats.lost_records.load(Ordering::Relaxed);
        let dir = self.dir.display();
        match removed {
            Ok(Ok(_)) => {
                tracing::info!(%dir, records, lost_records, "leftover disk buffer drained")
            }
            Ok(Err(e)) => tracing::warn!(
                %dir,
                records,
                lost_records,
                error = %e,
                "leftover disk buffer drained; removing its directory failed (it holds nothing undelivered)"
            ),
            Err(e) => tracing::error!(%dir, error = %e, "leftover disk buffer removal task failed"),
        }
    }

    /// At shutdown, after the sink is done: writes the ledger, so that the
    /// acknowledgements so far hold after a restart, and says what is left.
    /// Does nothing once the directory was removed.
    pub async fn close(&self) {
        self.disk.flush(&NoFiles).await;
        let left = self.disk.stats().unacked_records.load(Ordering::Relaxed);
        if left > 0 {
            tracing::info!(
                dir = %self.dir.display(),
                records = left,
                "leftover disk buffer not drained yet; the rest is sent after the next start"
            );
        }
    }
}

/// Forwards batches from the pipeline (`batches`) and from a leftover's
/// reader (`leftover`) into the sink's channel `out`, taking turns at
/// random while both have some, until both are closed. A slot in `out` is
/// reserved before a batch is taken, so a busy sink leaves both waiting.
pub async fn merge(
    mut batches: mpsc::Receiver<Batch>,
    mut leftover: mpsc::Receiver<Batch>,
    out: mpsc::Sender<Batch>,
) {
    let (mut batches_open, mut leftover_open) = (true, true);
    while batches_open || leftover_open {
        let Ok(slot) = out.reserve().await else {
            return;
        };
        let batch = tokio::select! {
            b = batches.recv(), if batches_open => b.or_else(|| {
                batches_open = false;
                None
            }),
            b = leftover.recv(), if leftover_open => b.or_else(|| {
                leftover_open = false;
                None
            }),
        };
        if let Some(batch) = batch {
            slot.send(batch);
        }
    }
}

/// Routes a sink's acks: record ids to the leftover queue, the rest to the
/// file checkpoints.
struct SplitAcks {
    queue: Arc<dyn Acknowledger>,
    files: Arc<dyn Acknowledger>,
}

impl Acknowledger for SplitAcks {
    fn delivered(&self, spans: &[SpanOrigin]) {
        // A batch comes from one source: all records or all file spans.
        let (records, files): (Vec<SpanOrigin>, Vec<SpanOrigin>) =
            spans.iter().partition(|s| s.file == DISK_ORIGIN_FILE);
        if !records.is_empty() {
            self.queue.delivered(&records);
        }
        if !files.is_empty() {
            self.files.delivered(&files);
        }
    }

    fn lost(&self, spans: &[SpanOrigin]) {
        let (records, files): (Vec<SpanOrigin>, Vec<SpanOrigin>) =
            spans.iter().partition(|s| s.file == DISK_ORIGIN_FILE);
        if !records.is_empty() {
            self.queue.lost(&records);
        }
        if !files.is_empty() {
            self.files.lost(&files);
        }
    }
}

/// A leftover queue has no writer, so no file spans wait for its fsync.
struct NoFiles;

impl Acknowledger for NoFiles {
    fn delivered(&self, _: &[SpanOrigin]) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::buffer::disk::stage::{encode_batch, encode_batch_v1};
    use crate::buffer::disk::{Options, Queue};
    use crate::event::EncodedSpan;

    /// A queue in `dir` holding records `0..n`, each a batch of one item
    /// `{"n":<id>}`, none acknowledged: even ids in the version-1 payload
    /// (an older logship's), odd ones in version 2, gzip'd.
    fn leave_queue(dir: &Path, n: u64) {
        let mut q = Queue::open(dir, Options::new(64 << 20), Arc::default()).unwrap();
        let mut payload = Vec::new();
        for i in 0..n {
            let mut span = EncodedSpan::default();
            span.items.push(0);
            span.body
                .extend_from_slice(format!("{{\"create\":{{}}}}\n{{\"n\":{i}}}\n").as_bytes());
            let mut b = Batch::default();
            b.push(span);
            if i % 2 == 0 {
                encode_batch_v1(&b, &mut payload);
            } else {
                encode_batch(&b, 1, &mut payload);
            }
            q.push(&payload).unwrap();
        }
        q.flush().unwrap();
    }

    /// Records the file spans acknowledged to it.
    #[derive(Default)]
    struct Files(Mutex<Vec<SpanOrigin>>);
    impl Acknowledger for Files {
        fn delivered(&self, spans: &[SpanOrigin]) {
            self.0.lock().unwrap().extend_from_slice(spans);
        }
    }

    /// The batch's NDJSON, gunzip'd if it is packed.
    fn body(b: &Batch) -> String {
        use std::io::Read;
        match &b.packed {
            Some(p) => {
                assert!(p.gzip);
                let mut out = String::new();
                flate2::read::GzDecoder::new(&p.bytes[..])
                    .read_to_string(&mut out)
                    .unwrap();
                out
            }
            None => b
                .spans
                .iter()
                .map(|s| String::from_utf8_lossy(&s.body).into_owned())
                .collect(),
        }
    }

    #[tokio::test]
    async fn drains_everything_then_removes_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("buffer");
        leave_queue(&dir, 5);
        let leftover = Leftover::open(&dir).unwrap().expect("a leftover");
        assert_eq!(leftover.stats().unacked_records.load(Ordering::Relaxed), 5);
        let files = Arc::new(Files::default());
        let acks = leftover.split_acks(files.clone());
        let (tx, mut rx) = mpsc::channel(1);
        let drain = tokio::spawn(leftover.clone().drain(tx, CancellationToken::new()));
        let mut seen = Vec::new();
        while let Some(batch) = rx.recv().await {
            seen.push(body(&batch));
            acks.delivered(&batch.origins());
        }
        // A file span acked through the same sink goes to the checkpoints.
        let file_span = SpanOrigin {
            file: 3,
            generation: 0,
            seq: 1,
            end: 10,
        };
        acks.delivered(&[file_span]);
        tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .expect("drain ends once everything is acked")
            .unwrap();
        let want: Vec<String> = (0..5)
            .map(|i| format!("{{\"create\":{{}}}}\n{{\"n\":{i}}}\n"))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(files.0.lock().unwrap().as_slice(), [file_span]);
        assert!(!dir.exists(), "drained directory is removed");
        leftover.close().await;
        assert!(!dir.exists(), "close after the drain writes nothing");
        assert!(Leftover::open(&dir).unwrap().is_none());
    }

    #[tokio::test]
    async fn stopped_midway_the_rest_is_drained_next_time() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("buffer");
        leave_queue(&dir, 6);
        let leftover = Leftover::open(&dir).unwrap().expect("a leftover");
        let acks = leftover.split_acks(Arc::new(Files::default()));
        let (tx, mut rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let drain = tokio::spawn(leftover.clone().drain(tx, stop.clone()));
        let mut first = Vec::new();
        for _ in 0..2 {
            let batch = rx.recv().await.unwrap();
            first.push(body(&batch));
            acks.delivered(&batch.origins());
        }
        stop.cancel();
        drain.await.unwrap();
        // Read by the reader but never acknowledged (in flight at the stop).
        while rx.recv().await.is_some() {}
        leftover.close().await;
        drop((leftover, acks));
        assert!(dir.exists(), "undelivered records stay on disk");

        let leftover = Leftover::open(&dir).unwrap().expect("still a leftover");
        assert_eq!(leftover.stats().unacked_records.load(Ordering::Relaxed), 4);
        let acks = leftover.split_acks(Arc::new(Files::default()));
        let (tx, mut rx) = mpsc::channel(1);
        let drain = tokio::spawn(leftover.clone().drain(tx, CancellationToken::new()));
        let mut rest = Vec::new();
        while let Some(batch) = rx.recv().await {
            rest.push(body(&batch));
            acks.delivered(&batch.origins());
        }
        drain.await.unwrap();
        assert!(
            rest.iter().all(|b| !first.contains(b)),
            "acked records are not sent again"
        );
        assert_eq!(first.len() + rest.len(), 6);
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn merge_feeds_the_leftover_while_the_batcher_waits_for_lines() {
        let (live_tx, live_rx) = mpsc::channel::<Batch>(1);
        let (left_tx, left_rx) = mpsc::channel(1);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        let merged = tokio::spawn(merge(live_rx, left_rx, out_tx));
        // The batcher holds its channel's slot while it waits for lines.
        let idle = live_tx.reserve().await.unwrap();
        let feeder = tokio::spawn(async move {
            for _ in 0..3 {
                left_tx.send(Batch::default()).await.unwrap();
            }
        });
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(5), out_rx.recv())
                .await
                .expect("leftover batches flow")
                .unwrap();
        }
        feeder.await.unwrap();
        idle.send(Batch::default());
        assert!(out_rx.recv().await.is_some(), "and the batcher's");
        drop(live_tx);
        assert!(out_rx.recv().await.is_none(), "closed once both are");
        merged.await.unwrap();
    }

    #[test]
    fn no_directory_or_nothing_unacknowledged_is_no_leftover() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("buffer");
        assert!(Leftover::open(&dir).unwrap().is_none());
        assert!(!dir.exists(), "not created");
        // Every record acknowledged and the ack written: removed at once.
        leave_queue(&dir, 3);
        {
            let mut q = Queue::open(&dir, Options::new(64 << 20), Arc::default()).unwrap();
            for id in 0..3 {
                q.ack(id);
            }
            q.flush().unwrap();
        }
        assert!(Leftover::open(&dir).unwrap().is_none());
        assert!(!dir.exists(), "an empty buffer directory is removed");
    }
}
