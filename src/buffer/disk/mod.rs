//! Durable on-disk queue of encoded batches (format version 1).
//!
//! Owns the directory `<data_dir>/buffer/`: segment files and a ledger.
//! Promises: a record pushed and then [`Queue::flush`]ed survives a crash and
//! is read again after reopening until it is acknowledged; an acknowledged
//! record whose ack was flushed is never read again; damaged bytes (CRC
//! mismatch, torn tail, garbled ledger) are skipped, counted and logged with
//! the segment and position, never a stall, never a crash. Does not: decide
//! what a record means (see [`stage`], which stores one bulk batch per
//! record), nor retry delivery (the sink does).
//!
//! # Why records are batches
//! The batcher already groups spans into bulk-sized batches of a few MiB;
//! storing one batch per record makes one `write` and one CRC per batch,
//! keeps the sink's unit of work and its ack granularity, and makes the
//! record id the sink acks (carried as the span origin's `seq`, see
//! [`stage`]). Per-event records would cost a frame per line for nothing.
//!
//! # On-disk format, version 1
//! ```text
//! <data_dir>/buffer/
//!   00000000000000000000.seg   segments, named by the first id they were opened for
//!   00000000000000000042.seg
//!   ledger                     ack position (see `ledger`)
//! ```
//! A segment is a 16-byte header (`b"LSSEGMNT"`, version u32 LE = 1, 4 zero
//! bytes) followed by records; a record is `b"LSR1"`, payload length u32 LE,
//! CRC32C of id+payload u32 LE, id u64 LE, payload (see `record`). Ids are
//! consecutive in write order across segments. The ledger holds the ack
//! watermark (every id below it is acknowledged) and the ranges acknowledged
//! out of order above it, CRC-protected, replaced atomically.
//!
//! A payload is one batch, in a format versioned on its own (see [`stage`],
//! "Record payload"): version 2 (a head of item offsets, then the bulk body
//! gzip'd at the sink's level) is written; version 1 (the head, then the
//! raw NDJSON body), written by earlier versions, is still read, so a
//! buffer left by an upgrade is delivered. The segment, record and ledger
//! framing above did not change. A downgrade to a version that only reads
//! payload version 1 skips every version-2 record as "not a batch"
//! (counted lost; the files' checkpoints are past their lines): drain the
//! buffer before downgrading.
//!
//! # Life of a record
//! [`Queue::push`] appends to the newest segment (a new segment starts when
//! it passes `segment_bytes`); [`Queue::flush`] fsyncs it and writes the
//! ledger. [`Queue::read_next`] returns records in id order from the read
//! position, which starts at the ack watermark on open. [`Queue::ack`]
//! advances the watermark; a segment whose ids are all below it is deleted.
//! The queue is full when its segments take `max_bytes`: [`Queue::push`]
//! answers [`PushError::Full`] (unless nothing is unacknowledged, so a record
//! larger than the whole buffer still passes alone). Opening a queue whose
//! segments already take more than `max_bytes` (written under a larger
//! setting) keeps every record: it is only full for new pushes until acks
//! bring it below. [`Queue::remove_files`] removes the directory of a queue
//! with nothing unacknowledged (see `leftover`).
//!
//! # Reopen and damage
//! On open the newest segment is scanned to find the next id; trailing
//! segments without a valid record are removed; writing continues in a new
//! segment. A missing or garbled ledger replays from the oldest segment
//! (409s absorb the replay). A damaged region is skipped up to the next
//! record magic; ids missing from the sequence (damaged or torn records) are
//! counted as lost and treated as acknowledged so the watermark moves on:
//! their lines are re-read from the files when those still hold them
//! (their checkpoints only moved once the record was fsync'd).

pub mod ledger;
pub mod leftover;
pub mod record;
pub mod segment;
pub mod stage;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ledger::Ledger;
use segment::{Limited, Scanner, Step};

