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
//!
//! With `buffer: {type: memory}`, a disk queue left in `<data_dir>/buffer`
//! by an earlier `disk` config (at start, or by a reload: the disk pipeline
//! is drained first, then the memory one finds its queue) still holds
//! records whose file checkpoints are past them. It is drained alongside
//! (`buffer::disk::leftover`): its reader and the batcher take turns into
//! one sink, acks are split between the checkpoints and the queue's ledger,
//! and once it is empty its directory is removed. Its figures are the disk
//! buffer metrics while it drains (the capacity gauge shows its size when
//! found). On shutdown its reader stops with the tailers, the sink finishes
//! what is in flight, and its ledger is written: the rest is drained on the
//! next start. The reverse switch, memory to disk, carries nothing over: a
//! memory pipeline holds nothing durable (checkpoints only move on acks),
//! and a leftover not yet drained is simply the disk pipeline's queue again.
//!
//! journald sources ([`crate::journald`]) feed the same span channel as
//! the tailers and stop with them; their acks are told apart from file
//! acks by [`AckRouter`] (on every path above: sink, disk writer,
//! leftover), and their cursors are written with the checkpoints.
//!
//! Around the pipeline, [`serve`] owns what outlives it: the metrics, the
//! file registry and the HTTP endpoint (`http.listen`). A reload (SIGHUP,
//! a message on [`Reload::requests`]) re-reads the config file; an invalid
//! one is logged and the running pipeline keeps going untouched. A valid,
//! different one is applied by draining the running pipeline exactly as on
//! shutdown (stop reading, flush, wait for acks up to `shutdown_timeout`,
//! write checkpoints) and starting a new one from the checkpoints: nothing
//! is lost or duplicated by construction (what was not acknowledged is read
//! again and its deterministic `_id` makes a replay a 409). `log` and
//! `http.listen` are fixed at start; a reload that changes them is applied
//! without them and says so.
//!
//! Self-logging: when `POD_NAME` and `POD_NAMESPACE` are set (the downward
//! API, as in `deploy/kubernetes`), every source excludes the pod's own
//! container log files (`/var/log/containers/<pod>_<ns>_*.log` and
//! `/var/log/pods/<ns>_<pod>_*/*/*`; only container `CONTAINER_NAME` of the
//! pod when that is set), so logship never ships its own log lines in a loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::Acknowledger;
use crate::buffer::disk::leftover::{self, Leftover};
use crate::buffer::disk::stage::DiskBuffer;
use crate::buffer::memory::Batcher;
use crate::config::{BufferConfig, Config};
use crate::journald::{AckRouter, JournalServer};
use crate::sink::elasticsearch::ElasticsearchSink;
use crate::tail::{CheckpointError, Checkpointer, FileRegistry, FileServer};
use crate::telemetry::Metrics;
use crate::telemetry::http::HttpServer;
use crate::telemetry::status::Status;

/// How often acknowledged progress is written to the checkpoint file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// How often freed heap memory is handed back to the system (see
/// [`trim_heap`]), on the checkpoint writer's blocking thread.
const HEAP_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Returns the free pages inside glibc's heaps to the system. `free` only
/// returns the top of a heap; buffers freed in the middle (a follower's
/// read buffer, spans, decoders, after a burst or the first read of 1,000
/// files) stay resident: issue 10 measured 45 MiB RSS with 1,000 idle files,
/// 32.7 MiB after one `malloc_trim(0)`. It takes the arenas' locks for a
/// walk of the heap (well under a millisecond here), every
/// [`HEAP_TRIM_INTERVAL`].
fn trim_heap() {
    // Pools unused for a whole interval go first, so their memory is free.
    crate::event::span_pool::release_if_unused();
    crate::sink::elasticsearch::release_idle_compressors();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Where a reload reads its config, and the requests to do so (SIGHUP).
pub struct Reload {
    pub path: PathBuf,
    pub requests: mpsc::Receiver<()>,
}

/// Runs the pipeline until `shutdown` is cancelled, then drains it (no
/// reloads; see [`serve`]).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    serve(config, None, shutdown).await
}

