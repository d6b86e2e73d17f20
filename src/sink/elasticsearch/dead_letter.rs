//! The dead-letter file: documents Elasticsearch rejected for good.
//!
//! `{data_dir}/dead-letter.ndjson`, appended to, one JSON object per line per
//! rejected document:
//!
//! ```text
//! {"time":"2026-11-26T01:02:03.123Z",        // when it was rejected (UTC, RFC 3339)
//!  "index":"logs-2026.11.26","id":"…",       // from the item's action line (null if unreadable)
//!  "status":400,                             // the item's HTTP status
//!  "error":{"type":"…","reason":"…","caused_by":{…}},  // as Elasticsearch sent it
//!  "given_up":{"first_failure":"…","attempts":57},     // only for a document given up
//!  "document":{…}}                           // the document line: as JSON if it parses, else a string
//! ```
//!
//! A document *given up* after failing for `retry.give_up_after` (see
//! `delivery`) has the `given_up` object: when its first attempt failed and
//! how many attempts failed. Its `status` and `error` are those of the last
//! failure, with `status` 0 when there was no HTTP answer (`error.type`
//! `connection_broken`: a cut connection; `delivery_panicked`) and a
//! `reason` that says what kept failing, since when and for how long. Replay
//! treats it like any other record.
//!
//! A batch's dead letters are written in one `write_all`, then flushed and
//! `sync_data`'d before the batch is acknowledged: once durable here a line
//! is owned by this file and its source checkpoint may move past it. A failed
//! write is rolled back (the file is cut back to its length before it), so a
//! retried write never leaves a half line.
//!
//! Rotation by size: before an append that would take the file past
//! `max_bytes` (and the file is not empty), `dead-letter.ndjson` is renamed
//! to `dead-letter.1.ndjson`, `.1` to `.2`, … and the oldest beyond
//! `max_files` rotated files is deleted (logged as an error with its size:
//! the cap is the one place dead letters are given up, by the operator's
//! choice). So the disk used stays under about `(max_files + 1) × max_bytes`
//! plus one batch. `logship replay --dead-letter FILE --config CONFIG`
//! re-ships a file (see `replay`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::SinkError;
use super::response::{ActionMeta, ItemError};

pub const FILE_NAME: &str = "dead-letter.ndjson";

/// Size cap of one dead-letter file and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 64 << 20,
            max_files: 4,
        }
    }
}

/// The path of rotated file `n` (1 = newest) next to `path`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    path.with_file_name(format!("dead-letter.{n}.ndjson"))
}

/// The append-only dead-letter file, shared by all batch tasks.
#[derive(Clone)]
pub struct DeadLetterFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    rotation: Rotation,
}

/// One rejected document, ready to be written.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub meta: ActionMeta,
    pub status: u16,
    pub error: ItemError,
    /// Set for a document given up after `retry.give_up_after`.
    pub given_up: Option<GivenUp>,
    /// The document line, without its newline.
    pub document: &'a [u8],
}

/// Why a document was given up rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenUp {
    /// When its first attempt failed.
    pub first_failure: DateTime<Utc>,
    /// Failed attempts (requests, or deliveries that panicked).
    pub attempts: u32,
}

#[derive(Serialize)]
struct Head<'a> {
    time: &'a str,
    index: Option<&'a str>,
    id: Option<&'a str>,
    status: u16,
    error: ErrorOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    given_up: Option<GivenUpOut>,
}

#[derive(Serialize)]
struct GivenUpOut {
    first_failure: String,
    attempts: u32,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caused_by: Option<&'a serde_json::Value>,
}

impl DeadLetterFile {
    /// Opens (creating if needed) `{data_dir}/dead-letter.ndjson` for appending.
    pub fn open(data_dir: &Path) -> Result<Self, SinkError> {
        Self::open_with(data_dir, Rotation::default())
    }

