//! Tailing: discovery, file identity, one follower per file, checkpoints.
//!
//! [`FileServer`] owns the set of followed files. It scans the sources'
//! globs ([`discover`]) at start, whenever inotify reports a created or
//! renamed entry in a watched directory (again [`watch::COALESCE`] after a
//! scan that added watches: an entry made before its directory's watch
//! raised no event), and as a safety net every `rescan_interval` — every
//! 60 s when inotify watches every directory on a local filesystem, which
//! then reports every new file. It starts one [`follower::Follower`] task per
//! new file and routes inotify write events ([`watch`], coalesced: at most
//! one wake-up per file per `COALESCE`) to the follower of that path, so new
//! lines are read within ~250 ms while idle followers sleep (re-checking
//! their file every 30 s when inotify watches every directory and the file
//! is on a local filesystem, else every second: see `follower`). A follower
//! whose path a scan finds naming another file is told to look (see
//! `follower::Wake`): the rename's event may come after the scan.
//!
//! A file found before it has a first line (so no identity yet) is held
//! open ([`Pending`]) and looked at again through its descriptor by each
//! later scan: renamed away before a scan saw a line of it, it is still read
//! to its end.
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
//! A resume is verified against the bytes before the checkpoint (a stored
//! hash of the 64 bytes before it): a file rewritten with the same first
//! line is read from 0 as a new generation instead of from the middle of a
//! line it never had. An auto-detected format is detected again from the
//! file's first line on a resume, never from the first line read.
//!
//! After a reload (the registry remembers the previous pipeline's globs), a
//! file without checkpoint that the previous pipeline's globs match
//! appeared while it drained: it is new and read from its start, whatever
//! `read_from` says.
//!
//! **A restart is a rotation too.** After the first scan of a pipeline,
//! every file the checkpoint store knows that no follower claimed and that
//! was not read to its end is looked for in its directory ([`rotated`]):
//! renamed (the kubelet's `0.log.<timestamp>`, logrotate's `app.log.1`) or
//! compressed (`….gz`, read from a decompressed copy at the same offsets),
//! it is read from its checkpoint to its end and closed; gone, it is a
//! counted, logged loss (`logship_files_lost_total`,
//! `logship_dropped_bytes_total{reason="gone_while_stopped"}` with the
//! bytes known to have been read and not acknowledged).
//!
//! After a copytruncate a follower waits for the file's new first line and
//! takes the identity it gives (same `(dev, ino)`, new fingerprint), so that
//! after a restart the checkpoint of the new content is found. Truncation
//! is noticed after every read, not only at end of file (see [`reader`]).
//!
//! Checkpoints advance only to the ack watermark ([`checkpoint`],
//! [`watermark`]); what was not acknowledged is read again after a restart.
//! A file found again under a new name keeps its acknowledged position.
//!
//! `run` returns after shutdown, or when the span receiver is dropped, once
//! every follower returned. The server does not decode or encode itself and never blocks the runtime
//! on directory walks (they run on blocking threads).
//!
//! **Held files and `buffer.max_open_files`.** A follower keeps the fd of a
//! file that was rotated away (its path names another file) or deleted until
//! it has read and shipped it to the end, so a rotation cannot take unread
//! lines away while downstream is slow or down. After every scan (a rename
//! or deletion triggers one through inotify) and at least once a second, the
//! server counts these held files (not one already read to its end whose
//! follower is not waiting for downstream: that one closes within
//! `ROTATION_GRACE`). While there are more than `max_open_files`, it gives up
//! the oldest (by modification time) of them that is **deleted**: its
//! follower closes it and counts its unshipped bytes as lost (see
//! [`follower`]). A file that was only renamed is never given up, whatever
//! the count: it still holds its lines under its new name and costs no
//! hidden disk space, and both Filebeat (`close_renamed: false`) and Vector
//! keep such files open until read. The count being over the limit because
//! of renamed files is logged once per crossing.

pub mod checkpoint;
pub mod discover;
pub mod follower;
pub mod identity;
pub mod pipeline;
pub mod reader;
pub mod registry;
pub mod rotated;
pub mod watch;
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
use discover::{Found, SourceMatcher};
use follower::{Follower, FollowerExit, FollowerSpec, Shared, StartAt, Wake};
pub use registry::FileRegistry;
use registry::{FileStatus, FollowState};
use watch::{Notice, Watcher};

/// Filesystem notices queued between notify's thread and the server.
const NOTICE_QUEUE: usize = 1024;
/// Rescan at least this often even if every source asks for less; and
/// this often when inotify watches every directory on a local filesystem
/// (then it reports every new file: the scan is a safety net only).
const MAX_RESCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Held rotated or deleted files are counted at least this often.
const HELD_FILES_CHECK: Duration = Duration::from_secs(1);

