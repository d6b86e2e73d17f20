//! One followed file: read, decode, encode, send; notice truncation,
//! rotation and deletion.
//!
//! A [`Follower`] is one tokio task that owns the open `File`. It reads with
//! [`LineReader`]: catch-up reads in large chunks on a blocking thread, a
//! few new bytes at a file's live end on its own task (local filesystems
//! only, see `Follower::fill`). It decodes every complete
//! physical line and encodes the logical lines into the current
//! [`EncodedSpan`], which holds lines of one file generation only. A span is
//! sent (after the [`Checkpointer`] issued its origin) when it is full and
//! whenever the file is read to its end. Sending waits on the bounded span
//! channel: that is backpressure, the follower stops reading.
//!
//! At end of file the follower looks at the file (an `fstat` and a `stat`
//! of its path; with inotify trusted, only the `stat` and only when told the
//! path moved or on the recheck, see [`Wake`]), then waits for a wake-up (an
//! inotify event routed by the file server, at most one per
//! [`COALESCE`](super::watch::COALESCE), a fallback timer of
//! [`WATCHED_RECHECK`] or [`IDLE_RECHECK`], or shutdown) and reads again. Every read checks, after reading, that the
//! bytes before its offset, the first line, and (within them) the
//! generation's stored first bytes are unchanged (`reader`), so content
//! changes are seen by the read, shape changes by the look:
//!
//! * the open file is shorter than the read offset, or its first line or the
//!   bytes before the offset changed: **copytruncate**. The generation goes up, reading restarts at
//!   0, the decoder forgets its partial line, and the file gets a fresh
//!   identity (its fingerprint changed) so a later restart finds its
//!   checkpoint;
//! * the path is gone or names another inode: **rotated or deleted**. The
//!   open file is read to its end, again after [`ROTATION_GRACE`], the last
//!   unterminated line and the decoder's held partial are shipped, and the
//!   file is closed (which releases a deleted file's disk space).
//!
//! On shutdown the follower stops reading, sends the span it holds (without
//! finishing partial lines: they are read again on the next start) and
//! returns.
//!
//! **Giving up.** The file server cancels a follower's `give_up` token when
//! more rotated or deleted files are held open than `buffer.max_open_files`
//! allows (see the `tail` module doc). Whatever it is doing (usually waiting
//! for downstream to take a span), the follower then drops what it has not
//! handed downstream, closes the file, counts the bytes from the end of the
//! last span it sent to the file's size as lost
//! (`logship_dropped_bytes_total{reason="max_open_files"}`), logs an error
//! naming the file, and moves its checkpoint to the file's end.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::AtomicBool;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::checkpoint::{Checkpoint, Checkpointer, Head};
use super::identity::{self, HEAD_BYTES};
use super::pipeline::{self, encode_line, held_back};
use super::reader::{Filled, LineReader, RawLine};
use super::registry::{FileStatus, FollowState};
use super::watermark::SpanStamp;
use crate::config::SourceFormat;
use crate::decode::LineDecoder;
use crate::decode::multiline::{Joiner, Rules};
use crate::encode::{Encoder, FileContext};
use crate::event::{DecodedLine, EncodedSpan, FileIdentity, FileKey, Generation, Timestamp};
use crate::k8s::{Enricher, FileMetadata, PodRef, Resolved};
use crate::processors::FileProcessor;
use crate::telemetry::Metrics;

/// An idle follower re-checks its file this often even without an event
/// when inotify does not cover it (polling).
pub const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// ...and this often when it does: a safety net, not the way lines are
/// found (issue 10: 1,000 idle files each looked at every second cost 2.6 %
/// of a core, every 10 s ~0.3 %). inotify loses no event unnoticed (a full
/// queue wakes every follower); what it does not report is a parent
/// directory of the file renamed, seen here within this period.
pub const WATCHED_RECHECK: Duration = Duration::from_secs(30);
/// After a rotation or deletion, the old file is read to its end once more
/// after this long, for writers that had it open.
pub const ROTATION_GRACE: Duration = Duration::from_millis(500);
/// The reader cuts a physical line this far past `max_line_bytes` (the
/// decoder cuts logical lines at `max_line_bytes` itself).
pub const READ_LINE_SLACK: usize = 4096;
/// A span is sent at the latest when its body reaches this size. Small
/// enough that many followers each holding one stay cheap, large enough that
/// the per-span overhead (a channel send, a checkpoint issue) is noise.
const MAX_SPAN_BYTES: usize = 192 * 1024;
/// Room reserved in a new span beyond its limit, so that the last document
/// does not make the buffer double. Limit plus slack stays under the
/// allocator's fixed mmap threshold (256 KiB, set in `main`), so span bodies
/// come from the heap and are recycled by `event::span_pool`.
const SPAN_SLACK: usize = 32 * 1024;
/// A new span's first allocation (bytes, items); it grows as it fills.
const SPAN_INITIAL_BYTES: usize = 16 * 1024;
/// Room for one document's action line and fields besides its message.
const SPAN_DOC_OVERHEAD: usize = 1024;
const SPAN_INITIAL_ITEMS: usize = 64;
/// How long the follower leading a forced checkpoint write waits for
/// others to share it (see `Follower::persist_identity`).
const COMMIT_WINDOW: Duration = Duration::from_millis(20);

/// What one follower reading at a time may hold: a read chunk, a full
/// span and its slack (`buffer.read_memory` is divided by this).
pub const READ_SLOT_BYTES: usize = 512 * 1024;
const _: () = assert!(super::reader::CHUNK_BYTES + MAX_SPAN_BYTES + SPAN_SLACK <= READ_SLOT_BYTES);

/// A read of at most this many new bytes at a file's live end runs on the
/// follower's task, not on a blocking thread (see `Follower::fill`).
const INLINE_READ_BYTES: u64 = 64 * 1024;
/// A follower woken again before a recheck period passes keeps a read
/// buffer up to this size (see `Follower::idle`).
const IDLE_KEEP_BYTES: usize = 16 * 1024;
/// A file whose pod was not in the metadata cache looks again this often.
const POD_RETRY: Duration = Duration::from_secs(1);

/// Settings and handles every follower shares.
pub struct Shared {
    pub checkpointer: Arc<Checkpointer>,
    pub metrics: Arc<Metrics>,
    pub node_name: String,
    pub index_template: String,
    /// Send a span when its body reaches this many bytes...
    pub span_max_bytes: usize,
    /// ...or it holds this many items.
    pub span_max_items: usize,
    /// Kubernetes metadata for each file (`Enricher::Off` in host mode).
    pub enricher: Enricher,
    /// inotify watches every directory of the followed files, each on a
    /// local filesystem, and every pattern's directory exists
    /// (`watch::Coverage::complete`, kept up to date by the server): an
    /// idle follower then re-checks its file only every
    /// [`WATCHED_RECHECK`], else every [`IDLE_RECHECK`], and looks at its
    /// path only when told (see [`Wake`]).
    pub watched: std::sync::atomic::AtomicBool,
    /// Each source's processor chain (none: lines are encoded as read).
    pub processors: crate::processors::Chains,
    /// One follower at a time leads a forced checkpoint write (see
    /// `Follower::persist_identity`).
    pub commit_lock: tokio::sync::Mutex<()>,
    /// Turns to read (`buffer.read_memory` / [`READ_SLOT_BYTES`]): a
    /// follower holds one from its read to the send of what it read, so
    /// the memory all followers hold at once is bounded whatever the number
    /// of files; one waiting for a turn holds no read buffer.
    pub read_slots: Arc<tokio::sync::Semaphore>,
    /// Built-in multiline rules compiled for `logship.io/multiline`
    /// annotations, by rule and `max_bytes` (compiled once, shared).
    pub annotated_rules: std::sync::Mutex<
        std::collections::HashMap<(crate::decode::multiline::Builtin, usize), Arc<Rules>>,
    >,
}

impl Shared {
    /// The multiline rule for a file: its pod's `logship.io/multiline`
    /// annotation if it has one (`none` turns the source's rule off), else
    /// the source's.
    pub fn multiline_rules(
        &self,
        metadata: &FileMetadata,
        source: Option<Arc<Rules>>,
        max_line_bytes: usize,
    ) -> Option<Arc<Rules>> {
        multiline_rule(metadata, source, |rule| {
            let mut cache = self
                .annotated_rules
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(r) = cache.get(&(rule, max_line_bytes)) {
                return Some(r.clone());
            }
            let r = compile_builtin(rule, max_line_bytes)?;
            cache.insert((rule, max_line_bytes), r.clone());
            Some(r)
        })
    }

