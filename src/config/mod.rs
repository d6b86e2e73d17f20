//! Configuration: a YAML file parsed into a raw model close to the input
//! (`raw`), then validated into [`Config`], the typed value the rest of the
//! program trusts.
//!
//! Loading is four steps, each in its own submodule:
//! 1. [`interpolate`]: `${VAR}` / `${VAR:-default}` / `$$` on the raw text;
//! 2. [`raw`]: serde into a model that mirrors the YAML (`deny_unknown_fields`,
//!    defaults as named functions, sizes and durations with units);
//! 3. [`position`]: an index of key path → line, built from the parser's
//!    marked events, so that errors found after deserialisation still point
//!    at a line;
//! 4. `validate`: raw model → [`Config`] (globs compile and are absolute,
//!    hosts are http(s) URLs, limits in range, source names unique).
//!
//! Every error is a [`ConfigError`] whose `Display` reads
//! `config FILE: line N: KEY.PATH: what is wrong`. Loading has no side
//! effects besides reading the file and the environment; it does not touch
//! `data_dir` or check that included files exist (they may appear later).
//! `Config` serialises (for `check-config`) to YAML that loads back to the
//! same `Config`.

pub mod interpolate;
pub mod kubernetes;
pub mod position;
pub mod raw;
pub mod size;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use self::interpolate::InterpolationError;
use self::position::{KeyPositions, join_key};

/// How lines of a source are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    Auto,
    Cri,
    Docker,
    Plain,
}

/// Where to start in a file that has no checkpoint and was present at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    Beginning,
    End,
}

/// Where a journald source starts when it has no checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournaldSince {
    /// The oldest entry the journal still holds.
    Beginning,
    /// Entries written after the first start (the position is stored at
    /// once, so a restart does not skip what came in between).
    Now,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration. Serialised (by `check-config`) as the file
/// is written: file and journald sources together under `sources`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub node_name: String,
    pub data_dir: PathBuf,
    /// Drain deadline on SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    pub log: LogConfig,
    /// File sources (`include: …`).
    pub sources: Vec<SourceConfig>,
    /// Journald sources (`journald: …`); in the file they are in `sources`
    /// too, in any order with the file sources.
    pub journald: Vec<JournaldSourceConfig>,
    /// Written as `sink: {elasticsearch: …}` in the file.
    pub sink: ElasticsearchConfig,
    /// Between the batcher and the sink: memory (default) or a disk queue.
    pub buffer: BufferConfig,
    pub kubernetes: kubernetes::KubernetesConfig,
    /// The HTTP endpoint; `None`: off.
    pub http: Option<HttpConfig>,
    /// Processors of every source, after each source's own (validated:
    /// each source's chain compiles, see `processors::Chain::compile`).
    pub processors: Vec<crate::processors::ProcessorSpec>,
}

impl serde::Serialize for Config {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum AnySource<'a> {
            File(&'a SourceConfig),
            Journald(&'a JournaldSourceConfig),
        }
        let sources: Vec<AnySource<'_>> = (self.sources.iter().map(AnySource::File))
            .chain(self.journald.iter().map(AnySource::Journald))
            .collect();
        let mut st = s.serialize_struct("Config", 10)?;
        st.serialize_field("node_name", &self.node_name)?;
        st.serialize_field("data_dir", &self.data_dir)?;
        st.serialize_field(
            "shutdown_timeout",
            &humantime::format_duration(self.shutdown_timeout).to_string(),
        )?;
        st.serialize_field("log", &self.log)?;
        st.serialize_field("sources", &sources)?;
        st.serialize_field(
            "sink",
            &std::collections::BTreeMap::from([("elasticsearch", &self.sink)]),
        )?;
        st.serialize_field("buffer", &self.buffer)?;
        st.serialize_field("kubernetes", &self.kubernetes)?;
        match &self.http {
            Some(http) => st.serialize_field("http", http)?,
            None => st.skip_field("http")?,
        }
        /// Processor steps are written as one-key maps, as in the file.
        struct Steps<'a>(&'a [crate::processors::ProcessorSpec]);
        impl serde::Serialize for Steps<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde_yaml_ng::with::singleton_map_recursive::serialize(&self.0, s)
            }
        }
        if self.processors.is_empty() {
            st.skip_field("processors")?;
        } else {
            st.serialize_field("processors", &Steps(&self.processors))?;
        }
        st.end()
    }
}

/// A `journald:` source: entries of the journal, read with `journalctl`
/// (see `crate::journald`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournaldSourceConfig {
    pub name: String,
    /// `_SYSTEMD_UNIT` values to keep (a name without `.` gets `.service`);
    /// empty: every unit.
    pub units: Vec<String>,
    /// Field → accepted values: an entry is read if, for every field
    /// listed, it has one of the values (and, with `units`, one of them).
    pub matches: std::collections::BTreeMap<String, Vec<String>>,
    pub since: JournaldSince,
    /// The journal directory (`journalctl --directory`); `None`: the local
    /// journal of this machine.
    pub directory: Option<PathBuf>,
}

/// As written in the file: `{name, journald: {units, match, since, directory}}`.
impl serde::Serialize for JournaldSourceConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(serde::Serialize)]
        struct Journald<'a> {
            units: &'a [String],
            #[serde(rename = "match")]
            matches: &'a std::collections::BTreeMap<String, Vec<String>>,
            since: JournaldSince,
            #[serde(skip_serializing_if = "Option::is_none")]
            directory: Option<&'a Path>,
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry(
            "journald",
            &Journald {
                units: &self.units,
                matches: &self.matches,
                since: self.since,
                directory: self.directory.as_deref(),
            },
        )?;
        map.end()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HttpConfig {
    /// `host:port` to listen on (validated to parse as a socket address).
    pub listen: String,
    /// Export lag per file, not only per source.
    pub per_file_lag: bool,
}

/// `buffer:` — where batches wait for the sink.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BufferConfig {
    /// At most `concurrency + 3` batches in memory (most of them gzip'd);
    /// the files hold the backlog.
    Memory {
        /// See [`BufferConfig::max_open_files`].
        max_open_files: u64,
        /// See [`BufferConfig::read_memory`].
        read_memory: u64,
    },
    /// A durable queue in `<data_dir>/buffer` (see `buffer::disk`).
    Disk(DiskBufferConfig),
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig::Memory {
            max_open_files: raw::default_max_open_files(),
            read_memory: raw::default_read_memory(),
        }
    }
}

