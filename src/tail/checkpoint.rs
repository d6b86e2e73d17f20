//! Checkpoint store and per-file ack watermarks.
//!
//! The [`Checkpointer`] owns two things:
//!
//! * for every file followed in this run (a [`FileKey`] handed out by the
//!   file server): its identity, path, generation and [`AckWatermark`]. The
//!   follower calls [`Checkpointer::issue`] for each span it sends; the sink
//!   calls [`Acknowledger::delivered`] once a span is durably owned
//!   downstream, which moves the file's committed offset to the ack
//!   watermark;
//! * the persisted store: per [`FileIdentity`], the generation and committed
//!   offset to resume from, the last known path, and when the file was last
//!   followed.
//!
//! It promises that a stored offset never moves past a line that was not
//! acknowledged, and that it never moves backwards within a generation
//! (`(generation, offset)` only grows). It does no I/O except in
//! [`Checkpointer::open`] and [`Checkpointer::persist`].
//!
//! ## On-disk format
//!
//! `{data_dir}/checkpoints.json`, written only when something changed, by
//! writing `checkpoints.json.tmp`, `fsync`ing it, renaming it over the old
//! file and `fsync`ing the directory:
//!
//! ```text
//! {"version":1,"checkpoints":[
//!   {"identity":{"dev":2049,"ino":1234,"fingerprint":9876543210},
//!    "generation":0,"offset":52311,"path":"/var/log/pods/ns_pod_uid/c/0.log",
//!    "last_seen":1764118923,"tail_hash":1311768467294899695,"read":60000,
//!    "end":60000,"source":"containers"}
//! ]}
//! ```
//!
//! `last_seen` is Unix seconds. The last four members are optional (a file
//! without them, as earlier builds wrote it, loads; earlier builds ignore
//! them): `tail_hash` is the hash of the 64 bytes before `offset`
//! (`identity::tail_hash`), verified when the file is resumed there;
//! `read` the end of the newest span issued (bytes known to exist, what a
//! loss of the file loses at least); `end` where a closed file ended
//! (rotated away and drained, excluded, given up): once `offset` reaches
//! it the file is complete, else a restart looks for it
//! ([`Checkpointer::unfinished`], `tail::rotated`); `source` the source
//! that followed it.
//!
//! **Several followers of one file.** A file renamed to a name a glob still
//! matches is followed again, under a new [`FileKey`], from where the old
//! follower stopped reading. If the old one ended with spans in flight, the
//! new one continues its watermark (acks of the old key are routed to the
//! new one), so the checkpoint never passes the old spans; and a follower
//! that resumes never commits its start offset, only acknowledgements do. An entry whose file is no longer followed is
//! kept for [`RETENTION`] after it was last seen (or after this process
//! started, whichever is later), so a rotated file that a glob matches again
//! is not read twice; then it is dropped. A file that cannot be read or
//! parsed, or has an unknown version, is reported with `tracing::error!`,
//! renamed to `checkpoints.json.corrupt-<unix time>`, and the store starts
//! empty: never a crash.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::watermark::{AckWatermark, SpanStamp};
use crate::buffer::Acknowledger;
use crate::encode::IndexTemplate;
use crate::event::{FileIdentity, FileKey, Generation, SpanOrigin};
use std::sync::Arc;

/// Store file name inside `data_dir`.
pub const FILE_NAME: &str = "checkpoints.json";
const TMP_NAME: &str = "checkpoints.json.tmp";
const FORMAT_VERSION: u32 = 1;
/// How long the entry of a file no longer followed is kept.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Followed files refresh their `last_seen` at least this often, even when
/// nothing else changed (after a restart, siblings modified after it are
/// rotations made while logship was down: see `tail::rotated`).
const REFRESH_INTERVAL: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("writing checkpoints to {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Where to resume a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub generation: Generation,
    pub offset: u64,
}

/// The first bytes of a generation: `len` (at most `identity::HEAD_BYTES`)
/// and their hash (`identity::head_hash`). Files with the same first line
/// (a banner) are told apart by it: a copy of this generation, or the file
/// still holding it, has these bytes; a rewrite or an older copy does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub len: u64,
    pub hash: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    checkpoints: Vec<StoredEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredEntry {
    identity: FileIdentity,
    generation: Generation,
    offset: u64,
    path: PathBuf,
    last_seen: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail_hash: Option<u64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    read: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_tail: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    reread: Vec<StoredReRead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    head: Option<Head>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gone: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_head: Option<Head>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    old_heads: Vec<Head>,
}

/// A run of spans past the checkpoint read with one stamp (`SpanStamp`),
/// as stored: up to `end`, read at `secs`, into these index templates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredReRead {
    end: u64,
    secs: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<[String; 3]>,
}

/// Lines past a checkpoint up to `end` were read (and maybe indexed) with
/// this read time and these index templates: read again, they must get
/// the same ones.
#[derive(Clone, Debug)]
pub struct ReRead {
    pub end: u64,
    pub secs: i64,
    pub index: Option<Arc<[IndexTemplate; 3]>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug)]
struct Stored {
    generation: Generation,
    offset: u64,
    path: PathBuf,
    last_seen: u64,
    /// Number of followers (keys) currently following this identity.
    followers: u32,
    /// Hash of the bytes just before `offset` (`identity::tail_hash`).
    tail: Option<u64>,
    /// Bytes of this generation known to exist (the end of the newest span
    /// issued): what a loss of the file loses at least.
    read: u64,
    /// Hash of the bytes just before `read`: lines past the checkpoint may
    /// have been indexed with this content; if the file no longer holds it,
    /// reading it again under this generation would reuse their `_id`s.
    read_tail: Option<u64>,
    /// The file was closed, read to this offset (rotated away and drained,
    /// excluded, or given up): once `offset` reaches it, nothing is left.
    end: Option<u64>,
    /// The source that followed it (to follow it again after a restart).
    source: Option<String>,
    /// Stamps of the lines past `offset` already read (see [`ReRead`]).
    reread: Vec<StoredReRead>,
    /// The generation's first bytes, once read (see [`Head`]).
    head: Option<Head>,
    /// A tombstone: the file is gone (lost, or replaced by other content
    /// under another identity). Kept so that a later file with the same
    /// identity (inode reused, same first line) continues at the next
    /// generation instead of taking the `_id`s of this one's lines.
    gone: bool,
    /// Truncated to nothing and read again under the same identity (see
    /// [`Checkpointer::truncated`]): the head of the generation before, which
    /// a file beginning with is that older content (a copy of it), not this
    /// generation. Until this generation's own head is known.
    not_head: Option<Head>,
    /// The heads of the generations before this one (the last
    /// [`OLD_HEADS`]): while this generation's own head is unknown, a copy
    /// beginning with any of them is older content, not this generation
    /// (long chaos seed 9003: a generation begun by a truncation to nothing
    /// took a copy two rotations old for its own and read it again).
    old_heads: Vec<Head>,
}