/// Follows every file the sources match and sends encoded spans downstream.
pub struct FileServer {
    sources: Vec<SourceConfig>,
    /// Each source's multiline rule, compiled once.
    multiline: Vec<Option<Arc<crate::decode::multiline::Rules>>>,
    matchers: Arc<Vec<SourceMatcher>>,
    rescan_interval: Duration,
    shared: Arc<Shared>,
    registry: Arc<FileRegistry>,
    /// `buffer.max_open_files`: rotated or deleted files held open at most.
    max_open_files: usize,
    /// Where rotations found compressed after a restart are unpacked.
    scratch_dir: PathBuf,
}

/// A file being followed.
struct Active {
    key: FileKey,
    path: PathBuf,
    wake: Arc<Wake>,
    status: Arc<FileStatus>,
    /// Cancelled to make the follower give its file up.
    give_up: CancellationToken,
}

/// A followed file that is no longer at its path (rotated away or deleted)
/// and whose follower still holds it open.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HeldFile {
    key: FileKey,
    /// Deleted (no link left), not merely renamed.
    deleted: bool,
    /// Last modification, for "oldest first".
    modified: (i64, i64),
}

/// A new file, opened, with what the server needs to start it.
struct Opened {
    found: Found,
    file: File,
    identity: FileIdentity,
    size: u64,
    /// The file has a stored checkpoint but no longer holds the bytes
    /// before it (truncated or rewritten while logship was down): what the
    /// store knew of it, to look for its old content elsewhere.
    rewritten: Option<checkpoint::Unfinished>,
    /// No scan found it at a matched path any more: a file held since it
    /// had no first line ([`Pending`]) and renamed or deleted meanwhile.
    away: bool,
}

/// A file a scan found at a matched path before it had a first line (so no
/// identity, see [`identity`]): its descriptor is held, and each scan looks
/// at it again through that descriptor, wherever its path went. A file
/// created, written and renamed away between two scans (the kubelet rotating
/// a fast writer; under load the write event that would have started the
/// next scan comes up to a `COALESCE` late) is then still read: renamed
/// away, it is followed from its start and drained like any rotated file.
struct Pending {
    found: Found,
    file: File,
    /// When a scan first did not find it at a matched path.
    away_since: Option<std::time::Instant>,
}

/// A pending file no scan finds at a matched path is looked at this long
/// (a scan every [`follower::ROTATION_GRACE`]) for a first line written
/// after its rename, then let go.
const PENDING_AWAY_GRACE: Duration = Duration::from_secs(2);

/// Files without a first line held at most: past that (a directory of empty
/// logs), only their paths are watched, as before holding them.
pub const MAX_PENDING_HELD: usize = 128;

/// An empty file not written for this long is not held (a container that
/// never logs: its path is watched, and a write to it starts a scan).
const PENDING_HOLD_AGE: Duration = MAX_RESCAN_INTERVAL;

/// What opening a file a scan found gave.
enum Open {
    Opened(Box<Opened>),
    /// No first line yet: held until it has one.
    NoFirstLine(File),
    /// The path named another file by the time it was opened.
    Replaced,
}

impl FileServer {
    pub fn new(
        config: &Config,
        checkpointer: Arc<Checkpointer>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, IndexTemplateError> {
        // Fails early on a bad template; followers create their own encoders.
        Encoder::new(&config.node_name, &config.sink.index)?;
        warn_if_fd_limit_below(config.buffer.max_open_files());
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
            multiline: config
                .sources
                .iter()
                .map(|s| {
                    // Validated at load: the regexes compile.
                    s.multiline.as_ref().and_then(|m| {
                        m.compile()
                            .inspect_err(|e| tracing::error!(source = %s.name, error = %e, "multiline rule does not compile; lines not joined"))
                            .ok()
                    })
                })
                .collect(),
            rescan_interval,
            shared: Arc::new(Shared {
                checkpointer,
                metrics,
                node_name: config.node_name.clone(),
                index_template: config.sink.index.clone(),
                span_max_bytes,
                span_max_items,
                enricher: crate::k8s::Enricher::Off,
                watched: AtomicBool::new(false),
                processors: Default::default(),
                annotated_rules: Default::default(),
                commit_lock: Default::default(),
                read_slots: Arc::new(tokio::sync::Semaphore::new(
                    usize::try_from(config.buffer.read_memory())
                        .unwrap_or(usize::MAX)
                        .checked_div(follower::READ_SLOT_BYTES)
                        .unwrap_or(1)
                        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
                )),
            }),
            registry: Arc::new(FileRegistry::default()),
            max_open_files: usize::try_from(config.buffer.max_open_files()).unwrap_or(usize::MAX),
            scratch_dir: config.data_dir.join(rotated::SCRATCH_DIR),
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

    /// Sets each source's processor chain (before `run`).
    pub fn with_processors(mut self, processors: crate::processors::Chains) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.processors = processors,
            None => tracing::error!("processors set after followers started; ignored"),
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
        let previous = self.registry.replace_matchers(self.matchers.clone());
        let mut state = ServerState {
            server: &self,
            previous,
            unpacked: HashMap::new(),
            spans,
            shutdown: followers_stop.clone(),
            followers: JoinSet::new(),
            active: HashMap::new(),
            by_path: HashMap::new(),
            ended: HashMap::new(),
            pending: HashMap::new(),
            pending_paths: HashSet::new(),
            next_key: 0,
            first_scan: true,
            over_limit_by_renamed: false,
        };
        let mut rescan = true;
        let mut next_rescan = Instant::now();
        let mut next_held_check = Instant::now();
        loop {
            if rescan {
                rescan = false;
                let coverage = state.scan(&mut watcher).await;
                next_rescan = Instant::now()
                    + if coverage.added > 0 {
                        // An entry made in a new directory before its watch
                        // was added raised no event: look once more.
                        watch::COALESCE
                    } else if state.pending.values().any(|p| p.away_since.is_some()) {
                        // A held file renamed away before its first line:
                        // no event names it any more.
                        follower::ROTATION_GRACE
                    } else if coverage.complete {
                        MAX_RESCAN_INTERVAL
                    } else {
                        self.rescan_interval
                    };
                next_held_check = Instant::now();
            }
            if Instant::now() >= next_held_check {
                next_held_check = Instant::now() + HELD_FILES_CHECK;
                state.limit_held_files().await;
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
                        Ok(exit) => state.on_exit(exit).await,
                        Err(e) => tracing::error!(error = %e, "file follower failed"),
                    }
                }
                _ = tokio::time::sleep_until(next_rescan) => rescan = true,
                _ = tokio::time::sleep_until(next_held_check), if !state.active.is_empty() => {}
            }
            if overflow.swap(false, Ordering::AcqRel) {
                // Events were lost: look at everything.
                rescan = true;
                for active in state.active.values() {
                    active.wake.moved();
                }
            }
        }
        // Wait until each follower sent what it holds.
        followers_stop.cancel();
        while let Some(exit) = state.followers.join_next().await {
            match exit {
                Ok(exit) => {
                    self.registry.remove(exit.key);
                    if let Some(file) = exit.held {
                        self.registry.hold(exit.identity, file);
                    }
                    if let Some(path) = state.unpacked.remove(&exit.key) {
                        let _ = std::fs::remove_file(path);
                    }
                }
                Err(e) => tracing::error!(error = %e, "file follower failed"),
            }
        }
        drop(watcher);
    }
}

