//! journald sources: entries of the systemd journal, shipped with the same
//! guarantees as file lines.
//!
//! ```text
//! journalctl --follow --output=export ─stdout─► JournalReader ──spans──► (Batcher, as files)
//!      ▲ --after-cursor=<last read>      stderr ─► tracing::warn!             │
//!      └── restarted with backoff                                            acks
//!                                                                             ▼
//!                     CursorStore (journald.json) ◄── cursor of the ack watermark
//! ```
//!
//! **Why journalctl.** Each source runs `journalctl` as a child process,
//! reading its export format (`export`, `cursor`), as Vector's `journald`
//! source does. The journal file format (compression, hash tables, entry
//! arrays, files rotated and vacuumed under the reader, sealing) is
//! systemd's to keep right; linking `libsystemd` (the `systemd` crate)
//! ties the binary to the host's C library and its version, and the
//! pure-Rust readers on crates.io are young, read only, and do not follow a
//! directory through rotation. `journalctl` is on every host that has a
//! journal, and in our container image. What it costs is one extra process
//! per source and the export encoding (measured in docs/performance.md).
//!
//! **Arguments.** `journalctl --follow --no-tail --merge --output=export
//! [--directory=D] <start> [FIELD=VALUE…]`, where `<start>` is nothing
//! (from the oldest entry), `--after-cursor=C` to resume, or `--cursor=C`
//! when C's entry is gone (see "Losses"). journalctl 252 needs both extra
//! flags: `--follow` without `--no-tail` prints only 10 entries after a
//! cursor, and without `--merge` only the newest boot of a directory. Not
//! `--quiet`, which would hide that the journal files are not readable.
//! `units` and `match` become `FIELD=VALUE` arguments:
//! values of one field are alternatives, different fields must all match
//! (journalctl's rule). `units: [x]` is `_SYSTEMD_UNIT=x.service`, so,
//! unlike `journalctl -u`, it does not add the kernel's or systemd's own
//! messages about the unit.
//!
//! **Start.** With a stored cursor the reader resumes after it. Without
//! one, `since: beginning` reads the oldest entry the journal holds, and
//! `since: now` stores the cursor of the newest entry at once (before
//! reading): `now` means the first start, and a restart before anything
//! was acknowledged does not skip what was written in between.
//!
//! **Exactly once.** Entries are encoded ([`document`]) into spans of at
//! most 256 KiB; each span is issued on the source's [`AckWatermark`] (the
//! ordinal of its last entry as the "offset", the cursor of that entry kept
//! beside it) and travels like a file span, through the memory or disk
//! buffer. Acknowledgements come back through [`AckRouter`] (spans whose
//! `SpanOrigin::file` is at or above [`JOURNAL_KEY_BASE`]); the cursor
//! stored is the last entry of the longest acknowledged run from the
//! start, never the newest acknowledgement, and is written to
//! `{data_dir}/journald.json` atomically every 500 ms and at shutdown
//! ([`cursor`]). A kill -9 re-reads at most what was not acknowledged;
//! each entry's `_id` comes from the node name and its seqnum id, boot id
//! and seqnum (`encode::JournalIdKey`), so the re-sent copies are 409s.
//!
//! **Backpressure.** The reader reads the child's stdout only after the
//! previous span was taken by the bounded span channel; when the pipeline
//! is full the pipe fills and journalctl blocks: the journal holds the
//! backlog, memory holds one read buffer (at most one entry, up to
//! [`export::MAX_ENTRY_BYTES`], beyond it) per source.
//!
//! **Child failures.** When journalctl exits (or its output is not export
//! format), it is killed if needed, its exit is logged with the last lines
//! of its stderr (every stderr line is logged as it comes, too), and it is
//! started again after a backoff (1 s doubling to 30 s, back to 1 s once
//! a child has run for a minute), resuming after the last entry read.
//! An entry that cannot be shipped (no cursor, over
//! [`export::MAX_ENTRY_BYTES`]) is skipped, counted and logged; an entry
//! larger than the limit is skipped by restarting after its cursor.
//!
//! **Losses.** Every resume from a cursor (at start, and after journalctl
//! died) first probes `journalctl --cursor=C` (no filter, no follow) for
//! the first entry at or after it. If that is the checkpoint's entry,
//! journalctl resumes `--after-cursor`. Otherwise the entry was vacuumed
//! (or its file rotated away and deleted) while logship was stopped or
//! behind, and so may have been entries after it: with the same seqnum id
//! the number of entries missing (of every unit: the filter cannot apply
//! to what is gone) is the seqnum gap, counted in
//! `logship_journald_lost_entries_total{reason="vacuumed"}`; every such
//! gap, counted or not (another seqnum id, or nothing left), is counted
//! once in `logship_journald_gaps_total{reason="vacuumed"}` and logged as
//! an error with the time span it covers. Never silent. journalctl then
//! starts at the cursor's place with `--cursor` (inclusive): its
//! `--after-cursor` skips one entry after seeking, which, the cursor's
//! entry being gone, would be the first one left. A journal with no entry
//! at all (empty, missing, unreadable) is not counted as a gap: it is
//! logged, and journalctl's own stderr says why.
//! Entries vacuumed under a running journalctl are not detected.
//!
//! Does not: read the journal itself, filter by boot (`--boot`), or use
//! `_SOURCE_REALTIME_TIMESTAMP` (the sender's clock) for `@timestamp`.