    pub fn span_limits(batch_max_bytes: usize, batch_max_events: usize) -> (usize, usize) {
        (
            MAX_SPAN_BYTES.min(batch_max_bytes / 4).max(1),
            (batch_max_events / 4).max(1),
        )
    }
}

/// The multiline rule of a file with `metadata`: its pod's
/// `logship.io/multiline` annotation if it has one (`none` turns the
/// source's rule off; `builtin` compiles a named rule), else the source's.
pub fn multiline_rule(
    metadata: &FileMetadata,
    source: Option<Arc<Rules>>,
    builtin: impl FnOnce(crate::decode::multiline::Builtin) -> Option<Arc<Rules>>,
) -> Option<Arc<Rules>> {
    use crate::k8s::MultilineAnnotation;
    match metadata.multiline {
        None => source,
        Some(MultilineAnnotation::Off) => None,
        Some(MultilineAnnotation::Rule(rule)) => builtin(rule),
    }
}

/// A built-in multiline rule compiled (built-in patterns always compile).
pub fn compile_builtin(
    rule: crate::decode::multiline::Builtin,
    max_line_bytes: usize,
) -> Option<Arc<Rules>> {
    crate::decode::multiline::MultilineConfig::builtin(rule, max_line_bytes)
        .compile()
        .ok()
}

/// Where a follower starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// A settled start (a new file at 0, a new generation at 0): it becomes
    /// the file's checkpoint.
    New(Checkpoint),
    /// Resume at a checkpoint, or where an earlier follower of this run
    /// stopped reading. `tail`: the stored hash of the bytes before it; if
    /// the file no longer holds them it was rewritten, and is read from 0 as
    /// a new generation. Only acknowledgements move the checkpoint.
    Resume { at: Checkpoint, tail: Option<u64> },
    /// Just after the last `\n` (`read_from: end` for a file without checkpoint).
    EndOfLastLine,
}

/// How the file server wakes a follower: for new lines (an inotify write
/// event), or to have it also look at its path (its name was renamed or
/// deleted, or events were lost). A follower whose directory inotify
/// watches on a local filesystem looks at its path only then and on its
/// periodic recheck, not after every read: that `stat` was ~10 % of the
/// CPU with 1,000 trickling files (issue 10). Elsewhere it looks after
/// every read.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    look: AtomicBool,
}

impl Wake {
    /// New lines, maybe.
    pub fn written(&self) {
        self.notify.notify_one();
    }

    /// The path may name another file now, or none.
    pub fn moved(&self) {
        self.look.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_one();
    }

