//! The config file as written: a serde model that mirrors the YAML, with
//! `deny_unknown_fields` everywhere and every default a named function.
//!
//! Only shape and scalar syntax are checked here (a size is a size, a
//! duration has a unit, an enum value is one of its names). Everything that
//! relates values to the world or to each other (globs compile, URLs parse,
//! limits are in range, names are unique) is `super::validate`'s job.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::size::{deserialize_duration, deserialize_size};
use super::{JournaldSince, LogFormat, ReadFrom, SourceFormat, WhenFull};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `None` (absent or null) means the hostname.
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(
        default = "default_shutdown_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub shutdown_timeout: Duration,
    #[serde(default)]
    pub log: RawLog,
    pub sources: Vec<RawSource>,
    pub sink: RawSink,
    #[serde(default)]
    pub buffer: RawBuffer,
    #[serde(default)]
    pub kubernetes: super::kubernetes::RawKubernetes,
    /// The HTTP endpoint (metrics, health, status); off when absent.
    #[serde(default)]
    pub http: Option<RawHttp>,
    /// Applied to every source, after the source's own list.
    #[serde(default, with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub processors: Vec<crate::processors::ProcessorSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `host:port`, e.g. `0.0.0.0:2020`.
    pub listen: String,
    /// Export `logship_file_lag_bytes` per file (default false: per source only).
    #[serde(default)]
    pub per_file_lag: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

/// One source: files (`include`, and the keys after it) or the journal
/// (`journald`). The file keys are optional here so that validation can
/// tell which were written (they do not apply to a journald source).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub name: String,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub journald: Option<RawJournald>,
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    #[serde(default)]
    pub format: Option<SourceFormat>,
    #[serde(default)]
    pub read_from: Option<ReadFrom>,
    #[serde(default, deserialize_with = "deserialize_opt_size")]
    pub max_line_bytes: Option<u64>,
    #[serde(default)]
    pub include_compressed: Option<bool>,
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub rescan_interval: Option<Duration>,
    /// This source's processors (before the top-level ones).
    #[serde(default, with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub processors: Vec<crate::processors::ProcessorSpec>,
    /// `multiline: java` (a built-in rule) or a map ([`RawMultilineRule`]).
    #[serde(default)]
    pub multiline: Option<RawMultiline>,
}

/// `journald:` of a source (see `crate::journald`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournald {
    /// Shorthand for `match: {_SYSTEMD_UNIT: [...]}`.
    #[serde(default)]
    pub units: Vec<String>,
    /// Field → one value or a list of values.
    #[serde(default, rename = "match")]
    pub matches: std::collections::BTreeMap<String, OneOrMany>,
    #[serde(default = "default_journald_since")]
    pub since: JournaldSince,
    /// `None`: the local journal (journalctl's default).
    #[serde(default)]
    pub directory: Option<PathBuf>,
}

/// A value or a list of values (`PRIORITY: [0, 1, 2]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(MatchValue),
    Many(Vec<MatchValue>),
}

/// A match value as written: text or a number (`PRIORITY: 3`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MatchValue {
    Text(String),
    Integer(i64),
}

impl OneOrMany {
    pub fn into_strings(self) -> Vec<String> {
        let text = |v: MatchValue| match v {
            MatchValue::Text(s) => s,
            MatchValue::Integer(n) => n.to_string(),
        };
        match self {
            OneOrMany::One(v) => vec![text(v)],
            OneOrMany::Many(v) => v.into_iter().map(text).collect(),
        }
    }
}

/// A source's `multiline:`: a built-in rule's name, or a map.
#[derive(Debug)]
pub enum RawMultiline {
    Name(String),
    Rule(RawMultilineRule),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMultilineRule {
    /// A built-in rule, with these limits.
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default, rename = "continue")]
    pub cont: Option<String>,
    #[serde(default)]
    pub max_lines: Option<u64>,
    #[serde(default, deserialize_with = "deserialize_opt_size")]
    pub max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub timeout: Option<Duration>,
}