impl BufferConfig {
    /// Rotated or deleted files with unread data held open at most; past it
    /// the oldest deleted one is given up and its unread bytes counted as
    /// lost (see `tail`).
    pub fn max_open_files(&self) -> u64 {
        match self {
            BufferConfig::Memory { max_open_files, .. } => *max_open_files,
            BufferConfig::Disk(d) => d.max_open_files,
        }
    }

    /// Memory the files being read may hold at once (read buffers and the
    /// documents being encoded): files take turns past it (see `tail`).
    pub fn read_memory(&self) -> u64 {
        match self {
            BufferConfig::Memory { read_memory, .. } => *read_memory,
            BufferConfig::Disk(d) => d.read_memory,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DiskBufferConfig {
    /// Segment files take at most this many bytes.
    pub max_bytes: u64,
    pub when_full: WhenFull,
    /// Appended batches are fsync'd at least this often (0 = after each);
    /// file checkpoints advance once their lines are fsync'd.
    #[serde(with = "humantime_serde_compat")]
    pub fsync_interval: Duration,
    /// See [`BufferConfig::max_open_files`].
    pub max_open_files: u64,
    /// See [`BufferConfig::read_memory`].
    pub read_memory: u64,
}

/// What a full disk buffer does with a new batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: the tailers stop reading (backpressure).
    Block,
    /// Drop the batch and count its events (`dropped_events`).
    DropNewest,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directive, e.g. `info` or `logship=debug`.
    pub level: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
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
    /// This source's processors, before the top-level ones.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serde_yaml_ng::with::singleton_map_recursive::serialize"
    )]
    pub processors: Vec<crate::processors::ProcessorSpec>,
    /// Join multiline events (stack traces); `None`: every line is an event.
    pub multiline: Option<crate::decode::multiline::MultilineConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ElasticsearchConfig {
    /// Base URLs, e.g. `http://127.0.0.1:9200`. At least one.
    pub hosts: Vec<String>,
    /// Index name template: strftime directives (`%Y`, `%m`, `%d`, ...) on the
    /// event's `@timestamp` in UTC.
    pub index: String,
    pub batch: BatchConfig,
    /// gzip level 0–9; 0 sends the body uncompressed. Written as
    /// `compression: {gzip: N}` in the file.
    #[serde(rename = "compression", serialize_with = "serialize_gzip_level")]
    pub gzip_level: u32,
    /// Bulk requests in flight at once.
    pub concurrency: usize,
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    pub retry: RetryConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Where the credentials are; the secrets themselves are read by the
    /// sink at start-up and never stored here (nor printed by `check-config`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Extra headers on every request; names and values are valid HTTP.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Write to the data stream `<type>-<dataset>-<namespace>`; `index` is
    /// then that name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_stream: Option<DataStreamConfig>,
    /// `install`: put an index template for `index` at start-up.
    pub template: TemplateMode,
    /// Kubernetes label and annotation keys have `.` replaced by `_`
    /// (`app.kubernetes.io/name` → `app_kubernetes_io/name`). With `false`
    /// the installed template maps them as `flattened` so that dotted keys
    /// cannot collide.
    pub dedot: bool,
    pub dead_letter: DeadLetterConfig,
}

/// Rotation of `data_dir/dead-letter.ndjson`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterConfig {
    /// A file is rotated before it would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept (`dead-letter.1.ndjson` …); older ones are deleted.
    pub max_files: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DataStreamConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub dataset: String,
    pub namespace: String,
}

impl DataStreamConfig {
    pub fn name(&self) -> String {
        format!("{}-{}-{}", self.kind, self.dataset, self.namespace)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateMode {
    /// Leave mappings to the cluster.
    None,
    /// Put (overwrite) logship's index template at start-up.
    Install,
}

/// TLS for `https://` hosts. Without `ca_file` the system's trust store is
/// trusted (built-in Mozilla roots if it cannot be read); with it, only that
/// CA bundle.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TlsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`; both or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// `false` accepts any server certificate (logged as a warning).
    pub verify: bool,
}

/// Credentials, read from files at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthConfig {
    /// `Authorization: Basic …`; the file holds the password (one trailing
    /// newline is ignored).
    Basic {
        username: String,
        password_file: PathBuf,
    },
    /// `Authorization: ApiKey …`; the file holds the encoded key as
    /// Elasticsearch returns it (`encoded`), or `id:api_key`.
    ApiKeyFile(PathBuf),
}

/// As written in the file: `{basic: {username, password_file}}` or
/// `{api_key_file: …}` (YAML tags for enum variants would not load back).
impl serde::Serialize for AuthConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(serde::Serialize)]
        struct Basic<'a> {
            username: &'a str,
            password_file: &'a Path,
        }
        let mut map = s.serialize_map(Some(1))?;
        match self {
            AuthConfig::Basic {
                username,
                password_file,
            } => map.serialize_entry(
                "basic",
                &Basic {
                    username,
                    password_file,
                },
            )?,
            AuthConfig::ApiKeyFile(file) => map.serialize_entry("api_key_file", file)?,
        }
        map.end()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BatchConfig {
    /// Uncompressed bulk body size at which a batch is sent.
    pub max_bytes: usize,
    pub max_events: usize,
    /// A non-empty batch is sent at the latest this long after its first line.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RetryConfig {
    #[serde(with = "humantime_serde_compat")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max_backoff: Duration,
    /// A document that has been failing this long in a way specific to it
    /// (the cluster answers, but not with its acceptance) is dead-lettered
    /// so that what follows it moves on; outages never count (the sink's
    /// `delivery` module has the rule). Greater than 0; there is no "never".
    #[serde(with = "humantime_serde_compat")]
    pub give_up_after: Duration,
}

