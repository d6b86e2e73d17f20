//! Elasticsearch sink: gzip'd `_bulk` requests with bounded concurrency,
//! per-item outcomes, retries with capped backoff, dead letters.
//!
//! Owns: everything between a [`Batch`] leaving the buffer and its
//! acknowledgement. Each batch is delivered by its own task (at most
//! `concurrency` at once, bounded by a semaphore whose permit is taken
//! *before* the next batch is received, so a busy sink leaves batches in the
//! channel and backpressure reaches the tailers). A batch is acknowledged
//! (`Acknowledger::delivered`) once every item in it was accepted by
//! Elasticsearch (2xx, or 409 for our own `_id`) or durably written to the
//! dead-letter file ([`dead_letter`] documents its format). A delivery that
//! panics is restarted and its batch delivered again, never acknowledged on
//! the way (`delivery`, "Panics").
//!
//! Promises: nothing is dropped — whole-request failures of any kind
//! (connect errors, timeouts, 429, 5xx, other 4xx, a 2xx that is not a bulk
//! response for exactly the items sent) are retried with capped, jittered
//! exponential backoff; a 413, or a connection cut repeatedly while the host
//! still answers a probe (`delivery` documents the rule), splits the
//! request; items Elasticsearch rejects for good (4xx other than 409/429, or
//! a single document answered 413) are dead-lettered at once — never a
//! document on a guess from a single cut connection. A document that keeps
//! failing while the cluster answers (cut while the host answers a probe, a
//! whole-request 4xx, never a bulk response, an item 429/5xx while others
//! are accepted, a delivery that panics) is given up — dead-lettered — after
//! `retry.give_up_after` of such failures; an outage (no answer, a
//! whole-request 429/5xx) never counts toward that, however long it lasts.
//!
//! Does not: reorder acknowledgements (batches may finish in any order; the
//! checkpoint store's watermark handles that), or decide when to stop — the
//! app aborts [`ElasticsearchSink::run`] at the shutdown deadline, which
//! aborts every batch task; unacknowledged lines are read again after
//! restart.
//!
//! Parts: `client` (TLS, credentials, headers), `version` (start-up
//! version check), [`template`] (index template put before the first batch), [`replay`] (re-shipping a
//! dead-letter file), `hosts` (URLs, round-robin), `request` (body, gzip, one
//! attempt), [`response`] (bulk response parsing), `retry` (backoff, log
//! rate limits), `delivery` (one batch to the end), [`dead_letter`] (the
//! file format).

mod client;
pub mod dead_letter;
mod delivery;
pub mod gzip;
pub use gzip::release_if_unused as release_idle_compressors;
mod hosts;
pub mod lookup;
pub mod replay;
mod request;
pub mod response;
mod retry;
pub mod template;
pub mod version;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::buffer::{Acknowledger, Batch};
use crate::config::ElasticsearchConfig;
use crate::telemetry::Metrics;

use delivery::Delivery;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid Elasticsearch host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },
    #[error("cannot open dead-letter file {path}: {source}")]
    DeadLetter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build HTTP client: {0}")]
    Client(String),
    #[error("sink.elasticsearch.tls: {}: {reason}", path.display())]
    Tls { path: PathBuf, reason: String },
    /// A password or API key file; `reason` never holds its content.
    #[error("sink.elasticsearch.auth: {}: {reason}", path.display())]
    Secret { path: PathBuf, reason: String },
}

pub struct ElasticsearchSink {
    delivery: Arc<Delivery>,
    concurrency: usize,
    /// Taken by `run`, which logs each host's version in the background.
    version_probe: Option<(reqwest::Client, Vec<(reqwest::Url, String)>)>,
    /// Installed by `run` before the first batch is taken.
    template: Option<TemplateSetup>,
}

struct TemplateSetup {
    client: reqwest::Client,
    bases: Vec<(reqwest::Url, String)>,
    put: template::IndexTemplatePut,
    initial_backoff: std::time::Duration,
    max_backoff: std::time::Duration,
}

impl ElasticsearchSink {
    /// `data_dir` holds the dead-letter file.
    pub fn new(
        cfg: &ElasticsearchConfig,
        data_dir: &std::path::Path,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let hosts = hosts::Hosts::new(&cfg.hosts)?;
        let timeout = if cfg.request_timeout.is_zero() {
            request::DEFAULT_REQUEST_TIMEOUT
        } else {
            cfg.request_timeout
        };
        let client = client::build(cfg, timeout)?;
        let version_probe = (client.clone(), hosts.bases());
        let template = template::for_config(cfg).map(|put| TemplateSetup {
            client: client.clone(),
            bases: hosts.bases(),
            put,
            initial_backoff: cfg.retry.initial_backoff,
            max_backoff: cfg.retry.max_backoff,
        });
        let dead_letters = dead_letter::DeadLetterFile::open_with(
            data_dir,
            dead_letter::Rotation {
                max_bytes: cfg.dead_letter.max_bytes,
                max_files: cfg.dead_letter.max_files,
            },
        )?;
        let delivery = Delivery::new(
            request::BulkRequester::new(client, hosts),
            cfg.gzip_level,
            &cfg.retry,
            metrics,
            dead_letters,
        );
        Ok(ElasticsearchSink {
            delivery: Arc::new(delivery),
            concurrency: cfg.concurrency.max(1),
            version_probe: Some(version_probe),
            template,
        })
    }

    /// Sends batches until `batches` is closed and drained and every batch in
    /// flight is done; calls `acks.delivered` for each batch once all its items
    /// are delivered or dead-lettered. At most `concurrency` requests are in
    /// flight; while all slots are busy no batch is taken from the channel.
    ///
    /// Aborting the future aborts every batch in flight; none of them is then
    /// acknowledged.
    pub async fn run(mut self, mut batches: mpsc::Receiver<Batch>, acks: Arc<dyn Acknowledger>) {
        if let Some((client, hosts)) = self.version_probe.take() {
            // Not awaited: an unreachable cluster must not delay buffering.
            tokio::spawn(version::check_all(client, hosts));
        }
        if let Some(t) = self.template.take() {
            // Batches wait in the channel meanwhile (backpressure, not loss).
            template::install(
                &t.client,
                &t.bases,
                &t.put,
                t.initial_backoff,
                t.max_backoff,
            )
            .await;
        }
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut in_flight = JoinSet::new();
        loop {
            // The semaphore is never closed, so this only fails in theory.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            while let Some(done) = in_flight.try_join_next() {
                report_task_end(done);
            }
            let Some(batch) = batches.recv().await else {
                break;
            };
            let delivery = self.delivery.clone();
            let acks = acks.clone();
            in_flight.spawn(async move {
                let mut batch = Arc::new(batch);
                match delivery.deliver_until_settled(&mut batch).await {
                    Ok(()) => acks.delivered(&batch.origins()),
                    Err(delivery::Unrestorable) => acks.lost(&batch.origins()),
                }
                drop(slot);
            });
        }
        while let Some(done) = in_flight.join_next().await {
            report_task_end(done);
        }
    }

    /// Test seam: the next `n` bulk responses (`u32::MAX`: all) make their
    /// batch's delivery panic once counted, as a bug would; see
    /// `delivery` ("Panics").
    #[doc(hidden)]
    pub fn inject_delivery_panics(&self, n: u32) {
        self.delivery.inject_panics(n);
    }
}

/// Logs a batch task that panicked outside its delivery (which restarts
/// panicked deliveries itself): while acknowledging.
fn report_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a batch task panicked while acknowledging its batch");
    }
}