pub mod cursor;
pub mod document;
pub mod export;

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::cursor::{Cursor, CursorStore};
use self::document::JournalEncoder;
use self::export::{ExportError, FieldRange, MAX_ENTRY_BYTES, parse_entry};
use crate::buffer::Acknowledger;
use crate::buffer::disk::stage::DISK_ORIGIN_FILE;
use crate::config::{Config, JournaldSince, JournaldSourceConfig};
use crate::encode::IndexTemplateError;
use crate::event::{EncodedSpan, FileKey, SpanOrigin, span_pool};
use crate::tail::watermark::AckWatermark;
use crate::telemetry::{Metrics, unix_millis};

/// `SpanOrigin::file` of journald source `i` is `JOURNAL_KEY_BASE + i`;
/// file keys count up from 0 and the disk queue's is `u64::MAX`.
pub const JOURNAL_KEY_BASE: FileKey = 1 << 63;

/// A span is sent once it holds this many bytes (or `batch.max_bytes`).
const SPAN_MAX_BYTES: usize = 256 << 10;
/// Bytes asked of the child's stdout per read.
const READ_BYTES: usize = 256 << 10;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// stderr lines kept to log with the child's exit.
const STDERR_KEPT: usize = 5;
/// The journalctl binary (looked up on `PATH`); tests may override it.
pub const JOURNALCTL_ENV: &str = "LOGSHIP_JOURNALCTL";

fn journalctl() -> String {
    std::env::var(JOURNALCTL_ENV).unwrap_or_else(|_| "journalctl".to_owned())
}

/// What `/api/v1/journals` and `/metrics` show of each journald source.
/// Created once per source name for the process (counters survive reloads).
#[derive(Debug, Default)]
pub struct JournalStatus {
    pub entries_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Entries lost, by a known count (the seqnum gap of a vacuum).
    pub lost_vacuumed: AtomicU64,
    /// Gaps found at start (the checkpoint's entry was gone).
    pub gaps_vacuumed: AtomicU64,
    /// Entries skipped: no cursor, over the size limit.
    pub skipped_invalid: AtomicU64,
    pub skipped_too_large: AtomicU64,
    /// journalctl processes started, and those that ended unasked.
    pub child_starts: AtomicU64,
    pub child_exits: AtomicU64,
    /// Unix ms of the last read that returned bytes.
    pub last_read_ms: AtomicU64,
    view: Mutex<Positions>,
}

#[derive(Clone, Debug, Default)]
struct Positions {
    directory: Option<String>,
    state: &'static str,
    read: Option<(String, u64)>,
    acked: Option<(String, u64)>,
    unacked_entries: u64,
}

/// One entry of `/api/v1/journals`.
#[derive(Debug, Serialize)]
pub struct JournalView {
    pub source: String,
    /// `journald.directory`, `null`: the local journal.
    pub directory: Option<String>,
    /// starting | reading | backpressured | restarting | stopped
    pub state: &'static str,
    /// Cursor of the last entry read from journalctl.
    pub read_cursor: Option<String>,
    /// Cursor of the last acknowledged entry (the checkpoint).
    pub acked_cursor: Option<String>,
    /// Entries read and not yet acknowledged.
    pub unacked_entries: u64,
    /// `__REALTIME_TIMESTAMP` of the last entry read minus that of the
    /// last acknowledged one, in seconds (0 when all is acknowledged).
    pub lag_seconds: f64,
    pub entries_read: u64,
    pub last_read_seconds_ago: Option<f64>,
    pub journalctl_restarts: u64,
}