struct ServerState<'a> {
    server: &'a FileServer,
    /// The globs of the pipeline before this one (a reload), if any.
    previous: Option<Arc<Vec<SourceMatcher>>>,
    /// Decompressed copies of rotations being read, removed when done.
    unpacked: HashMap<FileKey, PathBuf>,
    spans: mpsc::Sender<EncodedSpan>,
    shutdown: CancellationToken,
    followers: JoinSet<FollowerExit>,
    active: HashMap<(u64, u64), Active>,
    by_path: HashMap<PathBuf, (FileKey, Arc<Wake>)>,
    /// Where followers of closed files stopped, for a file a glob matches again.
    ended: HashMap<FileIdentity, Checkpoint>,
    /// Files found without a first line yet, held open (see [`Pending`]).
    pending: HashMap<(u64, u64), Pending>,
    /// Their paths, and paths that named another file when opened: a write
    /// to them asks for a rescan.
    pending_paths: HashSet<PathBuf>,
    next_key: FileKey,
    first_scan: bool,
    /// More files are held than `max_open_files`, all renamed (logged once).
    over_limit_by_renamed: bool,
}

impl ServerState<'_> {
    /// Returns true if the notice asks for a rescan.
    fn on_notice(&mut self, notice: Notice) -> bool {
        for path in &notice.written {
            if let Some((_, wake)) = self.by_path.get(path) {
                wake.written();
            }
        }
        for path in &notice.moved {
            if let Some((_, wake)) = self.by_path.get(path) {
                wake.moved();
            }
        }
        // A written path may also name a new file that had no first line at
        // the last scan (the old one still draining).
        notice.rescan
            || notice
                .written
                .iter()
                .any(|p| self.pending_paths.contains(p))
    }

    async fn on_exit(&mut self, exit: FollowerExit) {
        self.server.registry.remove(exit.key);
        if let Some(path) = self.unpacked.remove(&exit.key) {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        }
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

    async fn scan(&mut self, watcher: &mut Watcher) -> watch::Coverage {
        let matchers = self.server.matchers.clone();
        let active: HashSet<(u64, u64)> = self.active.keys().copied().collect();
        let checkpointer = self.server.shared.checkpointer.clone();
        let first_scan = self.first_scan;
        let held = std::mem::take(&mut self.pending);
        let result = tokio::task::spawn_blocking(move || {
            let scan = discover::scan(&matchers);
            let mut opened = Vec::new();
            let mut pending = HashMap::new();
            let mut watch_paths = Vec::new();
            let by_inode: HashMap<(u64, u64), &Found> =
                scan.files.iter().map(|f| ((f.dev, f.ino), f)).collect();
            // Files held without a first line: looked at through their
            // descriptor first, wherever their path went.
            for (dev_ino, mut p) in held {
                match by_inode.get(&dev_ino) {
                    Some(found) => {
                        p.found = (*found).clone();
                        p.away_since = None;
                    }
                    None => {
                        p.away_since.get_or_insert_with(std::time::Instant::now);
                    }
                }
                match recheck(&p) {
                    Ok(Recheck::Identified(identity, size)) => opened.push(Opened {
                        away: p.away_since.is_some(),
                        found: p.found,
                        file: p.file,
                        identity,
                        size,
                        rewritten: None,
                    }),
                    Ok(Recheck::Pending) => {
                        pending.insert(dev_ino, p);
                    }
                    // Still empty and not written for long: its path alone
                    // is watched again, like any file too many to hold.
                    Ok(Recheck::Stale) => watch_paths.push(p.found.path),
                    Ok(Recheck::LetGo) => {}
                    Err(e) => {
                        // Kept: looked at again by the next scan.
                        tracing::debug!(path = %p.found.path.display(), error = %e, "cannot read held file");
                        pending.insert(dev_ino, p);
                    }
                }
            }
            let taken: HashSet<(u64, u64)> = opened
                .iter()
                .map(|o: &Opened| (o.found.dev, o.found.ino))
                .chain(pending.keys().copied())
                .collect();
            for found in &scan.files {
                let dev_ino = (found.dev, found.ino);
                if active.contains(&dev_ino) || taken.contains(&dev_ino) {
                    continue;
                }
                match open(found) {
                    Ok(Open::Opened(mut o)) => {
                        if first_scan {
                            o.rewritten = rewritten_while_away(&o, &checkpointer);
                        }
                        opened.push(*o)
                    }
                    Ok(Open::NoFirstLine(file))
                        if pending.len() < MAX_PENDING_HELD && recently_written(&file) =>
                    {
                        pending.insert(
                            dev_ino,
                            Pending {
                                found: found.clone(),
                                file,
                                away_since: None,
                            },
                        );
                    }
                    // Not held (an old empty file, or too many): a write to
                    // its path asks for a rescan.
                    Ok(Open::NoFirstLine(_)) => watch_paths.push(found.path.clone()),
                    Ok(Open::Replaced) => watch_paths.push(found.path.clone()),
                    Err(e) => {
                        tracing::warn!(path = %found.path.display(), error = %e, "cannot open file")
                    }
                }
            }
            (scan, opened, pending, watch_paths)
        })
        .await;
        let (scan, opened, pending, watch_paths) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "file scan failed");
                return watch::Coverage {
                    complete: false,
                    added: 0,
                };
            }
        };
        let mut coverage = watcher.update(&scan.dirs);
        coverage.complete &= !scan.uncovered;
        self.server
            .shared
            .watched
            .store(coverage.complete, Ordering::Relaxed);
        self.pending_paths = pending
            .values()
            .filter(|p| p.away_since.is_none())
            .map(|p| p.found.path.clone())
            .chain(watch_paths)
            .collect();
        self.pending = pending;
        let seen: HashSet<(u64, u64)> = scan.files.iter().map(|f| (f.dev, f.ino)).collect();
        self.ended.retain(|id, _| seen.contains(&(id.dev, id.ino)));
        let claimed: HashSet<FileIdentity> = opened.iter().map(|o| o.identity).collect();
        let mut rewritten = Vec::new();
        for o in opened {
            if let Some(u) = &o.rewritten {
                // The old content may be in a copy next to it (copytruncate).
                rewritten.push(checkpoint::Unfinished {
                    path: o.found.path.clone(),
                    source: Some(self.server.sources[o.found.source].name.clone()),
                    last_seen: 0,
                    ..u.clone()
                });
            }
            self.start(o);
        }
        // A follower found at its own path without a route there (one started
        // away from its path that found its file back): writes wake it.
        for f in &scan.files {
            if let Some(a) = self.active.get(&(f.dev, f.ino))
                && a.path == f.path
                && !self.by_path.contains_key(&f.path)
            {
                self.by_path.insert(f.path.clone(), (a.key, a.wake.clone()));
            }
        }
        if self.first_scan {
            self.first_scan = false;
            self.find_rotated_while_stopped(claimed, rewritten).await;
        }
        coverage
    }

    /// A restart is a rotation too: files the checkpoint store knows, that
    /// no glob found and that were not read to their end, are looked for
    /// ([`rotated`]) and read to their end; those truly gone are counted
    /// and logged as lost.
    ///
    /// `rewritten`: files found at their path, but truncated or rewritten
    /// while logship was down (read again as a new generation): the old
    /// generation's unread lines may be in a copy next to them
    /// (copytruncate), looked for the same way, never in the file itself.
    async fn find_rotated_while_stopped(
        &mut self,
        mut claimed: HashSet<FileIdentity>,
        rewritten: Vec<checkpoint::Unfinished>,
    ) {
        use std::os::unix::fs::MetadataExt;
        let shared = self.server.shared.clone();
        // Files being followed (by an earlier scan of this run) are claimed too.
        claimed.extend(self.server.registry.files().iter().map(|f| f.identity()));
        let unfinished = shared.checkpointer.unfinished(&claimed);
        if unfinished.is_empty() && rewritten.is_empty() {
            return;
        }
        let copies_only: HashSet<FileIdentity> = rewritten.iter().map(|u| u.identity).collect();
        let unfinished: Vec<checkpoint::Unfinished> =
            rewritten.into_iter().chain(unfinished).collect();
        let rewritten_ids = copies_only.clone();
        let scratch = self.server.scratch_dir.clone();
        let checkpointer = shared.checkpointer.clone();
        let mut taken: HashSet<(u64, u64)> = self.active.keys().copied().collect();
        let sources: Vec<String> = self.server.sources.iter().map(|s| s.name.clone()).collect();
        let live: Vec<(u64, PathBuf)> = self
            .server
            .registry
            .files()
            .iter()
            .map(|f| (f.identity().fingerprint, f.path.clone()))
            .collect();
        let held = self.server.registry.take_held();
        let located = tokio::task::spawn_blocking(move || {
            rotated::clear_scratch(&scratch);
            // Every file's own rotation first, then the rotations never
            // seen: a copy of a known file is read as that file.
            let mut out = Vec::new();
            for u in unfinished {
                let Some(source) = u
                    .source
                    .as_deref()
                    .and_then(|name| sources.iter().position(|s| s == name))
                else {
                    tracing::info!(path = %u.path.display(), source = u.source.as_deref().unwrap_or("?"), "a file with unacknowledged lines belongs to a source no longer configured; not read");
                    continue;
                };
                // Deleted while the pipeline before this one (a reload)
                // held it: its descriptor is the only way to its lines.
                let held_file = held
                    .iter()
                    .find(|(id, _)| *id == u.identity)
                    .and_then(|(_, f)| f.try_clone().ok());
                let located = if let Some(file) = held_file {
                    rotated::Located::Found(rotated::Candidate {
                        found_at: u.path.with_file_name(format!(
                            "{} (deleted, held across the reload)",
                            u.path.file_name().unwrap_or_default().to_string_lossy()
                        )),
                        file,
                        copy: None,
                    })
                } else if copies_only.contains(&u.identity) {
                    // The file at its path is the new content: only a copy counts.
                    let mut taken = taken.clone();
                    taken.insert((u.identity.dev, u.identity.ino));
                    match rotated::locate_elsewhere(&u, &taken, &scratch) {
                        rotated::Located::Found(c) => rotated::Located::Found(c),
                        _ => rotated::Located::AtPath,
                    }
                } else {
                    rotated::locate(&u, &taken, &scratch)
                };
                if let rotated::Located::Found(c) = &located
                    && let Ok(m) = std::fs::metadata(&c.found_at)
                {
                    taken.insert((m.dev(), m.ino()));
                }
                out.push((u, source, located, Vec::new()));
            }
            for (u, _, located, newer) in &mut out {
                if !matches!(located, rotated::Located::AtPath) {
                    *newer = rotated::newer_rotations(u, &*checkpointer, &live, &taken, &scratch);
                }
                for (_, c) in newer.iter() {
                    if let Ok(m) = std::fs::metadata(&c.found_at) {
                        taken.insert((m.dev(), m.ino()));
                    }
                }
            }
            out
        })
        .await;
        let located = match located {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "looking for rotated files failed");
                return;
            }
        };
        for (u, source, found, newer) in located {
            match found {
                rotated::Located::AtPath if rewritten_ids.contains(&u.identity) => {
                    tracing::info!(path = %u.path.display(), "no copy of the old content of a file rewritten while logship was stopped");
                }
                rotated::Located::AtPath => {
                    tracing::info!(path = %u.path.display(), "a file with unacknowledged lines is no longer matched by its source's globs; not read");
                }
                rotated::Located::Gone => {
                    Metrics::add(&shared.metrics.gone_while_stopped_files, 1);
                    Metrics::add(&shared.metrics.gone_while_stopped_bytes, u.known_unread);
                    tracing::error!(
                        path = %u.path.display(),
                        identity = %u.identity,
                        generation = u.checkpoint.generation,
                        acknowledged_up_to = u.checkpoint.offset,
                        bytes_lost_at_least = u.known_unread,
                        "LOST LINES: a file not read to its end was deleted (or truncated in place) while logship was stopped; what it held past its checkpoint is lost, counted in logship_dropped_bytes_total{{reason=\"gone_while_stopped\"}} (the bytes read before the stop) and logship_files_lost_total"
                    );
                    shared.checkpointer.forget(&u.identity);
                }
                rotated::Located::Found(candidate) => {
                    Metrics::add(&shared.metrics.rotated_while_stopped, 1);
                    tracing::info!(was = %u.path.display(), now = %candidate.found_at.display(), offset = u.checkpoint.offset, "found a file rotated while logship was stopped; reading it to its end");
                    let start = StartAt::Resume {
                        at: u.checkpoint,
                        tail: u.tail,
                    };
                    self.start_rotated(u.identity, u.path.clone(), source, start, candidate);
                }
            }
            for (identity, candidate) in newer {
                Metrics::add(&shared.metrics.rotated_while_stopped, 1);
                tracing::info!(of = %u.path.display(), rotation = %candidate.found_at.display(), "found a rotation made while logship was stopped that it never saw; reading it from its start");
                let start = StartAt::New(Checkpoint {
                    generation: 0,
                    offset: 0,
                });
                self.start_rotated(identity, u.path.clone(), source, start, candidate);
            }
        }
    }

    /// Starts a drain-only follower for a rotation found after a restart,
    /// under the original file's `path` and `identity`.
    fn start_rotated(
        &mut self,
        identity: FileIdentity,
        path: PathBuf,
        source: usize,
        start: StartAt,
        candidate: rotated::Candidate,
    ) {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = candidate.file.metadata() else {
            return;
        };
        let dev_ino = (meta.dev(), meta.ino());
        if self.active.contains_key(&dev_ino) {
            return;
        }
        let key = self.spawn(
            source,
            Opened {
                found: Found {
                    source,
                    matched: path.clone(),
                    path,
                    dev: dev_ino.0,
                    ino: dev_ino.1,
                },
                file: candidate.file,
                identity,
                size: meta.len(),
                rewritten: None,
                away: false,
            },
            start,
            true,
        );
        if let Some(copy) = candidate.copy {
            self.unpacked.insert(key, copy);
        }
    }

    /// Whether the pipeline before this one (a reload) would have followed
    /// `found`: then a file it never saw appeared during the reload, and is
    /// new, whatever `read_from` says.
    fn previously_matched(&self, found: &Found) -> bool {
        self.previous
            .as_ref()
            .is_some_and(|m| m.iter().any(|m| m.matches(&found.matched)))
    }

    /// Counts the held rotated or deleted files and gives up the oldest
    /// deleted ones past `max_open_files` (see module doc).
    async fn limit_held_files(&mut self) {
        let limit = self.server.max_open_files;
        if self.active.len() <= limit {
            // Cannot be over the limit: skip the syscalls.
            return;
        }
        let candidates: Vec<(FileKey, u64, u64, PathBuf, Arc<FileStatus>)> = self
            .active
            .iter()
            .filter(|(_, a)| !a.give_up.is_cancelled())
            .map(|(&(dev, ino), a)| (a.key, dev, ino, a.path.clone(), a.status.clone()))
            .collect();
        let held = match tokio::task::spawn_blocking(move || held_files(&candidates)).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "counting held files failed");
                return;
            }
        };
        let victims = files_to_give_up(&held, limit);
        let still_over = held.len() - victims.len() > limit;
        if still_over && !self.over_limit_by_renamed {
            tracing::warn!(
                held = held.len() - victims.len(),
                max_open_files = limit,
                "more rotated files are held open than buffer.max_open_files; they are renamed, not deleted, so they keep their lines on disk and are not given up"
            );
        }
        self.over_limit_by_renamed = still_over;
        for key in victims {
            if let Some(active) = self.active.values().find(|a| a.key == key) {
                active.give_up.cancel();
            }
        }
    }

    fn start(&mut self, o: Opened) {
        let source = &self.server.sources[o.found.source];
        let shared = &self.server.shared;
        let ended = self.ended.get(&o.identity).copied();
        let stored = shared.checkpointer.lookup(&o.identity);
        let known = [ended, stored]
            .into_iter()
            .flatten()
            .max_by_key(|c| (c.generation, c.offset));
        let start = match known {
            Some(cp) if ended.is_none() && shared.checkpointer.is_gone(&o.identity) => {
                // A file with the identity of one that is gone (inode reused,
                // same first line): its lines must not take the old `_id`s.
                tracing::info!(path = %o.found.path.display(), generation = cp.generation.wrapping_add(1), "file has the identity of a file that is gone (inode reused, same first line); reading it as a new generation");
                StartAt::New(Checkpoint {
                    generation: cp.generation.wrapping_add(1),
                    offset: 0,
                })
            }
            Some(cp) if o.rewritten.is_some() && ended.is_none() => {
                Metrics::add(&shared.metrics.truncations, 1);
                tracing::info!(path = %o.found.path.display(), generation = cp.generation.wrapping_add(1), "file no longer holds the lines before its checkpoint: truncated or rewritten while we were away; reading it from the start as a new generation");
                StartAt::New(Checkpoint {
                    generation: cp.generation.wrapping_add(1),
                    offset: 0,
                })
            }
            Some(cp) if o.size < cp.offset => {
                Metrics::add(&shared.metrics.truncations, 1);
                tracing::info!(path = %o.found.path.display(), "file is shorter than its checkpoint: truncated while we were away");
                StartAt::New(Checkpoint {
                    generation: cp.generation.wrapping_add(1),
                    offset: 0,
                })
            }
            Some(cp) => StartAt::Resume {
                at: cp,
                // The stored hash only speaks for the stored offset.
                tail: (Some(cp) == stored)
                    .then(|| shared.checkpointer.lookup_tail(&o.identity))
                    .flatten(),
            },
            None if self.first_scan
                && source.read_from == ReadFrom::End
                && !self.previously_matched(&o.found) =>
            {
                StartAt::EndOfLastLine
            }
            None => StartAt::New(Checkpoint {
                generation: 0,
                offset: 0,
            }),
        };
        let index = o.found.source;
        self.spawn(index, o, start, false);
    }

    /// Starts a follower; returns its key.
    fn spawn(&mut self, source: usize, o: Opened, start: StartAt, drain_only: bool) -> FileKey {
        let source = &self.server.sources[source];
        let shared = &self.server.shared;
        let key = self.next_key;
        self.next_key += 1;
        let wake = Arc::new(Wake::default());
        let give_up = CancellationToken::new();
        if o.away {
            // Its path names another file (or none): not routed there; it
            // looks at its path at its first end of file and drains.
            wake.moved();
        } else if !drain_only {
            // A drain-only follower's path names another (the live) file.
            if let Some((_, old)) = self
                .by_path
                .insert(o.found.path.clone(), (key, wake.clone()))
            {
                // The path names another file now: the old one was renamed
                // or deleted, and a scan found the new one before the event
                // was routed (which now wakes the new follower). Without
                // this, the old follower learnt it on its recheck only.
                old.moved();
            }
        }
        let status = self
            .server
            .registry
            .add(key, &source.name, o.found.path.clone(), o.identity);
        self.active.insert(
            (o.found.dev, o.found.ino),
            Active {
                key,
                path: o.found.path.clone(),
                wake: wake.clone(),
                status: status.clone(),
                give_up: give_up.clone(),
            },
        );
        let spec = FollowerSpec {
            key,
            source: Arc::from(source.name.as_str()),
            dev_ino: (o.found.dev, o.found.ino),
            drain_only,
            status,
            path: o.found.path,
            file: o.file,
            identity: o.identity,
            start,
            format: source.format,
            max_line_bytes: source.max_line_bytes,
            multiline: self.server.multiline[o.found.source].clone(),
            wake,
            give_up,
        };
        self.followers.spawn(Follower::follow(
            spec,
            shared.clone(),
            self.spans.clone(),
            self.shutdown.clone(),
        ));
        key
    }
}