/// Serialises durations as humantime strings ("1s", "250ms") for `check-config`.
pub mod humantime_serde_compat {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

fn serialize_gzip_level<S: serde::Serializer>(level: &u32, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry("gzip", level)?;
    map.end()
}

/// A configuration that cannot be used. `Display` names the file, the line
/// (where known) and the key path; `main` turns it into exit code 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `${VAR}` placeholder could not be expanded.
    #[error("config {}: {}", file.display(), located(Some(source.line()), key.as_deref(), source))]
    Interpolation {
        file: PathBuf,
        /// The key whose value holds the placeholder, when it could be found.
        key: Option<String>,
        #[source]
        source: InterpolationError,
    },
    /// Not valid YAML, or not the expected shape: an unknown or missing key,
    /// a value of the wrong type.
    #[error("config {}: {}", file.display(), located(*line, key.as_deref(), message))]
    Parse {
        file: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    /// Well-formed, but a value is not acceptable.
    #[error("config {}: {}", file.display(), located(*line, Some(key), message))]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line the error points at, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Read { .. } => None,
            Self::Interpolation { source, .. } => Some(source.line()),
            Self::Parse { line, .. } | Self::Invalid { line, .. } => *line,
        }
    }

    /// The key path (`sources[0].include`) the error is about, if known.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Read { .. } => None,
            Self::Interpolation { key, .. } | Self::Parse { key, .. } => key.as_deref(),
            Self::Invalid { key, .. } => Some(key),
        }
    }
}

fn located(line: Option<usize>, key: Option<&str>, message: &dyn std::fmt::Display) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}: "));
    }
    if let Some(key) = key {
        out.push_str(&format!("{key}: "));
    }
    out.push_str(&message.to_string());
    out
}

/// Reads, interpolates (`${VAR}`), parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    load_str(path, &text, |name| std::env::var(name).ok())
}

/// [`load`] on text already read; `file` is only used in messages and `env`
/// looks variables up (tests pass a closure instead of the real environment).
pub fn load_str(
    file: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let expanded =
        interpolate::interpolate(text, env).map_err(|source| ConfigError::Interpolation {
            file: file.to_owned(),
            key: KeyPositions::index(text)
                .path_at_line(source.line())
                .map(str::to_owned),
            source,
        })?;
    let positions = KeyPositions::index(&expanded);
    let raw: raw::RawConfig =
        serde_yaml_ng::from_str(&expanded).map_err(|e| parse_error(file, &positions, &e))?;
    validate::validate(raw).map_err(|invalid| ConfigError::Invalid {
        file: file.to_owned(),
        line: positions.line_of(&invalid.key),
        key: invalid.key,
        message: invalid.message,
    })
}

/// Turns a serde_yaml_ng error into a [`ConfigError::Parse`] that names the
/// key. serde_yaml_ng's message is `PATH: MESSAGE at line L column C`, where
/// PATH is the value being deserialised (for an unknown or missing field: the
/// mapping that holds it) and is left out at the top level.
fn parse_error(file: &Path, positions: &KeyPositions, error: &serde_yaml_ng::Error) -> ConfigError {
    let full = error.to_string();
    let location = error.location();
    let mut message = full.as_str();
    if let Some(loc) = &location {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        message = message.strip_suffix(suffix.as_str()).unwrap_or(message);
    }
    let (container, message) = split_path_prefix(message);
    let join = |field: &str| Some(join_key(container.unwrap_or(""), field));
    let (key, line, message) = if let Some(field) = backticked_after(message, "missing field ") {
        // serde points at the mapping that lacks the field; its own key is
        // where the user has to add it.
        let line = container.and_then(|c| positions.line_of(c));
        (
            join(field),
            line.or(location.map(|l| l.line())),
            format!("required field `{field}` is missing"),
        )
    } else if let Some(field) = backticked_after(message, "duplicate field ") {
        let key = join(field);
        let line = key.as_deref().and_then(|k| positions.last_line_of(k));
        (
            key,
            line.or(location.map(|l| l.line())),
            format!("`{field}` is given more than once"),
        )
    } else if let Some(field) = backticked_after(message, "unknown field ") {
        let message = match suggestion(field, message) {
            Some(near) => format!("{message} (did you mean `{near}`?)"),
            None => message.to_owned(),
        };
        (join(field), location.map(|l| l.line()), message)
    } else {
        let key = container.map(str::to_owned);
        let line = location
            .map(|l| l.line())
            .or_else(|| key.as_deref().and_then(|k| positions.line_of(k)));
        (key, line, message.to_owned())
    };
    ConfigError::Parse {
        file: file.to_owned(),
        line,
        key,
        message,
    }
}

/// Splits `sources[0].format: unknown variant …` into the path and the rest.
/// A path has no blanks, which tells it from a message such as
/// `invalid type: string …`.
fn split_path_prefix(message: &str) -> (Option<&str>, &str) {
    match message.split_once(": ") {
        Some((path, rest))
            if !path.is_empty()
                && path.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']' | '?')
                }) =>
        {
            (Some(path), rest)
        }
        _ => (None, message),
    }
}

/// The expected field closest to a misspelt one (`inlcude` → `include`), from
/// serde's "expected one of `a`, `b`" list, if one is close enough.
fn suggestion<'a>(field: &str, message: &'a str) -> Option<&'a str> {
    let (_, expected) = message.split_once("expected ")?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(field, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2 && *distance < candidate.len())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance (Levenshtein plus adjacent swaps).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// `unknown field `inlcude`, expected …` → `inlcude`.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"node_name: ${NODE_NAME}
data_dir: /var/lib/logship
shutdown_timeout: 20s
log: {format: json, level: "logship=debug"}
sources:
  - name: containers
    include: ["/var/log/containers/*.log"]
    exclude: ["/var/log/containers/*_kube-system_*.log"]
    format: cri
    read_from: end
    max_line_bytes: 2MiB
    include_compressed: true
    rescan_interval: 10s
  - name: host
    include: ["/var/log/*.log"]
sink:
  elasticsearch:
    hosts: ["http://127.0.0.1:9200/", "https://es.example:9243"]
    index: "logs-%Y.%m.%d"
    batch: {max_bytes: 4MB, max_events: 1000, timeout: 500ms}
    compression: {gzip: 6}
    concurrency: 4
    request_timeout: 1m
    retry: {initial_backoff: 50ms, max_backoff: 1m, give_up_after: 30m}