/// How many earlier generations' heads an entry keeps (`Stored::old_heads`).
const OLD_HEADS: usize = 32;

impl From<StoredEntry> for Stored {
    fn from(e: StoredEntry) -> Self {
        Stored {
            generation: e.generation,
            offset: e.offset,
            path: e.path,
            last_seen: e.last_seen,
            followers: 0,
            tail: e.tail_hash,
            read: e.read.max(e.offset),
            read_tail: e.read_tail,
            end: e.end,
            source: e.source,
            reread: e.reread,
            head: e.head,
            gone: e.gone,
            not_head: e.not_head,
            old_heads: e.old_heads,
        }
    }
}

impl Stored {
    fn new(generation: Generation, offset: u64, path: &Path, now: u64, followers: u32) -> Self {
        Stored {
            generation,
            offset,
            path: path.to_path_buf(),
            last_seen: now,
            followers,
            tail: None,
            read: offset,
            read_tail: None,
            end: None,
            source: None,
            reread: Vec::new(),
            head: None,
            gone: false,
            not_head: None,
            old_heads: Vec::new(),
        }
    }

    /// A new generation begins: this one's head joins `old_heads`.
    fn retire_head(&mut self) {
        for h in [self.head.take(), self.not_head.take()]
            .into_iter()
            .flatten()
        {
            if !self.old_heads.contains(&h) {
                if self.old_heads.len() == OLD_HEADS {
                    self.old_heads.remove(0);
                }
                self.old_heads.push(h);
            }
        }
    }

    fn unfinished(&self, identity: FileIdentity) -> Unfinished {
        Unfinished {
            identity,
            path: self.path.clone(),
            source: self.source.clone(),
            checkpoint: Checkpoint {
                generation: self.generation,
                offset: self.offset,
            },
            tail: self.tail,
            known_unread: self.read.saturating_sub(self.offset),
            read_tail: (self.read > self.offset)
                .then_some(self.read_tail)
                .flatten(),
            head: self.head,
            not_head: self.not_head,
            old_heads: self.old_heads.clone(),
            last_seen: self.last_seen,
        }
    }

    /// Everything up to the file's end is acknowledged (or given up).
    fn complete(&self) -> bool {
        self.end.is_some_and(|end| self.offset >= end)
    }
}

/// One entry of the store as [`read_only`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// What the store knows of the file (its generation, acknowledged
    /// offset, path, source, heads).
    pub file: Unfinished,
    /// A tombstone: the file is gone (lost, or replaced by other content).
    pub gone: bool,
    /// Where the file ended when it was closed (rotated away and drained,
    /// excluded, given up), if it was.
    pub end: Option<u64>,
}

/// The store in `data_dir` as it is on disk, for a reader that is not the
/// agent (`logship audit`). It is only read: never written, locked or set
/// aside (the agent replaces the file by a rename, so a read sees one whole
/// version), and a running agent is not disturbed. No store yet: empty. A
/// store that cannot be read or parsed is an error saying why.
pub fn read_only(data_dir: &Path) -> Result<Vec<StoredFile>, String> {
    let path = data_dir.join(FILE_NAME);
    let entries = load(&path).map_err(|reason| format!("{}: {reason}", path.display()))?;
    Ok(entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let identity = e.identity;
            let stored = Stored::from(e);
            StoredFile {
                file: stored.unfinished(identity),
                gone: stored.gone,
                end: stored.end,
            }
        })
        .collect())
}

/// A file the store knows that no follower of this run has claimed and that
/// was not read to its end: after a restart, it may have been rotated away
/// (renamed, compressed) or deleted while logship was down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfinished {
    pub identity: FileIdentity,
    pub path: PathBuf,
    pub source: Option<String>,
    pub checkpoint: Checkpoint,
    /// Hash of the bytes just before the checkpoint's offset, if known.
    pub tail: Option<u64>,
    /// Bytes known to exist past the checkpoint's offset.
    pub known_unread: u64,
    /// Hash of the bytes just before `checkpoint.offset + known_unread`
    /// (what was read), if known.
    pub read_tail: Option<u64>,
    /// The generation's first bytes, if known.
    pub head: Option<Head>,
    /// First bytes this generation does not begin with (`Stored::not_head`).
    pub not_head: Option<Head>,
    /// Heads of earlier generations (`Stored::old_heads`).
    pub old_heads: Vec<Head>,
    /// When it was last followed (Unix seconds): later modifications of
    /// its siblings happened while logship was down.
    pub last_seen: u64,
}

#[derive(Debug)]
struct Followed {
    identity: FileIdentity,
    watermark: AckWatermark,
    /// The follower ended; the entry goes once its last span is acknowledged.
    released: bool,
}

#[derive(Debug, Default)]
struct State {
    stored: HashMap<FileIdentity, Stored>,
    followed: HashMap<FileKey, Followed>,
    /// A follower that ended with spans in flight, whose watermark a later
    /// follower of the same file took over: acks of its spans go there.
    aliases: HashMap<FileKey, FileKey>,
    dirty: bool,
    last_write: u64,
}

impl State {
    /// The key whose watermark tracks spans issued under `key`.
    fn resolve(&self, key: FileKey) -> FileKey {
        self.aliases.get(&key).copied().unwrap_or(key)
    }

    fn remove_followed(&mut self, key: FileKey) {
        self.followed.remove(&key);
        self.aliases.retain(|_, target| *target != key);
    }
}