impl JournalStatus {
    fn set_state(&self, state: &'static str) {
        if let Ok(mut v) = self.view.lock() {
            v.state = state;
        }
    }

    fn view(&self, source: &str) -> JournalView {
        let v = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        let usec = |p: &Option<(String, u64)>| p.as_ref().map(|(_, t)| *t);
        let lag = match (usec(&v.read), usec(&v.acked)) {
            _ if v.unacked_entries == 0 => 0.0,
            (Some(read), Some(acked)) => read.saturating_sub(acked) as f64 / 1e6,
            (Some(_), None) => f64::NAN,
            _ => 0.0,
        };
        JournalView {
            source: source.to_owned(),
            directory: v.directory,
            state: if v.state.is_empty() {
                "starting"
            } else {
                v.state
            },
            read_cursor: v.read.map(|(c, _)| c),
            acked_cursor: v.acked.map(|(c, _)| c),
            unacked_entries: v.unacked_entries,
            lag_seconds: if lag.is_nan() { 0.0 } else { lag },
            entries_read: self.entries_read.load(Ordering::Relaxed),
            last_read_seconds_ago: crate::telemetry::age(self.last_read_ms.load(Ordering::Relaxed))
                .map(|d| d.as_secs_f64()),
            journalctl_restarts: self.child_exits.load(Ordering::Relaxed),
        }
    }

    /// Lag in seconds as `/api/v1/journals` shows it.
    pub fn lag_seconds(&self) -> f64 {
        self.view("").lag_seconds
    }
}

/// Every journald source's [`JournalStatus`], by name; lives as long as the
/// process (the HTTP endpoint's `Status` owns it).
#[derive(Debug, Default)]
pub struct JournalRegistry {
    sources: Mutex<BTreeMap<String, Arc<JournalStatus>>>,
}

impl JournalRegistry {
    /// The status of `name`, created on first use.
    pub fn source(&self, name: &str) -> Arc<JournalStatus> {
        let mut s = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        s.entry(name.to_owned()).or_default().clone()
    }

