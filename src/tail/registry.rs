//! The registry of followed files: what `/api/v1/files` lists and the lag
//! and per-source read figures of `/metrics` are computed from.
//!
//! The [`FileServer`](super::FileServer) adds a [`FileStatus`] when it starts
//! a follower and removes it when the follower ends; the follower updates
//! its figures (atomics, no lock on the read path except a short one when
//! the file's identity changes after a truncation). Per-source counters
//! ([`SourceStats`]) live as long as the registry, so they only go up.
//!
//! Does not: hold file descriptors open (a status keeps a `Weak` to the
//! follower's file, to `fstat` it at scrape time), or decide anything.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::event::{FileIdentity, FileKey, Generation};

/// What a follower is doing (see `/api/v1/files`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FollowState {
    /// Reading, or waiting for the file to grow.
    Reading = 0,
    /// Waiting for downstream to take a span (the sink is slow or down).
    Backpressured = 1,
    /// Rotated away or deleted: read to its end, then closed.
    Draining = 2,
    /// Truncated and still empty: waiting for a first line to identify it.
    WaitingForFirstLine = 3,
    /// Waiting (at most `kubernetes.metadata_wait`) for its pod to appear in
    /// the metadata cache before the first lines are shipped.
    WaitingForMetadata = 4,
    /// Deleted with unread data past `buffer.max_open_files`: closed, its
    /// unread bytes counted as lost (shown until the follower is gone).
    GivenUp = 5,
    /// Its pod, found only after `metadata_wait`, is excluded by annotation:
    /// no longer read; the fd is kept until the file leaves its path.
    Excluded = 6,
}

impl FollowState {
    pub fn as_str(self) -> &'static str {
        match self {
            FollowState::Reading => "reading",
            FollowState::Backpressured => "backpressured",
            FollowState::Draining => "draining",
            FollowState::WaitingForFirstLine => "waiting_for_first_line",
            FollowState::WaitingForMetadata => "waiting_for_metadata",
            FollowState::GivenUp => "given_up",
            FollowState::Excluded => "excluded",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => FollowState::Backpressured,
            2 => FollowState::Draining,
            3 => FollowState::WaitingForFirstLine,
            4 => FollowState::WaitingForMetadata,
            5 => FollowState::GivenUp,
            6 => FollowState::Excluded,
            _ => FollowState::Reading,
        }
    }
}

/// Lines and bytes read by the files of one source, over the whole run.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub lines_read: AtomicU64,
    pub bytes_read: AtomicU64,
}

/// One followed file.
#[derive(Debug)]
pub struct FileStatus {
    pub key: FileKey,
    pub source: String,
    pub path: PathBuf,
    pub source_stats: Arc<SourceStats>,
    identity: Mutex<FileIdentity>,
    generation: AtomicU32,
    read_offset: AtomicU64,
    /// Unix milliseconds of the last read that returned bytes (0: none yet).
    last_read_ms: AtomicU64,
    state: AtomicU8,
    file: OnceLock<Weak<File>>,
}

impl FileStatus {
    pub fn identity(&self) -> FileIdentity {
        self.identity
            .lock()
            .map_or_else(|e| *e.into_inner(), |i| *i)
    }
    pub fn set_identity(&self, identity: FileIdentity) {
        match self.identity.lock() {
            Ok(mut i) => *i = identity,
            Err(e) => *e.into_inner() = identity,
        }
    }
    pub fn generation(&self) -> Generation {
        self.generation.load(Ordering::Relaxed)
    }
    pub fn read_offset(&self) -> u64 {
        self.read_offset.load(Ordering::Relaxed)
    }
    pub fn last_read_ms(&self) -> u64 {
        self.last_read_ms.load(Ordering::Relaxed)
    }
    pub fn state(&self) -> FollowState {
        FollowState::from_u8(self.state.load(Ordering::Relaxed))
    }
    pub fn set_state(&self, state: FollowState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }
    /// The follower started at `offset` of `generation`, reading `file`.
    pub fn started(&self, file: &Arc<File>, generation: Generation, offset: u64) {
        let _ = self.file.set(Arc::downgrade(file));
        self.generation.store(generation, Ordering::Relaxed);
        self.read_offset.store(offset, Ordering::Relaxed);
    }
    /// `n` bytes were read, up to `offset`.
    pub fn read(&self, n: u64, offset: u64) {
        self.read_offset.store(offset, Ordering::Relaxed);
        self.last_read_ms
            .store(crate::telemetry::unix_millis(), Ordering::Relaxed);
        self.source_stats.bytes_read.fetch_add(n, Ordering::Relaxed);
    }
    pub fn lines(&self, n: u64) {
        self.source_stats.lines_read.fetch_add(n, Ordering::Relaxed);
    }
    /// Truncated: reading again from 0 in `generation`.
    pub fn restarted(&self, generation: Generation) {
        self.generation.store(generation, Ordering::Relaxed);
        self.read_offset.store(0, Ordering::Relaxed);
    }
    /// The open file's size now (`fstat`; `None` once the follower let it go).
    pub fn size(&self) -> Option<u64> {
        self.open_file()?.metadata().ok().map(|m| m.len())
    }
    /// The follower's open file, while it holds it (for `fstat`; drop soon).
    pub fn open_file(&self) -> Option<Arc<File>> {
        self.file.get()?.upgrade()
    }
}