/// Which of `candidates` (key, dev, ino, path, status) are held open while
/// no longer at their path, with lines not read or not yet handed
/// downstream (blocking: an `fstat` and a `stat` each).
fn held_files(candidates: &[(FileKey, u64, u64, PathBuf, Arc<FileStatus>)]) -> Vec<HeldFile> {
    use std::os::unix::fs::MetadataExt;
    let mut held = Vec::new();
    for (key, dev, ino, path, status) in candidates {
        let Some(file) = status.open_file() else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        drop(file);
        if status.read_offset() >= meta.len() && status.state() != FollowState::Backpressured {
            // Read to its end and not waiting for downstream: its follower
            // closes it within `ROTATION_GRACE` by itself.
            continue;
        }
        let gone = match std::fs::metadata(path) {
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            Ok(m) => (m.dev(), m.ino()) != (*dev, *ino),
        };
        if gone {
            held.push(HeldFile {
                key: *key,
                deleted: meta.nlink() == 0,
                modified: (meta.mtime(), meta.mtime_nsec()),
            });
        }
    }
    held
}

/// The held files to give up so that at most `limit` stay: the oldest
/// deleted ones (never a merely renamed one), oldest first.
fn files_to_give_up(held: &[HeldFile], limit: usize) -> Vec<FileKey> {
    let excess = held.len().saturating_sub(limit);
    let mut deleted: Vec<&HeldFile> = held.iter().filter(|h| h.deleted).collect();
    deleted.sort_by_key(|h| (h.modified, h.key));
    deleted.iter().take(excess).map(|h| h.key).collect()
}