    pub fn sources(&self) -> Vec<(String, Arc<JournalStatus>)> {
        let s = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        s.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn views(&self) -> Vec<JournalView> {
        self.sources()
            .iter()
            .map(|(name, st)| st.view(name))
            .collect()
    }
}

/// Issued spans of one source and the cursors at their ends.
#[derive(Debug)]
struct Progress {
    watermark: AckWatermark,
    /// Entries issued so far in this run (the watermark's "offset").
    issued: u64,
    /// (ordinal just past the span's last entry, that entry's cursor), for
    /// spans issued and not yet committed.
    ends: VecDeque<(u64, Cursor)>,
}

/// One journald source of the running pipeline.
#[derive(Debug)]
struct Source {
    config: JournaldSourceConfig,
    key: FileKey,
    status: Arc<JournalStatus>,
    progress: Mutex<Progress>,
    /// The last cursor whose gap was counted (a gap is counted once).
    accounted: Mutex<Option<Cursor>>,
}

/// Runs the journald sources of a config and takes their acknowledgements.
#[derive(Debug)]
pub struct JournalServer {
    sources: Vec<Arc<Source>>,
    store: Arc<CursorStore>,
    node_name: String,
    index: String,
    span_max_bytes: usize,
    span_max_items: usize,
    metrics: Arc<Metrics>,
}

impl JournalServer {
    /// Opens `{data_dir}/journald.json` and prepares one reader per
    /// journald source (nothing runs until [`JournalServer::run`]).
    pub fn new(
        config: &Config,
        registry: &JournalRegistry,
        metrics: Arc<Metrics>,
    ) -> Result<Self, IndexTemplateError> {
        JournalEncoder::new(&config.node_name, &config.sink.index)?;
        let store = Arc::new(CursorStore::open(&config.data_dir));
        let sources = config
            .journald
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let status = registry.source(&c.name);
                if let Ok(mut v) = status.view.lock() {
                    v.directory = c.directory.as_ref().map(|d| d.display().to_string());
                    v.acked = store
                        .lookup(&c.name, c.directory.as_deref())
                        .map(|c| (c.as_str().to_owned(), c.realtime_usec));
                    v.unacked_entries = 0;
                }
                Arc::new(Source {
                    config: c.clone(),
                    key: JOURNAL_KEY_BASE + i as u64,
                    status,
                    progress: Mutex::new(Progress {
                        watermark: AckWatermark::new(0, 0),
                        issued: 0,
                        ends: VecDeque::new(),
                    }),
                    accounted: Mutex::new(None),
                })
            })
            .collect();
        Ok(JournalServer {
            sources,
            store,
            node_name: config.node_name.clone(),
            index: config.sink.index.clone(),
            span_max_bytes: config.sink.batch.max_bytes.clamp(1, SPAN_MAX_BYTES),
            span_max_items: config.sink.batch.max_events.max(1),
            metrics,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Writes the acknowledged cursors if they changed.
    pub fn persist(&self) -> Result<(), cursor::StoreError> {
        self.store.persist()
    }

    /// Runs every source until `stop`; returns once all readers stopped
    /// (and dropped their span senders).
    pub async fn run(self: Arc<Self>, spans: mpsc::Sender<EncodedSpan>, stop: CancellationToken) {
        let mut readers = tokio::task::JoinSet::new();
        for source in &self.sources {
            let reader = Reader {
                server: self.clone(),
                source: source.clone(),
                spans: spans.clone(),
                stop: stop.clone(),
            };
            readers.spawn(reader.run());
        }
        drop(spans);
        while readers.join_next().await.is_some() {}
    }

    fn acknowledge(&self, span: &SpanOrigin) {
        let Some(source) = span
            .file
            .checked_sub(JOURNAL_KEY_BASE)
            .and_then(|i| self.sources.get(usize::try_from(i).ok()?))
        else {
            return;
        };
        let mut p = source.progress.lock().unwrap_or_else(|e| e.into_inner());
        if !p.watermark.ack(span.generation, span.seq) {
            return;
        }
        let committed = p.watermark.committed();
        let mut newest = None;
        while p.ends.front().is_some_and(|(end, _)| *end <= committed) {
            newest = p.ends.pop_front().map(|(_, c)| c);
        }
        let unacked = p.issued - committed;
        drop(p);
        if let Some(c) = newest {
            self.store
                .commit(&source.config.name, source.config.directory.as_deref(), &c);
            if let Ok(mut v) = source.status.view.lock() {
                v.acked = Some((c.as_str().to_owned(), c.realtime_usec));
                v.unacked_entries = unacked;
            }
        }
    }
}

/// Routes acknowledgements: journald spans to the [`JournalServer`], the
/// rest (file spans, disk queue records) to `files`.
pub struct AckRouter {
    pub files: Arc<dyn Acknowledger>,
    pub journals: Arc<JournalServer>,
}

impl Acknowledger for AckRouter {
    fn delivered(&self, spans: &[SpanOrigin]) {
        let is_journal = |s: &SpanOrigin| s.file >= JOURNAL_KEY_BASE && s.file != DISK_ORIGIN_FILE;
        if !spans.iter().any(is_journal) {
            return self.files.delivered(spans);
        }
        let (journal, files): (Vec<SpanOrigin>, Vec<SpanOrigin>) =
            spans.iter().partition(|s| is_journal(s));
        for span in &journal {
            self.journals.acknowledge(span);
        }
        if !files.is_empty() {
            self.files.delivered(&files);
        }
    }
}

/// Where the next journalctl starts.
#[derive(Clone, Debug)]
enum Start {
    Beginning,
    After(Cursor),
}

/// Why a child's output stopped being read.
enum Ended {
    Stopped,
    Exited,
    Failed(String),
    /// An entry over the size limit: restart after this cursor.
    TooLarge(Option<Cursor>),
}

struct Reader {
    server: Arc<JournalServer>,
    source: Arc<Source>,
    spans: mpsc::Sender<EncodedSpan>,
    stop: CancellationToken,
}

impl Reader {
    fn name(&self) -> &str {
        &self.source.config.name
    }

    async fn run(self) {
        let Some(mut start) = self.first_start().await else {
            self.source.status.set_state("stopped");
            return;
        };
        let mut encoder = match JournalEncoder::new(&self.server.node_name, &self.server.index) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(source = self.name(), error = %e, "journald source cannot encode");
                return;
            }
        };
        let mut backoff = BACKOFF_MIN;
        while !self.stop.is_cancelled() {
            let started = Instant::now();
            let ended = match self.resolve(&start).await {
                Err(e) => Ended::Failed(format!("probing the journal: {e}")),
                Ok(launch) => match self.spawn(&launch) {
                    Ok(child) => self.follow(child, &mut start, &mut encoder).await,
                    Err(e) => Ended::Failed(format!("cannot start {}: {e}", journalctl())),
                },
            };
            let why = match ended {
                Ended::Stopped => break,
                Ended::TooLarge(cursor) => {
                    Metrics::add(&self.source.status.skipped_too_large, 1);
                    tracing::error!(
                        source = self.name(),
                        cursor = cursor.as_ref().map(|c| c.as_str()),
                        limit = MAX_ENTRY_BYTES,
                        "journal entry too large; skipped (logship_journald_skipped_entries_total{{reason=\"too_large\"}})"
                    );
                    match cursor {
                        Some(c) => {
                            start = Start::After(c);
                            continue;
                        }
                        None => "an entry too large and without a cursor first".to_owned(),
                    }
                }
                Ended::Exited => "journalctl exited".to_owned(),
                Ended::Failed(why) => why,
            };
            Metrics::add(&self.source.status.child_exits, 1);
            if started.elapsed() >= HEALTHY_RUN {
                backoff = BACKOFF_MIN;
            }
            tracing::warn!(source = self.name(), reason = %why, retry_in = ?backoff, "journal reader stopped; restarting journalctl");
            self.source.status.set_state("restarting");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.source.status.set_state("stopped");
    }

    /// Where to start: after the stored cursor (checked for losses), or at
    /// `since`. `None`: stopped meanwhile.
    async fn first_start(&self) -> Option<Start> {
        let config = &self.source.config;
        if let Some(stored) = self
            .server
            .store
            .lookup(&config.name, config.directory.as_deref())
        {
            return Some(Start::After(stored));
        }
        match config.since {
            JournaldSince::Beginning => Some(Start::Beginning),
            JournaldSince::Now => loop {
                match self.probe(&["--lines=1"]).await {
                    Ok(Some(newest)) => {
                        self.server.store.commit(
                            &config.name,
                            config.directory.as_deref(),
                            &newest,
                        );
                        if let Err(e) = self.server.store.persist() {
                            tracing::warn!(source = self.name(), error = %e, "could not store the start position yet");
                        }
                        return Some(Start::After(newest));
                    }
                    Ok(None) => return Some(Start::Beginning),
                    Err(e) => {
                        tracing::warn!(source = self.name(), error = %e, "journal probe failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = self.stop.cancelled() => return None,
                        }
                    }
                }
            },
        }
    }

    /// How to start journalctl for `start`. Resuming after a cursor first
    /// checks that its entry is still there: journalctl's `--after-cursor`
    /// skips one entry after seeking, so when the entry was vacuumed it
    /// would silently skip the first one left. Then the loss is accounted
    /// for and journalctl starts at the cursor's place (`--cursor`,
    /// inclusive) instead.
    async fn resolve(&self, start: &Start) -> std::io::Result<Launch> {
        let Start::After(cursor) = start else {
            return Ok(Launch::Beginning);
        };
        let first = self.probe(&["--cursor", cursor.as_str()]).await?;
        if first.as_ref().is_some_and(|f| f.same_entry(cursor)) {
            return Ok(Launch::After(cursor.clone()));
        }
        if first.is_none() && self.probe(&["--lines=1"]).await?.is_none() {
            // No entry at all: an empty or unreadable journal (journalctl's
            // stderr says which), not a vacuum; nothing to count yet.
            tracing::warn!(
                source = self.name(),
                checkpoint = cursor.as_str(),
                "the journal holds no entries (empty, missing or not readable); waiting for some"
            );
            return Ok(Launch::At(cursor.clone()));
        }
        // Counted once per checkpoint, however often journalctl restarts.
        let mut accounted = self
            .source
            .accounted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if accounted.as_ref() != Some(cursor) {
            self.account_losses(cursor, first.as_ref());
            *accounted = Some(cursor.clone());
        }
        Ok(Launch::At(cursor.clone()))
    }

    /// Logs and counts what was lost between the stored cursor and the
    /// first entry still in the journal (module doc, "Losses").
    fn account_losses(&self, stored: &Cursor, first: Option<&Cursor>) {
        let status = &self.source.status;
        match assess_gap(stored, first) {
            Gap::None => {}
            Gap::Counted(lost) => {
                Metrics::add(&status.lost_vacuumed, lost);
                Metrics::add(&status.gaps_vacuumed, 1);
                tracing::error!(
                    source = self.name(),
                    lost_entries = lost,
                    checkpoint = stored.as_str(),
                    first_available = first.map(|c| c.as_str()),
                    from = %micros_text(stored.realtime_usec),
                    to = %first.map_or_else(String::new, |c| micros_text(c.realtime_usec)),
                    "journal entries after the checkpoint were vacuumed before they were shipped; lost"
                );
            }
            Gap::Unknown => {
                Metrics::add(&status.gaps_vacuumed, 1);
                tracing::error!(
                    source = self.name(),
                    checkpoint = stored.as_str(),
                    first_available = first.map(|c| c.as_str()),
                    from = %micros_text(stored.realtime_usec),
                    to = %first.map_or_else(|| "now".to_owned(), |c| micros_text(c.realtime_usec)),
                    "the checkpoint's journal entry is gone (vacuumed or rotated away); entries \
                     written after it and before the first one left may be lost (count unknown)"
                );
            }
        }
    }

    fn base_command(&self) -> Command {
        let mut cmd = Command::new(journalctl());
        // Not --quiet: it would also hide "no access to the journal files".
        cmd.arg("--merge").arg("--output=export");
        if let Some(dir) = &self.source.config.directory {
            cmd.arg(format!("--directory={}", dir.display()));
        }
        // Its own process group: a terminal's Ctrl-C stops logship, which
        // then stops it, rather than killing it under a draining logship.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// The cursor of the first entry `journalctl <args>` prints (no filter,
    /// no follow), `None` if it prints none.
    async fn probe(&self, args: &[&str]) -> std::io::Result<Option<Cursor>> {
        let mut cmd = self.base_command();
        cmd.args(args);
        let mut child = cmd.spawn()?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut buf = Vec::new();
        let mut fields = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        let found = loop {
            let n = stdout.read(&mut chunk).await?;
            if n == 0 {
                break None;
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse_entry(&buf, &mut fields) {
                Ok(None) => continue,
                Ok(Some(_)) => break cursor_of(&buf, &fields),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        };
        let _ = child.start_kill();
        let status = child.wait().await?;
        if found.is_none() && !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err).await;
            }
            return Err(std::io::Error::other(format!(
                "{} {}: {status}: {}",
                journalctl(),
                args.join(" "),
                err.trim()
            )));
        }
        Ok(found)
    }

    fn spawn(&self, launch: &Launch) -> std::io::Result<Child> {
        let mut cmd = self.base_command();
        // Without --no-tail, --follow shows only 10 entries after a cursor.
        cmd.arg("--follow").arg("--no-tail");
        match launch {
            Launch::Beginning => None,
            Launch::After(c) => Some(cmd.arg(format!("--after-cursor={}", c.as_str()))),
            Launch::At(c) => Some(cmd.arg(format!("--cursor={}", c.as_str()))),
        };
        let config = &self.source.config;
        for unit in &config.units {
            cmd.arg(format!("_SYSTEMD_UNIT={unit}"));
        }
        for (field, values) in &config.matches {
            for v in values {
                cmd.arg(format!("{field}={v}"));
            }
        }
        let child = cmd.spawn()?;
        Metrics::add(&self.source.status.child_starts, 1);
        tracing::info!(source = self.name(), start = %launch, "journalctl started");
        Ok(child)
    }

    /// Reads `child`'s export output until it ends or `stop`; `start`
    /// follows the last entry read (where a restart resumes).
    async fn follow(
        &self,
        mut child: Child,
        start: &mut Start,
        encoder: &mut JournalEncoder,
    ) -> Ended {
        let Some(mut stdout) = child.stdout.take() else {
            return Ended::Failed("no stdout".into());
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_logger = child.stderr.take().map(|stderr| {
            tokio::spawn(log_stderr(
                self.name().to_owned(),
                stderr,
                stderr_tail.clone(),
            ))
        });
        let status = &self.source.status;
        status.set_state("reading");
        let mut buf: Vec<u8> = Vec::with_capacity(READ_BYTES * 2);
        let mut fields: Vec<FieldRange> = Vec::new();
        let ended = loop {
            let len = buf.len();
            buf.resize(len + READ_BYTES, 0);
            let read = tokio::select! {
                r = stdout.read(&mut buf[len..]) => r,
                _ = self.stop.cancelled() => break Ended::Stopped,
            };
            let n = match read {
                Ok(0) => {
                    buf.truncate(len);
                    break Ended::Exited;
                }
                Ok(n) => n,
                Err(e) => break Ended::Failed(format!("reading journalctl's output: {e}")),
            };
            buf.truncate(len + n);
            Metrics::add(&status.bytes_read, n as u64);
            status.last_read_ms.store(unix_millis(), Ordering::Relaxed);
            match self.ship(&mut buf, &mut fields, start, encoder).await {
                Ok(true) => {}
                Ok(false) => break Ended::Stopped,
                Err(ExportError::TooLarge) => {
                    // The cursor is the first field: skip the entry.
                    let cursor = first_line_cursor(&buf);
                    break Ended::TooLarge(cursor);
                }
                Err(e) => break Ended::Failed(e.to_string()),
            }
        };
        let _ = child.start_kill();
        let exit = child.wait().await;
        if let Some(logger) = stderr_logger {
            // Its last lines, to go with the exit (it ends at the pipe's end).
            let _ = tokio::time::timeout(Duration::from_secs(1), logger).await;
        }
        if !matches!(ended, Ended::Stopped) {
            let tail: Vec<String> = stderr_tail
                .lock()
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default();
            tracing::warn!(source = self.name(), exit = ?exit, stderr = ?tail, "journalctl ended");
        }
        ended
    }

    /// Encodes the complete entries at the start of `buf` into spans and
    /// sends them (waiting while the pipeline is full), then drops them
    /// from `buf`. `Ok(false)`: stopped or nobody receives any more.
    async fn ship(
        &self,
        buf: &mut Vec<u8>,
        fields: &mut Vec<FieldRange>,
        start: &mut Start,
        encoder: &mut JournalEncoder,
    ) -> Result<bool, ExportError> {
        let status = &self.source.status;
        let mut pos = 0;
        let mut result = Ok(true);
        loop {
            let mut span = EncodedSpan::default();
            span.body = span_pool::take(self.server.span_max_bytes + 4096);
            let mut last: Option<Cursor> = None;
            let mut entries = 0u64;
            while span.body.len() < self.server.span_max_bytes
                && span.items.len() < self.server.span_max_items
            {
                let used = match parse_entry(&buf[pos..], fields) {
                    Ok(Some(used)) => used,
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                if fields.is_empty() {
                    pos += used;
                    continue;
                }
                let before = (span.body.len(), span.items.len());
                match encoder.encode(&buf[pos..], fields, &mut span) {
                    Ok(encoded) => {
                        entries += 1;
                        if encoded.invalid_utf8 {
                            Metrics::add(&self.server.metrics.invalid_utf8_lines, 1);
                        }
                        last = Some(encoded.cursor);
                    }
                    Err(e) => {
                        span.body.truncate(before.0);
                        span.items.truncate(before.1);
                        Metrics::add(&status.skipped_invalid, 1);
                        tracing::warn!(source = self.name(), error = %e, "journal entry skipped");
                    }
                }
                pos += used;
            }
            let Some(last) = last else {
                break;
            };
            Metrics::add(&status.entries_read, entries);
            Metrics::add(&self.server.metrics.events_encoded, entries);
            let origin = {
                let mut p = self
                    .source
                    .progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                p.issued += entries;
                let end = p.issued;
                let seq = p.watermark.issue(0, end);
                p.ends.push_back((end, last.clone()));
                if let Ok(mut v) = status.view.lock() {
                    v.read = Some((last.as_str().to_owned(), last.realtime_usec));
                    v.unacked_entries = end - p.watermark.committed();
                }
                SpanOrigin {
                    file: self.source.key,
                    generation: 0,
                    seq,
                    end,
                }
            };
            span.origin = Some(origin);
            *start = Start::After(last);
            let permit = match self.spans.try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Closed(())) => return Ok(false),
                Err(mpsc::error::TrySendError::Full(())) => {
                    status.set_state("backpressured");
                    let p = tokio::select! {
                        p = self.spans.reserve() => p,
                        _ = self.stop.cancelled() => return Ok(false),
                    };
                    status.set_state("reading");
                    match p {
                        Ok(p) => p,
                        Err(_) => return Ok(false),
                    }
                }
            };
            permit.send(span);
            if result.is_err() {
                break;
            }
        }
        buf.drain(..pos);
        result
    }
}

impl std::fmt::Display for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Launch::Beginning => f.write_str("the oldest entry"),
            Launch::After(c) => write!(f, "after {}", c.as_str()),
            Launch::At(c) => write!(f, "at {} (its entry is gone)", c.as_str()),
        }
    }
}

