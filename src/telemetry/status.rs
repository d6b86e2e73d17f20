//! What the HTTP endpoints report: readiness and the followed files.
//!
//! [`Status`] is created once per process and outlives pipeline restarts
//! (a reload drains the pipeline and starts a new one): the app attaches the
//! running pipeline's checkpoint store and span channel with
//! [`Status::pipeline_started`] and detaches them with
//! [`Status::pipeline_stopped`] (its disk buffer's figures, if any, attach
//! with [`Status::disk_buffer_started`], so `/metrics` follows the current
//! pipeline). Readiness (`/readyz`) is the conjunction of: a config is loaded and a pipeline runs; its checkpoint store was read and
//! the last checkpoint write succeeded; the sink answers bulk requests (the
//! most recent request did not fail as a whole — derived from request
//! outcomes, no extra probe). `/healthz` only says the runtime answers.
//!
//! Does not: probe Elasticsearch itself. While nothing is shipped the last
//! known outcome stands.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::{Metrics, age, unix_millis};
use crate::buffer::disk::Stats as DiskStats;
use crate::event::EncodedSpan;
use crate::journald::JournalRegistry;
use crate::k8s::cache::{Cached, MetadataCache, NamespaceCache, NamespaceInfo};
use crate::k8s::{PodCache, PodInfo};
use crate::tail::Checkpointer;
use crate::tail::registry::{FileRegistry, FileStatus};

/// The running pipeline's parts the endpoints look at.
struct Pipeline {
    checkpointer: Arc<Checkpointer>,
    spans: mpsc::WeakSender<EncodedSpan>,
}

/// Shared state behind `/readyz`, `/api/v1/files` and `/metrics`.
pub struct Status {
    pub metrics: Arc<Metrics>,
    pub files: Arc<FileRegistry>,
    /// journald sources (`/api/v1/journals`).
    pub journals: Arc<JournalRegistry>,
    /// Export `logship_file_lag_bytes` per file (label cardinality grows with files).
    pub per_file_lag: AtomicBool,
    pipeline: Mutex<Option<Pipeline>>,
    /// The running pipeline's disk buffer figures and its `max_bytes`.
    disk_buffer: Mutex<Option<(Arc<DiskStats>, u64)>>,
    /// The running pipeline's pod and namespace caches (Kubernetes
    /// daemonset mode).
    pod_cache: WatchedCache<PodInfo>,
    namespace_cache: WatchedCache<NamespaceInfo>,
    checkpoint_error: Mutex<Option<String>>,
    started_ms: u64,
    /// Unix ms of the last tick of the runtime heartbeat task.
    heartbeat_ms: AtomicU64,
}

/// The heartbeat ticks this often; `/healthz` fails after [`STALL_LIMIT`] without one.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not ready (empty when ready).
    pub reasons: Vec<String>,
}

/// One entry of `/api/v1/files`.
#[derive(Debug, Serialize)]
pub struct FileView {
    pub path: String,
    pub source: String,
    pub identity: IdentityView,
    pub generation: u32,
    /// Bytes read so far (the next read starts here).
    pub read_offset: u64,
    /// Size of the open file now (`null` if it could not be looked at).
    pub size: Option<u64>,
    /// Offset up to which every line is acknowledged (the checkpoint).
    pub acked_offset: Option<u64>,
    /// `size - acked_offset`: bytes not yet durably shipped.
    pub lag_bytes: u64,
    /// Seconds since the last read that returned bytes (`null`: none yet).
    pub last_read_seconds_ago: Option<f64>,
    /// reading | backpressured | draining | waiting_for_first_line | waiting_for_metadata | given_up | excluded
    pub state: &'static str,
}

#[derive(Debug, Serialize)]
pub struct IdentityView {
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: String,
}

/// A running pipeline's metadata cache, and the watch restarts of the
/// caches of pipelines a reload replaced (so the counter never goes back).
struct WatchedCache<T> {
    current: Mutex<Option<Arc<MetadataCache<T>>>>,
    past_restarts: AtomicU64,
}