/// Per-file ack watermarks and the persisted checkpoint store (see module doc).
pub struct Checkpointer {
    dir: PathBuf,
    started: u64,
    state: Mutex<State>,
    /// Serialises writers of the file (the periodic persister, followers
    /// that need their identity on disk, the final write); holds the last
    /// request a finished write covered (group commit, see `persist_at`).
    write_lock: Mutex<u64>,
    /// Requests to persist so far.
    requested: std::sync::atomic::AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Checkpointer {
    /// Loads `data_dir/checkpoints.json`; a corrupt file is reported, moved
    /// aside and replaced by an empty store (never an error).
    pub fn open(data_dir: &Path) -> Result<Self, CheckpointError> {
        let meta = fs::metadata(data_dir).map_err(|source| CheckpointError::Dir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(CheckpointError::Dir {
                path: data_dir.to_path_buf(),
                source: std::io::Error::other("not a directory"),
            });
        }
        let path = data_dir.join(FILE_NAME);
        let now = unix_now();
        let mut state = State {
            last_write: now,
            ..State::default()
        };
        match load(&path) {
            Ok(Some(entries)) => {
                tracing::info!(path = %path.display(), files = entries.len(), "checkpoints loaded");
                for e in entries {
                    state.stored.insert(e.identity, Stored::from(e));
                }
            }
            Ok(None) => {}
            Err(reason) => {
                let aside = data_dir.join(format!("{FILE_NAME}.corrupt-{now}"));
                let moved = fs::rename(&path, &aside);
                tracing::error!(
                    path = %path.display(),
                    %reason,
                    moved_to = %aside.display(),
                    move_error = moved.as_ref().err().map(|e| e.to_string()),
                    "checkpoint file unusable; set aside, starting with no checkpoints (files are read per read_from)"
                );
            }
        }
        Ok(Checkpointer {
            dir: data_dir.to_path_buf(),
            started: now,
            state: Mutex::new(state),
            write_lock: Mutex::new(0),
            requested: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored checkpoint of a file, if any.
    pub fn lookup(&self, identity: &FileIdentity) -> Option<Checkpoint> {
        self.state().stored.get(identity).map(|s| Checkpoint {
            generation: s.generation,
            offset: s.offset,
        })
    }

    /// How the lines past the stored offset of `identity` were read (see
    /// [`ReRead`]), for a follower that resumes there.
    pub fn reread(&self, identity: &FileIdentity) -> Vec<ReRead> {
        let st = self.state();
        let Some(s) = st.stored.get(identity) else {
            return Vec::new();
        };
        s.reread
            .iter()
            .filter(|r| r.end > s.offset)
            .map(|r| ReRead {
                end: r.end,
                secs: r.secs,
                index: r.index.as_ref().and_then(|names| {
                    let parsed: Vec<IndexTemplate> = names
                        .iter()
                        .filter_map(|n| IndexTemplate::parse(n).ok())
                        .collect();
                    <[IndexTemplate; 3]>::try_from(parsed).ok().map(Arc::new)
                }),
            })
            .collect()
    }

    /// How far the stored generation of `identity` was read (the end of the
    /// newest span issued) and the hash of the bytes before that, if it was
    /// read past its checkpoint.
    pub fn lookup_read(&self, identity: &FileIdentity) -> Option<(u64, Option<u64>)> {
        self.state()
            .stored
            .get(identity)
            .filter(|s| s.read > s.offset)
            .map(|s| (s.read, s.read_tail))
    }

    /// Hash of the bytes just before the stored offset of `identity`, to
    /// verify a resumed file against (see `identity::tail_hash`).
    pub fn lookup_tail(&self, identity: &FileIdentity) -> Option<u64> {
        self.state().stored.get(identity).and_then(|s| s.tail)
    }

    /// Everything the store knows about `identity`, as an [`Unfinished`]
    /// (to look for its content elsewhere after a restart).
    pub fn snapshot(&self, identity: &FileIdentity) -> Option<Unfinished> {
        self.state()
            .stored
            .get(identity)
            .filter(|s| !s.gone)
            .map(|s| s.unfinished(*identity))
    }

    /// True if `identity` is a tombstone (see `Stored::gone`).
    pub fn is_gone(&self, identity: &FileIdentity) -> bool {
        self.state().stored.get(identity).is_some_and(|s| s.gone)
    }

    /// The stored first bytes of `identity`'s `generation`, if known.
    pub fn lookup_head(&self, identity: &FileIdentity, generation: Generation) -> Option<Head> {
        self.state()
            .stored
            .get(identity)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.head)
    }

    /// Records the first bytes of the generation file `key` reads. `true`
    /// if that changed the store (the caller writes it before shipping a
    /// line of that generation: see `Follower::send`).
    pub fn set_head(&self, key: FileKey, generation: Generation, head: Head) -> bool {
        let mut st = self.state();
        let st = &mut *st;
        let key = st.resolve(key);
        let Some(f) = st.followed.get(&key) else {
            return false;
        };
        match st.stored.get_mut(&f.identity) {
            Some(s) if s.generation == generation && s.head != Some(head) => {
                s.head = Some(head);
                s.not_head = None;
                st.dirty = true;
                true
            }
            _ => false,
        }
    }

    /// Starts tracking file `key`, whose follower reads `identity` from
    /// `start` for source `source`.
    ///
    /// `commit_start`: the start is settled — a new file, `read_from: end`,
    /// or a new generation at 0 — and becomes the stored checkpoint unless
    /// that is further along. Otherwise (resuming at a checkpoint, or where
    /// an earlier follower of this run stopped reading) only
    /// acknowledgements move the stored checkpoint. If an earlier follower
    /// of the same file ended with spans in flight, this one continues its
    /// watermark, so the checkpoint never passes those spans.
    pub fn follow(
        &self,
        key: FileKey,
        identity: FileIdentity,
        path: &Path,
        source: &str,
        start: Checkpoint,
        commit_start: bool,
    ) {
        let now = unix_now();
        let mut st = self.state();
        let st = &mut *st;
        let inherited = st
            .followed
            .iter()
            .find(|(_, f)| f.released && f.identity == identity)
            .map(|(k, _)| *k);
        let watermark = match inherited.and_then(|old| st.followed.remove(&old).map(|f| (old, f))) {
            Some((old, f)) => {
                for target in st.aliases.values_mut() {
                    if *target == old {
                        *target = key;
                    }
                }
                st.aliases.insert(old, key);
                f.watermark
            }
            None => AckWatermark::new(start.generation, start.offset),
        };
        st.followed.insert(
            key,
            Followed {
                identity,
                watermark,
                released: false,
            },
        );
        let s = st
            .stored
            .entry(identity)
            .or_insert_with(|| Stored::new(start.generation, start.offset, path, now, 0));
        if commit_start && (start.generation, start.offset) > (s.generation, s.offset) {
            if start.generation != s.generation {
                s.read = 0;
                s.read_tail = None;
                s.reread.clear();
                s.retire_head();
            }
            s.generation = start.generation;
            s.offset = start.offset;
            s.tail = None;
        }
        if s.offset > s.read {
            s.read = s.offset;
            s.read_tail = None;
        }
        s.path = path.to_path_buf();
        s.followers += 1;
        s.last_seen = now;
        s.end = None;
        s.gone = false;
        s.source = Some(source.to_string());
        st.dirty = true;
    }

    /// File `key` was truncated in place and will be read again from 0 as
    /// `generation`, possibly under a new `identity` (its first line changed).
    ///
    /// `pending`: the file has no first line yet, so `identity` is still the
    /// old content's: a copy beginning with the old generation's first bytes
    /// is not the new generation (`Stored::not_head`).
    ///
    /// Returns the generation to read under: `generation`, or later if the
    /// store already knows `identity` from an earlier file (inode reused,
    /// same first line; a tombstone): its generations' `_id`s are taken.
    pub fn truncated(
        &self,
        key: FileKey,
        identity: FileIdentity,
        path: &Path,
        generation: Generation,
        pending: bool,
    ) -> Generation {
        let now = unix_now();
        let mut st = self.state();
        let st = &mut *st;
        let key = st.resolve(key);
        let Some(f) = st.followed.get_mut(&key) else {
            return generation;
        };
        let generation = match st.stored.get(&identity) {
            Some(s) if f.identity != identity && s.followers == 0 => {
                generation.max(s.generation.wrapping_add(1))
            }
            _ => generation,
        };
        f.watermark.reset(generation);
        // Truncated to nothing: the old generation's first bytes tell a
        // copy of it from the new one (which has no first line yet).
        let prev_head = pending
            .then(|| {
                st.stored
                    .get(&f.identity)
                    .and_then(|s| s.head.or(s.not_head))
            })
            .flatten();
        if let Some(s) = st.stored.get_mut(&f.identity) {
            s.end = None;
        }
        if f.identity != identity {
            // The old content is gone: nothing to look for after a restart,
            // but its generation is remembered (a tombstone).
            if let Some(old) = st.stored.get_mut(&f.identity) {
                old.followers = old.followers.saturating_sub(1);
                old.last_seen = now;
                if old.followers == 0 {
                    old.gone = true;
                    old.end = Some(old.offset);
                }
            }
            f.identity = identity;
            upsert(&mut st.stored, identity, path, generation, 0, now, true);
        } else {
            upsert(&mut st.stored, identity, path, generation, 0, now, false);
        }
        if let Some(s) = st.stored.get_mut(&identity)
            && prev_head.is_some()
        {
            s.not_head = prev_head;
        }
        st.dirty = true;
        generation
    }

    /// Registers a span of file `key` ending at `end` and returns its origin.
    pub fn issue(&self, key: FileKey, generation: Generation, end: u64) -> SpanOrigin {
        self.issue_with_tail(key, generation, end, None, None)
    }

    /// [`Checkpointer::issue`] with the hash of the bytes just before `end`
    /// (`identity::tail_hash`), stored with the checkpoint once acknowledged
    /// and verified when the file is resumed there.
    pub fn issue_with_tail(
        &self,
        key: FileKey,
        generation: Generation,
        end: u64,
        tail: Option<u64>,
        stamp: Option<Arc<SpanStamp>>,
    ) -> SpanOrigin {
        let mut st = self.state();
        let st = &mut *st;
        let seq = match st.followed.get_mut(&key) {
            Some(f) => {
                let seq = f.watermark.issue_with_tail(generation, end, tail, stamp);
                if let Some(s) = st.stored.get_mut(&f.identity)
                    && s.generation == generation
                    && end > s.read
                {
                    s.read = end;
                    s.read_tail = tail;
                    st.dirty = true;
                }
                seq
            }
            // Not followed: the ack will be ignored; the span still flows.
            None => u64::MAX,
        };
        SpanOrigin {
            file: key,
            generation,
            seq,
            end,
        }
    }

    /// The follower of `key` ended. Its watermark stays until its spans in
    /// flight are acknowledged; its store entry then ages out per [`RETENTION`].
    ///
    /// `end`: the file was closed for good, everything wanted from it ends
    /// there (read to its end after rotation or deletion, or excluded: its
    /// start). Once the checkpoint reaches `end` the file is complete and
    /// is not looked for after a restart. `None` (shutdown): the file may
    /// still grow; a restart continues it.
    pub fn unfollow(&self, key: FileKey, end: Option<u64>) {
        let now = unix_now();
        let mut st = self.state();
        let st = &mut *st;
        let key = st.resolve(key);
        let Some(f) = st.followed.get_mut(&key) else {
            return;
        };
        f.released = true;
        let identity = f.identity;
        let generation = f.watermark.generation();
        if f.watermark.in_flight() == 0 {
            st.remove_followed(key);
        }
        if let Some(s) = st.stored.get_mut(&identity) {
            s.followers = s.followers.saturating_sub(1);
            s.last_seen = now;
            if s.generation == generation {
                s.end = end;
            }
        }
        st.dirty = true;
    }

    /// Files the store knows that are neither followed now nor complete
    /// (see [`Unfinished`]), except those in `claimed`.
    pub fn unfinished(&self, claimed: &std::collections::HashSet<FileIdentity>) -> Vec<Unfinished> {
        let st = self.state();
        let mut out: Vec<Unfinished> = st
            .stored
            .iter()
            .filter(|(id, s)| s.followers == 0 && !s.complete() && !claimed.contains(*id))
            .map(|(id, s)| s.unfinished(*id))
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path).then(a.identity.cmp(&b.identity)));
        out
    }

    /// The stored checkpoints (with their tail hashes) of files whose first
    /// line has `fingerprint`: a copy of one of them holds its bytes before
    /// the checkpoint.
    pub fn with_fingerprint(&self, fingerprint: u64) -> Vec<(Checkpoint, Option<u64>)> {
        self.state()
            .stored
            .iter()
            .filter(|(id, _)| id.fingerprint == fingerprint)
            .map(|(_, s)| {
                (
                    Checkpoint {
                        generation: s.generation,
                        offset: s.offset,
                    },
                    s.tail,
                )
            })
            .collect()
    }

    /// Whether the store knows `identity`.
    pub fn knows(&self, identity: &FileIdentity) -> bool {
        self.state().stored.contains_key(identity)
    }

    /// A file of [`Checkpointer::unfinished`] is gone for good (the loss is
    /// counted by the caller): its entry becomes a tombstone (see
    /// `Stored::gone`), kept for `RETENTION`.
    pub fn forget(&self, identity: &FileIdentity) {
        let mut st = self.state();
        if let Some(s) = st.stored.get_mut(identity) {
            s.gone = true;
            s.end = Some(s.offset);
            st.dirty = true;
        }
    }

    /// The follower of `key` gave its file up at `offset` of `generation`
    /// (past `buffer.max_open_files`): the stored checkpoint moves there at
    /// once, past lines never acknowledged, so that nothing waits for them;
    /// acknowledgements of its spans still in flight are ignored.
    pub fn give_up(&self, key: FileKey, path: &Path, generation: Generation, offset: u64) {
        let now = unix_now();
        let mut st = self.state();
        let st = &mut *st;
        let key = st.resolve(key);
        let Some(f) = st.followed.remove(&key) else {
            return;
        };
        st.aliases.retain(|_, target| *target != key);
        upsert(
            &mut st.stored,
            f.identity,
            path,
            generation,
            offset,
            now,
            false,
        );
        if let Some(s) = st.stored.get_mut(&f.identity) {
            s.followers = s.followers.saturating_sub(1);
            s.last_seen = now;
            if s.generation == generation {
                s.end = Some(offset);
                s.read = s.read.max(offset);
            }
        }
        st.dirty = true;
    }

    /// The committed `(generation, offset)` of file `key` in this run.
    pub fn committed(&self, key: FileKey) -> Option<Checkpoint> {
        let st = self.state();
        st.followed.get(&st.resolve(key)).map(|f| Checkpoint {
            generation: f.watermark.generation(),
            offset: f.watermark.committed(),
        })
    }

    /// Writes the store atomically (temp file, fsync, rename) if it changed.
    pub fn persist(&self) -> Result<(), CheckpointError> {
        self.persist_at(unix_now())
    }

    /// [`Checkpointer::persist`] as if the time were `now` (Unix seconds).
    ///
    /// Group commit: a call made while another writes waits for it, then
    /// returns at once if a write that began after the call finished in the
    /// meantime (that write saw everything the call wanted on disk). With
    /// 1,000 new files, each follower asking for its identity on disk made
    /// 2,000 writes of the whole store in a row (issue 10: seconds of CPU).
    pub fn persist_at(&self, now: u64) -> Result<(), CheckpointError> {
        self.persist_ticket(self.request_persist(), now)
    }

    /// A request to have the store on disk as it is now: a ticket for
    /// [`Checkpointer::persist_ticket`] and [`Checkpointer::covered`].
    pub fn request_persist(&self) -> u64 {
        self.requested
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1
    }

    /// The last ticket a finished write covered (waits for a write in
    /// progress).
    pub fn covered(&self) -> u64 {
        *self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once a write that began after `ticket` was requested has
    /// finished (this call's, or one that covered it meanwhile).
    pub fn persist_ticket(&self, ticket: u64, now: u64) -> Result<(), CheckpointError> {
        use std::sync::atomic::Ordering;
        let mut covered = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        if *covered >= ticket {
            return Ok(());
        }
        // Every request up to here was made before the state is read below.
        let covers = self.requested.load(Ordering::Acquire);
        let result = self.write_state(now);
        if result.is_ok() {
            *covered = covers;
        }
        result
    }

    /// Writes the state if it changed (the caller holds `write_lock`).
    fn write_state(&self, now: u64) -> Result<(), CheckpointError> {
        let entries = {
            let mut st = self.state();
            let retention = RETENTION.as_secs();
            let started = self.started;
            let before = st.stored.len();
            // A tombstone ages from when the file was last seen, not from
            // this process's start: restarts must not keep it forever.
            st.stored.retain(|_, s| {
                let since = if s.gone {
                    s.last_seen
                } else {
                    s.last_seen.max(started)
                };
                s.followers > 0 || now.saturating_sub(since) <= retention
            });
            if st.stored.len() != before {
                st.dirty = true;
            }
            // The stamps of what followed files have read past their checkpoint.
            let state = &mut *st;
            for f in state.followed.values() {
                if let Some(s) = state.stored.get_mut(&f.identity)
                    && s.generation == f.watermark.generation()
                {
                    let runs: Vec<StoredReRead> = f
                        .watermark
                        .stamp_runs()
                        .into_iter()
                        .filter(|(end, _)| *end > s.offset)
                        .map(|(end, stamp)| StoredReRead {
                            end,
                            secs: stamp.secs,
                            index: stamp
                                .index
                                .as_ref()
                                .map(|t| [0, 1, 2].map(|i| t[i].as_str().to_string())),
                        })
                        .collect();
                    if runs != s.reread {
                        s.reread = runs;
                        state.dirty = true;
                    }
                }
            }
            let refresh = st.stored.values().any(|s| s.followers > 0)
                && now.saturating_sub(st.last_write) >= REFRESH_INTERVAL;
            if !st.dirty && !refresh {
                return Ok(());
            }
            st.dirty = false;
            st.last_write = now;
            let mut entries: Vec<StoredEntry> = st
                .stored
                .iter_mut()
                .map(|(identity, s)| {
                    if s.followers > 0 {
                        s.last_seen = now;
                    }
                    StoredEntry {
                        identity: *identity,
                        generation: s.generation,
                        offset: s.offset,
                        path: s.path.clone(),
                        last_seen: s.last_seen,
                        tail_hash: s.tail,
                        read: s.read,
                        read_tail: s.read_tail,
                        end: s.end,
                        source: s.source.clone(),
                        reread: s.reread.clone(),
                        head: s.head,
                        gone: s.gone,
                        not_head: s.not_head,
                        old_heads: s.old_heads.clone(),
                    }
                })
                .collect();
            // By bytes: `Path`'s component-wise order cost more than the
            // rest of the write with 1,000 files.
            entries.sort_unstable_by(|a, b| {
                (a.path.as_os_str().as_encoded_bytes(), a.identity)
                    .cmp(&(b.path.as_os_str().as_encoded_bytes(), b.identity))
            });
            entries
        };
        let result = self.write(&entries);
        if result.is_err() {
            self.state().dirty = true;
        }
        result
    }

    fn write(&self, entries: &[StoredEntry]) -> Result<(), CheckpointError> {
        let tmp = self.dir.join(TMP_NAME);
        let path = self.dir.join(FILE_NAME);
        let err = |source| CheckpointError::Write {
            path: path.clone(),
            source,
        };
        let body = serde_json::to_vec(&StoreFileRef {
            version: FORMAT_VERSION,
            checkpoints: entries,
        })
        .map_err(|e| err(std::io::Error::other(e)))?;
        write_atomically(&self.dir, &tmp, &path, &body).map_err(err)
    }
}

/// Writes `bytes` to `path` in `dir` so that a crash leaves the old file or
/// the new one, never a torn one: into `tmp`, fsync'd, renamed over `path`,
/// then the directory fsync'd (the checkpoint store and the journald cursor
/// store).
pub(crate) fn write_atomically(
    dir: &Path,
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut f = File::create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)?;
    File::open(dir).and_then(|d| d.sync_all())
}

#[derive(Serialize)]
struct StoreFileRef<'a> {
    version: u32,
    checkpoints: &'a [StoredEntry],
}