/// The position arguments of one journalctl run.
#[derive(Debug)]
enum Launch {
    /// `--no-tail` alone: the oldest entry on.
    Beginning,
    /// `--after-cursor`: the cursor's entry exists.
    After(Cursor),
    /// `--cursor`: the cursor's entry is gone; from the first entry after
    /// its place.
    At(Cursor),
}

/// What lies between a stored cursor and the first entry at or after it.
#[derive(Debug, PartialEq, Eq)]
pub enum Gap {
    /// The stored entry is still there.
    None,
    /// It is gone, and this many entries after it (of any unit) too.
    Counted(u64),
    /// It is gone; how much after it is unknown.
    Unknown,
}

/// Compares the checkpoint's cursor with the first entry found at or
/// after it (module doc, "Losses").
pub fn assess_gap(stored: &Cursor, first: Option<&Cursor>) -> Gap {
    match first {
        Some(f) if f.same_entry(stored) => Gap::None,
        Some(f) if f.seqnum_id == stored.seqnum_id && f.seqnum > stored.seqnum => {
            match f.seqnum - stored.seqnum - 1 {
                0 => Gap::None,
                n => Gap::Counted(n),
            }
        }
        _ => Gap::Unknown,
    }
}

fn cursor_of(buf: &[u8], fields: &[FieldRange]) -> Option<Cursor> {
    fields
        .iter()
        .find(|f| &buf[f.name.clone()] == b"__CURSOR")
        .and_then(|f| std::str::from_utf8(&buf[f.value.clone()]).ok())
        .and_then(Cursor::parse)
}

