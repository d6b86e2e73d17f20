//! Read-only `_id` lookups, for `logship audit`: which of these document
//! `_id`s do the indices matching a pattern hold, and how many times.
//!
//! One request per batch of ids: `POST <pattern>/_search` with an `ids`
//! query, `_source: false` and `size` room for every id twice (so a line
//! indexed twice, in two indices, shows), through the configured hosts,
//! TLS, credentials and headers (the sink's own HTTP client, `client`).
//! A pattern and not one index per line because a line's index can
//! depend on when it was read (plain lines are stamped with their read
//! time) and on rollover or data streams, which the `_id` does not.
//!
//! Promises: it only searches (never indexes, deletes or refreshes). A
//! search that did not cover every shard (`_shards.failed`, `timed_out`)
//! is an error, never a "not found". Connection errors, 429 and 5xx are
//! retried on the next host with capped backoff for at most
//! [`RETRY_FOR`]; then the lookup fails with the last error.
//!
//! Search is near-real-time: a document indexed less than a refresh
//! interval (1 s by default) before the lookup may not be found yet.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::SinkError;
use crate::config::ElasticsearchConfig;
use crate::encode::DocumentId;

/// How long a failing lookup is retried before the audit gives up.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
/// Elasticsearch's default `index.max_result_window`: `size` stays under it.
const MAX_SIZE: usize = 10_000;
/// The most ids one request may ask for (each may have two hits).
pub const MAX_IDS: usize = MAX_SIZE / 2;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("searching {pattern} on {host}: {reason}")]
    Failed {
        pattern: String,
        host: String,
        reason: String,
    },
}

/// Looks `_id`s up (see module doc). Cheap to share: one per audit.
pub struct IdLookup {
    client: reqwest::Client,
    /// Each host's base URL (with credentials) and its display form.
    bases: Vec<(reqwest::Url, String)>,
    next: AtomicUsize,
    requests: AtomicU64,
}

#[derive(Deserialize)]
struct SearchResponse {
    #[serde(default)]
    timed_out: bool,
    #[serde(default, rename = "_shards")]
    shards: Option<Shards>,
    #[serde(default)]
    hits: Option<Hits>,
}

#[derive(Deserialize)]
struct Shards {
    #[serde(default)]
    failed: u64,
}

#[derive(Deserialize)]
struct Hits {
    #[serde(default)]
    hits: Vec<Hit>,
}

#[derive(Deserialize)]
struct Hit {
    #[serde(rename = "_id")]
    id: String,
}

impl IdLookup {
    /// A lookup through the hosts, TLS and credentials of `cfg`.
    pub fn new(cfg: &ElasticsearchConfig) -> Result<Self, SinkError> {
        let hosts = super::hosts::Hosts::new(&cfg.hosts)?;
        let timeout = if cfg.request_timeout.is_zero() {
            super::request::DEFAULT_REQUEST_TIMEOUT
        } else {
            cfg.request_timeout
        };
        Ok(IdLookup {
            client: super::client::build(cfg, timeout)?,
            bases: hosts.bases(),
            next: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        })
    }

    /// Requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// How many documents with each of `ids` (at most [`MAX_IDS`]) the
    /// indices matching `pattern` hold, in the order of `ids` (0: none).
    pub async fn count(&self, pattern: &str, ids: &[DocumentId]) -> Result<Vec<u32>, LookupError> {
        let size = (ids.len() * 2).clamp(1, MAX_SIZE);
        let body = serde_json::json!({
            "query": {"ids": {"values": ids.iter().map(DocumentId::as_str).collect::<Vec<_>>()}},
            "size": size,
            "_source": false,
            "track_total_hits": false,
        })
        .to_string();
        let response = self.search(pattern, body).await?;
        let hits = response.hits.as_ref().map_or(0, |h| h.hits.len());
        if hits >= size && ids.len() > 1 {
            // As many hits as asked for: some ids may have been left out
            // (lines in three indices or more). Ask again in halves; one id
            // alone has all its `size` hits (present, and how many copies
            // at least).
            let (a, b) = ids.split_at(ids.len() / 2);
            let mut counts = Box::pin(self.count(pattern, a)).await?;
            counts.extend(Box::pin(self.count(pattern, b)).await?);
            return Ok(counts);
        }
        let mut counts = vec![0u32; ids.len()];
        let position: std::collections::HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        for hit in response.hits.map(|h| h.hits).unwrap_or_default() {
            if let Some(&i) = position.get(hit.id.as_str()) {
                counts[i] += 1;
            }
        }
        Ok(counts)
    }

    /// One search, retried (module doc).
    async fn search(&self, pattern: &str, body: String) -> Result<SearchResponse, LookupError> {
        let deadline = Instant::now() + RETRY_FOR;
        let mut backoff = Duration::from_millis(200);
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
            let (base, shown) = &self.bases[i];
            let fail = |reason: String| LookupError::Failed {
                pattern: pattern.to_owned(),
                host: shown.clone(),
                reason,
            };
            let mut url = base.clone();
            let path = format!("{}/{pattern}/_search", url.path().trim_end_matches('/'));
            url.set_path(&path);
            url.set_query(Some(
                "ignore_unavailable=true&allow_no_indices=true\
                 &filter_path=timed_out,_shards.failed,hits.hits._id",
            ));
            self.requests.fetch_add(1, Ordering::Relaxed);
            let result = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let retryable = match result {
                Ok(r) if r.status().is_success() => {
                    let bytes = r
                        .bytes()
                        .await
                        .map_err(|e| fail(super::client::error_chain(&e)))?;
                    let parsed: SearchResponse = serde_json::from_slice(&bytes)
                        .map_err(|e| fail(format!("unreadable answer: {e}")))?;
                    let failed = parsed.shards.as_ref().map_or(0, |s| s.failed);
                    if failed == 0 && !parsed.timed_out {
                        return Ok(parsed);
                    }
                    format!(
                        "incomplete answer ({failed} shards failed, timed out: {})",
                        parsed.timed_out
                    )
                }
                Ok(r) => {
                    let status = r.status();
                    let text: String = r
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect();
                    let reason = format!("HTTP {status}: {text}");
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return Err(fail(reason));
                    }
                    reason
                }
                Err(e) => super::client::error_chain(&e),
            };
            if Instant::now() + backoff > deadline {
                return Err(fail(retryable));
            }
            tracing::warn!(host = %shown, %pattern, error = %retryable, "id lookup failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
