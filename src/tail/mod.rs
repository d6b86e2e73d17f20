//! Tailing: discovery, file identity, one follower per file, checkpoints.
//!
//! [`FileServer`] owns the set of followed files. It scans the sources'
//! globs ([`discover`]) at start, whenever inotify reports a created or
//! renamed entry in a watched directory, and every `rescan_interval` as a
//! safety net; it starts one [`follower::Follower`] task per new file and
//! routes inotify write events to the follower of that path, so new lines are
//! read within milliseconds while idle followers sleep (re-checking their
//! file at most once a second).
//!
//! Files are identified by `(dev, ino)` within a run and by
//! [`FileIdentity`](crate::event::FileIdentity) (with a first-line
//! fingerprint) across restarts ([`identity`]). Where a new follower starts:
//!
//! * a file followed earlier in this run (a rotated file a glob matches
//!   again): where its last follower stopped reading;
//! * a file with a checkpoint: at the checkpoint, or at 0 of the next
//!   generation if the file is now shorter (truncated while we were away);
//! * a file present at the first scan without checkpoint: per `read_from`
//!   (`end`: just after its last complete line);
//! * any file first seen later: at its start.
//!
//! After a copytruncate a follower waits for the file's new first line and
//! takes the identity it gives (same `(dev, ino)`, new fingerprint), so that
//! after a restart the checkpoint of the new content is found.
//!
//! Checkpoints advance only to the ack watermark ([`checkpoint`],
//! [`watermark`]); what was not acknowledged is read again after a restart.
//! `run` returns after shutdown, or when the span receiver is dropped, once
//! every follower returned. The server does not decode or encode itself and never blocks the runtime
//! on directory walks (they run on blocking threads).

pub mod checkpoint;
pub mod discover;
pub mod follower;
pub mod identity;
pub mod reader;
pub mod registry;
pub mod watermark;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ReadFrom, SourceConfig};
use crate::encode::{Encoder, IndexTemplateError};
use crate::event::{EncodedSpan, FileIdentity, FileKey};
use crate::telemetry::Metrics;
pub use checkpoint::{Checkpoint, CheckpointError, Checkpointer};
use discover::{Found, Notice, SourceMatcher, Watcher};
use follower::{Follower, FollowerExit, FollowerSpec, Shared, StartAt};
pub use registry::FileRegistry;

/// Filesystem notices queued between notify's thread and the server.
const NOTICE_QUEUE: usize = 1024;
/// Rescan at least this often even if every source asks for less.
const MAX_RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// Follows every file the sources match and sends encoded spans downstream.
pub struct FileServer {
    sources: Vec<SourceConfig>,
    matchers: Arc<Vec<SourceMatcher>>,
    rescan_interval: Duration,
    shared: Arc<Shared>,
    registry: Arc<FileRegistry>,
}

/// A file being followed.
struct Active {
    key: FileKey,
    path: PathBuf,
    wake: Arc<Notify>,
}

/// A new file, opened, with what the server needs to start it.
struct Opened {
    found: Found,
    file: File,
    identity: FileIdentity,
    size: u64,
}