/// Descriptors besides held files: live files, sockets, buffer, logs, and
/// up to [`MAX_PENDING_HELD`] files without a first line yet.
const FD_HEADROOM: u64 = 256 + MAX_PENDING_HELD as u64;

/// Warns when the process may run out of file descriptors before holding
/// `max_open_files` rotated or deleted files (systemd's and containerd 2's
/// default soft `RLIMIT_NOFILE` is 1024).
fn warn_if_fd_limit_below(max_open_files: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return;
    }
    let soft = limit.rlim_cur;
    if soft < max_open_files.saturating_add(FD_HEADROOM) {
        tracing::warn!(
            soft_limit = soft,
            hard_limit = limit.rlim_max,
            max_open_files,
            "the open file limit (RLIMIT_NOFILE) is below buffer.max_open_files plus room for followed files and sockets: during a long outage opens may fail before files are given up; raise it (LimitNOFILE=, ulimit -n) or lower buffer.max_open_files"
        );
    }
}

/// What the store knows of an opened file that no longer holds what it
/// held (blocking: small reads): the bytes before the checkpoint, the
/// bytes before what was read, or its first bytes (the stored head: a file
/// with a constant first line rewritten while logship was down may still
/// hold the same bytes before a checkpoint inside or just past that line).
fn rewritten_while_away(o: &Opened, checkpointer: &Checkpointer) -> Option<checkpoint::Unfinished> {
    let u = checkpointer.snapshot(&o.identity)?;
    let holds = |offset: u64, hash: Option<u64>| {
        hash.is_none() || reader::hash_before(&o.file, offset) == hash
    };
    let cp = u.checkpoint;
    // Lines past the checkpoint were read (and maybe indexed) too: if the
    // file no longer holds them, new content there must not take their
    // `_id`s (a new generation), even when nothing was acknowledged.
    let read = cp.offset + u.known_unread;
    let read_changed = u.known_unread > 0 && (o.size < read || !holds(read, u.read_tail));
    let changed = (cp.offset > 0 && (o.size < cp.offset || !holds(cp.offset, u.tail)))
        || read_changed
        || !identity::begins_with(&o.file, u.head);
    changed.then_some(u)
}