/// Serves the HTTP endpoint and runs the pipeline until `shutdown` is
/// cancelled, applying reloads in between (module doc).
pub async fn serve(
    mut config: Config,
    mut reload: Option<Reload>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    exclude_own_logs(&mut config);
    let metrics = Arc::new(Metrics::default());
    let files = Arc::new(FileRegistry::default());
    let per_file_lag = config.http.as_ref().is_some_and(|h| h.per_file_lag);
    let status = Arc::new(Status::new(metrics.clone(), files.clone(), per_file_lag));
    let http_stop = CancellationToken::new();
    let _http_guard = http_stop.clone().drop_guard();
    if let Some(http) = &config.http {
        let server = HttpServer::bind(&http.listen, status.clone()).await?;
        tracing::info!(listen = ?server.local_addr(), "serving /metrics, /healthz, /readyz, /api/v1/files, /api/v1/journals");
        tokio::spawn(server.serve(http_stop.clone()));
        tokio::spawn(status.clone().heartbeat(http_stop.clone()));
    }
    loop {
        let stop = shutdown.child_token();
        let mut pipeline =
            std::pin::pin!(run_pipeline(config.clone(), status.clone(), stop.clone()));
        let next = loop {
            let requested = async {
                match reload.as_mut() {
                    Some(r) => r.requests.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut pipeline => return r,
                Some(()) = requested => {
                    if let Some(next) = reload.as_ref().and_then(|r| reloaded(&r.path, &config)) {
                        break next;
                    }
                }
            }
        };
        tracing::info!("applying the new config: draining the running pipeline");
        stop.cancel();
        pipeline.await?;
        config = next;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        status.per_file_lag.store(
            config.http.as_ref().is_some_and(|h| h.per_file_lag),
            std::sync::atomic::Ordering::Relaxed,
        );
        tracing::info!(
            sources = config.sources.len(),
            journald_sources = config.journald.len(),
            "config reloaded; pipeline restarted"
        );
    }
}

/// The config at `path` if it is valid and differs from `running`; logs why not.
fn reloaded(path: &std::path::Path, running: &Config) -> Option<Config> {
    let mut next = match crate::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "config reload rejected; the running config stays in effect");
            return None;
        }
    };
    exclude_own_logs(&mut next);
    if next.log != running.log {
        tracing::warn!(
            "config reload: `log` settings apply only at start; keeping the running ones"
        );
        next.log = running.log.clone();
    }
    if next.http.as_ref().map(|h| &h.listen) != running.http.as_ref().map(|h| &h.listen) {
        tracing::warn!(
            "config reload: `http.listen` applies only at start; keeping the running one"
        );
        next.http = running.http.clone();
    }
    if &next == running {
        tracing::info!("config reload: nothing changed");
        return None;
    }
    Some(next)
}

/// Adds excludes for this pod's own container logs (module doc).
fn exclude_own_logs(config: &mut Config) {
    let var = |name: &str| std::env::var(name).ok();
    let (Some(pod), Some(namespace)) = (var("POD_NAME"), var("POD_NAMESPACE")) else {
        return;
    };
    let container = var("CONTAINER_NAME");
    let Some(globs) = own_log_globs(&pod, &namespace, container.as_deref()) else {
        tracing::warn!(
            pod,
            namespace,
            container,
            "POD_NAME/POD_NAMESPACE/CONTAINER_NAME are not Kubernetes names; own logs not excluded"
        );
        return;
    };
    for source in &mut config.sources {
        for glob in &globs {
            if !source.exclude.contains(glob) {
                source.exclude.push(glob.clone());
            }
        }
    }
}

/// The exclude globs for the log files of `pod` in `namespace` (only its
/// `container` if given), under the kubelet's two layouts; `None` if a
/// name has characters Kubernetes does not allow (they could be glob syntax).
pub fn own_log_globs(pod: &str, namespace: &str, container: Option<&str>) -> Option<[String; 2]> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    };
    if !valid(pod) || !valid(namespace) || !container.is_none_or(valid) {
        return None;
    }
    Some(match container {
        Some(c) => [
            format!("/var/log/containers/{pod}_{namespace}_{c}-*.log"),
            format!("/var/log/pods/{namespace}_{pod}_*/{c}/*"),
        ],
        None => [
            format!("/var/log/containers/{pod}_{namespace}_*.log"),
            format!("/var/log/pods/{namespace}_{pod}_*/*/*"),
        ],
    })
}

/// Runs one pipeline with `config` until `shutdown` is cancelled, then drains it.
async fn run_pipeline(
    config: Config,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let result = run_stages(config, &status, shutdown).await;
    status.pipeline_stopped();
    result
}

