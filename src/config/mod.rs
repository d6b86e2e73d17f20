//! Configuration: a YAML file parsed into a raw model close to the input
//! (`raw`), then validated into [`Config`], the typed value the rest of the
//! program trusts.
//!
//! TODO(config helper): raw model with `deny_unknown_fields`, `${ENV}`
//! interpolation, defaults as named functions, validation with errors that
//! name the key and its line.

use std::path::PathBuf;
use std::time::Duration;

/// How lines of a source are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    Auto,
    Cri,
    Docker,
    Plain,
}

/// Where to start in a file that has no checkpoint and was present at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    Beginning,
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Config {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub sources: Vec<SourceConfig>,
    pub sink: ElasticsearchConfig,
    /// Drain deadline on SIGTERM/SIGINT.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_timeout: Duration,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directive, e.g. `info` or `logship=debug`.
    pub level: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SourceConfig {
    pub name: String,
    /// Glob patterns (absolute paths). Validated to compile.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub format: SourceFormat,
    pub read_from: ReadFrom,
    pub max_line_bytes: usize,
    /// Follow files ending in `.gz` when a glob matches them (default false).
    pub include_compressed: bool,
    /// Safety-net rescan of the globs, on top of inotify.
    #[serde(with = "humantime_serde_compat")]
    pub rescan_interval: Duration,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ElasticsearchConfig {
    /// Base URLs, e.g. `http://127.0.0.1:9200`. At least one.
    pub hosts: Vec<String>,
    /// Index name template: strftime directives (`%Y`, `%m`, `%d`, ...) on the
    /// event's `@timestamp` in UTC.
    pub index: String,
    pub batch: BatchConfig,
    /// gzip level 0–9; 0 sends the body uncompressed.
    pub gzip_level: u32,
    /// Bulk requests in flight at once.
    pub concurrency: usize,
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    pub retry: RetryConfig,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BatchConfig {
    /// Uncompressed bulk body size at which a batch is sent.
    pub max_bytes: usize,
    pub max_events: usize,
    /// A non-empty batch is sent at the latest this long after its first line.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RetryConfig {
    #[serde(with = "humantime_serde_compat")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max_backoff: Duration,
}

/// Serialises durations as humantime strings ("1s", "250ms") for `check-config`.
pub mod humantime_serde_compat {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// A configuration that cannot be used. `Display` names the file, the key and
/// (where known) its line; `main` turns it into exit code 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads, interpolates (`${VAR}`), parses and validates a config file.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    let _ = path;
    todo!()
}