    fn take_look(&self) -> bool {
        self.look.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// Everything a follower needs to start.
pub struct FollowerSpec {
    pub key: FileKey,
    /// The source whose globs found the file (stored with its checkpoint).
    pub source: Arc<str>,
    /// Device and inode of `file` itself (for a decompressed rotation these
    /// differ from `identity`, which is the original file's).
    pub dev_ino: (u64, u64),
    /// The file is a rotation found after a restart: read it to its end,
    /// then close it, whatever its path names.
    pub drain_only: bool,
    /// Where the follower reports what it is doing (`/api/v1/files`).
    pub status: Arc<FileStatus>,
    pub path: PathBuf,
    pub file: File,
    pub identity: FileIdentity,
    pub start: StartAt,
    pub format: SourceFormat,
    pub max_line_bytes: usize,
    /// The source's multiline rule, compiled.
    pub multiline: Option<Arc<Rules>>,
    pub wake: Arc<Wake>,
    /// Cancelled by the server to make the follower give its file up.
    pub give_up: CancellationToken,
}

/// Why a follower ended, and where.
#[derive(Debug)]
pub struct FollowerExit {
    pub key: FileKey,
    pub dev: u64,
    pub ino: u64,
    pub identity: FileIdentity,
    pub generation: Generation,
    /// Offset up to which the file was read.
    pub offset: u64,
    /// The file was read to its end after rotation or deletion and closed
    /// (or given up: then `offset` is its size when it was given up).
    pub closed: bool,
    /// Stopped (a reload or shutdown) before reading to its end a file that
    /// is deleted: its descriptor, for the next pipeline of the process to
    /// read the rest (see `FileRegistry::hold`).
    pub held: Option<Arc<File>>,
}

impl FollowerExit {
    fn new(
        key: FileKey,
        (dev, ino): (u64, u64),
        identity: FileIdentity,
        generation: Generation,
        offset: u64,
        closed: bool,
    ) -> Self {
        FollowerExit {
            key,
            dev,
            ino,
            identity,
            generation,
            offset,
            closed,
            held: None,
        }
    }
}

/// The downstream channel is closed or shutdown began: stop.
#[derive(Debug)]
enum Stop {
    Shutdown,
    Closed,
    /// The server asked this follower to give its file up.
    GivenUp,
}

/// What the file looked like at end of file.
#[derive(Debug)]
enum FileState {
    /// Nothing new.
    Idle,
    /// More bytes arrived since the read.
    Grew,
    /// Shorter than what we read, or the first line changed. The new
    /// fingerprint, if the file has a first line again.
    Truncated(Option<u64>),
    /// The path is gone (`rotated == false`) or names another file.
    Gone { rotated: bool },
}

/// One followed file (see module doc).
pub struct Follower {
    key: FileKey,
    /// Device and inode of the open file.
    dev_ino: (u64, u64),
    /// See [`FollowerSpec::drain_only`].
    drain_only: bool,
    /// A drain-only follower's copy was overwritten: nothing more is read.
    copy_changed: bool,
    /// The stored head of the generation being read (see `checkpoint::Head`),
    /// once recorded: at the first span, again once `HEAD_BYTES` were read.
    head: Option<Head>,
    /// The source's format (`Auto`: detected per file and generation).
    format: SourceFormat,
    status: Arc<FileStatus>,
    path: PathBuf,
    file: Arc<File>,
    dev: u64,
    ino: u64,
    identity: FileIdentity,
    /// The file was truncated and has no first line yet: do not read.
    identity_pending: bool,
    generation: Generation,
    reader: LineReader,
    /// A read of this file succeeded (so what follows is in the page
    /// cache): small reads may run on this task (see `fill`).
    warm: bool,
    /// On a local filesystem ([`on_local_fs`]): reads and checks may run
    /// on this task, and inotify is trusted (the long recheck period).
    local: bool,
    /// The reader's physical line limit.
    read_limit: usize,
    decoder: LineDecoder,
    encoder: Encoder,
    ctx: FileContext,
    /// This file's Kubernetes members, spliced into every document, and
    /// whether its messages are parsed as JSON.
    metadata: FileMetadata,
    /// The source's processors and the pod's `logship.io/drop`, if any.
    processor: Option<FileProcessor>,
    /// The source's name (its processors are looked up by it).
    source: Arc<str>,
    /// A pod log whose pod was not in the cache: shipped without metadata,
    /// looked up again every [`POD_RETRY`].
    missing_pod: Option<(PodRef, tokio::time::Instant)>,
    /// [`Enricher::changes`] when `metadata` was last checked against the
    /// caches ([`Follower::refresh_metadata`]).
    metadata_changes: u64,
    span: EncodedSpan,
    span_end: u64,
    /// Joins multiline events (the source's `multiline`, or the pod's
    /// `logship.io/multiline`); `None`: every line is an event.
    joiner: Option<Joiner>,
    /// End of the last line the decoder handed out: with a joiner,
    /// `span_end` is the lesser of this and the first line of an open group.
    decoded_end: u64,
    /// The stamp of the lines read now (read hour, index templates).
    live_stamp: Arc<SpanStamp>,
    /// The stamp of the lines in `span` (one per span).
    span_stamp: Option<Arc<SpanStamp>>,
    /// After a resume: how the lines past the checkpoint were read before,
    /// up to each `end` (see `Checkpointer::reread`), with the context that
    /// writes them to the same index.
    reread: std::collections::VecDeque<(u64, Arc<SpanStamp>, FileContext)>,
    /// A line taken from the reader that belongs to the next span.
    stashed: Option<RawLine>,
    /// End of the last span handed downstream (in `generation`): what is
    /// past it is lost if the file is given up.
    sent_end: u64,
    lines_read: u64,
    events: u64,
    invalid_utf8: u64,
    /// Bad data in this file was already reported (once per file, not per line).
    reported_bad_data: bool,
    /// Messages that were not JSON objects were already reported (once per file).
    reported_json_failures: bool,
    shared: Arc<Shared>,
    spans: mpsc::Sender<EncodedSpan>,
    wake: Arc<Wake>,
    /// The next end-of-file check also looks at the path (see [`Wake`]).
    look_at_path: bool,
    /// This follower's turn to read (see [`Shared::read_slots`]), held
    /// from a read until what it read is handed downstream.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The last read reached the size an `fstat` just gave.
    reached_size: bool,
    shutdown: CancellationToken,
    give_up: CancellationToken,
}

impl Follower {
    /// Resolves the start position (blocking for `read_from: end`), registers
    /// the file with the checkpointer and runs until the file is closed or
    /// shutdown.
    pub async fn follow(
        spec: FollowerSpec,
        shared: Arc<Shared>,
        spans: mpsc::Sender<EncodedSpan>,
        shutdown: CancellationToken,
    ) -> FollowerExit {
        let file = Arc::new(spec.file);
        let identity = spec.identity;
        let f = file.clone();
        let (path, start_at, format) = (spec.path.clone(), spec.start, spec.format);
        let opening = tokio::task::spawn_blocking(move || opening(&f, &path, start_at, format))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "file opening task failed");
                Opening::fallback(start_at)
            });
        let Opening {
            start,
            commit_start,
            reader,
            detected,
            local,
        } = opening;
        let encoder = match Encoder::new(&shared.node_name, &shared.index_template) {
            Ok(e) => e,
            Err(e) => {
                // FileServer::new validated the template; this cannot happen.
                tracing::error!(error = %e, "cannot create encoder");
                return FollowerExit::new(
                    spec.key,
                    spec.dev_ino,
                    identity,
                    start.generation,
                    start.offset,
                    false,
                );
            }
        };
        // New to the store, or known only as a tombstone (a file that is
        // gone): either way not on disk as a followed file yet.
        let new_to_store =
            !shared.checkpointer.knows(&identity) || shared.checkpointer.is_gone(&identity);
        shared.checkpointer.follow(
            spec.key,
            identity,
            &spec.path,
            &spec.source,
            start,
            commit_start,
        );
        if new_to_store {
            // The store must know a file before any line of it is shipped:
            // killed before the next periodic write, and the file then
            // rotated to a name no glob matches, the restart search would
            // have nothing to look for. Followers starting together share
            // one write (the store writes only when something changed).
            let checkpointer = shared.checkpointer.clone();
            match tokio::task::spawn_blocking(move || checkpointer.persist()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint write failed; will retry"),
                Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
            }
        }
        Metrics::add(&shared.metrics.files_opened, 1);
        spec.status.started(&file, start.generation, start.offset);
        tracing::info!(path = %spec.path.display(), %identity, generation = start.generation, offset = start.offset, "following file");
        // Lines wait (at most `metadata_wait`) for the pod to be known.
        spec.status.set_state(FollowState::WaitingForMetadata);
        let metadata_changes = shared.enricher.changes();
        let resolved = tokio::select! {
            r = shared.enricher.resolve(&spec.path) => r,
            _ = shutdown.cancelled() => Resolved::Metadata(FileMetadata::default()),
        };
        spec.status.set_state(FollowState::Reading);
        let (metadata, missing_pod) = match resolved {
            Resolved::Metadata(m) => (m, None),
            Resolved::Excluded(pod) => {
                Metrics::add(&shared.metrics.k8s_files_excluded, 1);
                tracing::info!(path = %spec.path.display(), namespace = %pod.namespace, pod = %pod.pod_name, container = %pod.container, "excluded by pod or namespace annotation; not reading this file");
                // Nothing of it is wanted: its checkpoint is complete where
                // it stands, so no restart looks for it.
                shared.checkpointer.unfollow(spec.key, Some(start.offset));
                let closed = spec.drain_only
                    || wait_until_gone(&file, &spec.path, &spec.wake, &shutdown, &spec.give_up)
                        .await;
                return FollowerExit::new(
                    spec.key,
                    spec.dev_ino,
                    identity,
                    start.generation,
                    start.offset,
                    closed,
                );
            }
            Resolved::Missing(pod) => {
                Metrics::add(&shared.metrics.k8s_files_without_metadata, 1);
                tracing::warn!(path = %spec.path.display(), namespace = %pod.namespace, pod = %pod.pod_name, uid = %pod.uid, "pod not in the metadata cache; shipping without Kubernetes metadata until it is");
                (
                    FileMetadata::default(),
                    Some((pod, tokio::time::Instant::now())),
                )
            }
        };
        let ctx = metadata.file_context(&encoder, &spec.path, identity, start.generation);
        let processor = FileProcessor::for_file(
            shared.processors.for_source(&spec.source),
            &metadata,
            &spec.path,
            &shared.node_name,
        );
        let reread = if commit_start {
            Default::default()
        } else {
            shared
                .checkpointer
                .reread(&identity)
                .into_iter()
                .filter(|r| r.end > start.offset)
                .map(|r| {
                    let stamp = Arc::new(SpanStamp {
                        secs: r.secs,
                        index: r.index.clone(),
                    });
                    (r.end, stamp, ctx.clone().with_index(r.index))
                })
                .collect()
        };
        let live_stamp = Arc::new(SpanStamp {
            secs: Timestamp::now().secs,
            index: ctx.index().cloned(),
        });
        let read_limit = spec.max_line_bytes.saturating_add(READ_LINE_SLACK);
        let mut decoder = LineDecoder::new(spec.format, spec.max_line_bytes);
        if let Some(detected) = detected {
            decoder.set_detected(Some(detected));
        }
        let joiner = shared
            .multiline_rules(&metadata, spec.multiline, spec.max_line_bytes)
            .map(Joiner::new);
        let follower = Follower {
            key: spec.key,
            dev_ino: spec.dev_ino,
            drain_only: spec.drain_only,
            format: spec.format,
            status: spec.status,
            dev: identity.dev,
            ino: identity.ino,
            identity,
            identity_pending: false,
            generation: start.generation,
            reader: reader.with_limit(read_limit),
            warm: false,
            local,
            read_limit,
            decoder,
            encoder,
            ctx,
            metadata,
            processor,
            source: spec.source,
            missing_pod,
            metadata_changes,
            span: EncodedSpan::default(),
            span_end: start.offset,
            joiner,
            decoded_end: start.offset,
            copy_changed: false,
            head: shared.checkpointer.lookup_head(&identity, start.generation),
            live_stamp,
            span_stamp: None,
            reread,
            stashed: None,
            sent_end: start.offset,
            lines_read: 0,
            events: 0,
            invalid_utf8: 0,
            reported_bad_data: false,
            reported_json_failures: false,
            path: spec.path,
            file,
            shared,
            spans,
            wake: spec.wake,
            look_at_path: true,
            slot: None,
            reached_size: false,
            shutdown,
            give_up: spec.give_up,
        };
        follower.run().await
    }

    async fn run(mut self) -> FollowerExit {
        let give_up = self.give_up.clone();
        let closed = loop {
            let step = tokio::select! {
                biased;
                _ = give_up.cancelled() => Err(Stop::GivenUp),
                r = self.step() => r,
            };
            match step {
                Ok(true) => continue,
                Ok(false) => break true,
                Err(Stop::Shutdown) => {
                    // Lines already encoded are shipped; held partials are
                    // read again on the next start.
                    let _ = self.send().await;
                    break false;
                }
                Err(Stop::Closed) => break false,
                Err(Stop::GivenUp) => return self.given_up(),
            }
        };
        self.shared
            .checkpointer
            .unfollow(self.key, closed.then(|| self.reader.read_offset()));
        if closed {
            Metrics::add(&self.shared.metrics.files_closed, 1);
            tracing::info!(path = %self.path.display(), identity = %self.identity, "file read to its end and closed");
        }
        let mut exit = FollowerExit::new(
            self.key,
            self.dev_ino,
            self.identity,
            self.generation,
            self.reader.read_offset(),
            closed,
        );
        // A deleted file not read to its end: only this descriptor still
        // reaches its lines (a reload's next pipeline reads them).
        if !closed && !self.identity_pending && self.file.metadata().is_ok_and(|m| m.nlink() == 0) {
            exit.held = Some(self.file.clone());
        }
        exit
    }

    /// Gives the file up (see module doc): counts and logs what is lost,
    /// moves the checkpoint past it, and closes the file (on return).
    fn given_up(self) -> FollowerExit {
        let size = self
            .file
            .metadata()
            .map_or(self.sent_end, |m| m.len())
            .max(self.sent_end);
        let lost = size - self.sent_end;
        self.status.set_state(FollowState::GivenUp);
        Metrics::add(&self.shared.metrics.max_open_files_lost_bytes, lost);
        self.shared
            .checkpointer
            .give_up(self.key, &self.path, self.generation, size);
        tracing::error!(
            path = %self.path.display(),
            identity = %self.identity,
            generation = self.generation,
            shipped_up_to = self.sent_end,
            size,
            bytes_lost = lost,
            "LOST LINES: gave up a deleted file with unshipped data because more rotated or deleted files are held open than buffer.max_open_files allows (the sink has been slow or down for long); its unshipped bytes are counted in logship_dropped_bytes_total{{reason=\"max_open_files\"}}"
        );
        FollowerExit::new(
            self.key,
            self.dev_ino,
            self.identity,
            self.generation,
            size,
            true,
        )
    }

    /// Reads what is there, then handles end of file. `Ok(false)`: the file
    /// is done and closed.
    async fn step(&mut self) -> Result<bool, Stop> {
        self.refresh_metadata();
        if self.retry_missing_pod() {
            // What was read before the pod was known is shipped; no more.
            self.send().await?;
            return self.excluded_late().await;
        }
        if self.identity_pending {
            self.try_reidentify().await;
            if self.identity_pending {
                // Nothing to read before a first line, but the file may have
                // been rotated away or deleted meanwhile: then it is read to
                // its end and closed (a deleted file's space released).
                let look = std::mem::take(&mut self.look_at_path)
                    | self.wake.take_look()
                    | !self.trusted();
                if look && let Some(rotated) = self.path_moved().await {
                    tracing::info!(path = %self.path.display(), rotated, "file rotated or deleted before its first line; reading it to its end");
                    self.status.set_state(FollowState::Draining);
                    self.drain().await?;
                    return Ok(false);
                }
                self.idle().await?;
                return Ok(true);
            }
        }
        self.slot = Some(self.read_slot().await?);
        if !self.read_to_end().await? {
            self.send().await?;
            self.slot = None;
            self.idle().await?;
            return Ok(true);
        }
        // At end of file: ship what we have, then look at the file (a
        // rotation, or a file now shorter) before waiting; a rewrite is seen
        // by the next read, which checks before keeping any byte.
        self.send().await?;
        self.slot = None;
        if self.drain_only {
            tracing::info!(path = %self.path.display(), "rotated while logship was stopped; reading it to its end");
            self.status.set_state(FollowState::Draining);
            self.drain().await?;
            return Ok(false);
        }
        // Trusted inotify tells when the path was renamed or deleted (see
        // `Wake`); otherwise look every time.
        let look = std::mem::take(&mut self.look_at_path) | self.wake.take_look() | !self.trusted();
        match self.check(look).await {
            // Grown before the path was looked at: look after the next read.
            FileState::Grew => self.look_at_path |= look,
            FileState::Idle => {
                // Woken (an event or the recheck timer): read. The read
                // checks the bytes before its offset and the first line
                // (`fill`), so a rewrite is seen there.
                self.idle().await?;
            }
            FileState::Truncated(fingerprint) => {
                // The old generation's last groups are complete.
                self.flush_groups(None).await?;
                self.send().await?;
                self.truncated(fingerprint);
                self.persist_identity().await;
            }
            FileState::Gone { rotated } => {
                if rotated {
                    Metrics::add(&self.shared.metrics.rotations, 1);
                }
                tracing::info!(path = %self.path.display(), rotated, "file rotated or deleted; reading it to its end");
                self.status.set_state(FollowState::Draining);
                self.drain().await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Looks the file's pod up again (a map lookup, never an API request).
    /// `true` if the pod turned out to be excluded by annotation.
    fn retry_missing_pod(&mut self) -> bool {
        let Some((pod, last)) = &mut self.missing_pod else {
            return false;
        };
        if last.elapsed() < POD_RETRY {
            return false;
        }
        *last = tokio::time::Instant::now();
        match self.shared.enricher.retry(&self.path, pod) {
            None | Some(Resolved::Missing(_)) => false,
            Some(Resolved::Excluded(pod)) => {
                tracing::info!(path = %self.path.display(), namespace = %pod.namespace, pod = %pod.pod_name, container = %pod.container, "pod found after metadata_wait is excluded by pod or namespace annotation; lines read before are shipped, no more are read");
                self.missing_pod = None;
                true
            }
            Some(Resolved::Metadata(metadata)) => {
                tracing::info!(path = %self.path.display(), pod = %pod.pod_name, "pod metadata found; later lines carry it");
                self.missing_pod = None;
                self.use_metadata(metadata, true);
                false
            }
        }
    }

    /// Re-serialises the file's metadata when its pod or namespace changed
    /// in the cache (a label added, an annotation changed): lines read from
    /// now on carry the new fields. A map lookup, only when the caches
    /// changed at all.
    fn refresh_metadata(&mut self) {
        let changes = self.shared.enricher.changes();
        if changes == self.metadata_changes || self.missing_pod.is_some() {
            return;
        }
        self.metadata_changes = changes;
        let Some(fresh) = self.shared.enricher.refresh(&self.path, &self.metadata) else {
            return;
        };
        if fresh.carries_same(&self.metadata) {
            // Nothing the documents carry changed (a sibling container's
            // status, a namespace label not shipped): remember the new
            // objects, keep the span and its stamp.
            self.metadata.origin = fresh.origin;
            return;
        }
        Metrics::add(&self.shared.metrics.k8s_metadata_updates, 1);
        tracing::info!(path = %self.path.display(), "pod or namespace changed; lines read from now on carry its new metadata");
        // The processors too: their conditions on pod fields and the JSON
        // target's top-level field are computed per file.
        self.use_metadata(fresh, true);
    }

    /// Takes `metadata` for the lines read from now on (the encoder's
    /// context, and the processors if `new_processor`).
    fn use_metadata(&mut self, metadata: FileMetadata, new_processor: bool) {
        self.metadata = metadata;
        if new_processor {
            let unsettled = self.processor.as_mut().map_or(0, |p| {
                p.flush(&self.shared.metrics.processors);
                p.take_unsettled()
            });
            self.processor = FileProcessor::for_file(
                self.shared.processors.for_source(&self.source),
                &self.metadata,
                &self.path,
                &self.shared.node_name,
            )
            .map(|p| p.with_unsettled(unsettled));
        }
        self.ctx =
            self.metadata
                .file_context(&self.encoder, &self.path, self.identity, self.generation);
        self.refresh_live_stamp(Timestamp::now());
    }

    /// A file whose pod turned out to be excluded: not read any more; the fd
    /// is kept until the file leaves its path (as for a file excluded from
    /// the start), then the follower ends.
    async fn excluded_late(&mut self) -> Result<bool, Stop> {
        Metrics::add(&self.shared.metrics.k8s_files_excluded, 1);
        self.status.set_state(FollowState::Excluded);
        if wait_until_gone(
            &self.file,
            &self.path,
            &self.wake,
            &self.shutdown,
            &self.give_up,
        )
        .await
        {
            Ok(false)
        } else {
            Err(Stop::Shutdown)
        }
    }

    async fn idle(&mut self) -> Result<(), Stop> {
        // An idle file holds no read buffer (issue 10: 256 KiB per file). A
        // trickling one keeps a small one between wake-ups (freeing and
        // allocating it for every line cost more than it holds) until it
        // has been quiet for a recheck period.
        if self.reader.capacity() > IDLE_KEEP_BYTES {
            self.release_buffers();
        }
        let recheck = if self.trusted() {
            WATCHED_RECHECK
        } else {
            IDLE_RECHECK
        };
        // An open multiline group is handed out once no line came for its
        // `timeout`.
        let group_due = self.joiner.as_ref().and_then(Joiner::deadline);
        let timed_out = tokio::select! {
            _ = self.wake.notify.notified() => false,
            _ = tokio::time::sleep(recheck) => {
                self.release_buffers();
                self.look_at_path = true;
                false
            }
            _ = async { tokio::time::sleep_until(group_due.unwrap_or_else(tokio::time::Instant::now)).await },
                if group_due.is_some() => true,
            _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
        };
        if timed_out {
            self.flush_groups(Some(tokio::time::Instant::now())).await?;
            self.send().await?;
        }
        Ok(())
    }

    /// In a long read (catch-up), after each chunk: while every turn is
    /// taken, hands what was read downstream and the turn back, and queues
    /// for the next one (first come, first served), so files with a backlog
    /// take turns chunk by chunk instead of one reading to its end first.
    async fn yield_turn(&mut self) -> Result<(), Stop> {
        if self.slot.is_none() || self.shared.read_slots.available_permits() > 0 {
            return Ok(());
        }
        self.send().await?;
        self.slot = None;
        self.slot = Some(self.read_slot().await?);
        Ok(())
    }

    /// A turn to read (see [`Shared::read_slots`]); while all are taken,
    /// waits holding no read buffer.
    async fn read_slot(&mut self) -> Result<tokio::sync::OwnedSemaphorePermit, Stop> {
        if let Ok(slot) = self.shared.read_slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        self.release_buffers();
        let state = self.status.state();
        self.status.set_state(FollowState::Backpressured);
        let slot = tokio::select! {
            slot = self.shared.read_slots.clone().acquire_owned() => slot.map_err(|_| Stop::Closed),
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown),
        };
        self.status.set_state(state);
        slot
    }

    fn release_buffers(&mut self) {
        self.reader.release_idle();
        self.decoder.release_idle();
        if let Some(j) = self.joiner.as_mut() {
            j.release_idle();
        }
    }

    /// Reads, decodes and encodes until end of file.
    /// `Ok(false)` if a read failed (logged): the caller waits before retrying.
    async fn read_to_end(&mut self) -> Result<bool, Stop> {
        if self.copy_changed {
            return Ok(true);
        }
        loop {
            if self.shutdown.is_cancelled() {
                return Err(Stop::Shutdown);
            }
            let (n, at_end) = match self.fill().await {
                None => return Ok(false),
                Some((Filled::Read(n), at_end)) => (n, at_end),
                Some((Filled::Changed, _)) if self.drain_only => {
                    // The copy being read (a rotation found after a restart,
                    // read under the original file's identity) was replaced
                    // (a later copytruncate copied over it): its new content
                    // is not a generation of that file. Stop here; the new
                    // content is the live file's, read by its follower.
                    self.send().await?;
                    if !self.copy_changed {
                        self.copy_changed = true;
                        tracing::warn!(path = %self.path.display(), offset = self.reader.read_offset(), "the rotated copy being read was overwritten (a later copytruncate); its lines past this offset are not read");
                    }
                    return Ok(true);
                }
                Some((Filled::Changed, _)) => {
                    // Truncated (and maybe refilled) since the last read:
                    // what was read belongs to the old generation.
                    self.flush_groups(None).await?;
                    self.send().await?;
                    let fp = self.current_fingerprint().await;
                    self.truncated(fp);
                    self.persist_identity().await;
                    if self.identity_pending {
                        return Ok(true);
                    }
                    continue;
                }
            };
            if n == 0 {
                return Ok(true);
            }
            Metrics::add(&self.shared.metrics.bytes_read, n as u64);
            self.status.read(n as u64, self.reader.read_offset());
            self.process().await?;
            if at_end {
                return Ok(true);
            }
            self.yield_turn().await?;
        }
    }

    /// One read, checked against the file's identity (see `reader`), and
    /// whether it reached the size the file had just before it (then the
    /// caller looks at the file, `check`, instead of reading again).
    /// `None` if it failed (logged).
    ///
    /// A few new bytes at the live end of a file already read from (so in
    /// the page cache) are read on this task: an `fstat` and a `pread` of a
    /// few KiB cost microseconds, two hops through Tokio's blocking pool
    /// cost more than that in thread switches (issue 10: most of the CPU
    /// with 1,000 trickling files). The first read of a file and catch-up
    /// reads, which may wait for the disk, go to a blocking thread.
    async fn fill(&mut self) -> Option<(Filled, bool)> {
        self.reached_size = false;
        let fingerprint = (!self.identity_pending).then_some(self.identity.fingerprint);
        let head = self.head;
        // Not even an `fstat` on this task off a local filesystem.
        let size = self
            .local
            .then(|| self.file.metadata().ok().map(|m| m.len()))
            .flatten();
        let before = self.reader.read_offset();
        let small = size.is_some_and(|s| s.saturating_sub(before) <= INLINE_READ_BYTES);
        let result = if self.local && self.warm && small {
            // A follower of a file written without pause would otherwise
            // never yield between reads (nothing here waits).
            tokio::task::consume_budget().await;
            Ok((
                self.reader
                    .fill_checked_sized(&self.file, fingerprint, size, head),
                size,
            ))
        } else {
            let mut reader = std::mem::take(&mut self.reader);
            let file = self.file.clone();
            tokio::task::spawn_blocking(move || {
                let size = size.or_else(|| file.metadata().ok().map(|m| m.len()));
                let r = reader.fill_checked_sized(&file, fingerprint, size, head);
                (reader, r, size)
            })
            .await
            .map(|(reader, r, size)| {
                self.reader = reader;
                (r, size)
            })
        };
        match result {
            Ok((r, size)) => {
                let r = r.map_err(|e| tracing::warn!(path = %self.path.display(), error = %e, "read failed; retrying later"))
                    .ok()?;
                self.warm = true;
                let at_end = size.is_some_and(|s| self.reader.read_offset() >= s);
                self.reached_size = at_end;
                Some((r, at_end))
            }
            Err(e) => {
                // The blocking task panicked or was cancelled at runtime
                // shutdown; the reader state is lost. Resume just after the
                // last line encoded (a held partial line is read again).
                tracing::error!(path = %self.path.display(), error = %e, "read task failed");
                self.reader = LineReader::new(self.span_end, self.read_limit);
                self.stashed = None;
                let _ = self.reader.prime_tail(&self.file);
                self.decoder.reset();
                // Open groups begin at or after `span_end`: read again.
                self.decoded_end = self.span_end;
                if let Some(j) = self.joiner.as_mut() {
                    j.reset();
                }
                None
            }
        }
    }

    /// Decodes every complete line read, sending spans as they fill up.
    async fn process(&mut self) -> Result<(), Stop> {
        let now = Timestamp::now();
        if now.secs.div_euclid(3600) != self.live_stamp.secs.div_euclid(3600) {
            self.refresh_live_stamp(now);
        }
        while self.decode_until_full(now) {
            self.send().await?;
        }
        self.flush_counters();
        Ok(())
    }

    /// A new read hour, or new index templates: lines read from now on go
    /// into a new span.
    fn refresh_live_stamp(&mut self, now: Timestamp) {
        self.live_stamp = Arc::new(SpanStamp {
            secs: now.secs,
            index: self.ctx.index().cloned(),
        });
    }

    /// Decodes complete lines until none is left (false) or the span is
    /// full, or the next line needs another stamp (true).
    ///
    /// A line read again after a restart (before the end of the last
    /// [`Follower::reread`] run) takes the read time and index templates it
    /// had when first read, so it lands in the index of its first copy.
    fn decode_until_full(&mut self, now: Timestamp) -> bool {
        let Follower {
            reader,
            decoder,
            encoder,
            ctx,
            processor,
            span,
            span_end,
            lines_read,
            events,
            invalid_utf8,
            shared,
            live_stamp,
            span_stamp,
            reread,
            stashed,
            joiner,
            decoded_end,
            ..
        } = self;
        while let Some(line) = stashed.take().or_else(|| reader.next_line()) {
            // Lines held in an open group are handed out later, with the
            // stamp of the span they were first sent in (see `reread`).
            let held = joiner
                .as_ref()
                .and_then(Joiner::safe_offset)
                .unwrap_or(u64::MAX);
            while reread
                .front()
                .is_some_and(|(end, ..)| line.offset.min(held) >= *end)
            {
                reread.pop_front();
            }
            let (stamp, line_now, line_ctx) = match reread.front() {
                Some((_, stamp, c)) => (
                    stamp,
                    Timestamp {
                        secs: stamp.secs,
                        nanos: 0,
                    },
                    c,
                ),
                None => (&*live_stamp, now, &*ctx),
            };
            match span_stamp {
                Some(s) if !span.is_empty() && !Arc::ptr_eq(s, stamp) => {
                    *stashed = Some(line);
                    return true;
                }
                _ => {}
            }
            if span.is_empty() {
                *span_stamp = Some(stamp.clone());
            }
            if span.body.capacity() == 0 {
                // Reserved lazily: idle followers hold no span memory.
                // Sized to what was read (a line or two of a trickling
                // file: its span lives until acknowledged, and a thousand
                // files send thousands of them a second), grown by the
                // encoder as a catch-up span fills.
                let guess = (line.next - line.offset) as usize + reader.buffered();
                span.body = crate::event::span_pool::take(
                    (guess * 2 + SPAN_DOC_OVERHEAD)
                        .min(SPAN_INITIAL_BYTES)
                        .min(shared.span_max_bytes + SPAN_SLACK),
                );
                span.items
                    .reserve_exact((shared.span_max_items + 1).min(SPAN_INITIAL_ITEMS));
            }
            *lines_read += 1;
            let mut sink = |d: &DecodedLine<'_>| {
                encode_line(
                    encoder,
                    line_ctx,
                    processor,
                    span,
                    span_end,
                    events,
                    invalid_utf8,
                    d,
                );
            };
            pipeline::feed(
                decoder,
                joiner.as_mut(),
                reader.line(&line),
                &line,
                line_now,
                decoded_end,
                &mut sink,
            );
            if let Some(j) = joiner {
                *span_end = held_back(j, *decoded_end);
            }
            if span.body.len() >= shared.span_max_bytes
                || span.items.len() >= shared.span_max_items
                || processor
                    .as_ref()
                    .is_some_and(|p| p.unsettled() >= crate::processors::SETTLE_EVERY_DROPPED)
            {
                return true;
            }
        }
        false
    }

    fn flush_counters(&mut self) {
        let invalid_utf8 = std::mem::take(&mut self.invalid_utf8);
        let stats = self.decoder.take_stats();
        let reader_cut = self.reader.take_dropped();
        if !self.reported_bad_data
            && (invalid_utf8 > 0
                || stats.unparsed_lines > 0
                || stats.truncated_lines > 0
                || reader_cut > 0)
        {
            // Once per file: the counters carry the totals from here on.
            self.reported_bad_data = true;
            tracing::warn!(
                path = %self.path.display(),
                invalid_utf8_lines = invalid_utf8,
                unparsed_lines = stats.unparsed_lines,
                truncated_lines = stats.truncated_lines,
                "file has malformed lines; shipping them flagged (invalid_utf8: U+FFFD replaced, unparsed: as plain text, truncated: cut at max_line_bytes); not reported again for this file"
            );
        }
        let m = &self.shared.metrics;
        if let Some(j) = self.joiner.as_mut() {
            Metrics::add(&m.multiline_events, std::mem::take(&mut j.joined));
            Metrics::add(&m.multiline_splits, std::mem::take(&mut j.split));
        }
        self.status.lines(self.lines_read);
        Metrics::add(&m.lines_read, std::mem::take(&mut self.lines_read));
        if self.missing_pod.is_some() {
            Metrics::add(&m.k8s_lines_without_metadata, self.events);
        }
        Metrics::add(&m.events_encoded, std::mem::take(&mut self.events));
        Metrics::add(&m.invalid_utf8_lines, invalid_utf8);
        Metrics::add(&m.unparsed_lines, stats.unparsed_lines);
        Metrics::add(&m.truncated_lines, stats.truncated_lines);
        Metrics::add(&m.truncated_bytes, stats.dropped_bytes + reader_cut);
        if let Some(p) = &mut self.processor {
            p.flush(&m.processors);
        }
        let json_failures = self.encoder.take_json_parse_failures();
        if json_failures > 0 {
            Metrics::add(&m.json_parse_failures, json_failures);
            if !self.reported_json_failures {
                self.reported_json_failures = true;
                tracing::warn!(
                    path = %self.path.display(),
                    target = self.metadata.json_target.as_deref().unwrap_or_default(),
                    lines = json_failures,
                    "logship.io/format is json but messages are not JSON objects; shipping them unparsed; not reported again for this file"
                );
            }
        }
    }

    /// Sends the current span, if it holds anything.
    async fn send(&mut self) -> Result<(), Stop> {
        let dropped = self
            .processor
            .as_mut()
            .map_or(0, FileProcessor::take_unsettled);
        if self.span.is_empty() {
            if dropped > 0 && self.span_end > self.sent_end {
                self.settle_dropped().await;
            }
            return Ok(());
        }
        self.record_head().await;
        let mut span = std::mem::take(&mut self.span);
        let tail = self.tail_hash_before(self.span_end);
        span.origin = Some(self.shared.checkpointer.issue_with_tail(
            self.key,
            self.generation,
            self.span_end,
            tail,
            self.span_stamp.take(),
        ));
        let end = self.span_end;
        let sent = match self.spans.try_send(span) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stop::Closed),
            Err(mpsc::error::TrySendError::Full(span)) => {
                let state = self.status.state();
                self.status.set_state(FollowState::Backpressured);
                let sent = self.spans.send(span).await.map_err(|_| Stop::Closed);
                self.status.set_state(state);
                sent
            }
        };
        if sent.is_ok() {
            self.sent_end = end;
        }
        sent
    }

    /// Every line since the last span sent up to `span_end` was dropped by
    /// processors: an empty span over them is issued and acknowledged at
    /// once, so the checkpoint moves past them as soon as every span before
    /// is acknowledged (never before: the watermark keeps the order).
    async fn settle_dropped(&mut self) {
        self.record_head().await;
        let tail = self.tail_hash_before(self.span_end);
        let origin = self.shared.checkpointer.issue_with_tail(
            self.key,
            self.generation,
            self.span_end,
            tail,
            self.span_stamp.take(),
        );
        crate::buffer::Acknowledger::delivered(&*self.shared.checkpointer, &[origin]);
        self.sent_end = self.span_end;
    }

    /// Before a span of a generation leaves, the store holds that
    /// generation's first bytes on disk (written at the first span, and
    /// once more when the span passes `HEAD_BYTES`): after a crash, a file
    /// with the same first line rewritten or copied while logship was down
    /// is told apart from this generation by them, so its lines never take
    /// the `_id`s of lines shipped from this one (see `tail::rotated`). At
    /// most two writes per generation, shared with every follower that
    /// needs one at the time. Between the two, each span lengthens the
    /// stored head in memory (written with the next periodic or forced
    /// write): a first span of one line would otherwise leave a head no
    /// better than the fingerprint until 1 KiB was shipped (a trickling
    /// file's copies after a truncation to nothing were then taken for the
    /// old generation).
    async fn record_head(&mut self) {
        let len = self.span_end.min(HEAD_BYTES);
        let persist = match self.head {
            None if len > 0 => true,
            Some(h) if h.len < len => len == HEAD_BYTES,
            _ => return,
        };
        // From the bytes as read, not from the file as it is now: a
        // copytruncate between the read and this send would otherwise give
        // this generation the head of the next one, and after a restart its
        // copy would be passed over and the next generation's copies taken
        // for an older one.
        let hash = match self.reader.head_bytes(len) {
            Some(bytes) => identity::head_hash_of(bytes),
            None => match self.head_from_file(len) {
                Some(hash) => hash,
                None => return,
            },
        };
        let head = Head { len, hash };
        self.head = Some(head);
        if len == HEAD_BYTES {
            self.reader.drop_head();
        }
        if self
            .shared
            .checkpointer
            .set_head(self.key, self.generation, head)
            && persist
        {
            self.persist_store(COMMIT_WINDOW).await;
        }
    }

    /// The head of `len` bytes read back from the file, for a generation
    /// resumed past its start (its first bytes were read by an earlier
    /// run): only if the file still begins with the head stored then, so
    /// a file refilled since gives nothing (the next read sees the change).
    fn head_from_file(&self, len: u64) -> Option<u64> {
        let ok = |r: std::io::Result<Option<u64>>| match r {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the file's first bytes");
                None
            }
        };
        if let Some(stored) = self.head
            && ok(identity::head_hash(&self.file, stored.len)) != Some(stored.hash)
        {
            return None;
        }
        ok(identity::head_hash(&self.file, len))
    }

    /// Hash of the bytes just before `end`, from the reader when it holds
    /// them, else read back (one small `pread` of bytes just read, so from
    /// the page cache).
    fn tail_hash_before(&self, end: u64) -> Option<u64> {
        if end == 0 {
            return None;
        }
        if let Some(h) = self.reader.tail_hash_at(end) {
            return Some(h);
        }
        super::reader::hash_before(&self.file, end)
    }

    /// Looks at the open file at end of file (an `fstat`, skipped when the
    /// last read just reached the size one gave), and at its path if `look`
    /// (a `stat`). On this task on a local filesystem (see `fill`), else on
    /// a blocking thread ([`on_local_fs`]). Its content is checked by every
    /// read (`fill`), and every wake-up reads, so it is not looked at here.
    async fn check(&self, look: bool) -> FileState {
        if !look && self.reached_size {
            return FileState::Idle;
        }
        let offset = self.reader.read_offset();
        let fingerprint = self.identity.fingerprint;
        if self.local {
            let path = look.then_some(self.path.as_path());
            return check_file(&self.file, path, offset, fingerprint, None);
        }
        let (file, path) = (self.file.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            check_file(&file, look.then_some(&path), offset, fingerprint, None)
        })
        .await
        .unwrap_or(FileState::Idle)
    }

    /// `Some(rotated)` if the path no longer names the open file: another
    /// file is there (`true`) or none (`false`).
    async fn path_moved(&self) -> Option<bool> {
        let (path, dev_ino) = (self.path.clone(), (self.dev, self.ino));
        let look = move || match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(false),
            Ok(m) if (m.dev(), m.ino()) != dev_ino => Some(true),
            _ => None,
        };
        if self.local {
            return look();
        }
        tokio::task::spawn_blocking(look).await.ok().flatten()
    }

    /// True if inotify reports this file's writes and renames (a local
    /// filesystem, every directory watched).
    fn trusted(&self) -> bool {
        self.local
            && self
                .shared
                .watched
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn truncated(&mut self, fingerprint: Option<u64>) {
        Metrics::add(&self.shared.metrics.truncations, 1);
        self.generation = self.generation.wrapping_add(1);
        tracing::info!(path = %self.path.display(), generation = self.generation, "file truncated; reading it again from the start");
        self.reader.reset(0);
        self.head = None;
        self.stashed = None;
        self.reread.clear();
        self.decoder.reset();
        if self.format == SourceFormat::Auto {
            // The new content is detected from its own first line.
            self.decoder.set_detected(None);
        }
        self.span_end = 0;
        self.decoded_end = 0;
        if let Some(j) = self.joiner.as_mut() {
            j.reset();
        }
        self.sent_end = 0;
        self.status.restarted(self.generation);
        match fingerprint {
            Some(fp) => self.set_identity(fp),
            None => {
                // No first line yet: wait for one before reading, so the
                // checkpoint is stored under the identity a restart will see.
                self.identity_pending = true;
                self.status.set_state(FollowState::WaitingForFirstLine);
                self.shared.checkpointer.truncated(
                    self.key,
                    self.identity,
                    &self.path,
                    self.generation,
                    true,
                );
            }
        }
    }

    fn set_identity(&mut self, fingerprint: u64) {
        self.identity_pending = false;
        self.identity = FileIdentity {
            dev: self.dev,
            ino: self.ino,
            fingerprint,
        };
        self.status.set_identity(self.identity);
        self.status.set_state(FollowState::Reading);
        let generation = self.shared.checkpointer.truncated(
            self.key,
            self.identity,
            &self.path,
            self.generation,
            false,
        );
        if generation != self.generation {
            tracing::info!(path = %self.path.display(), generation, "the new content has the identity of an earlier file (inode reused, same first line); reading it as a later generation of it");
            self.generation = generation;
            self.status.restarted(generation);
        }
        self.ctx =
            self.metadata
                .file_context(&self.encoder, &self.path, self.identity, self.generation);
        self.refresh_live_stamp(Timestamp::now());
    }

    /// The fingerprint of the open file's first line now, if it has one.
    async fn current_fingerprint(&self) -> Option<u64> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || identity::fingerprint(&file))
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten()
    }

    async fn try_reidentify(&mut self) {
        if let Some(fp) = self.current_fingerprint().await {
            self.set_identity(fp);
            self.persist_identity().await;
        }
    }

    /// Writes the checkpoints now that the file has a new identity, before
    /// any line of it is read: after a crash the store knows the new content
    /// under that identity, so a copy of it made while logship was down
    /// (copytruncate) is read as that file, not as a new one.
    async fn persist_identity(&self) {
        self.persist_store(Duration::ZERO).await;
    }

    /// Writes the store (one follower at a time leads a write; those whose
    /// ticket a write covered meanwhile return at once), after waiting
    /// `window` for others to share it: a generation's head (`record_head`)
    /// is asked for by every new file at once when a node starts (1,000 in
    /// the bench); each came alone and wrote the whole store, 30-40 % of a
    /// core for the first seconds. Truncations wait for no one.
    async fn persist_store(&self, window: Duration) {
        let checkpointer = self.shared.checkpointer.clone();
        let ticket = checkpointer.request_persist();
        let _leader = self.shared.commit_lock.lock().await;
        let c = checkpointer.clone();
        if tokio::task::spawn_blocking(move || c.covered())
            .await
            .is_ok_and(|covered| covered >= ticket)
        {
            return;
        }
        if !window.is_zero() {
            tokio::time::sleep(window).await;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        match tokio::task::spawn_blocking(move || checkpointer.persist_ticket(ticket, now)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint write failed; will retry"),
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
    }

    /// The file was rotated or deleted: read it to its end (twice, with a
    /// grace period for late writers), ship the rest, close it.
    async fn drain(&mut self) -> Result<(), Stop> {
        self.slot = Some(self.read_slot().await?);
        self.read_to_end().await?;
        self.send().await?;
        self.slot = None;
        tokio::select! {
            _ = tokio::time::sleep(ROTATION_GRACE) => {}
            _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
        }
        self.slot = Some(self.read_slot().await?);
        self.read_to_end().await?;
        // The last (unterminated) line and a held partial, in a span of their own.
        self.send().await?;
        let now = Timestamp::now();
        self.refresh_live_stamp(now);
        if let Some(line) = self.reader.take_rest() {
            // Stamped like any line (read again after a restart: as first read).
            self.stashed = Some(line);
            while self.decode_until_full(now) {
                self.send().await?;
            }
        }
        // A held partial line: it starts at or after the first byte not yet
        // shipped, so it goes with that byte's stamp.
        let first_unsent = self
            .joiner
            .as_ref()
            .and_then(Joiner::safe_offset)
            .map_or(self.span_end, |held| held.min(self.span_end));
        let (partial_now, ctx) = self.stamp_span_for(first_unsent, now).await?;
        {
            let Follower {
                decoder,
                encoder,
                ctx: live_ctx,
                processor,
                span,
                span_end,
                events,
                invalid_utf8,
                joiner,
                decoded_end,
                ..
            } = self;
            let ctx = ctx.as_ref().unwrap_or(live_ctx);
            let mut sink = |d: &DecodedLine<'_>| {
                encode_line(
                    encoder,
                    ctx,
                    processor,
                    span,
                    span_end,
                    events,
                    invalid_utf8,
                    d,
                );
            };
            pipeline::finish_partial(
                decoder,
                joiner.as_mut(),
                partial_now,
                decoded_end,
                &mut sink,
            );
        }
        // The file ends here: its last groups are complete.
        self.flush_groups(None).await?;
        if self.joiner.is_some() {
            self.span_end = self.reader.read_offset().max(self.span_end);
        }
        self.flush_counters();
        self.send().await
    }

    /// Makes the span ready for what starts at `offset`, read after a
    /// restart or not: the stamp of the span it was first sent in (the
    /// first [`Follower::reread`] record ending past it) or the live one;
    /// the span is sent first if it has another. Returns the read time to
    /// decode with (`now`, or the first read's) and the first read's
    /// context (`None`: the live one).
    async fn stamp_span_for(
        &mut self,
        offset: u64,
        now: Timestamp,
    ) -> Result<(Timestamp, Option<FileContext>), Stop> {
        let (stamp, line_now, ctx) = match self.reread.iter().find(|(end, ..)| *end > offset) {
            Some((_, stamp, ctx)) => (
                stamp.clone(),
                Timestamp {
                    secs: stamp.secs,
                    nanos: 0,
                },
                Some(ctx.clone()),
            ),
            None => (self.live_stamp.clone(), now, None),
        };
        if !self.span.is_empty()
            && !self
                .span_stamp
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &stamp))
        {
            self.send().await?;
        }
        if self.span.is_empty() {
            self.span_stamp = Some(stamp);
        }
        Ok((line_now, ctx))
    }

    /// Hands out the open multiline groups (`due`: only those that timed
    /// out) into the span; they are shipped with the next send.
    async fn flush_groups(&mut self, due: Option<tokio::time::Instant>) -> Result<(), Stop> {
        while let Some(offset) = self.joiner.as_ref().and_then(|j| j.next_due(due)) {
            // A group read again after a restart goes with the stamp and
            // context of the span it was first sent in, like single lines
            // (`decode_until_full`), so it lands in its first copy's index.
            let (_, ctx) = self.stamp_span_for(offset, Timestamp::now()).await?;
            let Follower {
                encoder,
                ctx: live_ctx,
                span,
                span_end,
                events,
                invalid_utf8,
                joiner,
                decoded_end,
                processor,
                ..
            } = self;
            let Some(j) = joiner.as_mut() else {
                break;
            };
            let ctx = ctx.as_ref().unwrap_or(live_ctx);
            let mut sink = |d: &DecodedLine<'_>| {
                encode_line(
                    encoder,
                    ctx,
                    processor,
                    span,
                    span_end,
                    events,
                    invalid_utf8,
                    d,
                );
            };
            j.flush_next(due, &mut sink);
            // Never past a group still open (of the other stream): a send
            // before the next group must not move the checkpoint over it.
            *span_end = held_back(j, *decoded_end);
        }
        self.flush_counters();
        Ok(())
    }
}