impl<'de> Deserialize<'de> for RawMultiline {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawMultiline;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a rule name (java, python, go, ruby) or a map (rule, start, continue, max_lines, max_bytes, timeout)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawMultiline, E> {
                Ok(RawMultiline::Name(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawMultiline, A::Error> {
                RawMultilineRule::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawMultiline::Rule)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    pub elasticsearch: RawElasticsearch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawElasticsearch {
    pub hosts: Vec<String>,
    /// `None`: [`default_index`], or the data stream's name.
    #[serde(default)]
    pub index: Option<String>,
    #[serde(default)]
    pub batch: RawBatch,
    #[serde(default)]
    pub compression: RawCompression,
    #[serde(default = "default_concurrency")]
    pub concurrency: u64,
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub request_timeout: Duration,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub auth: Option<RawAuth>,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub data_stream: Option<RawDataStream>,
    #[serde(default = "default_template")]
    pub template: super::TemplateMode,
    /// Unset: the same as `kubernetes.dedot` (the template must map the
    /// keys the way the metadata writes them).
    #[serde(default)]
    pub dedot: Option<bool>,
    #[serde(default)]
    pub dead_letter: RawDeadLetter,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetter {
    #[serde(
        default = "default_dead_letter_max_bytes",
        deserialize_with = "deserialize_size"
    )]
    pub max_bytes: u64,
    #[serde(default = "default_dead_letter_max_files")]
    pub max_files: u32,
}

impl Default for RawDeadLetter {
    fn default() -> Self {
        Self {
            max_bytes: default_dead_letter_max_bytes(),
            max_files: default_dead_letter_max_files(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataStream {
    #[serde(default = "default_data_stream_type", rename = "type")]
    pub kind: String,
    #[serde(default = "default_data_stream_dataset")]
    pub dataset: String,
    #[serde(default = "default_data_stream_namespace")]
    pub namespace: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default = "default_tls_verify")]
    pub verify: bool,
}

/// Exactly one of `basic` and `api_key_file` (checked by `validate`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub basic: Option<RawBasicAuth>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub username: String,
    pub password_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    #[serde(
        default = "default_batch_max_bytes",
        deserialize_with = "deserialize_size"
    )]
    pub max_bytes: u64,
    #[serde(default = "default_batch_max_events")]
    pub max_events: u64,
    #[serde(
        default = "default_batch_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub timeout: Duration,
}

impl Default for RawBatch {
    fn default() -> Self {
        Self {
            max_bytes: default_batch_max_bytes(),
            max_events: default_batch_max_events(),
            timeout: default_batch_timeout(),
        }
    }
}

/// `buffer:`; fields are optional so that validation can tell which ones
/// were written (they only apply to `type: disk`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    #[serde(rename = "type", default)]
    pub kind: BufferKind,
    #[serde(default, deserialize_with = "deserialize_opt_size")]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub when_full: Option<WhenFull>,
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub fsync_interval: Option<Duration>,
    /// Both types: rotated or deleted files with unread data held open at
    /// most (default [`default_max_open_files`]).
    #[serde(default)]
    pub max_open_files: Option<u64>,
    /// Both types: memory the files being read may hold at once (default
    /// [`default_read_memory`]).
    #[serde(default, deserialize_with = "deserialize_opt_size")]
    pub read_memory: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    #[default]
    Memory,
    Disk,
}

fn deserialize_opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    deserialize_size(d).map(Some)
}

fn deserialize_opt_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize_duration(d).map(Some)
}

pub fn default_disk_buffer_max_bytes() -> u64 {
    2 << 30
}
pub fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}

/// 1024: bounded by default, like every other resource (a dead
/// Elasticsearch must not let held deleted files, each still taking its disk
/// space, grow without end: 1024 kubelet rotations of 10 MiB are 10 GiB),
/// yet far above what a node needs in any outage the disk buffer rides out,
/// and below common `RLIMIT_NOFILE` hard limits.
pub fn default_max_open_files() -> u64 {
    1024
}

/// 16 MiB: 32 files reading at once (512 KiB each: a read chunk and a
/// span of documents), plenty for catch-up on both cores, and a ceiling on
/// what an outage's backlog in 1,000 files costs when it drains (the
/// `outage` bench's drain peaked at 89 MiB RSS with 32 MiB, 58 with 16).
pub fn default_read_memory() -> u64 {
    16 << 20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    #[serde(default = "default_gzip_level")]
    pub gzip: u32,
}

impl Default for RawCompression {
    fn default() -> Self {
        Self {
            gzip: default_gzip_level(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    #[serde(
        default = "default_initial_backoff",
        deserialize_with = "deserialize_duration"
    )]
    pub initial_backoff: Duration,
    #[serde(
        default = "default_max_backoff",
        deserialize_with = "deserialize_duration"
    )]
    pub max_backoff: Duration,
    #[serde(
        default = "default_give_up_after",
        deserialize_with = "deserialize_duration"
    )]
    pub give_up_after: Duration,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            give_up_after: default_give_up_after(),
        }
    }
}

pub fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/logship")
}
pub fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(25)
}
pub fn default_log_format() -> LogFormat {
    LogFormat::Text
}
pub fn default_log_level() -> String {
    "info".to_owned()
}
pub fn default_source_format() -> SourceFormat {
    SourceFormat::Auto
}
pub fn default_read_from() -> ReadFrom {
    ReadFrom::Beginning
}
pub fn default_journald_since() -> JournaldSince {
    JournaldSince::Beginning
}
pub fn default_max_line_bytes() -> u64 {
    1 << 20
}
pub fn default_rescan_interval() -> Duration {
    Duration::from_secs(5)
}
pub fn default_index() -> String {
    "logs-%Y.%m.%d".to_owned()
}
pub fn default_batch_max_bytes() -> u64 {
    3 << 20
}
pub fn default_batch_max_events() -> u64 {
    5000
}
pub fn default_batch_timeout() -> Duration {
    Duration::from_secs(1)
}
pub fn default_gzip_level() -> u32 {
    1
}
pub fn default_concurrency() -> u64 {
    2
}
pub fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
pub fn default_initial_backoff() -> Duration {
    Duration::from_millis(100)
}
pub fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
pub fn default_give_up_after() -> Duration {
    Duration::from_secs(3600)
}
pub fn default_tls_verify() -> bool {
    true
}
pub fn default_template() -> super::TemplateMode {
    super::TemplateMode::None
}
pub fn default_dedot() -> bool {
    true
}
pub fn default_data_stream_type() -> String {
    "logs".to_owned()
}
pub fn default_data_stream_dataset() -> String {
    "generic".to_owned()
}
pub fn default_data_stream_namespace() -> String {
    "default".to_owned()
}
pub fn default_dead_letter_max_bytes() -> u64 {
    64 << 20
}
pub fn default_dead_letter_max_files() -> u32 {
    4
}
