//! `logship replay --dead-letter FILE --config CONFIG`: re-ships the
//! documents of a dead-letter file (format in [`super::dead_letter`]) once
//! the cause of their rejection is fixed (a mapping, a pipeline, a
//! permission).
//!
//! Each record is sent again as `create` with its original `_index` and `_id`
//! through the configured hosts, TLS and credentials, so a record that did
//! reach the index meanwhile answers 409 and counts as a duplicate, never as
//! a second copy. Whole-request failures and item-level 429/5xx are retried
//! with capped backoff for at most [`RETRY_FOR`]; a 413 halves the chunk.
//!
//! Promises: the input file is never modified. Records that are still not
//! delivered (rejected again, unreplayable because the document was not JSON
//! or the index is unknown, or still failing after the retries) are written,
//! verbatim, to `FILE.remaining` (replaced on each run, removed when
//! nothing remains), so replaying that file later picks up exactly what is
//! left.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::SinkError;
use super::request::{Attempt, BulkBody, BulkRequester};
use super::response::BulkItemOutcome;
use crate::config::ElasticsearchConfig;

/// How long retryable failures are retried before records are set aside.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
/// Records per request (halved on 413).
const CHUNK: usize = 500;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub records: u64,
    pub delivered: u64,
    /// Already in the index (409).
    pub duplicates: u64,
    /// Not delivered; written to [`remaining`](Self::remaining).
    pub not_delivered: u64,
    pub remaining: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
}

struct Record {
    /// The line as read, for `FILE.remaining`.
    line: String,
    /// Action and document lines, each ending in `\n`.
    item: Vec<u8>,
}

/// The bulk item for one dead-letter record, or why it cannot be replayed.
pub(super) fn to_item(line: &str) -> Result<Vec<u8>, String> {
    let record: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let index = record["index"]
        .as_str()
        .ok_or("the record names no index")?;
    let document = &record["document"];
    if !document.is_object() {
        return Err("the document is not a JSON object (it was not valid JSON)".into());
    }
    let mut action = serde_json::json!({"create": {"_index": index}});
    if let Some(id) = record["id"].as_str() {
        action["create"]["_id"] = Value::from(id);
    }
    let mut item = action.to_string().into_bytes();
    item.push(b'\n');
    item.extend_from_slice(document.to_string().as_bytes());
    item.push(b'\n');
    Ok(item)
}

/// Re-ships `file` to the cluster of `cfg`.
pub async fn replay(cfg: &ElasticsearchConfig, file: &Path) -> Result<ReplaySummary, ReplayError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplayError::Io { path, source }
    };
    let hosts = super::hosts::Hosts::new(&cfg.hosts)?;
    let client = super::client::build(cfg, cfg.request_timeout)?;
    let requester = BulkRequester::new(client, hosts);

    let reader = BufReader::new(std::fs::File::open(file).map_err(io(file))?);
    let mut summary = ReplaySummary::default();
    let mut remaining: Vec<String> = Vec::new();
    let mut records = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(io(file))?;
        if line.trim().is_empty() {
            continue;
        }
        summary.records += 1;
        match to_item(&line) {
            Ok(item) => records.push(Record { line, item }),
            Err(why) => {
                tracing::error!(file = %file.display(), line = n + 1, reason = %why, "record cannot be replayed");
                remaining.push(line);
            }
        }
    }

    let mut pending: Vec<Record> = records;
    let mut chunk = CHUNK;
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = cfg.retry.initial_backoff;
    while !pending.is_empty() {
        let mut retry = Vec::new();
        let mut progress = false;
        let mut rest = pending.into_iter().peekable();
        while rest.peek().is_some() {
            let part: Vec<Record> = rest.by_ref().take(chunk).collect();
            let mut body = Vec::new();
            for r in &part {
                body.extend_from_slice(&r.item);
            }
            let body = BulkBody {
                bytes: body.into(),
                gzip: false,
            };
            let (host, attempt) = requester.send(&body, part.len()).await;
            match attempt {
                Attempt::Bulk(items) => {
                    progress = true;
                    for (record, item) in part.into_iter().zip(items) {
                        match item.outcome() {
                            BulkItemOutcome::Delivered => summary.delivered += 1,
                            BulkItemOutcome::Duplicate => summary.duplicates += 1,
                            BulkItemOutcome::Retry => retry.push(record),
                            BulkItemOutcome::Reject => {
                                let error = item.error.unwrap_or_default();
                                tracing::error!(
                                    status = item.status,
                                    error.type = error.kind_or_unknown(),
                                    error.reason = error.reason.as_deref().unwrap_or(""),
                                    "rejected again"
                                );
                                remaining.push(record.line);
                            }
                        }
                    }
                }
                Attempt::TooLarge if part.len() == 1 => {
                    tracing::error!("a single document is too large for the cluster (413)");
                    remaining.extend(part.into_iter().map(|r| r.line));
                }
                Attempt::TooLarge => {
                    chunk = (part.len() / 2).max(1);
                    retry.extend(part);
                    progress = true;
                }
                Attempt::Failed(failure) => {
                    tracing::warn!(host, error = %failure, "request failed; will retry");
                    retry.extend(part);
                }
            }
        }
        pending = retry;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            tracing::error!(
                records = pending.len(),
                "still failing after {}; setting them aside",
                humantime::format_duration(RETRY_FOR)
            );
            remaining.extend(pending.drain(..).map(|r| r.line));
            break;
        }
        if progress {
            backoff = cfg.retry.initial_backoff;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.retry.max_backoff.min(Duration::from_secs(5)));
    }

    summary.not_delivered = remaining.len() as u64;
    let mut out = file.as_os_str().to_owned();
    out.push(".remaining");
    let out = PathBuf::from(out);
    if remaining.is_empty() {
        match std::fs::remove_file(&out) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&out)(e)),
        }
    } else {
        let mut f = std::fs::File::create(&out).map_err(io(&out))?;
        for line in &remaining {
            writeln!(f, "{line}").map_err(io(&out))?;
        }
        f.sync_all().map_err(io(&out))?;
        summary.remaining = Some(out);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_create_items_with_their_id() {
        let item = to_item(
            r#"{"time":"t","index":"logs-a","id":"abc","status":400,"error":{},"document":{"message":"hi"}}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(item).unwrap(),
            "{\"create\":{\"_id\":\"abc\",\"_index\":\"logs-a\"}}\n{\"message\":\"hi\"}\n"
        );
        let no_id = to_item(r#"{"index":"logs-a","id":null,"document":{}}"#).unwrap();
        assert!(!String::from_utf8(no_id).unwrap().contains("_id"));
        assert!(to_item(r#"{"index":"logs-a","document":"not json"}"#).is_err());
        assert!(to_item(r#"{"index":null,"document":{}}"#).is_err());
        assert!(to_item("garbage").is_err());
    }
}