impl FileServer {
    pub fn new(
        config: &Config,
        checkpointer: Arc<Checkpointer>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, IndexTemplateError> {
        // Fails early on a bad template; followers create their own encoders.
        Encoder::new(&config.node_name, &config.sink.index)?;
        let (span_max_bytes, span_max_items) =
            Shared::span_limits(config.sink.batch.max_bytes, config.sink.batch.max_events);
        let rescan_interval = config
            .sources
            .iter()
            .map(|s| s.rescan_interval)
            .min()
            .unwrap_or(MAX_RESCAN_INTERVAL)
            .clamp(Duration::from_millis(100), MAX_RESCAN_INTERVAL);
        Ok(FileServer {
            matchers: Arc::new(config.sources.iter().map(SourceMatcher::new).collect()),
            sources: config.sources.clone(),
            rescan_interval,
            shared: Arc::new(Shared {
                checkpointer,
                metrics,
                node_name: config.node_name.clone(),
                index_template: config.sink.index.clone(),
                span_max_bytes,
                span_max_items,
                enricher: crate::k8s::Enricher::Off,
            }),
            registry: Arc::new(FileRegistry::default()),
        })
    }

    /// Sets where followers get their files' Kubernetes metadata (before `run`).
    pub fn with_enricher(mut self, enricher: crate::k8s::Enricher) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.enricher = enricher,
            None => tracing::error!("enricher set after followers started; ignored"),
        }
        self
    }

    /// Reports followed files to `registry` (by default a private one), and
    /// registers every source there so its counters exist (at 0) at once.
    pub fn with_registry(mut self, registry: Arc<FileRegistry>) -> Self {
        for source in &self.sources {
            registry.source(&source.name);
        }
        self.registry = registry;
        self
    }

    /// Runs until `shutdown` is cancelled: then stops reading and returns once
    /// every reader has stopped (dropping its span sender). Sends on `spans`
    /// block when downstream is full; that is the backpressure.
    pub async fn run(self, spans: mpsc::Sender<EncodedSpan>, shutdown: CancellationToken) {
        let (notice_tx, mut notices) = mpsc::channel(NOTICE_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let overflow_wake = Arc::new(Notify::new());
        let mut watcher = Watcher::new(notice_tx, overflow.clone(), overflow_wake.clone());
        // Cancelled with `shutdown`, or when downstream is gone.
        let followers_stop = shutdown.child_token();
        let mut state = ServerState {
            server: &self,
            spans,
            shutdown: followers_stop.clone(),
            followers: JoinSet::new(),
            active: HashMap::new(),
            by_path: HashMap::new(),
            ended: HashMap::new(),
            pending: HashSet::new(),
            next_key: 0,
            first_scan: true,
        };
        let mut rescan = true;
        let mut next_rescan = Instant::now();
        loop {
            if rescan {
                rescan = false;
                next_rescan = Instant::now() + self.rescan_interval;
                state.scan(&mut watcher).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                // Downstream is gone (the pipeline failed): stop following.
                _ = state.spans.closed() => break,
                Some(notice) = notices.recv() => {
                    rescan |= state.on_notice(notice);
                    while let Ok(notice) = notices.try_recv() {
                        rescan |= state.on_notice(notice);
                    }
                }
                _ = overflow_wake.notified() => {}
                Some(exit) = state.followers.join_next(), if !state.followers.is_empty() => {
                    match exit {
                        Ok(exit) => state.on_exit(exit),
                        Err(e) => tracing::error!(error = %e, "file follower failed"),
                    }
                }
                _ = tokio::time::sleep_until(next_rescan) => rescan = true,
            }
            if overflow.swap(false, Ordering::AcqRel) {
                // Events were lost: look at everything.
                rescan = true;
                for active in state.active.values() {
                    active.wake.notify_one();
                }
            }
        }
        // Wait until each follower sent what it holds.
        followers_stop.cancel();
        while let Some(exit) = state.followers.join_next().await {
            match exit {
                Ok(exit) => self.registry.remove(exit.key),
                Err(e) => tracing::error!(error = %e, "file follower failed"),
            }
        }
        drop(watcher);
    }
}

struct ServerState<'a> {
    server: &'a FileServer,
    spans: mpsc::Sender<EncodedSpan>,
    shutdown: CancellationToken,
    followers: JoinSet<FollowerExit>,
    active: HashMap<(u64, u64), Active>,
    by_path: HashMap<PathBuf, (FileKey, Arc<Notify>)>,
    /// Where followers of closed files stopped, for a file a glob matches again.
    ended: HashMap<FileIdentity, Checkpoint>,
    /// Paths of files without a first line yet: a write to them asks for a rescan.
    pending: HashSet<PathBuf>,
    next_key: FileKey,
    first_scan: bool,
}

