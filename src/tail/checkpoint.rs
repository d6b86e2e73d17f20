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
//!    "last_seen":1764118923}
//! ]}
//! ```
//!
//! `last_seen` is Unix seconds. An entry whose file is no longer followed is
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

use super::watermark::AckWatermark;
use crate::buffer::Acknowledger;
use crate::event::{FileIdentity, FileKey, Generation, SpanOrigin};

/// Store file name inside `data_dir`.
pub const FILE_NAME: &str = "checkpoints.json";
const TMP_NAME: &str = "checkpoints.json.tmp";
const FORMAT_VERSION: u32 = 1;
/// How long the entry of a file no longer followed is kept.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Followed files refresh their `last_seen` at least this often, even when
/// nothing else changed.
const REFRESH_INTERVAL: u64 = 3600;

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
}

#[derive(Debug)]
struct Stored {
    generation: Generation,
    offset: u64,
    path: PathBuf,
    last_seen: u64,
    /// Number of followers (keys) currently following this identity.
    followers: u32,
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
    dirty: bool,
    last_write: u64,
}

/// Per-file ack watermarks and the persisted checkpoint store (see module doc).
pub struct Checkpointer {
    dir: PathBuf,
    started: u64,
    state: Mutex<State>,
    /// Serialises writers of the file (the periodic persister and the final write).
    write_lock: Mutex<()>,
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
                    state.stored.insert(
                        e.identity,
                        Stored {
                            generation: e.generation,
                            offset: e.offset,
                            path: e.path,
                            last_seen: e.last_seen,
                            followers: 0,
                        },
                    );
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
            write_lock: Mutex::new(()),
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

    /// Starts tracking file `key`, whose follower reads `identity` from
    /// `offset` in `generation`. Records that as the file's checkpoint
    /// unless the stored one is further along.
    pub fn follow(
        &self,
        key: FileKey,
        identity: FileIdentity,
        path: &Path,
        generation: Generation,
        offset: u64,
    ) {
        let now = unix_now();
        let mut st = self.state();
        st.followed.insert(
            key,
            Followed {
                identity,
                watermark: AckWatermark::new(generation, offset),
                released: false,
            },
        );
        let dirty = upsert(
            &mut st.stored,
            identity,
            path,
            generation,
            offset,
            now,
            true,
        );
        st.dirty |= dirty;
    }

    /// File `key` was truncated in place and will be read again from 0 as
    /// `generation`, possibly under a new `identity` (its first line changed).
    pub fn truncated(
        &self,
        key: FileKey,
        identity: FileIdentity,
        path: &Path,
        generation: Generation,
    ) {
        let now = unix_now();
        let mut st = self.state();
        let st = &mut *st;
        let Some(f) = st.followed.get_mut(&key) else {
            return;
        };
        f.watermark.reset(generation);
        if f.identity != identity {
            if let Some(old) = st.stored.get_mut(&f.identity) {
                old.followers = old.followers.saturating_sub(1);
                old.last_seen = now;
            }
            f.identity = identity;
            upsert(&mut st.stored, identity, path, generation, 0, now, true);
        } else {
            upsert(&mut st.stored, identity, path, generation, 0, now, false);
        }
        st.dirty = true;
    }