impl<T> Default for WatchedCache<T> {
    fn default() -> Self {
        WatchedCache {
            current: Mutex::new(None),
            past_restarts: AtomicU64::new(0),
        }
    }
}

impl<T: Cached> WatchedCache<T> {
    fn started(&self, cache: Arc<MetadataCache<T>>) {
        if let Ok(mut c) = self.current.lock() {
            *c = Some(cache);
        }
    }

    fn stopped(&self) {
        if let Ok(mut c) = self.current.lock()
            && let Some(c) = c.take()
        {
            self.past_restarts
                .fetch_add(c.watch_restarts(), Ordering::Relaxed);
        }
    }

    /// Objects held now, and watch restarts over the process's life.
    fn figures(&self) -> Option<(usize, u64)> {
        let cache = self.current.lock().ok()?.clone()?;
        let past = self.past_restarts.load(Ordering::Relaxed);
        Some((cache.len(), past + cache.watch_restarts()))
    }
}

impl Status {
    pub fn new(metrics: Arc<Metrics>, files: Arc<FileRegistry>, per_file_lag: bool) -> Self {
        Status {
            metrics,
            files,
            journals: Arc::default(),
            per_file_lag: AtomicBool::new(per_file_lag),
            pipeline: Mutex::new(None),
            disk_buffer: Mutex::new(None),
            pod_cache: WatchedCache::default(),
            namespace_cache: WatchedCache::default(),
            checkpoint_error: Mutex::new(None),
            started_ms: unix_millis(),
            heartbeat_ms: AtomicU64::new(unix_millis()),
        }
    }

    /// Ticks [`HEARTBEAT`] until `stop`: proof that the runtime schedules
    /// timers and tasks (`/healthz`).
    pub async fn heartbeat(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = tick.tick() => self.heartbeat_ms.store(unix_millis(), Ordering::Relaxed),
                _ = stop.cancelled() => return,
            }
        }
    }

    /// `Err(why)` if the runtime stopped running the heartbeat.
    pub fn health(&self) -> Result<(), String> {
        match age(self.heartbeat_ms.load(Ordering::Relaxed)) {
            Some(stalled) if stalled > STALL_LIMIT => Err(format!(
                "the runtime did not run the heartbeat task for {:.1}s",
                stalled.as_secs_f64()
            )),
            _ => Ok(()),
        }
    }

    /// Unix milliseconds at which the process started serving.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    pub fn pipeline_started(
        &self,
        checkpointer: Arc<Checkpointer>,
        spans: &mpsc::Sender<EncodedSpan>,
    ) {
        if let Ok(mut p) = self.pipeline.lock() {
            *p = Some(Pipeline {
                checkpointer,
                spans: spans.downgrade(),
            });
        }
    }

    pub fn pipeline_stopped(&self) {
        if let Ok(mut p) = self.pipeline.lock() {
            *p = None;
        }
        if let Ok(mut d) = self.disk_buffer.lock() {
            *d = None;
        }
        self.pod_cache.stopped();
        self.namespace_cache.stopped();
    }

    /// The running pipeline watches pods into `cache` (until
    /// [`pipeline_stopped`](Self::pipeline_stopped)).
    pub fn pod_cache_started(&self, cache: Arc<PodCache>) {
        self.pod_cache.started(cache);
    }

    /// Pods in the running pod cache, and watch restarts over the process's
    /// life (`None` outside daemonset mode).
    pub fn k8s_figures(&self) -> Option<(usize, u64)> {
        self.pod_cache.figures()
    }

    /// The running pipeline watches namespaces into `cache` (until
    /// [`pipeline_stopped`](Self::pipeline_stopped)).
    pub fn namespace_cache_started(&self, cache: Arc<NamespaceCache>) {
        self.namespace_cache.started(cache);
    }

    /// Namespaces in the running namespace cache, and that watch's restarts
    /// over the process's life (`None` outside daemonset mode).
    pub fn namespace_figures(&self) -> Option<(usize, u64)> {
        self.namespace_cache.figures()
    }

    /// The running pipeline has a disk buffer of `max_bytes` with these figures
    /// (until [`pipeline_stopped`](Self::pipeline_stopped)).
    pub fn disk_buffer_started(&self, stats: Arc<DiskStats>, max_bytes: u64) {
        if let Ok(mut d) = self.disk_buffer.lock() {
            *d = Some((stats, max_bytes));
        }
    }

    /// The running pipeline's disk buffer figures and capacity, if it has one.
    pub fn disk_buffer(&self) -> Option<(Arc<DiskStats>, u64)> {
        self.disk_buffer.lock().ok()?.clone()
    }

    /// The result of the last checkpoint write.
    pub fn checkpoint_written(&self, result: Result<(), String>) {
        if let Ok(mut e) = self.checkpoint_error.lock() {
            *e = result.err();
        }
    }

    fn checkpointer(&self) -> Option<Arc<Checkpointer>> {
        self.pipeline
            .lock()
            .ok()?
            .as_ref()
            .map(|p| p.checkpointer.clone())
    }

    /// Spans queued between the tailers and the batcher, and the queue's capacity.
    pub fn span_queue(&self) -> Option<(usize, usize)> {
        let sender = self.pipeline.lock().ok()?.as_ref()?.spans.upgrade()?;
        Some((
            sender.max_capacity() - sender.capacity(),
            sender.max_capacity(),
        ))
    }

    pub fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        if self.checkpointer().is_none() {
            reasons.push("pipeline not running (starting, reloading or stopping)".to_owned());
        }
        if let Ok(e) = self.checkpoint_error.lock()
            && let Some(e) = e.as_ref()
        {
            reasons.push(format!("last checkpoint write failed: {e}"));
        }
        if let Some(why) = self.metrics.sink.unreachable() {
            reasons.push(format!("Elasticsearch unreachable: {why}"));
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    /// Every followed file, by key (start order).
    pub fn files(&self) -> Vec<FileView> {
        let checkpointer = self.checkpointer();
        self.files
            .files()
            .iter()
            .map(|f| view(f, checkpointer.as_deref()))
            .collect()
    }
}