impl ServerState<'_> {
    /// Returns true if the notice asks for a rescan.
    fn on_notice(&mut self, notice: Notice) -> bool {
        match notice {
            Notice::Rescan => true,
            Notice::Changed(paths) => {
                let mut rescan = false;
                for path in paths {
                    if let Some((_, wake)) = self.by_path.get(&path) {
                        wake.notify_one();
                    }
                    // The path may also name a new file that had no first line
                    // at the last scan (the old one still draining).
                    rescan |= self.pending.contains(&path);
                }
                rescan
            }
            Notice::ChangedAndRescan(paths) => {
                for path in paths {
                    if let Some((_, wake)) = self.by_path.get(&path) {
                        wake.notify_one();
                    }
                }
                true
            }
        }
    }

    fn on_exit(&mut self, exit: FollowerExit) {
        self.server.registry.remove(exit.key);
        if self
            .active
            .get(&(exit.dev, exit.ino))
            .is_some_and(|a| a.key == exit.key)
            && let Some(active) = self.active.remove(&(exit.dev, exit.ino))
            && self
                .by_path
                .get(&active.path)
                .is_some_and(|(k, _)| *k == exit.key)
        {
            self.by_path.remove(&active.path);
        }
        if exit.closed {
            self.ended.insert(
                exit.identity,
                Checkpoint {
                    generation: exit.generation,
                    offset: exit.offset,
                },
            );
        }
    }

    async fn scan(&mut self, watcher: &mut Watcher) {
        let matchers = self.server.matchers.clone();
        let active: HashSet<(u64, u64)> = self.active.keys().copied().collect();
        let result = tokio::task::spawn_blocking(move || {
            let scan = discover::scan(&matchers);
            let mut opened = Vec::new();
            let mut pending = Vec::new();
            for found in &scan.files {
                if active.contains(&(found.dev, found.ino)) {
                    continue;
                }
                match open(found) {
                    Ok(Some(o)) => opened.push(o),
                    Ok(None) => pending.push(found.path.clone()),
                    Err(e) => {
                        tracing::warn!(path = %found.path.display(), error = %e, "cannot open file")
                    }
                }
            }
            (scan, opened, pending)
        })
        .await;
        let (scan, opened, pending) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "file scan failed");
                return;
            }
        };
        watcher.update(&scan.dirs);
        self.pending = pending.into_iter().collect();
        let seen: HashSet<(u64, u64)> = scan.files.iter().map(|f| (f.dev, f.ino)).collect();
        self.ended.retain(|id, _| seen.contains(&(id.dev, id.ino)));
        for o in opened {
            self.start(o);
        }
        self.first_scan = false;
    }

    fn start(&mut self, o: Opened) {
        let source = &self.server.sources[o.found.source];
        let shared = &self.server.shared;
        let known = [
            self.ended.get(&o.identity).copied(),
            shared.checkpointer.lookup(&o.identity),
        ]
        .into_iter()
        .flatten()
        .max_by_key(|c| (c.generation, c.offset));
        let start = match known {
            Some(cp) if o.size < cp.offset => {
                Metrics::add(&shared.metrics.truncations, 1);
                tracing::info!(path = %o.found.path.display(), "file is shorter than its checkpoint: truncated while we were away");
                StartAt::At(Checkpoint {
                    generation: cp.generation.wrapping_add(1),
                    offset: 0,
                })
            }
            Some(cp) => StartAt::At(cp),
            None if self.first_scan && source.read_from == ReadFrom::End => StartAt::EndOfLastLine,
            None => StartAt::At(Checkpoint {
                generation: 0,
                offset: 0,
            }),
        };
        let key = self.next_key;
        self.next_key += 1;
        let wake = Arc::new(Notify::new());
        self.by_path
            .insert(o.found.path.clone(), (key, wake.clone()));
        self.active.insert(
            (o.found.dev, o.found.ino),
            Active {
                key,
                path: o.found.path.clone(),
                wake: wake.clone(),
            },
        );
        let status = self
            .server
            .registry
            .add(key, &source.name, o.found.path.clone(), o.identity);
        let spec = FollowerSpec {
            key,
            status,
            path: o.found.path,
            file: o.file,
            identity: o.identity,
            start,
            format: source.format,
            max_line_bytes: source.max_line_bytes,
            wake,
        };
        self.followers.spawn(Follower::follow(
            spec,
            shared.clone(),
            self.spans.clone(),
            self.shutdown.clone(),
        ));
    }
}

/// Opens a found file and identifies it; `None` if it has no identity yet
/// (or it was replaced between the scan and the open).
fn open(found: &Found) -> std::io::Result<Option<Opened>> {
    use std::os::unix::fs::MetadataExt;
    let file = File::open(&found.path)?;
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (found.dev, found.ino) {
        return Ok(None);
    }
    Ok(identity::identify(&file)?.map(|identity| Opened {
        found: found.clone(),
        size: meta.len(),
        file,
        identity,
    }))
}
