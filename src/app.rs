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

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::Acknowledger;
use crate::buffer::memory::Batcher;
use crate::config::Config;
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
    let k8s_stop = CancellationToken::new();
    let (enricher, pod_watch) = crate::k8s::start(&config.kubernetes, k8s_stop.clone())
        .await
        .context("starting Kubernetes metadata")?;
    let _k8s_guard = k8s_stop.drop_guard();
    let server =
        FileServer::new(&config, checkpointer.clone(), metrics.clone())?.with_enricher(enricher);
    drop(pod_watch);

    let (span_tx, span_rx) = mpsc::channel(8);
    let (batch_tx, batch_rx) = mpsc::channel(1);

    let tail_stop = CancellationToken::new();
    let tailers = tokio::spawn(server.run(span_tx, tail_stop.clone()));
    let batcher = tokio::spawn(Batcher::new(&config.sink.batch).run(span_rx, batch_tx));
    let acks: Arc<dyn Acknowledger> = checkpointer.clone();
    let mut sink_task = tokio::spawn(sink.run(batch_rx, acks));

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
        let _ = (&mut sink_task).await;
    };
    if tokio::time::timeout_at(deadline, drained).await.is_err() {
        tracing::warn!(
            "drain deadline passed; unacknowledged lines will be read again on the next start"
        );
        sink_task.abort();
    }
    persist_stop.cancel();
    let _ = persister.await;
    checkpointer.persist()?;
    tracing::info!("checkpoints written; bye");
    Ok(())
}