    /// [`open`](Self::open) with rotation limits.
    pub fn open_with(data_dir: &Path, rotation: Rotation) -> Result<Self, SinkError> {
        let path = data_dir.join(FILE_NAME);
        let err = |source| SinkError::DeadLetter {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(err)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        Ok(DeadLetterFile {
            path,
            file: Arc::new(Mutex::new(file)),
            rotation,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the already-serialised `records` and makes them durable.
    /// Blocking: call from the blocking pool.
    pub fn append_durably(&self, records: &[u8]) -> std::io::Result<()> {
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut before = file.metadata()?.len();
        if before > 0 && before + records.len() as u64 > self.rotation.max_bytes {
            *file = self.rotate()?;
            before = 0;
        }
        let result = file
            .write_all(records)
            .and_then(|()| file.flush())
            .and_then(|()| file.sync_data());
        if result.is_err() {
            // Best effort: do not leave a partial line for the retry to follow.
            let _ = file.set_len(before);
        }
        result
    }
}

impl DeadLetterFile {
    /// Shifts the rotated files up by one (deleting the oldest beyond the
    /// cap), renames the current file to `.1`, and opens a fresh one.
    fn rotate(&self) -> std::io::Result<File> {
        let keep = self.rotation.max_files;
        let oldest = rotated_path(&self.path, keep.max(1));
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            if let Ok(meta) = std::fs::metadata(&oldest) {
                tracing::error!(
                    path = %oldest.display(), bytes = meta.len(),
                    "dead-letter files exceed their cap (dead_letter.max_files): deleting the oldest"
                );
                std::fs::remove_file(&oldest)?;
            }
            for n in (1..keep).rev() {
                let from = rotated_path(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated_path(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated_path(&self.path, 1))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(file)
    }
}

/// Appends `letter` as one JSON line to `out`.
pub fn serialize(letter: &DeadLetter<'_>, out: &mut Vec<u8>) {
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let head = Head {
        time: &time,
        index: letter.meta.index.as_deref(),
        id: letter.meta.id.as_deref(),
        status: letter.status,
        error: ErrorOut {
            kind: letter.error.kind.as_deref(),
            reason: letter.error.reason.as_deref(),
            caused_by: letter.error.caused_by.as_ref(),
        },
        given_up: letter.given_up.as_ref().map(|g| GivenUpOut {
            first_failure: g.first_failure.to_rfc3339_opts(SecondsFormat::Millis, true),
            attempts: g.attempts,
        }),
    };
    // Serialising these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &head);
    // Replace the closing brace with the document field.
    out.pop();
    out.extend_from_slice(b",\"document\":");
    let document = letter.document.trim_ascii();
    if !document.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(document).is_ok() {
        // Valid JSON on one line (it was one NDJSON line): copy it verbatim.
        out.extend_from_slice(document);
    } else {
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(letter.document));
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(document: &[u8]) -> DeadLetter<'_> {
        DeadLetter {
            meta: ActionMeta {
                index: Some("logs-x".into()),
                id: Some("id-1".into()),
            },
            status: 400,
            error: ItemError {
                kind: Some("document_parsing_exception".into()),
                reason: Some("failed to parse field [message]".into()),
                caused_by: Some(
                    serde_json::json!({"type":"illegal_argument_exception","reason":"r"}),
                ),
            },
            given_up: None,
            document,
        }
    }

    #[test]
    fn records_are_one_json_object_per_line() {
        let mut out = Vec::new();
        serialize(&letter(br#"{"message":"hi","n":1}"#), &mut out);
        serialize(&letter(b"not json \"quoted\""), &mut out);
        let text = std::str::from_utf8(&out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let first = &lines[0];
        assert_eq!(first["index"], "logs-x");
        assert_eq!(first["id"], "id-1");
        assert_eq!(first["status"], 400);
        assert_eq!(first["error"]["type"], "document_parsing_exception");
        assert_eq!(first["error"]["reason"], "failed to parse field [message]");
        assert_eq!(
            first["error"]["caused_by"]["type"],
            "illegal_argument_exception"
        );
        assert_eq!(first["document"], serde_json::json!({"message":"hi","n":1}));
        assert!(
            chrono::DateTime::parse_from_rfc3339(first["time"].as_str().unwrap()).is_ok(),
            "{first}"
        );
        assert_eq!(lines[1]["document"], "not json \"quoted\"");
        assert!(first.get("given_up").is_none(), "{first}");
    }

    #[test]
    fn given_up_records_say_when_and_how_often_and_replay_reads_them() {
        let first_failure = DateTime::parse_from_rfc3339("2026-11-26T01:02:03.456Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut out = Vec::new();
        serialize(
            &DeadLetter {
                status: 0,
                error: ItemError {
                    kind: Some("connection_broken".into()),
                    reason: Some("given up after …: the connection was cut 9 times".into()),
                    caused_by: None,
                },
                given_up: Some(GivenUp {
                    first_failure,
                    attempts: 9,
                }),
                ..letter(br#"{"message":"big"}"#)
            },
            &mut out,
        );
        let line = std::str::from_utf8(&out).unwrap();
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["status"], 0);
        assert_eq!(record["error"]["type"], "connection_broken");
        assert_eq!(
            record["given_up"],
            serde_json::json!({"first_failure": "2026-11-26T01:02:03.456Z", "attempts": 9})
        );
        assert_eq!(record["document"], serde_json::json!({"message": "big"}));
        let item = super::super::replay::to_item(line.trim_end()).unwrap();
        assert_eq!(
            String::from_utf8(item).unwrap(),
            "{\"create\":{\"_id\":\"id-1\",\"_index\":\"logs-x\"}}\n{\"message\":\"big\"}\n"
        );
    }

    #[test]
    fn append_creates_the_file_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested");
        let dl = DeadLetterFile::open(&data_dir).unwrap();
        dl.append_durably(b"{\"a\":1}\n").unwrap();
        let again = DeadLetterFile::open(&data_dir).unwrap();
        again.append_durably(b"{\"a\":2}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(data_dir.join(FILE_NAME)).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
    }

    #[test]
    fn rotation_caps_file_size_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: 100,
            max_files: 2,
        };
        let dl = DeadLetterFile::open_with(dir.path(), rotation).unwrap();
        let record = |i: usize| format!("{{\"n\":{i:040}}}\n");
        for i in 0..10 {
            dl.append_durably(record(i).as_bytes()).unwrap();
        }
        let current = dir.path().join(FILE_NAME);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        // 47-byte records, two per file: the newest two files hold 8, 9 and 6, 7 ...
        let len = record(0).len();
        let per_file = (100 / len).max(1);
        assert_eq!(
            read(&current).len(),
            len * (10 - (10 - 1) / per_file * per_file)
        );
        for p in [
            &current,
            &rotated_path(&current, 1),
            &rotated_path(&current, 2),
        ] {
            assert!(
                read(p).len() as u64 <= rotation.max_bytes,
                "{}",
                p.display()
            );
        }
        assert!(!rotated_path(&current, 3).exists());
        assert!(read(&current).contains(&record(9)));
        assert!(read(&rotated_path(&current, 1)).contains(&record(9 - per_file)));
    }

    #[test]
    fn unopenable_path_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        match DeadLetterFile::open(&blocker) {
            Err(SinkError::DeadLetter { path, .. }) => assert_eq!(path, blocker.join(FILE_NAME)),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
