//! The Prometheus exposition of `/metrics`, built at scrape time.
//!
//! [`Exporter`] is a `prometheus_client` collector: on each scrape it reads
//! the atomic counters of [`Metrics`], the file registry (per-source read
//! counters, lag), the sink's histograms, the disk buffer's figures (when
//! one runs) and `/proc/self` (CPU, RSS) and
//! encodes them with `prometheus_client`'s text encoder (OpenMetrics text,
//! which Prometheus reads). Nothing here is on a hot path; nothing is
//! hand-formatted. `docs/observability.md` lists every metric.
//!
//! Label cardinality is bounded by the number of sources, except
//! `logship_file_lag_bytes` (one series per followed file), which is only
//! exported when `http.per_file_lag` is on.

use std::collections::BTreeMap;
use std::fmt::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::status::{Status, lags};
use super::{Metrics, unix_millis};
use crate::buffer::disk::Stats as DiskStats;

/// Collects every logship metric on each scrape.
#[derive(Clone)]
pub struct Exporter {
    status: Arc<Status>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

impl Exporter {
    pub fn new(status: Arc<Status>) -> Self {
        Exporter { status }
    }

    /// The whole exposition as text.
    pub fn render(&self) -> Result<String, Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn atomic(e: &mut DescriptorEncoder, name: &str, help: &str, v: &AtomicU64) -> Result<(), Error> {
    counter(e, name, help, Metrics::get(v))
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), Error> {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn gauge_f(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), Error> {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter family with one label.
fn counters_by(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// A counter family labelled by source and reason.
fn counters_by_source_reason(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&str, &str, u64)],
) -> Result<(), Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (source, reason, v) in values {
        ConstCounter::new(*v)
            .encode(m.encode_family(&[("source", *source), ("reason", *reason)])?)?;
    }
    Ok(())
}

/// The journald sources' figures (`crate::journald`).
fn encode_journals(
    e: &mut DescriptorEncoder,
    journals: &[(String, Arc<crate::journald::JournalStatus>)],
) -> Result<(), Error> {
    let get = |f: fn(&crate::journald::JournalStatus) -> &AtomicU64| -> Vec<(&str, u64)> {
        journals
            .iter()
            .map(|(n, st)| (n.as_str(), f(st).load(Ordering::Relaxed)))
            .collect()
    };
    counters_by(
        e,
        "logship_journald_entries_read",
        "Journal entries read, per journald source.",
        "source",
        &get(|s| &s.entries_read),
    )?;
    counters_by(
        e,
        "logship_journald_read_bytes",
        "Bytes of journalctl export output read, per journald source.",
        "source",
        &get(|s| &s.bytes_read),
    )?;
    counters_by(
        e,
        "logship_journald_restarts",
        "journalctl processes that ended unasked and were started again.",
        "source",
        &get(|s| &s.child_exits),
    )?;
    type Field = fn(&crate::journald::JournalStatus) -> &AtomicU64;
    let by_reason = |pairs: &[(&'static str, Field)]| {
        let mut out = Vec::new();
        for (name, st) in journals {
            for (reason, f) in pairs {
                out.push((name.as_str(), *reason, f(st).load(Ordering::Relaxed)));
            }
        }
        out
    };
    counters_by_source_reason(
        e,
        "logship_journald_lost_entries",
        "Journal entries lost before they were shipped, by reason (vacuumed: removed from the journal while logship was stopped or behind; counted by seqnum, entries of every unit).",
        &by_reason(&[("vacuumed", |s| &s.lost_vacuumed)]),
    )?;
    counters_by_source_reason(
        e,
        "logship_journald_gaps",
        "Gaps found in the journal after a checkpoint, counted or not, by reason (vacuumed: the checkpoint's entry was gone at start).",
        &by_reason(&[("vacuumed", |s| &s.gaps_vacuumed)]),
    )?;
    counters_by_source_reason(
        e,
        "logship_journald_skipped_entries",
        "Journal entries skipped, by reason (invalid: no usable __CURSOR; too_large: over 64 MiB).",
        &by_reason(&[
            ("invalid", |s| &s.skipped_invalid),
            ("too_large", |s| &s.skipped_too_large),
        ]),
    )?;
    let mut m = e.encode_descriptor(
        "logship_journald_lag_seconds",
        "Journal time between the last entry read and the last one acknowledged, per journald source.",
        None,
        MetricType::Gauge,
    )?;
    for (name, st) in journals {
        ConstGauge::new(st.lag_seconds()).encode(m.encode_family(&[("source", name.as_str())])?)?;
    }
    Ok(())
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), Error> {
        let s = &self.status;
        let m = &s.metrics;
        let e = &mut e;

        {
            let mut info = e.encode_descriptor(
                "logship_build",
                "logship version (always 1).",
                None,
                MetricType::Info,
            )?;
            info.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        }
        gauge(
            e,
            "logship_ready",
            "1 when /readyz answers ready, else 0.",
            i64::from(s.is_ready()),
        )?;

        // Reading, per source.
        let sources = s.files.sources();
        let lines: Vec<(&str, u64)> = sources
            .iter()
            .map(|(n, st)| (n.as_str(), st.lines_read.load(Ordering::Relaxed)))
            .collect();
        let bytes: Vec<(&str, u64)> = sources
            .iter()
            .map(|(n, st)| (n.as_str(), st.bytes_read.load(Ordering::Relaxed)))
            .collect();
        counters_by(
            e,
            "logship_lines_read",
            "Physical lines read from files.",
            "source",
            &lines,
        )?;
        counters_by(
            e,
            "logship_read_bytes",
            "Bytes read from files.",
            "source",
            &bytes,
        )?;
        atomic(
            e,
            "logship_events_encoded",
            "Log events (joined partial lines count once) encoded into bulk items.",
            &m.events_encoded,
        )?;
        atomic(
            e,
            "logship_invalid_utf8_lines",
            "Lines shipped with invalid UTF-8 replaced by U+FFFD.",
            &m.invalid_utf8_lines,
        )?;
        atomic(
            e,
            "logship_unparsed_lines",
            "Lines that did not parse in their file's format, shipped as plain text.",
            &m.unparsed_lines,
        )?;
        atomic(
            e,
            "logship_truncated_lines",
            "Lines cut at max_line_bytes (shipped, flagged truncated).",
            &m.truncated_lines,
        )?;
        counters_by(
            e,
            "logship_dropped_bytes",
            "Bytes dropped, by reason (line_too_long: the rest of a line past max_line_bytes; max_open_files: the unshipped part of a deleted file given up past buffer.max_open_files; gone_while_stopped: the unacknowledged part, as far as it was read, of a file deleted while logship was stopped).",
            "reason",
            &[
                ("line_too_long", Metrics::get(&m.truncated_bytes)),
                ("max_open_files", Metrics::get(&m.max_open_files_lost_bytes)),
                (
                    "gone_while_stopped",
                    Metrics::get(&m.gone_while_stopped_bytes),
                ),
            ],
        )?;
        counters_by(
            e,
            "logship_files_lost",
            "Files with unacknowledged lines that could not be read to their end, by reason (gone_while_stopped: deleted, or truncated in place, while logship was stopped).",
            "reason",
            &[(
                "gone_while_stopped",
                Metrics::get(&m.gone_while_stopped_files),
            )],
        )?;
        atomic(
            e,
            "logship_files_rotated_while_stopped",
            "Files rotated away (renamed or compressed) while logship was stopped, found again at start and read to their end.",
            &m.rotated_while_stopped,
        )?;

        encode_journals(e, &s.journals.sources())?;

        // Shipping.
        atomic(
            e,
            "logship_events_shipped",
            "Events acknowledged by Elasticsearch (2xx).",
            &m.items_delivered,
        )?;
        atomic(
            e,
            "logship_events_duplicate",
            "Events answered 409 for their own _id (already indexed; counted as delivered).",
            &m.items_duplicate,
        )?;
        atomic(
            e,
            "logship_events_retried",
            "Item-level retries (429/5xx items sent again).",
            &m.items_retried,
        )?;
        atomic(
            e,
            "logship_events_dead_lettered",
            "Events written to the dead-letter file (rejected for good, or given up).",
            &m.items_dead_lettered,
        )?;
        atomic(
            e,
            "logship_events_given_up",
            "Of the dead-lettered events, those given up after failing for retry.give_up_after while the cluster answered.",
            &m.items_given_up,
        )?;
        counters_by(
            e,
            "logship_bulk_requests",
            "Bulk requests by outcome (ok: a bulk response; failed: failed as a whole and retried).",
            "outcome",
            &[
                ("ok", Metrics::get(&m.requests_ok)),
                ("failed", Metrics::get(&m.requests_failed)),
            ],
        )?;
        m.sink.request_seconds.encode(e.encode_descriptor(
            "logship_bulk_request_duration_seconds",
            "Time from sending a bulk request to its response or failure.",
            None,
            MetricType::Histogram,
        )?)?;
        m.sink.request_bytes.encode(e.encode_descriptor(
            "logship_bulk_request_body_bytes",
            "Body size of bulk requests as sent (after gzip).",
            None,
            MetricType::Histogram,
        )?)?;
        m.sink.request_items.encode(e.encode_descriptor(
            "logship_bulk_request_events",
            "Events per bulk request (batch size).",
            None,
            MetricType::Histogram,
        )?)?;
        gauge(
            e,
            "logship_bulk_requests_in_flight",
            "Bulk requests sent and not yet answered.",
            m.sink.in_flight.load(Ordering::Relaxed),
        )?;
        gauge(
            e,
            "logship_sink_consecutive_failures",
            "Bulk requests failed as a whole since the last bulk response (0: Elasticsearch answers).",
            as_i64(m.sink.consecutive_failures.load(Ordering::Relaxed)),
        )?;

        // Buffer (the memory buffer: the span queue between tailers and batcher).
        let (used, capacity) = s.span_queue().unwrap_or((0, 0));
        gauge(
            e,
            "logship_buffer_used_spans",
            "Spans (encoded groups of lines) queued in the memory buffer.",
            as_i64(used as u64),
        )?;
        gauge(
            e,
            "logship_buffer_capacity_spans",
            "Capacity of the memory buffer in spans (0 while no pipeline runs).",
            as_i64(capacity as u64),
        )?;

        // Disk buffer (only when `buffer: {type: disk}` runs).
        if let Some((d, max_bytes)) = s.disk_buffer() {
            disk_buffer(e, &d, max_bytes)?;
        }

        // Files.
        let files = s.files.files();
        let open = files.iter().filter(|f| f.size().is_some()).count();
        gauge(
            e,
            "logship_files_followed",
            "Files followed now (one follower each).",
            as_i64(files.len() as u64),
        )?;
        gauge(
            e,
            "logship_files_open",
            "File descriptors of followed files open now.",
            as_i64(open as u64),
        )?;
        atomic(
            e,
            "logship_files_opened",
            "Files opened for following.",
            &m.files_opened,
        )?;
        atomic(
            e,
            "logship_files_closed",
            "Files read to their end after rotation or deletion and closed.",
            &m.files_closed,
        )?;
        atomic(
            e,
            "logship_rotations",
            "Rotations by rename detected.",
            &m.rotations,
        )?;
        atomic(
            e,
            "logship_truncations",
            "Truncations (copytruncate) detected.",
            &m.truncations,
        )?;
        atomic(
            e,
            "logship_multiline_events",
            "Multiline events (stack traces) shipped as one document, of more than one line.",
            &m.multiline_events,
        )?;
        atomic(
            e,
            "logship_multiline_splits",
            "Multiline events split at multiline.max_lines or max_bytes.",
            &m.multiline_splits,
        )?;
        atomic(
            e,
            "logship_checkpoint_write_errors",
            "Checkpoint writes that failed.",
            &m.checkpoint_write_errors,
        )?;
        atomic(
            e,
            "logship_k8s_files_without_metadata",
            "Pod log files whose pod was not in the metadata cache after metadata_wait.",
            &m.k8s_files_without_metadata,
        )?;
        atomic(
            e,
            "logship_k8s_metadata_updates",
            "Times a followed file's Kubernetes metadata were re-serialised because its pod or namespace changed (labels, annotations).",
            &m.k8s_metadata_updates,
        )?;
        atomic(
            e,
            "logship_k8s_lines_without_metadata",
            "Lines of pod log files shipped before their pod was known.",
            &m.k8s_lines_without_metadata,
        )?;
        atomic(
            e,
            "logship_k8s_files_excluded",
            "Pod log files not read because a pod or namespace annotation excludes them.",
            &m.k8s_files_excluded,
        )?;
        atomic(
            e,
            "logship_json_parse_failures",
            "Messages of logship.io/format: json pods that were not JSON objects (shipped unparsed).",
            &m.json_parse_failures,
        )?;

        let processors = m.processors.snapshot();
        if !processors.is_empty() {
            let dropped: Vec<(&str, u64)> = processors
                .iter()
                .map(|(n, d, _)| (n.as_str(), *d))
                .collect();
            let failed: Vec<(&str, u64)> = processors
                .iter()
                .map(|(n, _, f)| (n.as_str(), *f))
                .collect();
            counters_by(
                e,
                "logship_processor_dropped_lines",
                "Lines dropped on purpose, per processor step (drop, keep, or the logship.io/drop annotation); settled, not lost.",
                "processor",
                &dropped,
            )?;
            counters_by(
                e,
                "logship_processor_failures",
                "Lines a parse or timestamp step failed on (shipped unchanged by it, tagged unless on_failure: keep), per step.",
                "processor",
                &failed,
            )?;
        }

        if let Some((pods, restarts)) = s.k8s_figures() {
            gauge(
                e,
                "logship_k8s_cache_pods",
                "Pods of this node in the metadata cache (deleted ones within delete_grace included).",
                as_i64(pods as u64),
            )?;
            counter(
                e,
                "logship_k8s_watch_restarts",
                "Times the pod watch re-listed after an error, a dropped stream or a 410 Gone.",
                restarts,
            )?;
        }
        if let Some((namespaces, restarts)) = s.namespace_figures() {
            gauge(
                e,
                "logship_k8s_cache_namespaces",
                "Namespaces in the metadata cache (their exclusion annotation and labels).",
                as_i64(namespaces as u64),
            )?;
            counter(
                e,
                "logship_k8s_namespace_watch_restarts",
                "Times the namespace watch re-listed after an error, a dropped stream or a 410 Gone.",
                restarts,
            )?;
        }

        // Lag: bytes in followed files not yet acknowledged.
        let lags = lags(s);
        let mut by_source: BTreeMap<&str, u64> =
            sources.iter().map(|(n, _)| (n.as_str(), 0)).collect();
        for (source, _, lag) in &lags {
            *by_source.entry(source.as_str()).or_default() += lag;
        }
        {
            let mut g = e.encode_descriptor(
                "logship_lag_bytes",
                "Bytes of followed files not yet acknowledged by Elasticsearch, per source.",
                None,
                MetricType::Gauge,
            )?;
            for (source, lag) in &by_source {
                ConstGauge::new(as_i64(*lag)).encode(g.encode_family(&[("source", *source)])?)?;
            }
        }
        if s.per_file_lag.load(Ordering::Relaxed) {
            let mut g = e.encode_descriptor(
                "logship_file_lag_bytes",
                "Bytes of one followed file not yet acknowledged (http.per_file_lag).",
                None,
                MetricType::Gauge,
            )?;
            for (source, path, lag) in &lags {
                ConstGauge::new(as_i64(*lag)).encode(
                    g.encode_family(&[("source", source.as_str()), ("path", path.as_str())])?,
                )?;
            }
        }

        // Process.
        if let Some(p) = ProcessStats::read() {
            counter_f(
                e,
                "process_cpu_seconds",
                "User and system CPU time of the process.",
                p.cpu_seconds,
            )?;
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident set size.",
                as_i64(p.rss_bytes),
            )?;
            gauge(
                e,
                "process_open_fds",
                "Open file descriptors.",
                as_i64(p.open_fds),
            )?;
        }
        gauge_f(
            e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch.",
            s.started_ms() as f64 / 1000.0,
        )?;
        gauge_f(
            e,
            "logship_uptime_seconds",
            "Seconds since the process started.",
            unix_millis().saturating_sub(s.started_ms()) as f64 / 1000.0,
        )?;
        Ok(())
    }
}

/// The disk buffer's figures (names in `docs/observability.md`).
fn disk_buffer(e: &mut DescriptorEncoder, d: &DiskStats, max_bytes: u64) -> Result<(), Error> {
    let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
    gauge(
        e,
        "logship_buffer_bytes",
        "Bytes of disk buffer segment files on disk now.",
        as_i64(get(&d.disk_bytes)),
    )?;
    gauge(
        e,
        "logship_buffer_capacity_bytes",
        "Configured disk buffer size (buffer.max_bytes).",
        as_i64(max_bytes),
    )?;
    gauge(
        e,
        "logship_buffer_records",
        "Records (batches) in the disk buffer not yet acknowledged by Elasticsearch.",
        as_i64(get(&d.unacked_records)),
    )?;
    counter(
        e,
        "logship_buffer_corrupt_records",
        "Damaged disk buffer regions skipped on read (bad checksum, torn tail, bad header).",
        get(&d.corrupt_regions),
    )?;
    counter(
        e,
        "logship_buffer_corrupt_bytes",
        "Bytes of damaged disk buffer regions skipped on read.",
        get(&d.corrupt_bytes),
    )?;
    counter(
        e,
        "logship_buffer_lost_records",
        "Disk buffer records lost to damage (missing from the sequence).",
        get(&d.lost_records),
    )?;
    counter(
        e,
        "logship_buffer_write_errors",
        "Disk buffer writes that failed (ENOSPC and others); the batch was refused, not half-written.",
        get(&d.write_errors),
    )?;
    counter(
        e,
        "logship_buffer_dropped_events",
        "Events dropped because the disk buffer was full (when_full: drop_newest).",
        get(&d.dropped_events),
    )
}

fn counter_f(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), Error> {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// CPU and memory of this process, from `/proc/self`.
struct ProcessStats {
    cpu_seconds: f64,
    rss_bytes: u64,
    open_fds: u64,
}

impl ProcessStats {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold blanks), 1-based
        // from field 3: utime is field 14, stime 15, rss (pages) 24.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let rss_pages: u64 = fields.get(21)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
        let page = if page > 0 { page as u64 } else { 4096 };
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        Some(ProcessStats {
            cpu_seconds: (utime + stime) as f64 / ticks,
            rss_bytes: rss_pages * page,
            open_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::registry::FileRegistry;

    /// Every sample of a scrape of `status` (parsed by a real parser), as
    /// (name, value) in exposition order.
    fn samples(status: &Arc<Status>) -> Vec<(String, f64)> {
        let text = Exporter::new(status.clone()).render().unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        scrape
            .samples
            .into_iter()
            .map(|s| {
                let v = match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                };
                (s.metric, v)
            })
            .collect()
    }

    /// The value of the first sample named `name`.
    fn sample(status: &Arc<Status>, name: &str) -> Option<f64> {
        samples(status)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    #[test]
    fn exposition_parses_and_carries_counters() {
        let metrics = Arc::new(Metrics::default());
        Metrics::add(&metrics.items_delivered, 7);
        Metrics::add(&metrics.items_given_up, 2);
        let files = Arc::new(FileRegistry::default());
        files
            .source("app")
            .lines_read
            .fetch_add(3, Ordering::Relaxed);
        let status = Arc::new(Status::new(metrics.clone(), files, false));
        let _t = metrics.sink.start(100, 2);
        let text = Exporter::new(status).render().unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name)
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
        };
        assert_eq!(value("logship_events_shipped_total"), Some(7.0), "{text}");
        assert_eq!(value("logship_events_given_up_total"), Some(2.0), "{text}");
        assert_eq!(value("logship_lines_read_total"), Some(3.0), "{text}");
        assert_eq!(
            value("logship_bulk_requests_in_flight"),
            Some(1.0),
            "{text}"
        );
        assert!(
            value("process_resident_memory_bytes").unwrap() > 0.0,
            "{text}"
        );
        assert_eq!(value("logship_buffer_capacity_bytes"), None, "{text}");
    }

    #[test]
    fn disk_buffer_figures_are_exported_while_attached() {
        let metrics = Arc::new(Metrics::default());
        let status = Arc::new(Status::new(
            metrics,
            Arc::new(FileRegistry::default()),
            false,
        ));
        let d = Arc::new(DiskStats::default());
        d.disk_bytes.store(4096, Ordering::Relaxed);
        d.unacked_records.store(2, Ordering::Relaxed);
        d.corrupt_regions.store(3, Ordering::Relaxed);
        d.corrupt_bytes.store(70, Ordering::Relaxed);
        d.lost_records.store(1, Ordering::Relaxed);
        d.write_errors.store(5, Ordering::Relaxed);
        d.dropped_events.store(6, Ordering::Relaxed);
        let max_bytes = 1 << 20;
        status.disk_buffer_started(d.clone(), max_bytes);
        let scrape = |status: &Arc<Status>| {
            samples(status)
                .into_iter()
                .filter(|(n, _)| n.starts_with("logship_buffer_") && !n.ends_with("_spans"))
                .collect::<BTreeMap<String, f64>>()
        };
        let get = |v: &AtomicU64| v.load(Ordering::Relaxed) as f64;
        let expected: BTreeMap<String, f64> = [
            ("logship_buffer_bytes", get(&d.disk_bytes)),
            ("logship_buffer_capacity_bytes", max_bytes as f64),
            ("logship_buffer_records", get(&d.unacked_records)),
            (
                "logship_buffer_corrupt_records_total",
                get(&d.corrupt_regions),
            ),
            ("logship_buffer_corrupt_bytes_total", get(&d.corrupt_bytes)),
            ("logship_buffer_lost_records_total", get(&d.lost_records)),
            ("logship_buffer_write_errors_total", get(&d.write_errors)),
            (
                "logship_buffer_dropped_events_total",
                get(&d.dropped_events),
            ),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
        assert_eq!(scrape(&status), expected);
        // A stopped pipeline (e.g. during a reload) exports no stale buffer.
        status.pipeline_stopped();
        assert_eq!(scrape(&status), BTreeMap::new());
    }

    #[test]
    fn k8s_figures_follow_the_pod_cache_and_restarts_survive_a_reload() {
        use crate::k8s::PodCache;
        use k8s_openapi::api::core::v1::Pod;
        use kube::runtime::watcher::Event;
        let pod = |uid: &str| -> Pod {
            serde_json::from_value(serde_json::json!(
                {"metadata": {"name": uid, "namespace": "ns", "uid": uid}}
            ))
            .unwrap()
        };
        let status = Arc::new(Status::new(
            Arc::new(Metrics::default()),
            Arc::new(FileRegistry::default()),
            false,
        ));
        let relist = |cache: &PodCache, uids: &[&str]| {
            cache.apply(Event::Init);
            for uid in uids {
                cache.apply(Event::InitApply(pod(uid)));
            }
            cache.apply(Event::InitDone);
        };
        let figures = |status: &Arc<Status>| {
            (
                sample(status, "logship_k8s_cache_pods"),
                sample(status, "logship_k8s_watch_restarts_total"),
            )
        };
        assert_eq!(figures(&status), (None, None), "not in daemonset mode");

        let cache = Arc::new(PodCache::new(std::time::Duration::from_secs(60)));
        status.pod_cache_started(cache.clone());
        relist(&cache, &["a", "b", "c"]);
        assert_eq!(figures(&status), (Some(3.0), Some(0.0)));
        relist(&cache, &["a", "b", "c"]);
        relist(&cache, &["a", "b", "c"]);
        assert_eq!(figures(&status), (Some(3.0), Some(2.0)));

        // A reload: a new pipeline, a new cache; the counter keeps counting.
        status.pipeline_stopped();
        let cache = Arc::new(PodCache::new(std::time::Duration::from_secs(60)));
        status.pod_cache_started(cache.clone());
        relist(&cache, &["a"]);
        relist(&cache, &["a"]);
        assert_eq!(figures(&status), (Some(1.0), Some(3.0)));
    }

    #[test]
    fn namespace_figures_follow_the_namespace_cache_across_a_reload() {
        use crate::k8s::cache::NamespaceCache;
        use k8s_openapi::api::core::v1::Namespace;
        use kube::runtime::watcher::Event;
        let relist = |cache: &NamespaceCache, names: &[&str]| {
            cache.apply(Event::Init);
            for name in names {
                let ns: Namespace =
                    serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                        .unwrap();
                cache.apply(Event::InitApply(ns));
            }
            cache.apply(Event::InitDone);
        };
        let status = Arc::new(Status::new(
            Arc::new(Metrics::default()),
            Arc::new(FileRegistry::default()),
            false,
        ));
        let figures = |status: &Arc<Status>| {
            (
                sample(status, "logship_k8s_cache_namespaces"),
                sample(status, "logship_k8s_namespace_watch_restarts_total"),
            )
        };
        assert_eq!(figures(&status), (None, None), "not in daemonset mode");
        let cache = Arc::new(NamespaceCache::new(std::time::Duration::from_secs(60)));
        status.namespace_cache_started(cache.clone());
        relist(&cache, &["default", "shop"]);
        relist(&cache, &["default", "shop"]);
        assert_eq!(figures(&status), (Some(2.0), Some(1.0)));
        status.pipeline_stopped();
        let cache = Arc::new(NamespaceCache::new(std::time::Duration::from_secs(60)));
        status.namespace_cache_started(cache.clone());
        relist(&cache, &["default"]);
        relist(&cache, &["default"]);
        assert_eq!(figures(&status), (Some(1.0), Some(2.0)));
    }
}
