//! Telemetry: process-wide counters and tracing setup.
//!
//! [`Metrics`] is a plain set of atomic counters every stage increments; the
//! Prometheus exposition and HTTP endpoints (a later issue) read them. Counters
//! only ever go up; gauges are set by their owner.

pub mod logging;

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Items written to the dead-letter file.
    pub items_dead_lettered: AtomicU64,
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
    /// Checkpoint writes that failed.
    pub checkpoint_write_errors: AtomicU64,
    /// Pod log files whose pod was not in the metadata cache after `metadata_wait`.
    pub k8s_files_without_metadata: AtomicU64,
    /// Lines of such files shipped before their pod became known.
    pub k8s_lines_without_metadata: AtomicU64,
    /// Pod log files not read because a pod annotation excludes them.
    pub k8s_files_excluded: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