/// Every followed file, and per-source counters.
#[derive(Debug, Default)]
pub struct FileRegistry {
    files: Mutex<BTreeMap<FileKey, Arc<FileStatus>>>,
    sources: Mutex<BTreeMap<String, Arc<SourceStats>>>,
    /// The globs of the pipeline that last started (the registry outlives
    /// pipelines): a reload's pipeline asks which files the one before it
    /// would have followed.
    matchers: Mutex<Option<Arc<Vec<super::discover::SourceMatcher>>>>,
    /// Deleted files a stopped pipeline had not read to their end (see
    /// [`FileRegistry::hold`]).
    held: Mutex<Vec<(FileIdentity, Arc<File>)>>,
}

impl FileRegistry {
    /// Adds a file the server starts following.
    pub fn add(
        &self,
        key: FileKey,
        source: &str,
        path: PathBuf,
        identity: FileIdentity,
    ) -> Arc<FileStatus> {
        let source_stats = self.source(source);
        let status = Arc::new(FileStatus {
            key,
            source: source.to_owned(),
            path,
            source_stats,
            identity: Mutex::new(identity),
            generation: AtomicU32::new(0),
            read_offset: AtomicU64::new(0),
            last_read_ms: AtomicU64::new(0),
            state: AtomicU8::new(FollowState::Reading as u8),
            file: OnceLock::new(),
        });
        if let Ok(mut files) = self.files.lock() {
            files.insert(key, status.clone());
        }
        status
    }

    /// The follower of `key` ended.
    pub fn remove(&self, key: FileKey) {
        if let Ok(mut files) = self.files.lock() {
            files.remove(&key);
        }
    }

    /// The counters of source `name` (created on first use, kept for the run).
    pub fn source(&self, name: &str) -> Arc<SourceStats> {
        let mut sources = match self.sources.lock() {
            Ok(s) => s,
            Err(e) => e.into_inner(),
        };
        sources.entry(name.to_owned()).or_default().clone()
    }

    /// Records the globs of a pipeline that starts; returns those of the
    /// one before it (`None` for the first pipeline of the process).
    /// Keeps the descriptor of a deleted file that a stopping pipeline had
    /// not read to its end: the next pipeline of the process (a reload)
    /// reads the rest, as it would a file rotated while logship was
    /// stopped; its path no longer reaches it.
    pub fn hold(&self, identity: FileIdentity, file: Arc<File>) {
        match self.held.lock() {
            Ok(mut h) => h.push((identity, file)),
            Err(e) => e.into_inner().push((identity, file)),
        }
    }

    /// The held files (see [`FileRegistry::hold`]); the registry keeps none.
    pub fn take_held(&self) -> Vec<(FileIdentity, Arc<File>)> {
        match self.held.lock() {
            Ok(mut h) => std::mem::take(&mut *h),
            Err(e) => std::mem::take(&mut *e.into_inner()),
        }
    }

    pub fn replace_matchers(
        &self,
        matchers: Arc<Vec<super::discover::SourceMatcher>>,
    ) -> Option<Arc<Vec<super::discover::SourceMatcher>>> {
        let mut m = match self.matchers.lock() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        };
        m.replace(matchers)
    }

    /// A snapshot of the followed files, by key.
    pub fn files(&self) -> Vec<Arc<FileStatus>> {
        match self.files.lock() {
            Ok(f) => f.values().cloned().collect(),
            Err(e) => e.into_inner().values().cloned().collect(),
        }
    }

    /// A snapshot of the per-source counters, by name.
    pub fn sources(&self) -> Vec<(String, Arc<SourceStats>)> {
        let sources = match self.sources.lock() {
            Ok(s) => s,
            Err(e) => e.into_inner(),
        };
        sources
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