/// Bytes of `f` not yet acknowledged, and the acknowledged offset.
pub fn lag(f: &FileStatus, checkpointer: Option<&Checkpointer>) -> (Option<u64>, Option<u64>, u64) {
    let size = f.size();
    let acked = checkpointer
        .and_then(|c| c.committed(f.key))
        .filter(|cp| cp.generation == f.generation())
        .map(|cp| cp.offset);
    let lag = size.unwrap_or(0).saturating_sub(acked.unwrap_or(0));
    (size, acked, lag)
}

/// Per-source lag and per-file lag (`(source, path, lag)`), for `/metrics`.
pub fn lags(status: &Status) -> Vec<(String, String, u64)> {
    let checkpointer = status.checkpointer();
    status
        .files
        .files()
        .iter()
        .map(|f| {
            let (_, _, lag) = lag(f, checkpointer.as_deref());
            (f.source.clone(), f.path.display().to_string(), lag)
        })
        .collect()
}

fn view(f: &FileStatus, checkpointer: Option<&Checkpointer>) -> FileView {
    let (size, acked_offset, lag_bytes) = lag(f, checkpointer);
    let identity = f.identity();
    FileView {
        path: f.path.display().to_string(),
        source: f.source.clone(),
        identity: IdentityView {
            dev: identity.dev,
            ino: identity.ino,
            fingerprint: format!("{:016x}", identity.fingerprint),
        },
        generation: f.generation(),
        read_offset: f.read_offset(),
        size,
        acked_offset,
        lag_bytes,
        last_read_seconds_ago: age(f.last_read_ms()).map(|d| d.as_secs_f64()),
        state: f.state().as_str(),
    }
}

impl Status {
    /// Whether a pipeline is attached (for the `logship_ready` gauge too).
    pub fn is_ready(&self) -> bool {
        self.readiness().ready
    }
}