/// The cursor on the first line of `buf` (`__CURSOR=…`), if it is one.
fn first_line_cursor(buf: &[u8]) -> Option<Cursor> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line.strip_prefix(b"__CURSOR=")?).ok()?;
    Cursor::parse(text)
}

fn micros_text(usec: u64) -> String {
    crate::encode::format_timestamp(crate::event::Timestamp {
        secs: i64::try_from(usec / 1_000_000).unwrap_or(i64::MAX),
        nanos: (usec % 1_000_000) as u32 * 1000,
    })
}

/// Logs each stderr line of a journalctl child (at most 4 KiB of it) and
/// keeps the last few for the exit message.
async fn log_stderr(
    source: String,
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = tokio::io::BufReader::new(stderr).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        let text = String::from_utf8_lossy(&line[..line.len().min(4096)]).into_owned();
        tracing::warn!(source, "journalctl: {text}");
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_KEPT {
                t.pop_front();
            }
            t.push_back(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(s: &str, i: u64) -> Cursor {
        let b = "0123456789abcdef0123456789abcdef";
        Cursor::parse(&format!("s={s:0>32};i={i:x};b={b};m=1;t=10;x=1")).unwrap()
    }

    #[test]
    fn gaps_are_counted_by_seqnum_within_one_seqnum_id() {
        let stored = cursor("aa", 100);
        assert_eq!(assess_gap(&stored, Some(&cursor("aa", 100))), Gap::None);
        assert_eq!(assess_gap(&stored, Some(&cursor("aa", 101))), Gap::None);
        assert_eq!(
            assess_gap(&stored, Some(&cursor("aa", 151))),
            Gap::Counted(50)
        );
        assert_eq!(assess_gap(&stored, Some(&cursor("bb", 3))), Gap::Unknown);
        assert_eq!(assess_gap(&stored, None), Gap::Unknown);
    }
}