/// Opens a found file and identifies it; `None` if it has no identity yet
/// (or it was watch_paths between the scan and the open).
fn open(found: &Found) -> std::io::Result<Open> {
    use std::os::unix::fs::MetadataExt;
    let file = open_for_reading(&found.path)?;
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (found.dev, found.ino) {
        return Ok(Open::Replaced);
    }
    Ok(match identity::identify(&file)? {
        Some(identity) => Open::Opened(Box::new(Opened {
            found: found.clone(),
            size: meta.len(),
            file,
            identity,
            rewritten: None,
            away: false,
        })),
        None => Open::NoFirstLine(file),
    })
}

/// What looking at a held file without a first line again gave.
enum Recheck {
    /// It has one now: its identity and size.
    Identified(FileIdentity, u64),
    /// Not yet: still held.
    Pending,
    /// At its path, still without a first line, and not written for
    /// [`PENDING_HOLD_AGE`]: no longer held (a container that never logs).
    Stale,
    /// Away from every matched path for [`PENDING_AWAY_GRACE`] and still
    /// without a first line: let go.
    LetGo,
}

/// Looks at a held file without a first line again, through its
/// descriptor (blocking).
fn recheck(p: &Pending) -> std::io::Result<Recheck> {
    let Some(identity) = identity::identify(&p.file)? else {
        return Ok(match p.away_since {
            Some(t) if t.elapsed() >= PENDING_AWAY_GRACE => {
                tracing::debug!(path = %p.found.path.display(), "file renamed or deleted before it had a first line; let go");
                Recheck::LetGo
            }
            Some(_) => Recheck::Pending,
            None if !recently_written(&p.file) => Recheck::Stale,
            None => Recheck::Pending,
        });
    };
    Ok(Recheck::Identified(identity, p.file.metadata()?.len()))
}

