//! Wires the stages together and owns shutdown.
//!
//! ```text
//! FileServer ──spans──► Batcher ──batches──► ElasticsearchSink ──acks──► Checkpointer
//! ```
//!
//! Channels are bounded: the span channel holds a few spans per core, the batch
//! channel one batch, and the sink takes a batch only when one of its
//! `concurrency` slots is free. On shutdown the tailers stop reading, the
//! batcher sends its open batch, the sink finishes what is in flight (up to
//! `shutdown_timeout`), and the checkpoints are written one last time. What
//! was not acknowledged is read again from the files on the next start.
//!
//! With `buffer: {type: disk}` the disk queue sits between batcher and sink:
//!
//! ```text
//! FileServer ─► Batcher ─► disk writer ─► segments ─► disk reader ─► sink ─acks─► queue ledger
//!                              └─ after fsync ─► Checkpointer
//! ```
//!
//! File checkpoints then advance once a batch is fsync'd into the queue. On
//! shutdown the writer takes the batcher's last batch and fsyncs, the reader
//! stops feeding the sink, the sink finishes what is in flight, and the
//! ledger is written; what was not delivered is sent after the next start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::Acknowledger;
use crate::buffer::disk::stage::DiskBuffer;
use crate::buffer::memory::Batcher;
use crate::config::{BufferConfig, Config};
use crate::sink::elasticsearch::ElasticsearchSink;
use crate::tail::{Checkpointer, FileServer};
use crate::telemetry::Metrics;

/// How often acknowledged progress is written to the checkpoint file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Runs the pipeline until `shutdown` is cancelled, then drains it.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let metrics = Arc::new(Metrics::default());
    let checkpointer = Arc::new(Checkpointer::open(&config.data_dir)?);
    let sink = ElasticsearchSink::new(&config.sink, &config.data_dir, metrics.clone())?;
    let server = FileServer::new(&config, checkpointer.clone(), metrics.clone())?;

    let (span_tx, span_rx) = mpsc::channel(8);
    let (batch_tx, batch_rx) = mpsc::channel(1);

    let tail_stop = CancellationToken::new();
    let tailers = tokio::spawn(server.run(span_tx, tail_stop.clone()));
    let batcher = tokio::spawn(Batcher::new(&config.sink.batch).run(span_rx, batch_tx));
    let file_acks: Arc<dyn Acknowledger> = checkpointer.clone();
    let reader_stop = CancellationToken::new();
    let (mut sink_task, mut disk) = match &config.buffer {
        BufferConfig::Memory => (tokio::spawn(sink.run(batch_rx, file_acks.clone())), None),
        BufferConfig::Disk(d) => {
            let dir = config.data_dir.join("buffer");
            let disk = DiskBuffer::open(&dir, d.max_bytes)?;
            let writer = tokio::spawn(disk.clone().run_writer(
                batch_rx,
                file_acks.clone(),
                d.when_full,
                d.fsync_interval,
            ));
            let (sink_tx, sink_rx) = mpsc::channel(1);
            let reader = tokio::spawn(disk.clone().run_reader(sink_tx, reader_stop.clone()));
            let sink_task = tokio::spawn(sink.run(sink_rx, disk.acknowledger()));
            (sink_task, Some((disk, writer, reader)))
        }
    };

    let persist_stop = CancellationToken::new();
    let persister = {
        let checkpointer = checkpointer.clone();
        let stop = persist_stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let c = checkpointer.clone();
                match tokio::task::spawn_blocking(move || c.persist()).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint write failed; will retry"),
                    Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
                    Ok(Ok(())) => {}
                }
            }
        })
    };

    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = &mut sink_task => {
            // The sink only returns early if its input closed, which means the
            // tailers and batcher are gone: something failed.
            tail_stop.cancel();
            persist_stop.cancel();
            let _ = persister.await;
            checkpointer.persist()?;
            r.context("sink task")?;
            anyhow::bail!("pipeline stopped unexpectedly");
        }
    }

    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: stop reading, drain in-flight batches");
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    tail_stop.cancel();
    let drained = async {
        let _ = tailers.await;
        let _ = batcher.await;
        if let Some((_, writer, reader)) = &mut disk {
            // The last batches are on disk now; what is not sent yet waits there.
            let _ = writer.await;
            reader_stop.cancel();
            let _ = reader.await;
        }
        let _ = (&mut sink_task).await;
    };
    if tokio::time::timeout_at(deadline, drained).await.is_err() {
        tracing::warn!(
            "drain deadline passed; unacknowledged lines will be read again on the next start"
        );
        sink_task.abort();
    }
    if let Some((disk, _, _)) = &disk {
        disk.flush(&*file_acks).await;
        let st = disk.stats();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            records_written = get(&st.records_written),
            records_acked = get(&st.records_acked),
            disk_bytes = get(&st.disk_bytes),
            corrupt_regions = get(&st.corrupt_regions),
            lost_records = get(&st.lost_records),
            dropped_events = get(&st.dropped_events),
            write_errors = get(&st.write_errors),
            "disk buffer closed"
        );
    }
    persist_stop.cancel();
    let _ = persister.await;
    checkpointer.persist()?;
    tracing::info!("checkpoints written; bye");
    Ok(())
}