    /// Registers a span of file `key` ending at `end` and returns its origin.
    pub fn issue(&self, key: FileKey, generation: Generation, end: u64) -> SpanOrigin {
        let mut st = self.state();
        let seq = match st.followed.get_mut(&key) {
            Some(f) => f.watermark.issue(generation, end),
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
    pub fn unfollow(&self, key: FileKey) {
        let now = unix_now();
        let mut st = self.state();
        let st = &mut *st;
        let Some(f) = st.followed.get_mut(&key) else {
            return;
        };
        f.released = true;
        let identity = f.identity;
        if f.watermark.in_flight() == 0 {
            st.followed.remove(&key);
        }
        if let Some(s) = st.stored.get_mut(&identity) {
            s.followers = s.followers.saturating_sub(1);
            s.last_seen = now;
        }
        st.dirty = true;
    }

    /// The follower of `key` gave its file up at `offset` of `generation`
    /// (past `buffer.max_open_files`): the stored checkpoint moves there at
    /// once, past lines never acknowledged, so that nothing waits for them;
    /// acknowledgements of its spans still in flight are ignored.
    pub fn give_up(&self, key: FileKey, path: &Path, generation: Generation, offset: u64) {
        let now = unix_now();
        let mut st = self.state();
        let st = &mut *st;
        let Some(f) = st.followed.remove(&key) else {
            return;
        };
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
        }
        st.dirty = true;
    }

    /// The committed `(generation, offset)` of file `key` in this run.
    pub fn committed(&self, key: FileKey) -> Option<Checkpoint> {
        self.state().followed.get(&key).map(|f| Checkpoint {
            generation: f.watermark.generation(),
            offset: f.watermark.committed(),
        })
    }

    /// Writes the store atomically (temp file, fsync, rename) if it changed.
    pub fn persist(&self) -> Result<(), CheckpointError> {
        self.persist_at(unix_now())
    }

    /// [`Checkpointer::persist`] as if the time were `now` (Unix seconds).
    pub fn persist_at(&self, now: u64) -> Result<(), CheckpointError> {
        let _writer = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let entries = {
            let mut st = self.state();
            let retention = RETENTION.as_secs();
            let started = self.started;
            let before = st.stored.len();
            st.stored.retain(|_, s| {
                s.followers > 0 || now.saturating_sub(s.last_seen.max(started)) <= retention
            });
            if st.stored.len() != before {
                st.dirty = true;
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
                    }
                })
                .collect();
            entries.sort_by(|a, b| a.path.cmp(&b.path).then(a.identity.cmp(&b.identity)));
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
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(err)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
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
                s.generation = generation;
                s.offset = offset;
                changed = true;
            }
            if s.path != path {
                s.path = path.to_path_buf();
                changed = true;
            }
            if new_follower {
                s.followers += 1;
                s.last_seen = now;
            }
            changed
        }
        None => {
            stored.insert(
                identity,
                Stored {
                    generation,
                    offset,
                    path: path.to_path_buf(),
                    last_seen: now,
                    followers: u32::from(new_follower),
                },
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
            let Some(f) = st.followed.get_mut(&span.file) else {
                continue;
            };
            if !f.watermark.ack(span.generation, span.seq) {
                continue;
            }
            let (generation, offset) = (f.watermark.generation(), f.watermark.committed());
            let identity = f.identity;
            if f.released && f.watermark.in_flight() == 0 {
                st.followed.remove(&span.file);
            }
            if let Some(s) = st.stored.get_mut(&identity)
                && (generation, offset) > (s.generation, s.offset)
            {
                s.generation = generation;
                s.offset = offset;
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
            c.follow(7, id(1), &path, 2, 100);
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
        c.follow(3, id(3), &path, 0, 0);
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

    #[test]
    fn unchanged_store_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        c.follow(1, id(1), Path::new("/x"), 0, 0);
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
            c.follow(1, id(1), Path::new("/a"), 0, 42);
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
        c.follow(1, id(1), p, 0, 0);
        let a = c.issue(1, 0, 100);
        let b = c.issue(1, 0, 200);
        c.delivered(&[a]);
        assert_eq!(c.lookup(&id(1)).unwrap().offset, 100);
        c.truncated(1, id(1), p, 1);
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
        c.follow(1, id(1), Path::new("/f"), 0, 0);
        let a = c.issue(1, 0, 100);
        c.unfollow(1);
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
        c.follow(1, id(1), p, 0, 0);
        let old = c.issue(1, 0, 100);
        c.unfollow(1);
        c.follow(2, id(1), p, 0, 300);
        c.delivered(&[old]);
        assert_eq!(c.lookup(&id(1)).unwrap().offset, 300);
    }

    #[test]
    fn entries_of_unfollowed_files_expire_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpointer::open(dir.path()).unwrap();
        c.follow(1, id(1), Path::new("/gone"), 0, 10);
        c.follow(2, id(2), Path::new("/live"), 0, 20);
        c.unfollow(1);
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
}