/// Modified within [`PENDING_HOLD_AGE`] (or its time unknown).
fn recently_written(file: &File) -> bool {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < PENDING_HOLD_AGE)
}

/// Opens a log file to read it, without updating its access time where
/// allowed (`O_NOATIME`: the file's owner or `CAP_FOWNER`, as root in the
/// DaemonSet). Each read of a file written since its last read otherwise
/// dirties its inode (relatime updates atime when it is older than mtime,
/// which a growing file's always is): with 1,000 trickling files, ~5 % of
/// logship's CPU went to ext4 journalling access times.
pub fn open_for_reading(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_leaves_the_access_time_alone_where_allowed() {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, "one\n").expect("write");
        // An access time older than the modification time: relatime would
        // update it on a read.
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_times(std::fs::FileTimes::new().set_accessed(old)))
            .expect("set atime");
        let before = std::fs::metadata(&path).expect("stat").atime();
        let mut s = String::new();
        open_for_reading(&path)
            .expect("open")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "one\n");
        let after = std::fs::metadata(&path).expect("stat").atime();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(before, after, "O_NOATIME: the read left atime alone");
        }
    }

    fn held(key: FileKey, deleted: bool, modified: i64) -> HeldFile {
        HeldFile {
            key,
            deleted,
            modified: (modified, 0),
        }
    }

    #[test]
    fn the_oldest_deleted_files_are_given_up_never_renamed_ones() {
        let files = [
            held(1, false, 10), // renamed, oldest of all
            held(2, true, 30),
            held(3, true, 20),
            held(4, false, 40),
            held(5, true, 50),
        ];
        assert_eq!(files_to_give_up(&files, 5), Vec::<FileKey>::new());
        assert_eq!(files_to_give_up(&files, 4), vec![3]);
        assert_eq!(files_to_give_up(&files, 3), vec![3, 2]);
        // Only three are deleted: the renamed ones stay, even over the limit.
        assert_eq!(files_to_give_up(&files, 1), vec![3, 2, 5]);
        assert_eq!(files_to_give_up(&files, 0), vec![3, 2, 5]);
        // Same modification time: the file followed first goes first.
        let tie = [held(9, true, 7), held(8, true, 7)];
        assert_eq!(files_to_give_up(&tie, 1), vec![8]);
    }
}