/// Holds an excluded file (unread) until its path is gone or names another
/// file, or the server asks to give it up, then lets it go (`true`), or
/// until shutdown (`false`).
async fn wait_until_gone(
    file: &Arc<File>,
    path: &Path,
    wake: &Wake,
    shutdown: &CancellationToken,
    give_up: &CancellationToken,
) -> bool {
    loop {
        tokio::select! {
            _ = wake.notify.notified() => {}
            _ = tokio::time::sleep(IDLE_RECHECK) => {}
            _ = shutdown.cancelled() => return false,
            _ = give_up.cancelled() => return true,
        }
        let (f, p) = (file.clone(), path.to_path_buf());
        let gone = tokio::task::spawn_blocking(move || {
            let Ok(open) = f.metadata() else {
                return false;
            };
            match std::fs::metadata(&p) {
                Err(e) => e.kind() == io::ErrorKind::NotFound,
                Ok(m) => (m.dev(), m.ino()) != (open.dev(), open.ino()),
            }
        })
        .await
        .unwrap_or(false);
        if gone {
            return true;
        }
    }
}

/// What happened to a file we read to `read_offset` (blocking syscalls).
/// `tail`: the bytes before `read_offset` as read, to check that they are
/// still there and that the first line is unchanged (`None`: not checked,
/// a read that follows does it).
fn check_file(
    file: &File,
    path: Option<&Path>,
    read_offset: u64,
    fingerprint: u64,
    tail: Option<&[u8]>,
) -> FileState {
    let Ok(meta) = file.metadata() else {
        return FileState::Idle;
    };
    let size = meta.len();
    if size < read_offset
        || tail
            .is_some_and(|t| !super::reader::bytes_before_are(file, read_offset, t).unwrap_or(true))
    {
        // Shorter, or rewritten (to the same size or more) before our offset.
        return FileState::Truncated(identity::fingerprint(file).ok().flatten());
    }
    if read_offset > 0 && tail.is_some() {
        match identity::fingerprint(file) {
            Ok(Some(fp)) if fp == fingerprint => {}
            // Rewritten in place past our offset: a truncation we did not see.
            Ok(other) => return FileState::Truncated(other),
            Err(_) => {}
        }
    }
    if size > read_offset {
        return FileState::Grew;
    }
    let Some(path) = path else {
        return FileState::Idle;
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => FileState::Gone { rotated: false },
        Ok(m) if (m.dev(), m.ino()) != (meta.dev(), meta.ino()) => {
            FileState::Gone { rotated: true }
        }
        // Unchanged, or a transient error: look again later.
        _ => FileState::Idle,
    }
}