/// Reads the store: `Ok(None)` if there is none, `Err(reason)` if it is unusable.
fn load(path: &Path) -> Result<Option<Vec<StoredEntry>>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let version: VersionOnly =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a checkpoint file: {e}"))?;
    if version.version != FORMAT_VERSION {
        return Err(format!(
            "unknown version {} (this build reads version {FORMAT_VERSION})",
            version.version
        ));
    }
    let file: StoreFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("invalid checkpoint entries: {e}"))?;
    Ok(Some(file.checkpoints))
}

/// Sets the stored checkpoint of `identity` unless the stored one is further
/// along. Returns true if anything changed.
fn upsert(
    stored: &mut HashMap<FileIdentity, Stored>,
    identity: FileIdentity,
    path: &Path,
    generation: Generation,
    offset: u64,
    now: u64,
    new_follower: bool,
) -> bool {
    match stored.get_mut(&identity) {
        Some(s) => {
            let mut changed = false;
            if (generation, offset) > (s.generation, s.offset) {
                if generation != s.generation {
                    s.read = 0;
                    s.read_tail = None;
                    s.end = None;
                    s.reread.clear();
                    s.retire_head();
                }
                s.generation = generation;
                s.offset = offset;
                s.tail = None;
                s.read = s.read.max(offset);
                changed = true;
            }
            if s.path != path {
                s.path = path.to_path_buf();
                changed = true;
            }
            if new_follower {
                s.followers += 1;
                s.last_seen = now;
                s.gone = false;
            }
            changed
        }
        None => {
            stored.insert(
                identity,
                Stored::new(generation, offset, path, now, u32::from(new_follower)),
            );
            true
        }
    }
}