/// Counters of one queue (shared with its users; only go up).
#[derive(Debug, Default)]
pub struct Stats {
    pub records_written: AtomicU64,
    pub records_read: AtomicU64,
    pub records_acked: AtomicU64,
    /// Damaged regions skipped (bad CRC, bad magic, torn tail, bad header).
    pub corrupt_regions: AtomicU64,
    pub corrupt_bytes: AtomicU64,
    /// Record ids missing from the sequence (lost to damage), treated as acked.
    pub lost_records: AtomicU64,
    /// Ledgers found garbled or of another version.
    pub ledger_resets: AtomicU64,
    /// Failed writes (ENOSPC and others); the push is refused, nothing partial stays.
    pub write_errors: AtomicU64,
    /// Events dropped with `when_full: drop_newest`.
    pub dropped_events: AtomicU64,
    /// Segment files deleted after being fully acknowledged.
    pub segments_deleted: AtomicU64,
    /// Bytes of segment files currently on disk (gauge).
    pub disk_bytes: AtomicU64,
    /// Records pushed and not yet acknowledged, this run's and a previous
    /// run's alike (gauge).
    pub unacked_records: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Sizes of a queue.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Total bytes of segment files at most (soft: one record may overshoot
    /// when nothing else is unacknowledged).
    pub max_bytes: u64,
    /// A new segment starts once the current one passes this.
    pub segment_bytes: u64,
}

impl Options {
    /// Segments of an eighth of the buffer, between 1 MiB and 128 MiB, so at
    /// most an eighth of the space waits for its last ack before deletion.
    pub fn new(max_bytes: u64) -> Self {
        Options {
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(1 << 20, 128 << 20),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("disk buffer {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("disk buffer full")]
    Full,
    #[error("disk buffer write to {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The slow part of a flush, run without holding the queue.
pub struct FlushJob {
    /// A duplicate of the current segment's descriptor.
    segment: File,
    dir: Option<PathBuf>,
    ledger: Option<(PathBuf, Ledger)>,
}

impl FlushJob {
    pub fn run(&self) -> io::Result<()> {
        self.segment.sync_data()?;
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        if let Some((path, ledger)) = &self.ledger {
            ledger.store(path)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Segment {
    first: u64,
    /// Bytes written (header and complete records).
    len: u64,
}

struct ReadCursor {
    /// `first` of the segment being read.
    segment: u64,
    file: Option<File>,
    scanner: Scanner,
    /// Next id expected.
    expect: u64,
}

pub struct Queue {
    /// Holds the directory's `flock` until dropped.
    _lock: File,
    dir: PathBuf,
    opts: Options,
    segments: VecDeque<Segment>,
    writer: File,
    next_id: u64,
    read: ReadCursor,
    ack: u64,
    /// Acked ranges above `ack`: start → end (exclusive), disjoint, not adjacent to `ack`.
    acked: BTreeMap<u64, u64>,
    ledger_dirty: bool,
    dir_dirty: bool,
    stats: Arc<Stats>,
    fail_writes: Option<io::ErrorKind>,
}

/// How long [`Queue::open`] waits for another owner of the directory.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let started = std::time::Instant::now();
    loop {
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock || started.elapsed() > LOCK_WAIT {
            return Err(OpenError::Io {
                path,
                source: io::Error::new(
                    e.kind(),
                    format!("disk buffer is in use by another process or pipeline: {e}"),
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Queue {
    /// Opens (or creates) the queue in `dir`.
    ///
    /// Takes an exclusive `flock` on `<dir>/lock` for the queue's lifetime
    /// (waiting up to [`LOCK_WAIT`] for a previous owner, e.g. the pipeline
    /// a config reload replaces), so two writers never share a directory.
    pub fn open(dir: &Path, opts: Options, stats: Arc<Stats>) -> Result<Queue, OpenError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock_dir(dir)?;
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            if let Some(first) = entry.file_name().to_str().and_then(segment::parse_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments: VecDeque<Segment> = VecDeque::new();
        for first in firsts {
            let p = segment::path(dir, first);
            let len = std::fs::metadata(&p).map_err(io_err(&p))?.len();
            segments.push_back(Segment { first, len });
        }

        let ledger_path = dir.join("ledger");
        let ledger = match std::fs::read(&ledger_path) {
            Ok(b) => match Ledger::decode(&b) {
                Some(l) => Some(l),
                None => {
                    add(&stats.ledger_resets, 1);
                    tracing::error!(path = %ledger_path.display(), "disk buffer ledger is garbled; replaying the buffer from its oldest segment (duplicates become 409s)");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !segments.is_empty() {
                    add(&stats.ledger_resets, 1);
                    tracing::warn!(path = %ledger_path.display(), "disk buffer ledger is missing; replaying the buffer from its oldest segment");
                }
                None
            }
            Err(e) => return Err(io_err(&ledger_path)(e)),
        };

        // Find the next id from the newest segment holding a valid record;
        // drop trailing segments that hold none.
        let mut last_valid: Option<u64> = None;
        // A segment named N was opened when N was the next id: ids never go
        // below the newest name, even if that segment holds nothing.
        let newest_name = segments.back().map_or(0, |s| s.first);
        let mut payload = Vec::new();
        while let Some(seg) = segments.back() {
            let p = segment::path(dir, seg.first);
            let f = File::open(&p).map_err(io_err(&p))?;
            let mut sc = Scanner::new();
            while let step = sc.next(&f, &mut payload).map_err(io_err(&p))?
                && step != Step::End
            {
                if let Step::Record { id } = step {
                    last_valid = Some(last_valid.map_or(id, |l: u64| l.max(id)));
                }
            }
            if last_valid.is_some() {
                break;
            }
            std::fs::remove_file(&p).map_err(io_err(&p))?;
            segments.pop_back();
        }
        let ledger = ledger.unwrap_or_default();
        let oldest = segments.front().map(|s| s.first).unwrap_or(0);
        let ack = ledger.ack.max(oldest);
        let mut next_id = last_valid.map_or(0, |l| l + 1).max(ack).max(newest_name);
        let mut acked = BTreeMap::new();
        for (s, e) in ledger.acked {
            if e > ack {
                acked.insert(s.max(ack), e);
                next_id = next_id.max(e);
            }
        }
        let (writer, seg) = Self::create_segment(dir, next_id).map_err(io_err(dir))?;
        segments.push_back(seg);
        let mut q = Queue {
            _lock: lock,
            dir: dir.to_path_buf(),
            opts,
            read: ReadCursor {
                segment: segments.front().map(|s| s.first).unwrap_or(next_id),
                file: None,
                scanner: Scanner::new(),
                expect: ack,
            },
            segments,
            writer,
            next_id,
            ack,
            acked,
            ledger_dirty: true,
            dir_dirty: true,
            stats,
            fail_writes: None,
        };
        q.advance_watermark();
        q.publish_size();
        Ok(q)
    }

    fn create_segment(dir: &Path, first: u64) -> io::Result<(File, Segment)> {
        let p = segment::path(dir, first);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&p)?;
        f.write_all(&segment::header())?;
        Ok((
            f,
            Segment {
                first,
                len: segment::HEADER_BYTES,
            },
        ))
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Id the next push gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
    /// Every id below this is acknowledged.
    pub fn ack_watermark(&self) -> u64 {
        self.ack
    }
    /// Bytes of segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }
    /// True if some pushed record was not returned by [`read_next`](Self::read_next) yet.
    pub fn has_unread(&self) -> bool {
        self.read.expect < self.next_id
    }
    /// True if some pushed record is not acknowledged yet.
    pub fn has_unacked(&self) -> bool {
        self.ack < self.next_id
    }
    /// True if a record of `payload_len` bytes would be refused as full now.
    pub fn is_full_for(&self, payload_len: usize) -> bool {
        let need = (record::HEADER_BYTES + payload_len) as u64;
        self.has_unacked() && self.disk_bytes() + need > self.opts.max_bytes
    }

    /// Test seam: make every write fail with `kind` (e.g. `StorageFull`)
    /// until cleared with `None`.
    #[doc(hidden)]
    pub fn inject_write_error(&mut self, kind: Option<io::ErrorKind>) {
        self.fail_writes = kind;
    }

    fn publish_size(&self) {
        self.stats
            .disk_bytes
            .store(self.disk_bytes(), Ordering::Relaxed);
        let acked_above: u64 = self.acked.iter().map(|(&s, &e)| e - s).sum();
        let unacked = self
            .next_id
            .saturating_sub(self.ack)
            .saturating_sub(acked_above);
        self.stats.unacked_records.store(unacked, Ordering::Relaxed);
    }

    /// Appends one record; returns its id. Not durable until [`flush`](Self::flush).
    pub fn push(&mut self, payload: &[u8]) -> Result<u64, PushError> {
        self.push_parts(&[payload])
    }

    /// [`Queue::push`] of the payload made of `parts` one after another,
    /// written as they are (no copy into one buffer first).
    pub fn push_parts(&mut self, parts: &[&[u8]]) -> Result<u64, PushError> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        if self.is_full_for(payload_len) {
            return Err(PushError::Full);
        }
        let need = (record::HEADER_BYTES + payload_len) as u64;
        let cur_len = self.segments.back().map_or(0, |s| s.len);
        if cur_len > segment::HEADER_BYTES
            && (!self.has_unacked() || cur_len + need > self.opts.segment_bytes)
        {
            self.rotate().map_err(|source| self.write_failed(source))?;
        }
        let id = self.next_id;
        let mut h = [0u8; record::HEADER_BYTES];
        record::encode_header_parts(id, parts, &mut h);
        let res = match self.fail_writes {
            Some(kind) => Err(io::Error::from(kind)),
            None => self.write_frame(&h, parts),
        };
        if let Err(source) = res {
            // Cut off whatever part of the record reached the file.
            let len = self.segments.back().map_or(0, |s| s.len);
            let _ = self.writer.set_len(len);
            let _ = self.writer.seek(SeekFrom::Start(len));
            return Err(self.write_failed(source));
        }
        if let Some(s) = self.segments.back_mut() {
            s.len += need;
        }
        self.next_id += 1;
        add(&self.stats.records_written, 1);
        self.publish_size();
        Ok(id)
    }

    /// Writes the header and the parts with as few `writev` calls as the
    /// kernel allows.
    fn write_frame(&mut self, header: &[u8], parts: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> = Vec::with_capacity(parts.len() + 1);
        slices.push(io::IoSlice::new(header));
        slices.extend(
            parts
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| io::IoSlice::new(p)),
        );
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            match self.writer.write_vectored(bufs) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_failed(&self, source: io::Error) -> PushError {
        add(&self.stats.write_errors, 1);
        PushError::Io {
            path: segment::path(&self.dir, self.segments.back().map_or(0, |s| s.first)),
            source,
        }
    }

    /// Syncs the current segment, starts a new one, deletes what is acked.
    fn rotate(&mut self) -> io::Result<()> {
        if self.fail_writes.is_some() {
            return Err(io::Error::from(
                self.fail_writes.unwrap_or(io::ErrorKind::Other),
            ));
        }
        self.writer.sync_data()?;
        let (writer, seg) = Self::create_segment(&self.dir, self.next_id)?;
        self.writer = writer;
        self.segments.push_back(seg);
        self.dir_dirty = true;
        self.delete_acked_segments();
        Ok(())
    }

    /// Makes every pushed record and every ack so far durable: fsyncs the
    /// current segment (and the directory after segment changes) and writes
    /// the ledger if acks moved.
    pub fn flush(&mut self) -> io::Result<()> {
        let job = self.begin_flush()?;
        let res = job.run();
        if res.is_err() {
            self.flush_failed(&job);
        }
        res
    }

    /// The part of a flush that needs the queue: what to sync. Run the
    /// returned job without holding the queue (fsync can take long) and
    /// call [`flush_failed`](Self::flush_failed) if it fails.
    pub fn begin_flush(&mut self) -> io::Result<FlushJob> {
        let job = FlushJob {
            segment: self.writer.try_clone()?,
            dir: self.dir_dirty.then(|| self.dir.clone()),
            ledger: self.ledger_dirty.then(|| {
                (
                    self.dir.join("ledger"),
                    Ledger {
                        ack: self.ack,
                        acked: self.acked.iter().map(|(&s, &e)| (s, e)).collect(),
                    },
                )
            }),
        };
        self.dir_dirty = false;
        self.ledger_dirty = false;
        Ok(job)
    }

    /// A [`FlushJob`] failed: its parts are due again.
    pub fn flush_failed(&mut self, job: &FlushJob) {
        self.dir_dirty |= job.dir.is_some();
        self.ledger_dirty |= job.ledger.is_some();
    }

    /// Removes the whole queue directory once every record is acknowledged
    /// (a leftover buffer drained by a pipeline that has no disk buffer).
    ///
    /// Order, so that a crash at any step leaves a queue that reopens with
    /// nothing to read: the ledger is written first (it says every id is
    /// acknowledged), then the segments go, then the ledger, the lock file
    /// and the directory. A file in the directory that is not the queue's
    /// is left alone, and so is the directory then (an error says so). The
    /// queue holds nothing afterwards; drop it.
    pub fn remove_files(&mut self) -> io::Result<()> {
        if self.has_unacked() {
            return Err(io::Error::other(
                "disk buffer still holds unacknowledged records",
            ));
        }
        self.flush()?;
        let remove = |p: &Path| match std::fs::remove_file(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        while let Some(seg) = self.segments.pop_front() {
            remove(&segment::path(&self.dir, seg.first))?;
        }
        self.publish_size();
        remove(&self.dir.join("ledger"))?;
        remove(&self.dir.join("lock"))?;
        std::fs::remove_dir(&self.dir)
    }

    /// Reads the next unacknowledged record into `payload`; `None` when
    /// every pushed record has been read.
    pub fn read_next(&mut self, payload: &mut Vec<u8>) -> io::Result<Option<u64>> {
        loop {
            if self.read.expect >= self.next_id {
                return Ok(None);
            }
            let Some(idx) = self
                .segments
                .iter()
                .position(|s| s.first >= self.read.segment)
            else {
                return Ok(None);
            };
            let seg = &self.segments[idx];
            if seg.first != self.read.segment {
                // The segment being read was deleted (fully acked): go on.
                self.read.segment = seg.first;
                self.read.file = None;
                self.read.scanner = Scanner::new();
            }
            let (first, len, last) = (seg.first, seg.len, idx + 1 == self.segments.len());
            let path = segment::path(&self.dir, first);
            if self.read.file.is_none() {
                self.read.file = Some(File::open(&path)?);
            }
            let Some(file) = self.read.file.as_ref() else {
                continue;
            };
            let src = Limited { src: file, len };
            match self.read.scanner.next(&src, payload)? {
                Step::Record { id } => {
                    if id >= self.next_id {
                        // A valid frame with an id never issued: damage.
                        self.damaged(&path, self.read.scanner.pos, self.read.scanner.pos);
                        continue;
                    }
                    if id < self.read.expect || self.is_acked(id) {
                        self.read.expect = self.read.expect.max(id + 1);
                        continue;
                    }
                    if id > self.read.expect {
                        self.lost(self.read.expect, id);
                    }
                    self.read.expect = id + 1;
                    add(&self.stats.records_read, 1);
                    return Ok(Some(id));
                }
                Step::Damaged { at, resumed } => self.damaged(&path, at, resumed),
                Step::End if last => {
                    // Everything up to next_id should have been here.
                    let (from, to) = (self.read.expect, self.next_id);
                    self.lost(from, to);
                    self.read.expect = to;
                    return Ok(None);
                }
                Step::End => {
                    self.read.segment = self.segments[idx + 1].first;
                    self.read.file = None;
                    self.read.scanner = Scanner::new();
                }
            }
        }
    }

    fn damaged(&self, path: &Path, at: u64, resumed: u64) {
        add(&self.stats.corrupt_regions, 1);
        add(&self.stats.corrupt_bytes, resumed.saturating_sub(at));
        tracing::error!(segment = %path.display(), position = at, skipped_bytes = resumed.saturating_sub(at),
            "disk buffer: damaged record(s) skipped (bad checksum or torn write)");
    }

    /// Ids `from..to` are missing: count them and treat them as acknowledged.
    fn lost(&mut self, from: u64, to: u64) {
        if to <= from {
            return;
        }
        let mut n = to - from;
        for (&s, &e) in self.acked.range(from..to) {
            n = n.saturating_sub(e.min(to) - s);
        }
        if n > 0 {
            add(&self.stats.lost_records, n);
            tracing::error!(
                from,
                to,
                records = n,
                "disk buffer: records lost to damage; their lines are re-read from files still on disk"
            );
        }
        self.ack_range(from, to);
    }

    fn is_acked(&self, id: u64) -> bool {
        id < self.ack
            || self
                .acked
                .range(..=id)
                .next_back()
                .is_some_and(|(_, &e)| id < e)
    }

    /// Marks record `id` as delivered.
    pub fn ack(&mut self, id: u64) {
        if id >= self.next_id || self.is_acked(id) {
            return;
        }
        add(&self.stats.records_acked, 1);
        self.ack_range(id, id + 1);
    }

    fn ack_range(&mut self, mut start: u64, mut end: u64) {
        start = start.max(self.ack);
        if end <= start {
            return;
        }
        // Merge with overlapping or adjacent ranges.
        let touching: Vec<(u64, u64)> = self
            .acked
            .range(..=end)
            .filter(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.acked.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.acked.insert(start, end);
        self.ledger_dirty = true;
        self.advance_watermark();
    }

    fn advance_watermark(&mut self) {
        while let Some((&s, &e)) = self.acked.first_key_value() {
            if s > self.ack {
                break;
            }
            self.acked.remove(&s);
            self.ack = self.ack.max(e);
        }
        self.delete_acked_segments();
    }

    /// Deletes segments (not the one being written) whose ids are all acked.
    fn delete_acked_segments(&mut self) {
        while self.segments.len() > 1 && self.segments[1].first <= self.ack {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            let p = segment::path(&self.dir, seg.first);
            match std::fs::remove_file(&p) {
                Ok(()) => add(&self.stats.segments_deleted, 1),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "disk buffer: deleting an acknowledged segment failed");
                }
            }
            self.dir_dirty = true;
        }
        self.publish_size();
    }
}

#[cfg(test)]
mod tests;