/// True if `file` is on a local disk or memory filesystem (ext2/3/4, XFS,
/// btrfs, F2FS, ZFS, tmpfs, overlayfs, ramfs). Only there do small reads
/// and checks run on the follower's task (see `Follower::fill`) and is
/// inotify trusted: a network or FUSE filesystem can block a `stat` for as
/// long as its server is away, which must not stop a runtime thread (and
/// with it every other file and the sink), and writes made on other
/// machines raise no inotify event.
fn on_local_fs(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `fstatfs` only writes into the zeroed struct it is given; the
    // descriptor stays open for as long as `file` is borrowed.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } == 0;
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    ok && super::watch::local_fs_type(kind)
}

/// Where a follower starts, worked out on a blocking thread.
struct Opening {
    start: Checkpoint,
    /// See `Checkpointer::follow`.
    commit_start: bool,
    /// Positioned at `start`, knowing the bytes before it.
    reader: LineReader,
    /// An auto-detected format, from the file's first line (resumes only).
    detected: Option<crate::decode::detect::DetectedFormat>,
    /// The file is on a local filesystem (see [`on_local_fs`]).
    local: bool,
}

impl Opening {
    fn fallback(start: StartAt) -> Self {
        let (start, commit_start) = match start {
            StartAt::New(cp) => (cp, true),
            StartAt::Resume { at, .. } => (at, false),
            StartAt::EndOfLastLine => (
                Checkpoint {
                    generation: 0,
                    offset: 0,
                },
                true,
            ),
        };
        Opening {
            start,
            commit_start,
            reader: LineReader::new(start.offset, 1),
            detected: None,
            local: false,
        }
    }
}

