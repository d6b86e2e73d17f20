//! Telemetry: process-wide counters, tracing setup, the HTTP endpoints.
//!
//! [`Metrics`] is a plain set of atomic counters every stage increments;
//! [`metrics`] turns them into the Prometheus exposition at scrape time and
//! [`http`] serves it with `/healthz`, `/readyz` and `/api/v1/files`
//! ([`status`]). Counters only ever go up; gauges are set by their owner.
//! [`SinkStats`] holds what the sink reports per bulk request (latency and
//! size histograms, in-flight requests, recent outcomes for `/readyz`).

pub mod http;
pub mod logging;
pub mod metrics;
pub mod status;

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Counters shared by all stages (`Arc<Metrics>`).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Physical lines read from files.
    pub lines_read: AtomicU64,
    /// Bytes read from files.
    pub bytes_read: AtomicU64,
    /// Logical events encoded into bulk items.
    pub events_encoded: AtomicU64,
    /// Lines shipped with invalid UTF-8 replaced.
    pub invalid_utf8_lines: AtomicU64,
    /// Lines that did not parse in their file's format (shipped as plain).
    pub unparsed_lines: AtomicU64,
    /// Lines cut at `max_line_bytes`.
    pub truncated_lines: AtomicU64,
    /// Bytes dropped from cut lines.
    pub truncated_bytes: AtomicU64,
    /// Items acknowledged by Elasticsearch with 2xx.
    pub items_delivered: AtomicU64,
    /// Items answered 409 for our own `_id` (already indexed: delivered).
    pub items_duplicate: AtomicU64,
    /// Item-level retries (429/5xx items sent again).
    pub items_retried: AtomicU64,
    /// Items written to the dead-letter file (rejected or given up).
    pub items_dead_lettered: AtomicU64,
    /// Of those, items given up after failing for `retry.give_up_after`.
    pub items_given_up: AtomicU64,
    /// Bulk requests that got a bulk response.
    pub requests_ok: AtomicU64,
    /// Bulk requests that failed as a whole (connect error, 429, 5xx, not a bulk response).
    pub requests_failed: AtomicU64,
    /// Files opened for reading.
    pub files_opened: AtomicU64,
    /// Files closed (read to the end after rotation or deletion).
    pub files_closed: AtomicU64,
    /// Rotations by rename detected.
    pub rotations: AtomicU64,
    /// Truncations (copytruncate) detected.
    pub truncations: AtomicU64,
    /// Multiline events handed out with more than one line.
    pub multiline_events: AtomicU64,
    /// Multiline events split at `max_lines`/`max_bytes`.
    pub multiline_splits: AtomicU64,
    /// Checkpoint writes that failed.
    pub checkpoint_write_errors: AtomicU64,
    /// Unread bytes of deleted files given up past `buffer.max_open_files`.
    pub max_open_files_lost_bytes: AtomicU64,
    /// Files with unacknowledged lines that were gone (deleted, or
    /// truncated in place) when logship started again.
    pub gone_while_stopped_files: AtomicU64,
    /// Bytes of those files known to have been lost (read before the stop
    /// but not acknowledged; what was written later is unknown).
    pub gone_while_stopped_bytes: AtomicU64,
    /// Files rotated away while logship was stopped, found again (renamed
    /// or compressed) and read to their end after the restart.
    pub rotated_while_stopped: AtomicU64,
    /// Times a followed file's metadata were re-serialised because its pod
    /// or namespace changed.
    pub k8s_metadata_updates: AtomicU64,
    /// Pod log files whose pod was not in the metadata cache after `metadata_wait`.
    pub k8s_files_without_metadata: AtomicU64,
    /// Lines of such files shipped before their pod became known.
    pub k8s_lines_without_metadata: AtomicU64,
    /// Pod log files not read because a pod or namespace annotation excludes them.
    pub k8s_files_excluded: AtomicU64,
    /// Messages of `logship.io/format: json` pods that were not JSON objects
    /// (shipped unparsed).
    pub json_parse_failures: AtomicU64,
    /// Lines dropped and failures per processor step name.
    pub processors: crate::processors::ProcessorMetrics,
    /// Per-request figures of the sink (histograms, in flight, health).
    pub sink: SinkStats,
}

/// What the sink reports about each bulk request attempt.
#[derive(Debug)]
pub struct SinkStats {
    /// Seconds from sending a bulk request to having its response.
    pub request_seconds: Histogram,
    /// Bytes of each bulk request body as sent (after gzip).
    pub request_bytes: Histogram,
    /// Items (documents) in each bulk request.
    pub request_items: Histogram,
    /// Bulk requests sent and not yet answered.
    pub in_flight: AtomicI64,
    /// Whole-request failures since the last bulk response (0: healthy).
    pub consecutive_failures: AtomicU64,
    /// The last whole-request failure, for `/readyz`.
    pub last_failure: Mutex<Option<String>>,
}

impl Default for SinkStats {
    fn default() -> Self {
        Self {
            // 5 ms .. ~82 s
            request_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            // 1 KiB .. 64 MiB
            request_bytes: Histogram::new(exponential_buckets(1024.0, 4.0, 9)),
            // 1 .. 65536 items
            request_items: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            in_flight: AtomicI64::new(0),
            consecutive_failures: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        }
    }
}

/// One bulk request in flight: counted in `in_flight` until finished or dropped.
pub struct RequestTimer<'a> {
    stats: &'a SinkStats,
    started: Instant,
}

impl SinkStats {
    /// Call just before sending a request of `bytes` body bytes and `items` items.
    pub fn start(&self, bytes: usize, items: usize) -> RequestTimer<'_> {
        self.request_bytes.observe(bytes as f64);
        self.request_items.observe(items as f64);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestTimer {
            stats: self,
            started: Instant::now(),
        }
    }

    /// `None`: the sink answers bulk requests; `Some(reason)`: the last ones failed.
    pub fn unreachable(&self) -> Option<String> {
        let failures = self.consecutive_failures.load(Ordering::Relaxed);
        if failures == 0 {
            return None;
        }
        let last = self
            .last_failure
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
            .unwrap_or_default();
        Some(format!(
            "the last {failures} bulk request(s) failed as a whole: {last}"
        ))
    }
}

impl RequestTimer<'_> {
    /// The request got a bulk response (whatever its items' outcomes).
    pub fn answered(self) {
        self.stats.consecutive_failures.store(0, Ordering::Relaxed);
        self.observe();
    }

    /// The request failed as a whole (connect error, timeout, 429, 5xx, ...).
    pub fn failed(self, reason: impl std::fmt::Display) {
        self.stats
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.stats.last_failure.lock() {
            *last = Some(reason.to_string());
        }
        self.observe();
    }

    fn observe(&self) {
        self.stats
            .request_seconds
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long ago a [`unix_millis`] stamp was (`None` for 0, never).
pub fn age(stamp_ms: u64) -> Option<Duration> {
    (stamp_ms != 0).then(|| Duration::from_millis(unix_millis().saturating_sub(stamp_ms)))
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