async fn run_stages(
    config: Config,
    status: &Arc<Status>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let metrics = status.metrics.clone();
    let checkpointer = Arc::new(Checkpointer::open(&config.data_dir)?);
    let leftover_found = match &config.buffer {
        BufferConfig::Memory { .. } => {
            let dir = config.data_dir.join("buffer");
            // Blocking: may wait for the disk pipeline a reload replaces to let go.
            tokio::task::spawn_blocking(move || Leftover::open(&dir))
                .await
                .context("leftover disk buffer open task")??
        }
        BufferConfig::Disk(_) => None,
    };
    let sink = ElasticsearchSink::new(&config.sink, &config.data_dir, metrics.clone())?;
    let k8s_stop = CancellationToken::new();
    let (enricher, pod_watch) = crate::k8s::start(&config.kubernetes, k8s_stop.clone())
        .await
        .context("starting Kubernetes metadata")?;
    let _k8s_guard = k8s_stop.drop_guard();
    if let Some(cache) = enricher.pod_cache() {
        status.pod_cache_started(cache);
    }
    if let Some(cache) = enricher.namespace_cache() {
        status.namespace_cache_started(cache);
    }
    // Compiled once more (validation compiled them already, so this fails
    // only if validation and compilation disagree).
    let processors = crate::processors::Chains::build(&config, &metrics.processors)
        .context("compiling processors")?;
    if !config.processors.is_empty() && !config.journald.is_empty() {
        tracing::warn!(
            "the top-level processors apply to file sources only; journald entries are shipped unprocessed"
        );
    }
    let server = FileServer::new(&config, checkpointer.clone(), metrics.clone())?
        .with_enricher(enricher)
        .with_processors(processors)
        .with_registry(status.files.clone());
    drop(pod_watch);
    let journals = Arc::new(
        JournalServer::new(&config, &status.journals, metrics.clone())
            .context("starting journald sources")?,
    );

    let (span_tx, span_rx) = mpsc::channel(8);
    let (batch_tx, batch_rx) = mpsc::channel(1);
    status.pipeline_started(checkpointer.clone(), &span_tx);

    let tail_stop = CancellationToken::new();
    let journal_readers = tokio::spawn(journals.clone().run(span_tx.clone(), tail_stop.clone()));
    let tailers = tokio::spawn(server.run(span_tx, tail_stop.clone()));
    // Each batch's bulk body is made (gzip'd) as it leaves the batcher: the
    // sink sends it as it is, the disk buffer stores it as it is.
    // igzip levels: one batch compresses at a time (two at once gained
    // nothing on two cores and held one more raw batch: +5 MiB peak in
    // catch-up); slower levels: as many as the sink has requests, as when
    // each request compressed its own body.
    let level = config.sink.gzip_level;
    let ahead = if crate::sink::elasticsearch::gzip::is_fast(level) {
        1
    } else {
        config.sink.concurrency
    };
    let batcher = Batcher::new(&config.sink.batch).packing(level, ahead);
    let batcher = tokio::spawn(batcher.run(span_rx, batch_tx));
    // File spans to the checkpoints, journald spans to their cursors.
    let file_acks: Arc<dyn Acknowledger> = Arc::new(AckRouter {
        files: checkpointer.clone(),
        journals: journals.clone(),
    });
    let reader_stop = CancellationToken::new();
    let mut leftover = None;
    let (mut sink_task, mut disk) = match (&config.buffer, leftover_found) {
        (BufferConfig::Memory { .. }, None) => {
            (tokio::spawn(sink.run(batch_rx, file_acks.clone())), None)
        }
        (BufferConfig::Memory { .. }, Some(l)) => {
            status.disk_buffer_started(l.stats(), l.found_bytes());
            let (leftover_tx, leftover_rx) = mpsc::channel(1);
            let drain = tokio::spawn(l.clone().drain(leftover_tx, reader_stop.clone()));
            let (sink_tx, sink_rx) = mpsc::channel(1);
            tokio::spawn(leftover::merge(batch_rx, leftover_rx, sink_tx));
            let sink_task = tokio::spawn(sink.run(sink_rx, l.split_acks(file_acks.clone())));
            leftover = Some((l, drain));
            (sink_task, None)
        }
        (BufferConfig::Disk(d), _) => {
            let dir = config.data_dir.join("buffer");
            let max_bytes = d.max_bytes;
            // Blocking: may wait for the pipeline a reload replaces to let go.
            let disk = tokio::task::spawn_blocking(move || DiskBuffer::open(&dir, max_bytes))
                .await
                .context("disk buffer open task")??;
            status.disk_buffer_started(disk.stats(), max_bytes);
            let writer = tokio::spawn(disk.clone().run_writer(
                batch_rx,
                file_acks.clone(),
                d.when_full,
                d.fsync_interval,
                config.sink.gzip_level,
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
        let journals = journals.clone();
        let stop = persist_stop.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next_trim = tokio::time::Instant::now() + HEAP_TRIM_INTERVAL;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let c = checkpointer.clone();
                let j = journals.clone();
                let trim = tokio::time::Instant::now() >= next_trim;
                if trim {
                    next_trim = tokio::time::Instant::now() + HEAP_TRIM_INTERVAL;
                }
                let written = tokio::task::spawn_blocking(move || {
                    if trim {
                        trim_heap();
                    }
                    c.persist()?;
                    j.persist().map_err(|e| CheckpointError::Write {
                        path: e.path().to_owned(),
                        source: std::io::Error::other(e.to_string()),
                    })
                });
                match written.await {
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "checkpoint write failed; will retry");
                        status.checkpoint_written(Err(e.to_string()));
                    }
                    Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
                    Ok(Ok(())) => status.checkpoint_written(Ok(())),
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
            reader_stop.cancel();
            persist_stop.cancel();
            let _ = persister.await;
            if let Some((l, _)) = &leftover {
                l.close().await;
            }
            checkpointer.persist()?;
            journals.persist()?;
            r.context("sink task")?;
            anyhow::bail!("pipeline stopped unexpectedly");
        }
    }

    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: stop reading, drain in-flight batches");
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    tail_stop.cancel();
    if leftover.is_some() {
        // What the leftover's reader has not sent stays on disk.
        reader_stop.cancel();
    }
    let drained = async {
        let _ = tailers.await;
        let _ = journal_readers.await;
        let _ = batcher.await;
        if let Some((_, drain)) = &mut leftover {
            let _ = drain.await;
        }
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
        if let Some((_, drain)) = &leftover {
            drain.abort();
        }
        if let Some((_, writer, reader)) = &disk {
            // A writer still blocked on a full buffer: what it holds was
            // never fsync'd, so its lines are read from the files again.
            writer.abort();
            reader.abort();
        }
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
    if let Some((l, _)) = &leftover {
        l.close().await;
    }
    persist_stop.cancel();
    let _ = persister.await;
    checkpointer.persist()?;
    journals.persist()?;
    tracing::info!("checkpoints written; bye");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::own_log_globs;

    fn matches(globs: &[String; 2], path: &str) -> bool {
        globs.iter().any(|g| {
            globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .expect("glob")
                .compile_matcher()
                .is_match(path)
        })
    }

    #[test]
    fn own_logs_are_excluded_in_both_layouts_and_nothing_else() {
        let pod = own_log_globs("logship-x7k2p", "logging", None).expect("valid names");
        let ours = [
            "/var/log/containers/logship-x7k2p_logging_logship-0123abcd.log",
            "/var/log/pods/logging_logship-x7k2p_5f1c-uid/logship/0.log",
            "/var/log/pods/logging_logship-x7k2p_5f1c-uid/logship/0.log.20261126-010203",
        ];
        for path in ours {
            assert!(matches(&pod, path), "{path} should be excluded");
        }
        let others = [
            "/var/log/containers/logship-x7k2q_logging_logship-0123abcd.log",
            "/var/log/containers/app_logging_app-0123abcd.log",
            "/var/log/pods/logging_app_5f1c-uid/app/0.log",
            "/var/log/pods/other_logship-x7k2p_5f1c-uid/logship/0.log",
        ];
        for path in others {
            assert!(!matches(&pod, path), "{path} should still be shipped");
        }

        let one = own_log_globs("logship-x7k2p", "logging", Some("logship")).expect("valid");
        assert!(matches(&one, ours[0]) && matches(&one, ours[1]));
        let sidecar = "/var/log/pods/logging_logship-x7k2p_5f1c-uid/sidecar/0.log";
        assert!(matches(&pod, sidecar) && !matches(&one, sidecar));
    }

    #[test]
    fn names_that_could_be_glob_syntax_are_refused() {
        assert!(own_log_globs("a*", "ns", None).is_none());
        assert!(own_log_globs("pod", "n[s]", None).is_none());
        assert!(own_log_globs("pod", "", None).is_none());
        assert!(own_log_globs("pod", "ns", Some("c/../x")).is_none());
    }
}