"#;

    const MINIMAL: &str = "\
sources:
  - name: app
    include: [/var/log/app/*.log]
sink:
  elasticsearch:
    hosts: [http://127.0.0.1:9200]
";

    fn env(name: &str) -> Option<String> {
        (name == "NODE_NAME").then(|| "node-7".to_owned())
    }

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        load_str(Path::new("/etc/logship.yaml"), text, env)
    }

    fn load_err(text: &str) -> ConfigError {
        load_text(text).expect_err("config should be refused")
    }

    /// Asserts the error names `key` and `line`, in the struct and in the text.
    fn assert_points_at(err: &ConfigError, key: &str, line: usize) {
        let text = err.to_string();
        assert_eq!(err.key(), Some(key), "{text}");
        assert_eq!(err.line(), Some(line), "{text}");
        assert!(
            text.starts_with(&format!("config /etc/logship.yaml: line {line}: {key}: ")),
            "{text}"
        );
    }

    /// MINIMAL with `extra` appended under `sources[0]` (4-space indent).
    fn with_source_keys(extra: &str) -> String {
        MINIMAL.replace(
            "    include: [/var/log/app/*.log]\n",
            &format!("    include: [/var/log/app/*.log]\n{extra}"),
        )
    }

    #[test]
    fn multiline_rules_load_and_bad_ones_name_the_key_and_line() {
        use crate::decode::multiline::{Builtin, MultilineConfig, RuleSpec};
        let c = load_text(&with_source_keys("    multiline: java\n")).unwrap();
        assert_eq!(
            c.sources[0].multiline,
            Some(MultilineConfig::builtin(Builtin::Java, 1 << 20))
        );
        let c = load_text(&with_source_keys(
            "    multiline:\n      start: '^\\['\n      max_lines: 50\n      timeout: 3s\n",
        ))
        .unwrap();
        let m = c.sources[0].multiline.as_ref().unwrap();
        assert_eq!(
            m.rule,
            RuleSpec::Custom {
                start: Some(r"^\[".into()),
                cont: None
            }
        );
        assert_eq!((m.max_lines, m.timeout), (50, Duration::from_secs(3)));
        let err = load_err(&with_source_keys("    multiline: cobol\n"));
        assert_points_at(&err, "sources[0].multiline", 4);
        assert!(err.to_string().contains("java, python, go, ruby"), "{err}");
        let err = load_err(&with_source_keys(
            "    multiline:\n      start: ok\n      continue: '(unclosed'\n",
        ));
        assert_points_at(&err, "sources[0].multiline.continue", 6);
        assert!(err.to_string().contains("invalid regex"), "{err}");
        let err = load_err(&with_source_keys(
            "    multiline:\n      rule: java\n      start: x\n",
        ));
        assert_points_at(&err, "sources[0].multiline.rule", 5);
        let err = load_err(&with_source_keys("    multiline:\n      max_lines: 5\n"));
        assert_points_at(&err, "sources[0].multiline", 4);
        let err = load_err(&with_source_keys(
            "    multiline:\n      rule: go\n      mode: x\n",
        ));
        assert!(
            err.to_string().contains("mode"),
            "unknown keys are refused: {err}"
        );
    }

    /// MINIMAL with `extra` appended under `sink.elasticsearch` (4-space indent).
    fn with_sink_keys(extra: &str) -> String {
        format!("{MINIMAL}{extra}")
    }

    #[test]
    fn full_example_loads_with_units_converted() {
        let c = load_text(FULL).unwrap();
        assert_eq!(c.node_name, "node-7");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "logship=debug");
        let s = &c.sources[0];
        assert_eq!(s.format, SourceFormat::Cri);
        assert_eq!(s.read_from, ReadFrom::End);
        assert_eq!(s.max_line_bytes, 2 * 1024 * 1024);
        assert!(s.include_compressed);
        assert_eq!(s.rescan_interval, Duration::from_secs(10));
        assert_eq!(s.exclude, ["/var/log/containers/*_kube-system_*.log"]);
        let es = &c.sink;
        assert_eq!(
            es.hosts,
            ["http://127.0.0.1:9200", "https://es.example:9243"]
        );
        assert_eq!(es.batch.max_bytes, 4_000_000);
        assert_eq!(es.batch.max_events, 1000);
        assert_eq!(es.batch.timeout, Duration::from_millis(500));
        assert_eq!(es.gzip_level, 6);
        assert_eq!(es.concurrency, 4);
        assert_eq!(es.request_timeout, Duration::from_secs(60));
        assert_eq!(es.retry.initial_backoff, Duration::from_millis(50));
        assert_eq!(es.retry.max_backoff, Duration::from_secs(60));
        assert_eq!(es.retry.give_up_after, Duration::from_secs(30 * 60));
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = load_text(MINIMAL).unwrap();
        assert_eq!(c.node_name, gethostname::gethostname().to_string_lossy());
        assert_eq!(c.data_dir, Path::new("/var/lib/logship"));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(25));
        assert_eq!(
            (c.log.format, c.log.level.as_str()),
            (LogFormat::Text, "info")
        );
        let s = &c.sources[0];
        assert!(s.exclude.is_empty());
        assert_eq!(
            (s.format, s.read_from),
            (SourceFormat::Auto, ReadFrom::Beginning)
        );
        assert_eq!(s.max_line_bytes, 1024 * 1024);
        assert!(!s.include_compressed);
        assert_eq!(s.rescan_interval, Duration::from_secs(5));
        let es = &c.sink;
        assert_eq!(es.index, "logs-%Y.%m.%d");
        assert_eq!(es.batch.max_bytes, 3 * 1024 * 1024);
        assert_eq!(es.batch.max_events, 5000);
        assert_eq!(es.batch.timeout, Duration::from_secs(1));
        assert_eq!((es.gzip_level, es.concurrency), (1, 2));
        assert_eq!(es.request_timeout, Duration::from_secs(60));
        assert_eq!(es.retry.initial_backoff, Duration::from_millis(100));
        assert_eq!(es.retry.max_backoff, Duration::from_secs(30));
        assert_eq!(es.retry.give_up_after, Duration::from_secs(3600));
    }

    const PROCESSORS: &str = "\
sources:
  - name: web
    include: [/var/log/web/*.log]
    processors:
      - drop:
          name: health
          when: {regex: {message: 'GET /healthz'}}
      - parse:
          dissect: '%{client} - - [%{ts}] \"%{method} %{path} %{?proto}\" %{status} %{bytes}'
          target: http
      - timestamp: {field: http.ts, format: '%d/%b/%Y:%H:%M:%S %z'}
      - rename: {from: http.client, to: source.ip}
      - drop_fields: {fields: [http.ts]}
processors:
  - add_fields: {fields: {cluster: '${NODE_NAME}', tier: 2}}
  - keep:
      when: {or: [{equals: {stream: stdout}}, {not: {regex: {kubernetes.labels.app: '^debug'}}}]}
sink:
  elasticsearch:
    hosts: [http://127.0.0.1:9200]
";

    #[test]
    fn processors_load_expand_variables_and_print_back() {
        let c = load_text(PROCESSORS).unwrap();
        assert_eq!(c.sources[0].processors.len(), 5);
        assert_eq!(c.processors.len(), 2);
        let crate::processors::ProcessorSpec::AddFields(add) = &c.processors[0] else {
            panic!("add_fields first: {:?}", c.processors[0]);
        };
        assert_eq!(
            add.fields.get("cluster"),
            Some(&crate::processors::Scalar::String("node-7".into()))
        );
        let yaml = serde_yaml_ng::to_string(&c).unwrap();
        let again = load_str(Path::new("effective.yaml"), &yaml, |_| None)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again, c, "{yaml}");
    }

    #[test]
    fn bad_processors_name_the_key_and_line() {
        let text = PROCESSORS.replace("'GET /healthz'", "'GET /(healthz'");
        let err = load_err(&text);
        assert_points_at(&err, "sources[0].processors[0].drop.when.regex.message", 7);
        assert!(err.to_string().contains("invalid regex"), "{err}");

        let text = PROCESSORS.replace("from: http.client", "from: http.nope");
        assert_points_at(&load_err(&text), "sources[0].processors[3].rename.from", 12);

        let text = PROCESSORS.replace("- rename:", "- renamed:");
        let err = load_err(&text);
        assert_eq!(err.line(), Some(12), "{err}");
        assert!(
            err.to_string().contains("unknown variant `renamed`"),
            "{err}"
        );

        // The top-level list is checked against what each source's makes.
        let text = PROCESSORS.replace("kubernetes.labels.app", "http.method");
        load_text(&text).expect("the source parses http.method");
        let text = PROCESSORS
            .replace("kubernetes.labels.app", "http.method")
            .replace("target: http", "target: web");
        assert_points_at(
            &load_err(&text),
            "sources[0].processors[2].timestamp.field",
            11,
        );
    }

    #[test]
    fn effective_config_yaml_loads_back_to_the_same_config() {
        for text in [FULL, MINIMAL] {
            let config = load_text(text).unwrap();
            let yaml = serde_yaml_ng::to_string(&config).unwrap();
            let again = load_str(Path::new("effective.yaml"), &yaml, |_| None)
                .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(again, config, "{yaml}");
        }
    }

    #[test]
    fn unknown_key_names_key_line_and_suggestion() {
        let err = load_err(&MINIMAL.replace("    include:", "    inlcude:"));
        assert_points_at(&err, "sources[0].inlcude", 3);
        let text = err.to_string();
        assert!(text.contains("unknown field `inlcude`"), "{text}");
        assert!(text.contains("did you mean `include`?"), "{text}");

        let err = load_err(&format!(
            "{MINIMAL}    batch: {{max_bytes: 1MiB, max_evnts: 3}}\n"
        ));
        assert_points_at(&err, "sink.elasticsearch.batch.max_evnts", 7);
        assert!(
            err.to_string().contains("did you mean `max_events`?"),
            "{err}"
        );

        let err = load_err(&format!("verbose: true\n{MINIMAL}"));
        assert_points_at(&err, "verbose", 1);
        assert!(!err.to_string().contains("did you mean"), "{err}");
    }

    #[test]
    fn missing_required_fields_are_named_at_their_parent() {
        let err =
            load_err(&MINIMAL.replace("    hosts: [http://127.0.0.1:9200]\n", "    index: logs\n"));
        assert_points_at(&err, "sink.elasticsearch.hosts", 5);
        assert!(
            err.to_string()
                .contains("required field `hosts` is missing"),
            "{err}"
        );

        let err = load_err(&MINIMAL.replace("    include: [/var/log/app/*.log]\n", ""));
        assert_points_at(&err, "sources[0].include", 2);

        let err = load_err("sources: []\n");
        assert_eq!(err.key(), Some("sink"), "{err}");
        let err = load_err("");
        assert!(err.key().is_some(), "{err}");
    }

    #[test]
    fn wrong_types_and_bad_scalars_name_the_value() {
        let err = load_err(&with_sink_keys("    concurrency: many\n"));
        assert_points_at(&err, "sink.elasticsearch.concurrency", 7);
        let err = load_err(&with_source_keys("    max_line_bytes: 1XB\n"));
        assert_points_at(&err, "sources[0].max_line_bytes", 4);
        assert!(err.to_string().contains("\"1XB\""), "{err}");
        let err = load_err(&with_source_keys("    rescan_interval: 5\n"));
        assert_points_at(&err, "sources[0].rescan_interval", 4);
        let err = load_err(&with_source_keys("    format: json\n"));
        assert_points_at(&err, "sources[0].format", 4);
        let err = load_err(&with_source_keys("    include: [/b]\n"));
        assert_points_at(&err, "sources[0].include", 4);
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = load_err("sources:\n  - name: a\n    include: [/x\nsink:\n");
        assert!(
            matches!(err, ConfigError::Parse { line: Some(4), .. }),
            "{err}"
        );
    }

    #[test]
    fn bad_globs_name_the_pattern_and_its_line() {
        let err = load_err(&MINIMAL.replace(
            "[/var/log/app/*.log]",
            "[/var/log/a/*.log, \"/var/log/[oops.log\"]",
        ));
        assert_points_at(&err, "sources[0].include[1]", 3);
        assert!(err.to_string().contains("/var/log/[oops.log"), "{err}");

        let err = load_err(&with_source_keys(
            "    exclude:\n      - /ok/*.log\n      - relative/*.log\n",
        ));
        assert_points_at(&err, "sources[0].exclude[1]", 6);
        assert!(err.to_string().contains("absolute"), "{err}");

        let err = load_err(&MINIMAL.replace("[/var/log/app/*.log]", "[]"));
        assert_points_at(&err, "sources[0].include", 3);
    }

    #[test]
    fn sources_are_required_and_uniquely_named() {
        let err = load_err(&MINIMAL.replace(
            "sources:\n  - name: app\n    include: [/var/log/app/*.log]\n",
            "sources: []\n",
        ));
        assert_points_at(&err, "sources", 1);
        let two = MINIMAL.replace(
            "sink:",
            "  - name: other\n    include: [/x/*.log]\n  - name: app\n    include: [/y/*.log]\nsink:",
        );
        let err = load_err(&two);
        assert_points_at(&err, "sources[2].name", 6);
        assert!(err.to_string().contains("sources[0]"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let cases: &[(&str, &str, usize)] = &[
            ("    hosts: []\n", "sink.elasticsearch.hosts", 6),
            (
                "    compression: {gzip: 10}\n",
                "sink.elasticsearch.compression.gzip",
                7,
            ),
            ("    concurrency: 0\n", "sink.elasticsearch.concurrency", 7),
            (
                "    batch: {max_events: 0}\n",
                "sink.elasticsearch.batch.max_events",
                7,
            ),
            (
                "    batch:\n      max_bytes: 0\n",
                "sink.elasticsearch.batch.max_bytes",
                8,
            ),
            (
                "    batch: {timeout: 0s}\n",
                "sink.elasticsearch.batch.timeout",
                7,
            ),
            (
                "    request_timeout: 0s\n",
                "sink.elasticsearch.request_timeout",
                7,
            ),
            (
                "    retry: {initial_backoff: 2s, max_backoff: 1s}\n",
                "sink.elasticsearch.retry.max_backoff",
                7,
            ),
            (
                "    retry: {give_up_after: 0s}\n",
                "sink.elasticsearch.retry.give_up_after",
                7,
            ),
            (
                "    retry: {give_up_after: never}\n",
                "sink.elasticsearch.retry.give_up_after",
                7,
            ),
        ];
        for (extra, key, line) in cases {
            // `hosts` given twice would be a duplicate: replace it instead.
            let text = if extra.contains("hosts") {
                MINIMAL.replace("    hosts: [http://127.0.0.1:9200]\n", extra)
            } else {
                with_sink_keys(extra)
            };
            let err = load_err(&text);
            assert_points_at(&err, key, *line);
        }
        let err = load_err(&with_source_keys("    max_line_bytes: 1000\n"));
        assert_points_at(&err, "sources[0].max_line_bytes", 4);
        assert!(load_text(&with_source_keys("    max_line_bytes: 1KiB\n")).is_ok());
        let err = load_err(&with_source_keys("    rescan_interval: 0s\n"));
        assert_points_at(&err, "sources[0].rescan_interval", 4);
        let err = load_err(&format!("log: {{level: \"logship=loud\"}}\n{MINIMAL}"));
        assert_points_at(&err, "log.level", 1);
        let err = load_err(&format!("node_name: \"\"\n{MINIMAL}"));
        assert_points_at(&err, "node_name", 1);
    }

    #[test]
    fn hosts_must_be_http_urls_with_a_host() {
        for bad in [
            "127.0.0.1:9200",
            "ftp://es:21",
            "http://",
            "http://es:9200/?x=1",
            "not a url",
        ] {
            let text = MINIMAL.replace(
                "[http://127.0.0.1:9200]",
                &format!("[http://ok:9200, \"{bad}\"]"),
            );
            let err = load_err(&text);
            assert_points_at(&err, "sink.elasticsearch.hosts[1]", 6);
        }
    }

    #[test]
    fn interpolation_defaults_and_unset_variables() {
        let c = load_text(&format!(
            "node_name: ${{UNSET_X:-fallback-node}}\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.node_name, "fallback-node");
        // An empty default leaves the value null: the hostname is used.
        let c = load_text(&format!("node_name: ${{UNSET_X:-}}\n{MINIMAL}")).unwrap();
        assert_eq!(c.node_name, gethostname::gethostname().to_string_lossy());

        let err = load_err(&format!("{MINIMAL}    index: \"logs-${{TEAM}}-%Y\"\n"));
        assert_points_at(&err, "sink.elasticsearch.index", 7);
        assert!(err.to_string().contains("TEAM is not set"), "{err}");
    }

    #[test]
    fn bad_index_template_names_the_key() {
        let err = load_err(&with_sink_keys("    index: \"Logs/%Y\"\n"));
        assert_points_at(&err, "sink.elasticsearch.index", 7);
        assert!(err.to_string().contains("Logs/%Y"), "{err}");
    }

    #[test]
    fn http_endpoint_is_off_by_default_and_validated() {
        assert_eq!(load_text(MINIMAL).unwrap().http, None);
        let c = load_text(&format!("http: {{listen: \"0.0.0.0:2020\"}}\n{MINIMAL}")).unwrap();
        let http = c.http.clone().expect("http set");
        assert_eq!(
            (http.listen.as_str(), http.per_file_lag),
            ("0.0.0.0:2020", false)
        );
        let yaml = serde_yaml_ng::to_string(&c).unwrap();
        assert_eq!(
            load_str(Path::new("e.yaml"), &yaml, |_| None).unwrap(),
            c,
            "{yaml}"
        );
        let c = load_text(&format!(
            "http: {{listen: \"[::]:9\", per_file_lag: true}}\n{MINIMAL}"
        ))
        .unwrap();
        assert!(c.http.expect("http set").per_file_lag);

        let err = load_err(&format!("http: {{listen: \"localhost\"}}\n{MINIMAL}"));
        assert_points_at(&err, "http.listen", 1);
        assert!(err.to_string().contains("0.0.0.0:2020"), "{err}");
        let err = load_err(&format!(
            "http:\n  listen: \"0.0.0.0:1\"\n  port: 3\n{MINIMAL}"
        ));
        assert_points_at(&err, "http.port", 3);
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let err = load(Path::new("/nonexistent/logship.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config /nonexistent/logship.yaml: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn security_keys_load_round_trip_and_are_checked() {
        let secure = with_sink_keys(
            "    tls: {ca_file: /etc/ca.pem, cert_file: /etc/c.pem, key_file: /etc/c.key}\n    \
             auth: {basic: {username: shipper, password_file: /run/pw}}\n    \
             headers: {X-Tenant: a}\n",
        );
        let c = load_text(&secure).unwrap();
        let tls = c.sink.tls.as_ref().unwrap();
        assert!(tls.verify);
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(
            c.sink.auth,
            Some(AuthConfig::Basic {
                username: "shipper".into(),
                password_file: "/run/pw".into()
            })
        );
        assert_eq!(c.sink.headers["X-Tenant"], "a");
        let api_key = with_sink_keys("    auth: {api_key_file: /run/key}\n");
        for text in [secure.as_str(), api_key.as_str()] {
            let config = load_text(text).unwrap();
            let yaml = serde_yaml_ng::to_string(&config).unwrap();
            assert!(!yaml.contains("password:"), "{yaml}");
            let again = load_str(Path::new("effective.yaml"), &yaml, |_| None)
                .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(again, config, "{yaml}");
        }
        let cases: &[(&str, &str)] = &[
            (
                "    tls: {cert_file: /c.pem}\n",
                "sink.elasticsearch.tls.key_file",
            ),
            (
                "    tls: {verify: false, ca_file: /ca.pem}\n",
                "sink.elasticsearch.tls.verify",
            ),
            (
                "    auth: {basic: {username: u, password_file: /p}, api_key_file: /k}\n",
                "sink.elasticsearch.auth",
            ),
            ("    auth: {}\n", "sink.elasticsearch.auth"),
            (
                "    auth: {basic: {username: \"a:b\", password_file: /p}}\n",
                "sink.elasticsearch.auth.basic.username",
            ),
            (
                "    headers: {\"bad header\": x}\n",
                "sink.elasticsearch.headers.bad header",
            ),
            (
                "    headers: {Content-Type: text/plain}\n",
                "sink.elasticsearch.headers.Content-Type",
            ),
            (
                "    auth: {api_key_file: /k}\n    headers: {Authorization: x}\n",
                "sink.elasticsearch.headers.Authorization",
            ),
        ];
        for (extra, key) in cases {
            let err = load_err(&with_sink_keys(extra));
            assert_eq!(err.key(), Some(*key), "{extra}: {err}");
        }
    }

    #[test]
    fn template_dedot_follows_kubernetes_dedot_and_a_mismatch_is_refused() {
        let kube = "kubernetes: {mode: daemonset, node_name: n1, dedot: false}\n";
        let c = load_text(&format!("{MINIMAL}{kube}")).unwrap();
        assert!(!c.kubernetes.dedot);
        assert!(!c.sink.dedot, "unset sink dedot follows kubernetes.dedot");
        let err = load_err(&format!("{}{kube}", with_sink_keys("    dedot: true\n")));
        assert_eq!(err.key(), Some("sink.elasticsearch.dedot"), "{err}");
        assert!(err.to_string().contains("kubernetes.dedot"), "{err}");
        let same = load_text(&format!("{}{kube}", with_sink_keys("    dedot: false\n"))).unwrap();
        assert!(!same.sink.dedot);
    }

    #[test]
    fn data_stream_names_the_index_and_template_keys_load() {
        let c = load_text(&with_sink_keys(
            "    data_stream: {dataset: nginx.access, namespace: prod}\n    template: install\n    dedot: false\n",
        ))
        .unwrap();
        assert_eq!(c.sink.index, "logs-nginx.access-prod");
        assert_eq!(c.sink.template, TemplateMode::Install);
        assert!(!c.sink.dedot);
        let yaml = serde_yaml_ng::to_string(&c).unwrap();
        let again = load_str(Path::new("effective.yaml"), &yaml, |_| None)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again, c, "{yaml}");
        let defaults = load_text(&with_sink_keys(
            "    data_stream: {}
",
        ))
        .unwrap();
        assert_eq!(defaults.sink.index, "logs-generic-default");
        let minimal = load_text(MINIMAL).unwrap();
        assert_eq!(minimal.sink.template, TemplateMode::None);
        assert!(minimal.sink.dedot);
        for (extra, key) in [
            (
                "    data_stream: {dataset: my-app}\n",
                "sink.elasticsearch.data_stream.dataset",
            ),
            (
                "    data_stream: {type: metrics}\n",
                "sink.elasticsearch.data_stream.type",
            ),
            (
                "    index: other\n    data_stream: {}\n",
                "sink.elasticsearch.index",
            ),
        ] {
            let err = load_err(&with_sink_keys(extra));
            assert_eq!(err.key(), Some(key), "{extra}: {err}");
        }
        let c = load_text(&with_sink_keys(
            "    dead_letter: {max_bytes: 1MiB, max_files: 9}\n",
        ))
        .unwrap();
        assert_eq!(c.sink.dead_letter.max_bytes, 1 << 20);
        assert_eq!(c.sink.dead_letter.max_files, 9);
        let err = load_err(&with_sink_keys("    dead_letter: {max_bytes: 1KiB}\n"));
        assert_eq!(err.key(), Some("sink.elasticsearch.dead_letter.max_bytes"));
    }

    #[test]
    fn buffer_section() {
        assert_eq!(
            load_text(MINIMAL).unwrap().buffer,
            BufferConfig::Memory {
                max_open_files: 1024,
                read_memory: 16 << 20,
            }
        );
        let disk =
            format!("{MINIMAL}buffer: {{type: disk, max_bytes: 3GiB, when_full: drop_newest}}\n");
        let c = load_text(&disk).unwrap();
        assert_eq!(
            c.buffer,
            BufferConfig::Disk(DiskBufferConfig {
                max_bytes: 3 << 30,
                when_full: WhenFull::DropNewest,
                fsync_interval: Duration::from_secs(1),
                max_open_files: 1024,
                read_memory: 16 << 20,
            })
        );
        let yaml = serde_yaml_ng::to_string(&c).unwrap();
        let again = load_str(Path::new("effective.yaml"), &yaml, |_| None).unwrap();
        assert_eq!(again.buffer, c.buffer, "{yaml}");
        // `max_open_files` applies to both buffer types.
        for kind in ["memory", "disk"] {
            let c = load_text(&format!(
                "{MINIMAL}buffer: {{type: {kind}, max_open_files: 10}}\n"
            ))
            .unwrap();
            assert_eq!(c.buffer.max_open_files(), 10, "{kind}");
            let yaml = serde_yaml_ng::to_string(&c).unwrap();
            let again = load_str(Path::new("effective.yaml"), &yaml, |_| None).unwrap();
            assert_eq!(again.buffer, c.buffer, "{yaml}");
        }
        // Keys that would be silently ignored are refused.
        let err = load_err(&format!("{MINIMAL}buffer: {{max_bytes: 1GiB}}\n"));
        assert_eq!(err.key(), Some("buffer.max_bytes"), "{err}");
        let err = load_err(&format!(
            "{MINIMAL}buffer: {{type: disk, max_open_files: 0}}\n"
        ));
        assert_eq!(err.key(), Some("buffer.max_open_files"), "{err}");
        assert!(err.to_string().contains("at least 1"), "{err}");
        for kind in ["memory", "disk"] {
            let c = load_text(&format!(
                "{MINIMAL}buffer: {{type: {kind}, read_memory: 8MiB}}\n"
            ))
            .unwrap();
            assert_eq!(c.buffer.read_memory(), 8 << 20, "{kind}");
            let yaml = serde_yaml_ng::to_string(&c).unwrap();
            let again = load_str(Path::new("effective.yaml"), &yaml, |_| None).unwrap();
            assert_eq!(again.buffer, c.buffer, "{yaml}");
        }
        let err = load_err(&format!("{MINIMAL}buffer: {{read_memory: 100KiB}}\n"));
        assert_eq!(err.key(), Some("buffer.read_memory"), "{err}");
        assert!(err.to_string().contains("at least"), "{err}");
        let err = load_err(&format!(
            "{MINIMAL}buffer: {{type: disk, max_bytes: 1KiB}}\n"
        ));
        assert_eq!(err.key(), Some("buffer.max_bytes"), "{err}");
    }

    const JOURNALD: &str = "\
sources:
  - name: app
    include: [/var/log/app/*.log]
  - name: host
    journald:
      units: [kubelet, ssh.service]
      match: {PRIORITY: [0, 1, \"2\"], _TRANSPORT: kernel}
      since: now
      directory: /var/log/journal
sink:
  elasticsearch:
    hosts: [http://127.0.0.1:9200]
";

    #[test]
    fn journald_sources_load_and_round_trip() {
        let c = load_text(JOURNALD).unwrap();
        assert_eq!(c.sources.len(), 1);
        let j = &c.journald[0];
        assert_eq!(j.name, "host");
        assert_eq!(j.units, ["kubelet.service", "ssh.service"]);
        assert_eq!(j.matches["PRIORITY"], ["0", "1", "2"]);
        assert_eq!(j.matches["_TRANSPORT"], ["kernel"]);
        assert_eq!(j.since, JournaldSince::Now);
        assert_eq!(j.directory.as_deref(), Some(Path::new("/var/log/journal")));
        let yaml = serde_yaml_ng::to_string(&c).unwrap();
        let again = load_str(Path::new("effective.yaml"), &yaml, |_| None)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again, c, "{yaml}");
        let only = load_text(
            "sources: [{name: j, journald: {}}]\nsink: {elasticsearch: {hosts: [http://e:9200]}}\n",
        )
        .unwrap();
        assert!(only.sources.is_empty());
        assert_eq!(only.journald[0].since, JournaldSince::Beginning);
        assert_eq!(only.journald[0].directory, None);
    }

    #[test]
    fn journald_mistakes_name_the_key_and_line() {
        let cases: &[(&str, &str, &str, usize)] = &[
            (
                "      since: now\n",
                "      since: later\n",
                "sources[1].journald.since",
                8,
            ),
            (
                "      since: now\n",
                "      sinse: now\n",
                "sources[1].journald.sinse",
                8,
            ),
            (
                "      directory: /var/log/journal\n",
                "      directory: var/log/journal\n",
                "sources[1].journald.directory",
                9,
            ),
            (
                "      units: [kubelet, ssh.service]\n",
                "      units: [kubelet, \"a/b\"]\n",
                "sources[1].journald.units[1]",
                6,
            ),
            (
                "_TRANSPORT: kernel",
                "_transport: kernel",
                "sources[1].journald.match._transport",
                7,
            ),
            (
                "_TRANSPORT: kernel",
                "_SYSTEMD_UNIT: x.service",
                "sources[1].journald.match._SYSTEMD_UNIT",
                7,
            ),
            (
                "_TRANSPORT: kernel",
                "_TRANSPORT: []",
                "sources[1].journald.match._TRANSPORT",
                7,
            ),
            (
                "    journald:\n",
                "    format: cri\n    journald:\n",
                "sources[1].format",
                5,
            ),
            (
                "    journald:\n",
                "    multiline: java\n    journald:\n",
                "sources[1].multiline",
                5,
            ),
            (
                "    journald:\n",
                "    include: [/x/*.log]\n    journald:\n",
                "sources[1].journald",
                6,
            ),
        ];
        for (from, to, key, line) in cases {
            let text = JOURNALD.replace(from, to);
            assert_ne!(text, JOURNALD, "{from}");
            let err = load_err(&text);
            assert_points_at(&err, key, *line);
        }
        let err = load_err(&JOURNALD.replace("    journald:\n      units: [kubelet, ssh.service]\n      match: {PRIORITY: [0, 1, \"2\"], _TRANSPORT: kernel}\n      since: now\n      directory: /var/log/journal\n", ""));
        assert_points_at(&err, "sources[1].include", 4);
    }
}