impl Acknowledger for Checkpointer {
    fn delivered(&self, spans: &[SpanOrigin]) {
        let mut st = self.state();
        let st = &mut *st;
        for span in spans {
            let key = st.resolve(span.file);
            let Some(f) = st.followed.get_mut(&key) else {
                continue;
            };
            if !f.watermark.ack(span.generation, span.seq) {
                continue;
            }
            let (generation, offset) = (f.watermark.generation(), f.watermark.committed());
            let tail = f.watermark.committed_tail();
            let identity = f.identity;
            if f.released && f.watermark.in_flight() == 0 {
                st.remove_followed(key);
            }
            if let Some(s) = st.stored.get_mut(&identity)
                && (generation, offset) > (s.generation, s.offset)
            {
                if generation != s.generation {
                    s.read = 0;
                    s.read_tail = None;
                    s.end = None;
                    s.reread.clear();
                    s.retire_head();
                }
                s.generation = generation;
                s.offset = offset;
                s.tail = tail;
                s.read = s.read.max(offset);
                s.reread.retain(|r| r.end > offset);
                st.dirty = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino: n,
            fingerprint: n * 31,
        }
    }

    fn follow(
        c: &Checkpointer,
        key: FileKey,
        identity: FileIdentity,
        path: &Path,
        generation: Generation,
        offset: u64,
    ) {
        c.follow(
            key,
            identity,
            path,
            "test",
            Checkpoint { generation, offset },
            true,
        );
    }

    fn read_store(dir: &Path) -> serde_json::Value {
        serde_json::from_slice(&fs::read(dir.join(FILE_NAME)).unwrap()).unwrap()
    }

    #[test]
    fn missing_file_is_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        assert_eq!(c.lookup(&id(1)), None);
        c.persist().unwrap();
        // Nothing changed: nothing written.
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn round_trip_only_acked_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        {
            let c = Checkpointer::open(dir.path()).unwrap();
            follow(&c, 7, id(1), &path, 2, 100);
            let a = c.issue(7, 2, 300);
            let b = c.issue(7, 2, 500);
            // Only the second span is acked: the checkpoint must not move.
            c.delivered(&[b]);
            c.persist().unwrap();
            assert_eq!(read_store(dir.path())["checkpoints"][0]["offset"], 100);
            c.delivered(&[a]);
            c.persist().unwrap();
            assert!(
                !dir.path().join(TMP_NAME).exists(),
                "temp file renamed away"
            );
        }
        let c = Checkpointer::open(dir.path()).unwrap();
        assert_eq!(
            c.lookup(&id(1)),
            Some(Checkpoint {
                generation: 2,
                offset: 500
            })
        );
        assert_eq!(c.lookup(&id(2)), None);
        let v = read_store(dir.path());
        assert_eq!(v["version"], 1);
        assert_eq!(v["checkpoints"][0]["path"], path.to_str().unwrap());
    }