/// Resolves `start` against the file (blocking): the end of its last line
/// for `read_from: end`; for a resume, a check that the bytes before the
/// checkpoint are still the ones acknowledged (else the file was rewritten
/// under the same identity: read it from 0 as a new generation), and the
/// auto-detected format from the file's first line.
fn opening(file: &File, path: &Path, start: StartAt, format: SourceFormat) -> Opening {
    let mut out = Opening::fallback(start);
    out.local = on_local_fs(file);
    match start {
        StartAt::New(_) => {}
        StartAt::EndOfLastLine => match end_of_last_line(file) {
            Ok(offset) => out.start.offset = offset,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot find the end of the file; reading it from the start")
            }
        },
        StartAt::Resume { at, tail } if at.offset > 0 => {
            let mut reader = LineReader::new(at.offset, 1);
            match reader.prime_tail(file) {
                Ok(found) if tail.is_none() || found == tail => {}
                Ok(_) => {
                    tracing::info!(path = %path.display(), generation = at.generation + 1, "file no longer holds the lines before its checkpoint (rewritten with the same first line): reading it from the start as a new generation");
                    out.start = Checkpoint {
                        generation: at.generation.wrapping_add(1),
                        offset: 0,
                    };
                    out.commit_start = true;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot verify the checkpoint against the file; resuming there")
                }
            }
            if format == SourceFormat::Auto && out.start.offset > 0 {
                out.detected = detect_from_head(file);
            }
        }
        StartAt::Resume { .. } => {}
    }
    out.reader = LineReader::new(out.start.offset, 1);
    if out.start.offset > 0 {
        let _ = out.reader.prime_tail(file);
    }
    out
}

