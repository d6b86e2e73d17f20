//! Elasticsearch sink: gzip'd `_bulk` requests with bounded concurrency,
//! per-item outcomes, retries with capped backoff, dead letters.
//!
//! TODO(sink helper).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::buffer::{Acknowledger, Batch};
use crate::config::ElasticsearchConfig;
use crate::telemetry::Metrics;

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
}

pub struct ElasticsearchSink {
    _private: (),
}

impl ElasticsearchSink {
    /// `data_dir` holds the dead-letter file.
    pub fn new(
        cfg: &ElasticsearchConfig,
        data_dir: &std::path::Path,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let _ = (cfg, data_dir, metrics);
        todo!()
    }

    /// Sends batches until `batches` is closed and drained and every batch in
    /// flight is done; calls `acks.delivered` for each batch once all its items
    /// are delivered or dead-lettered. At most `concurrency` requests are in
    /// flight; while all slots are busy no batch is taken from the channel.
    pub async fn run(self, batches: mpsc::Receiver<Batch>, acks: Arc<dyn Acknowledger>) {
        let _ = (batches, acks);
        todo!()
    }
}