    #[test]
    fn a_given_up_file_checkpoints_its_end_and_ignores_late_acks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.log");
        let c = Checkpointer::open(dir.path()).unwrap();
        follow(&c, 3, id(3), &path, 0, 0);
        let sent = c.issue(3, 0, 400);
        c.give_up(3, &path, 0, 9000);
        assert_eq!(
            c.lookup(&id(3)),
            Some(Checkpoint {
                generation: 0,
                offset: 9000
            })
        );
        assert_eq!(c.committed(3), None, "no longer followed");
        // The span sent before giving up is acknowledged later: no effect.
        c.delivered(&[sent]);
        c.persist().unwrap();
        assert_eq!(read_store(dir.path())["checkpoints"][0]["offset"], 9000);
    }

    /// Group commit: whichever write covers a call, the store on disk holds
    /// what was acknowledged before the call, from many threads at once.
    #[test]
    fn concurrent_persists_each_return_with_their_change_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(Checkpointer::open(dir.path()).unwrap());
        let threads = 8;
        let rounds = 50u64;
        for t in 0..threads {
            follow(&c, t, id(t + 1), &dir.path().join(format!("{t}.log")), 0, 0);
        }
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let c = c.clone();
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for r in 1..=rounds {
                        let s = c.issue(t, 0, r * 10);
                        c.delivered(&[s]);
                        c.persist().unwrap();
                        let on_disk = read_store(&dir)["checkpoints"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|e| e["path"].as_str().unwrap().ends_with(&format!("/{t}.log")))
                            .map(|e| e["offset"].as_u64().unwrap());
                        assert!(
                            on_disk >= Some(r * 10),
                            "thread {t} round {r}: {on_disk:?} on disk"
                        );
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn unchanged_store_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        follow(&c, 1, id(1), Path::new("/x"), 0, 0);
        c.persist().unwrap();
        let file = dir.path().join(FILE_NAME);
        fs::remove_file(&file).unwrap();
        c.persist().unwrap();
        assert!(
            !file.exists(),
            "no change since the last write, so no write"
        );
        let s = c.issue(1, 0, 10);
        c.delivered(&[s]);
        c.persist().unwrap();
        assert!(file.exists());
    }

    #[test]
    fn read_only_sees_what_the_agent_wrote_and_never_touches_the_store() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_only(dir.path()), Ok(Vec::new()), "no store yet");
        let path = dir.path().join("app.log");
        let c = Checkpointer::open(dir.path()).unwrap();
        follow(&c, 7, id(1), &path, 2, 100);
        let span = c.issue(7, 2, 300);
        c.delivered(&[span]);
        c.persist().unwrap();
        let stored = read_only(dir.path()).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].file.identity, id(1));
        assert_eq!(stored[0].file.path, path);
        assert_eq!(
            stored[0].file.checkpoint,
            Checkpoint {
                generation: 2,
                offset: 300
            }
        );
        assert!(!stored[0].gone);
        // A corrupt store is an error for the reader, and stays where it is
        // (only the agent sets it aside).
        fs::write(dir.path().join(FILE_NAME), b"{\"version\":1,\"checkp").unwrap();
        let err = read_only(dir.path()).unwrap_err();
        assert!(err.contains(FILE_NAME), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()]);
    }

    #[test]
    fn corrupt_file_is_set_aside_and_store_starts_empty() {
        for body in [
            &b"{\"version\":1,\"checkpoints\":[{\"bad\":"[..],
            b"{\"version\":99,\"checkpoints\":[]}",
            b"\xff\xfe",
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(FILE_NAME), body).unwrap();
            let c = Checkpointer::open(dir.path()).unwrap();
            assert_eq!(c.lookup(&id(1)), None);
            let aside: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with("checkpoints.json.corrupt-"))
                .collect();
            assert_eq!(aside.len(), 1, "corrupt file moved aside");
            assert_eq!(
                fs::read(dir.path().join(&aside[0])).unwrap(),
                body,
                "kept for inspection"
            );
            assert!(!dir.path().join(FILE_NAME).exists());
            // And the store works afterwards.
            follow(&c, 1, id(1), Path::new("/a"), 0, 42);
            c.persist().unwrap();
            assert_eq!(
                Checkpointer::open(dir.path())
                    .unwrap()
                    .lookup(&id(1))
                    .unwrap()
                    .offset,
                42
            );
        }
    }

    #[test]
    fn unusable_file_reason_names_what_is_wrong() {
        // The log line that carries the reason is checked through the real
        // binary (tests/config.rs): capturing `tracing` output inside the
        // parallel unit tests raced with other tests registering the same
        // callsite.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, b"{\"version\":7}").unwrap();
        let reason = load(&path).unwrap_err();
        assert!(reason.contains("unknown version 7"), "{reason}");
        fs::write(&path, b"\xff").unwrap();
        let reason = load(&path).unwrap_err();
        assert!(reason.contains("not a checkpoint file"), "{reason}");
    }

    #[test]
    fn unreadable_data_dir_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Checkpointer::open(&missing).err().unwrap();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn generation_change_resets_offset_and_ignores_old_acks() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        let p = Path::new("/f");
        follow(&c, 1, id(1), p, 0, 0);
        let a = c.issue(1, 0, 100);
        let b = c.issue(1, 0, 200);
        c.delivered(&[a]);
        assert_eq!(c.lookup(&id(1)).unwrap().offset, 100);
        c.truncated(1, id(1), p, 1, false);
        assert_eq!(
            c.lookup(&id(1)),
            Some(Checkpoint {
                generation: 1,
                offset: 0
            })
        );
        c.delivered(&[b]);
        assert_eq!(
            c.lookup(&id(1)).unwrap().offset,
            0,
            "old generation ack ignored"
        );
        let n = c.issue(1, 1, 40);
        c.delivered(&[n]);
        assert_eq!(
            c.lookup(&id(1)),
            Some(Checkpoint {
                generation: 1,
                offset: 40
            })
        );
    }

    #[test]
    fn acks_after_unfollow_still_commit() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        follow(&c, 1, id(1), Path::new("/f"), 0, 0);
        let a = c.issue(1, 0, 100);
        c.unfollow(1, None);
        c.delivered(&[a]);
        assert_eq!(c.lookup(&id(1)).unwrap().offset, 100);
        assert_eq!(c.committed(1), None, "watermark dropped once drained");
    }

    #[test]
    fn stored_offset_never_moves_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        let p = Path::new("/f");
        // A first follower of the file ended with a span in flight; a second
        // follower of the same file resumed further along.
        follow(&c, 1, id(1), p, 0, 0);
        let old = c.issue(1, 0, 100);
        c.unfollow(1, None);
        follow(&c, 2, id(1), p, 0, 300);
        c.delivered(&[old]);
        assert_eq!(c.lookup(&id(1)).unwrap().offset, 300);
    }

    #[test]
    fn entries_of_unfollowed_files_expire_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        follow(&c, 1, id(1), Path::new("/gone"), 0, 10);
        follow(&c, 2, id(2), Path::new("/live"), 0, 20);
        c.unfollow(1, None);
        let now = unix_now();
        c.persist_at(now + RETENTION.as_secs() - 60).unwrap();
        assert!(c.lookup(&id(1)).is_some(), "kept within retention");
        c.persist_at(now + RETENTION.as_secs() + 60).unwrap();
        assert!(c.lookup(&id(1)).is_none(), "dropped after retention");
        assert!(c.lookup(&id(2)).is_some(), "a followed file never expires");
        let v = read_store(dir.path());
        assert_eq!(v["checkpoints"].as_array().unwrap().len(), 1);
        assert_eq!(v["checkpoints"][0]["path"], "/live");
    }

    #[test]
    fn old_entries_survive_a_long_downtime_until_retention_after_start() {
        let dir = tempfile::tempdir().unwrap();
        let long_ago = unix_now() - 10 * RETENTION.as_secs();
        let body = serde_json::json!({"version":1,"checkpoints":[
            {"identity":{"dev":1,"ino":1,"fingerprint":31},"generation":0,"offset":5,"path":"/a","last_seen":long_ago}
        ]});
        fs::write(dir.path().join(FILE_NAME), body.to_string()).unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        c.persist().unwrap();
        assert_eq!(
            c.lookup(&id(1)).unwrap().offset,
            5,
            "not pruned right after a restart"
        );
        c.persist_at(unix_now() + RETENTION.as_secs() + 60).unwrap();
        assert!(c.lookup(&id(1)).is_none());
    }

    #[test]
    fn a_follower_of_a_renamed_file_continues_the_old_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        follow(&c, 1, id(1), Path::new("/logs/app.log"), 0, 0);
        let a = c.issue(1, 0, 100);
        let b = c.issue(1, 0, 200);
        // Renamed within the glob: the first follower drained and closed
        // with both spans unacknowledged; a second one resumes where it read.
        c.unfollow(1, Some(200));
        let start = Checkpoint {
            generation: 0,
            offset: 200,
        };
        c.follow(2, id(1), Path::new("/logs/app-1.log"), "test", start, false);
        assert_eq!(
            c.lookup(&id(1)).unwrap().offset,
            0,
            "resuming commits nothing"
        );
        let d = c.issue(2, 0, 300);
        c.delivered(&[d]);
        c.delivered(&[b]);
        assert_eq!(
            c.lookup(&id(1)).unwrap().offset,
            0,
            "span a is not acknowledged"
        );
        c.delivered(&[a]);
        assert_eq!(c.lookup(&id(1)).unwrap().offset, 300);
        assert_eq!(c.committed(2).unwrap().offset, 300);
    }

    /// A follower whose file takes the identity of a gone file (inode
    /// reused, same first line) continues after that file's generations.
    #[test]
    fn new_content_with_a_gone_identity_takes_a_later_generation() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        follow(&c, 2, id(3), Path::new("/a"), 7, 0);
        c.unfollow(2, None);
        c.forget(&id(3));
        assert!(c.is_gone(&id(3)));
        follow(&c, 1, id(1), Path::new("/a"), 0, 0);
        assert_eq!(c.truncated(1, id(2), Path::new("/a"), 1, false), 1);
        assert_eq!(c.truncated(1, id(3), Path::new("/a"), 2, false), 8);
        assert!(!c.is_gone(&id(3)));
        assert_eq!(c.lookup(&id(3)).map(|cp| cp.generation), Some(8));
        let span = c.issue(1, 8, 40);
        c.delivered(&[span]);
        assert_eq!(
            c.lookup(&id(3)),
            Some(Checkpoint {
                generation: 8,
                offset: 40
            })
        );
        // The content it replaced is a tombstone now.
        assert!(c.is_gone(&id(2)));
    }

    #[test]
    fn closed_files_are_complete_once_acknowledged_to_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        let none = std::collections::HashSet::new();
        follow(&c, 1, id(1), Path::new("/a"), 0, 0);
        let a = c.issue(1, 0, 100);
        assert!(
            c.unfinished(&none).is_empty(),
            "followed files are not unfinished"
        );
        // Rotated, drained and closed at 100 with the span in flight.
        c.unfollow(1, Some(100));
        let u = c.unfinished(&none);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].known_unread, 100);
        assert_eq!(u[0].source.as_deref(), Some("test"));
        c.delivered(&[a]);
        assert!(c.unfinished(&none).is_empty(), "acknowledged to its end");
        // Stopped (not closed): unfinished whatever was acknowledged.
        follow(&c, 2, id(2), Path::new("/b"), 0, 0);
        let b = c.issue_with_tail(2, 0, 50, Some(7), None);
        c.delivered(&[b]);
        c.unfollow(2, None);
        c.persist().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        let u = c.unfinished(&none);
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].checkpoint.offset, u[0].tail), (50, Some(7)));
        assert_eq!(c.lookup_tail(&id(2)), Some(7));
        c.forget(&id(2));
        // A tombstone: not looked for again, its generation remembered.
        assert!(c.unfinished(&none).is_empty());
        assert!(c.is_gone(&id(2)) && c.snapshot(&id(2)).is_none());
        c.persist().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        assert!(c.is_gone(&id(2)));
        assert!(c.unfinished(&none).is_empty());
    }
}