/// The format of `file` from its first non-blank line (`decode::detect_head`).
fn detect_from_head(file: &File) -> Option<crate::decode::detect::DetectedFormat> {
    const HEAD: usize = 64 * 1024;
    let mut head = vec![0u8; HEAD];
    let mut len = 0;
    while len < HEAD {
        match file.read_at(&mut head[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    crate::decode::detect_head(&head[..len])
}

/// Offset just past the last `\n` of `file` (0 if it has none).
fn end_of_last_line(file: &File) -> io::Result<u64> {
    const STEP: u64 = 64 * 1024;
    let mut end = file.metadata()?.len();
    let mut buf = vec![0u8; STEP as usize];
    while end > 0 {
        let start = end.saturating_sub(STEP);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_last_line_skips_an_unterminated_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"a\nbb\nccc").unwrap();
        assert_eq!(end_of_last_line(&File::open(&p).unwrap()).unwrap(), 5);
        std::fs::write(&p, b"no newline").unwrap();
        assert_eq!(end_of_last_line(&File::open(&p).unwrap()).unwrap(), 0);
        let mut big = vec![b'x'; 200_000];
        big[10] = b'\n';
        std::fs::write(&p, &big).unwrap();
        assert_eq!(end_of_last_line(&File::open(&p).unwrap()).unwrap(), 11);
    }

    #[test]
    fn only_local_filesystems_are_read_on_the_followers_task() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, b"x\n").unwrap();
        // This machine's temp dir is ext4 (or tmpfs).
        assert!(on_local_fs(&File::open(&p).unwrap()));
        // procfs stands in for a filesystem not on the list (NFS, FUSE...).
        assert!(!on_local_fs(&File::open("/proc/self/status").unwrap()));
    }

    #[test]
    fn check_sees_truncation_rotation_and_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, b"first\nsecond\n").unwrap();
        let f = File::open(&p).unwrap();
        let fp = identity::fingerprint(&f).unwrap().unwrap();
        assert!(matches!(
            check_file(&f, Some(&p), 13, fp, Some(b"")),
            FileState::Idle
        ));
        assert!(matches!(
            check_file(&f, Some(&p), 6, fp, Some(b"")),
            FileState::Grew
        ));
        // Truncated and rewritten beyond our offset with another first line.
        std::fs::write(&p, b"other first line\nand more\n").unwrap();
        assert!(
            matches!(check_file(&f, Some(&p), 13, fp, Some(b"")), FileState::Truncated(Some(n)) if n != fp)
        );
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(
            check_file(&f, Some(&p), 13, fp, Some(b"")),
            FileState::Truncated(None)
        ));
        // Rotation: the path names a new file.
        std::fs::write(&p, b"first\nsecond\n").unwrap();
        std::fs::rename(&p, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&p, b"new\n").unwrap();
        assert!(matches!(
            check_file(&f, Some(&p), 13, fp, Some(b"")),
            FileState::Gone { rotated: true }
        ));
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(
            check_file(&f, Some(&p), 13, fp, Some(b"")),
            FileState::Gone { rotated: false }
        ));
    }
}
