//! Raw model → [`Config`]: every check that needs more than the YAML shape.
//! Each failure names the key path of the offending value; `super::load_str`
//! adds the line.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::raw::{BufferKind, RawBuffer, RawConfig, RawElasticsearch, RawJournald, RawSource};
use super::{
    AuthConfig, BatchConfig, BufferConfig, Config, DiskBufferConfig, ElasticsearchConfig,
    HttpConfig, JournaldSourceConfig, LogConfig, RetryConfig, SourceConfig, TlsConfig, WhenFull,
};

/// Smallest accepted `max_line_bytes`: below this, ordinary lines get cut.
pub const MIN_MAX_LINE_BYTES: u64 = 1024;

/// A value that is not acceptable, and where it is.
#[derive(Debug)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

pub fn validate(raw: RawConfig) -> Result<Config, Invalid> {
    let node_name = match raw.node_name {
        Some(name) if name.trim().is_empty() => {
            return Err(invalid(
                "node_name",
                "must not be empty (leave it out to use the hostname)",
            ));
        }
        Some(name) => name,
        None => {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            if host.is_empty() {
                return Err(invalid("node_name", "not set, and the hostname is empty"));
            }
            host
        }
    };
    if raw.data_dir.as_os_str().is_empty() {
        return Err(invalid("data_dir", "must not be empty"));
    }
    let level = raw.log.level.trim().to_owned();
    if level.is_empty() {
        return Err(invalid(
            "log.level",
            "must not be empty (e.g. info, debug, logship=debug)",
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
        return Err(invalid(
            "log.level",
            format!("invalid filter {level:?}: {e}"),
        ));
    }

    if raw.sources.is_empty() {
        return Err(invalid("sources", "at least one source is required"));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, source) in raw.sources.iter().enumerate() {
        let key = format!("sources[{i}].name");
        if source.name.trim().is_empty() {
            return Err(invalid(key, "must not be empty"));
        }
        if let Some(first) = seen.insert(source.name.as_str(), i) {
            return Err(invalid(
                key,
                format!(
                    "duplicate source name {:?} (also used by sources[{first}])",
                    source.name
                ),
            ));
        }
    }
    let mut sources = Vec::new();
    let mut journald = Vec::new();
    for (i, source) in raw.sources.into_iter().enumerate() {
        match validate_any_source(i, source)? {
            AnySource::File(s) => sources.push(s),
            AnySource::Journald(j) => journald.push(j),
        }
    }

    for (i, source) in sources.iter().enumerate() {
        let lists = crate::processors::source_lists(i, &source.processors, &raw.processors);
        crate::processors::Chain::compile(&source.name, &lists, &|_| Default::default())
            .map_err(|e| invalid(e.key, e.message))?;
    }

    let kubernetes = super::kubernetes::validate(raw.kubernetes, &node_name)?;
    let sink = validate_elasticsearch(raw.sink.elasticsearch, &kubernetes)?;
    Ok(Config {
        kubernetes,
        node_name,
        data_dir: raw.data_dir,
        log: LogConfig {
            format: raw.log.format,
            level,
        },
        sources,
        journald,
        sink,
        buffer: validate_buffer(raw.buffer)?,
        shutdown_timeout: raw.shutdown_timeout,
        http: raw.http.map(validate_http).transpose()?,
        processors: raw.processors,
    })
}

/// Smallest accepted `buffer.read_memory`: one file reading at a time
/// (`tail::READ_SLOT_BYTES`).
pub const MIN_READ_MEMORY: u64 = 512 * 1024;

/// Smallest accepted disk buffer.
pub const MIN_DISK_BUFFER_BYTES: u64 = 1 << 20;

fn validate_buffer(b: RawBuffer) -> Result<BufferConfig, Invalid> {
    let max_open_files = b
        .max_open_files
        .unwrap_or_else(super::raw::default_max_open_files);
    if max_open_files == 0 {
        return Err(invalid(
            "buffer.max_open_files",
            "must be at least 1 (rotated or deleted files with unread data held open)",
        ));
    }
    let read_memory = b
        .read_memory
        .unwrap_or_else(super::raw::default_read_memory);
    if read_memory < MIN_READ_MEMORY {
        return Err(invalid(
            "buffer.read_memory",
            format!(
                "must be at least {MIN_READ_MEMORY} bytes (512KiB: one file reading at a time)"
            ),
        ));
    }
    match b.kind {
        BufferKind::Memory => {
            for (key, set) in [
                ("buffer.max_bytes", b.max_bytes.is_some()),
                ("buffer.when_full", b.when_full.is_some()),
                ("buffer.fsync_interval", b.fsync_interval.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        key,
                        "only applies to `type: disk`; the memory buffer holds at most \
                         `concurrency + 3` batches and always blocks when full",
                    ));
                }
            }
            Ok(BufferConfig::Memory {
                max_open_files,
                read_memory,
            })
        }
        BufferKind::Disk => {
            let max_bytes = b
                .max_bytes
                .unwrap_or_else(super::raw::default_disk_buffer_max_bytes);
            if max_bytes < MIN_DISK_BUFFER_BYTES {
                return Err(invalid(
                    "buffer.max_bytes",
                    format!("must be at least {MIN_DISK_BUFFER_BYTES} bytes (1MiB)"),
                ));
            }
            Ok(BufferConfig::Disk(DiskBufferConfig {
                max_bytes,
                when_full: b.when_full.unwrap_or(WhenFull::Block),
                fsync_interval: b
                    .fsync_interval
                    .unwrap_or_else(super::raw::default_fsync_interval),
                max_open_files,
                read_memory,
            }))
        }
    }
}

enum AnySource {
    File(SourceConfig),
    Journald(JournaldSourceConfig),
}

/// A source is either a file source (`include`) or a journald one.
fn validate_any_source(i: usize, source: RawSource) -> Result<AnySource, Invalid> {
    let at = |field: &str| format!("sources[{i}].{field}");
    match (&source.include, &source.journald) {
        (Some(_), Some(_)) => Err(invalid(
            at("journald"),
            "a source reads files (`include`) or the journal (`journald`), not both",
        )),
        (None, None) => Err(invalid(
            at("include"),
            "required field `include` is missing (or `journald` for a journald source)",
        )),
        (Some(_), None) => validate_source(i, source).map(AnySource::File),
        (None, Some(_)) => {
            let file_only = [
                ("exclude", source.exclude.is_some()),
                ("format", source.format.is_some()),
                ("read_from", source.read_from.is_some()),
                ("max_line_bytes", source.max_line_bytes.is_some()),
                ("include_compressed", source.include_compressed.is_some()),
                ("rescan_interval", source.rescan_interval.is_some()),
                ("multiline", source.multiline.is_some()),
                ("processors", !source.processors.is_empty()),
            ];
            if let Some((key, _)) = file_only.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    at(key),
                    "only applies to file sources (`include`), not to a `journald` source",
                ));
            }
            let Some(raw) = source.journald else {
                return Err(invalid(at("journald"), "missing"));
            };
            validate_journald(i, source.name, raw).map(AnySource::Journald)
        }
    }
}

/// A journal field name as `journalctl` accepts it in a match: upper-case
/// letters, digits and `_`, not starting with a digit, at most 64 bytes.
pub fn is_journal_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn validate_journald(
    i: usize,
    name: String,
    raw: RawJournald,
) -> Result<JournaldSourceConfig, Invalid> {
    let at = |field: &str| format!("sources[{i}].journald.{field}");
    let mut units = Vec::with_capacity(raw.units.len());
    for (j, unit) in raw.units.into_iter().enumerate() {
        let unit = unit.trim().to_owned();
        if unit.is_empty() || unit.contains(['/', '\n', '=']) || unit.starts_with('-') {
            return Err(invalid(
                at(&format!("units[{j}]")),
                format!("{unit:?} is not a unit name (e.g. ssh.service, kubelet)"),
            ));
        }
        units.push(if unit.contains('.') {
            unit
        } else {
            format!("{unit}.service")
        });
    }
    let mut matches = std::collections::BTreeMap::new();
    for (field, values) in raw.matches {
        let key = at(&format!("match.{field}"));
        if !is_journal_field_name(&field) {
            return Err(invalid(
                key,
                format!(
                    "{field:?} is not a journal field name (upper-case letters, digits \
                     and `_`, e.g. _SYSTEMD_UNIT, PRIORITY)"
                ),
            ));
        }
        if field == "_SYSTEMD_UNIT" && !units.is_empty() {
            return Err(invalid(
                key,
                "`units` already matches _SYSTEMD_UNIT; list the units in one of them",
            ));
        }
        let values = values.into_strings();
        if values.is_empty() {
            return Err(invalid(key, "at least one value is required"));
        }
        matches.insert(field, values);
    }
    if let Some(dir) = &raw.directory
        && !dir.is_absolute()
    {
        return Err(invalid(
            at("directory"),
            format!("{} must be an absolute path", dir.display()),
        ));
    }
    Ok(JournaldSourceConfig {
        name,
        units,
        matches,
        since: raw.since,
        directory: raw.directory,
    })
}

fn validate_source(i: usize, source: RawSource) -> Result<SourceConfig, Invalid> {
    let at = |field: &str| format!("sources[{i}].{field}");
    let include = source.include.unwrap_or_default();
    let exclude = source.exclude.unwrap_or_default();
    let max_line_bytes = source
        .max_line_bytes
        .unwrap_or_else(super::raw::default_max_line_bytes);
    if include.is_empty() {
        return Err(invalid(at("include"), "at least one glob is required"));
    }
    for (list, globs) in [("include", &include), ("exclude", &exclude)] {
        for (j, glob) in globs.iter().enumerate() {
            let key = format!("sources[{i}].{list}[{j}]");
            if !Path::new(glob).is_absolute() {
                return Err(invalid(
                    key,
                    format!("glob {glob:?} must be an absolute path"),
                ));
            }
            if let Err(e) = globset::Glob::new(glob) {
                return Err(invalid(key, format!("invalid glob {glob:?}: {}", e.kind())));
            }
        }
    }
    if max_line_bytes < MIN_MAX_LINE_BYTES {
        return Err(invalid(
            at("max_line_bytes"),
            format!(
                "{max_line_bytes} bytes is too small: the minimum is {MIN_MAX_LINE_BYTES} (1KiB)"
            ),
        ));
    }
    Ok(SourceConfig {
        name: source.name,
        include,
        exclude,
        format: source
            .format
            .unwrap_or_else(super::raw::default_source_format),
        read_from: source
            .read_from
            .unwrap_or_else(super::raw::default_read_from),
        max_line_bytes: to_usize(max_line_bytes, || at("max_line_bytes"))?,
        include_compressed: source.include_compressed.unwrap_or(false),
        rescan_interval: positive(
            source
                .rescan_interval
                .unwrap_or_else(super::raw::default_rescan_interval),
            || at("rescan_interval"),
        )?,
        processors: source.processors,
        multiline: source
            .multiline
            .map(|m| validate_multiline(m, max_line_bytes, &|k| at(&format!("multiline{k}"))))
            .transpose()?,
    })
}

/// A source's `multiline:`; `at(".key")` names a key under it.
fn validate_multiline(
    raw: super::raw::RawMultiline,
    max_line_bytes: u64,
    at: &dyn Fn(&str) -> String,
) -> Result<crate::decode::multiline::MultilineConfig, Invalid> {
    use super::raw::RawMultiline;
    use crate::decode::multiline::{
        Builtin, DEFAULT_MAX_LINES, DEFAULT_TIMEOUT, MultilineConfig, RuleSpec,
    };
    let builtin = |name: &str, key: &str| {
        Builtin::parse(name).ok_or_else(|| {
            invalid(
                at(key),
                format!(
                    "{name:?} is not a built-in rule; expected one of {} (or a map with start and/or continue)",
                    Builtin::NAMES.join(", ")
                ),
            )
        })
    };
    let max_bytes_default = max_line_bytes;
    let rule = match raw {
        RawMultiline::Name(name) => {
            return Ok(MultilineConfig::builtin(
                builtin(&name, "")?,
                to_usize(max_bytes_default, || at(""))?,
            ));
        }
        RawMultiline::Rule(rule) => rule,
    };
    let spec = match (&rule.rule, &rule.start, &rule.cont) {
        (Some(name), None, None) => RuleSpec::Builtin(builtin(name, ".rule")?),
        (Some(_), _, _) => {
            return Err(invalid(
                at(".rule"),
                "a built-in rule takes no start or continue; give one or the other",
            ));
        }
        (None, None, None) => {
            return Err(invalid(
                at(""),
                "give a built-in rule (rule: java) or a start and/or continue regex",
            ));
        }
        (None, start, cont) => {
            for (key, re) in [(".start", start), (".continue", cont)] {
                if let Some(re) = re
                    && let Err(e) = regex::bytes::Regex::new(re)
                {
                    return Err(invalid(at(key), format!("invalid regex: {e}")));
                }
            }
            RuleSpec::Custom {
                start: start.clone(),
                cont: cont.clone(),
            }
        }
    };
    let max_lines = match rule.max_lines {
        None => DEFAULT_MAX_LINES,
        Some(0) => return Err(invalid(at(".max_lines"), "must be at least 1")),
        Some(n) => to_usize(n, || at(".max_lines"))?,
    };
    let max_bytes = match rule.max_bytes {
        None => to_usize(max_bytes_default, || at(".max_bytes"))?,
        Some(n) if n < MIN_MAX_LINE_BYTES => {
            return Err(invalid(
                at(".max_bytes"),
                format!("{n} bytes is too small: the minimum is {MIN_MAX_LINE_BYTES} (1KiB)"),
            ));
        }
        Some(n) => to_usize(n, || at(".max_bytes"))?,
    };
    let timeout = match rule.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => positive(t, || at(".timeout"))?,
    };
    Ok(MultilineConfig {
        rule: spec,
        max_lines,
        max_bytes,
        timeout,
    })
}

fn validate_elasticsearch(
    es: RawElasticsearch,
    kubernetes: &super::kubernetes::KubernetesConfig,
) -> Result<ElasticsearchConfig, Invalid> {
    // The template maps label keys the way the metadata writes them: one
    // setting in effect, so a mismatch is refused rather than left to turn
    // into mapping conflicts (dead letters) at run time.
    let dedot = match es.dedot {
        None => kubernetes.dedot,
        Some(d)
            if kubernetes.mode != super::kubernetes::KubernetesMode::Off
                && d != kubernetes.dedot =>
        {
            return Err(invalid(
                format!("{AT}.dedot"),
                format!(
                    "is {d} but kubernetes.dedot is {}: the template must map label keys the way \
                     the metadata writes them; remove this key (it follows kubernetes.dedot) \
                     or set both alike",
                    kubernetes.dedot
                ),
            ));
        }
        Some(d) => d,
    };
    const AT: &str = "sink.elasticsearch";
    if es.hosts.is_empty() {
        return Err(invalid(
            format!("{AT}.hosts"),
            "at least one host URL is required",
        ));
    }
    let hosts = es
        .hosts
        .iter()
        .enumerate()
        .map(|(i, host)| validate_host(host).map_err(|m| invalid(format!("{AT}.hosts[{i}]"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let data_stream = match es.data_stream {
        None => None,
        Some(ds) => {
            if ds.kind != "logs" {
                return Err(invalid(
                    format!("{AT}.data_stream.type"),
                    format!("{:?}: only \"logs\" is supported", ds.kind),
                ));
            }
            for (field, value) in [("dataset", &ds.dataset), ("namespace", &ds.namespace)] {
                let ok = !value.is_empty()
                    && value.len() <= 100
                    && value.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                    });
                if !ok || value.starts_with(['_', '.']) {
                    return Err(invalid(
                        format!("{AT}.data_stream.{field}"),
                        format!(
                            "{value:?}: use 1-100 of a-z 0-9 _ . (no '-', which separates the parts of the name)"
                        ),
                    ));
                }
            }
            Some(super::DataStreamConfig {
                kind: ds.kind,
                dataset: ds.dataset,
                namespace: ds.namespace,
            })
        }
    };
    let index = match (&data_stream, es.index) {
        (None, index) => index.unwrap_or_else(super::raw::default_index),
        (Some(ds), None) => ds.name(),
        (Some(ds), Some(index)) if index == ds.name() => index,
        (Some(ds), Some(index)) => {
            return Err(invalid(
                format!("{AT}.index"),
                format!(
                    "{index:?} conflicts with data_stream (which writes to {:?}): remove one",
                    ds.name()
                ),
            ));
        }
    };
    if let Err(e) = crate::encode::validate_index_template(&index) {
        return Err(invalid(format!("{AT}.index"), e.to_string()));
    }
    if es.compression.gzip > 9 {
        return Err(invalid(
            format!("{AT}.compression.gzip"),
            format!(
                "level {} is out of range: 0 (off) to 9",
                es.compression.gzip
            ),
        ));
    }
    if es.concurrency == 0 {
        return Err(invalid(format!("{AT}.concurrency"), "must be at least 1"));
    }
    if es.batch.max_bytes == 0 {
        return Err(invalid(
            format!("{AT}.batch.max_bytes"),
            "must be greater than 0",
        ));
    }
    if es.batch.max_events == 0 {
        return Err(invalid(
            format!("{AT}.batch.max_events"),
            "must be greater than 0",
        ));
    }
    let initial_backoff = positive(es.retry.initial_backoff, || {
        format!("{AT}.retry.initial_backoff")
    })?;
    if es.retry.max_backoff < initial_backoff {
        return Err(invalid(
            format!("{AT}.retry.max_backoff"),
            format!(
                "{} is less than retry.initial_backoff ({})",
                humantime::format_duration(es.retry.max_backoff),
                humantime::format_duration(initial_backoff)
            ),
        ));
    }
    if es.retry.give_up_after.is_zero() {
        return Err(invalid(
            format!("{AT}.retry.give_up_after"),
            "must be greater than 0 (documents are dead-lettered after failing this long; \
             a long bound such as 24h comes closest to never)",
        ));
    }
    let give_up_after = es.retry.give_up_after;
    let tls = match es.tls {
        None => None,
        Some(tls) => {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                let missing = if tls.cert_file.is_none() {
                    "cert_file"
                } else {
                    "key_file"
                };
                return Err(invalid(
                    format!("{AT}.tls.{missing}"),
                    "a client certificate needs both cert_file and key_file",
                ));
            }
            if !tls.verify && tls.ca_file.is_some() {
                return Err(invalid(
                    format!("{AT}.tls.verify"),
                    "verify: false ignores ca_file: remove one of them",
                ));
            }
            for (field, path) in [
                ("ca_file", &tls.ca_file),
                ("cert_file", &tls.cert_file),
                ("key_file", &tls.key_file),
            ] {
                non_empty_path(path.as_deref(), || format!("{AT}.tls.{field}"))?;
            }
            Some(TlsConfig {
                ca_file: tls.ca_file,
                cert_file: tls.cert_file,
                key_file: tls.key_file,
                verify: tls.verify,
            })
        }
    };
    let auth = match es.auth {
        None => None,
        Some(auth) => match (auth.basic, auth.api_key_file) {
            (Some(basic), None) => {
                if basic.username.is_empty() || basic.username.contains(':') {
                    return Err(invalid(
                        format!("{AT}.auth.basic.username"),
                        "must be non-empty and must not contain ':'",
                    ));
                }
                non_empty_path(Some(&basic.password_file), || {
                    format!("{AT}.auth.basic.password_file")
                })?;
                Some(AuthConfig::Basic {
                    username: basic.username,
                    password_file: basic.password_file,
                })
            }
            (None, Some(file)) => {
                non_empty_path(Some(&file), || format!("{AT}.auth.api_key_file"))?;
                Some(AuthConfig::ApiKeyFile(file))
            }
            _ => {
                return Err(invalid(
                    format!("{AT}.auth"),
                    "give exactly one of `basic: {username, password_file}` and `api_key_file`",
                ));
            }
        },
    };
    for (name, value) in &es.headers {
        let key = format!("{AT}.headers.{name}");
        let parsed = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(key.clone(), format!("{name:?} is not a valid header name")))?;
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(invalid(
                key,
                "the value must be visible ASCII (no control characters)",
            ));
        }
        let reserved = [
            reqwest::header::CONTENT_TYPE,
            reqwest::header::CONTENT_ENCODING,
            reqwest::header::CONTENT_LENGTH,
            reqwest::header::HOST,
        ];
        if reserved.contains(&parsed) {
            return Err(invalid(key, "this header is set by logship itself"));
        }
        if parsed == reqwest::header::AUTHORIZATION && auth.is_some() {
            return Err(invalid(key, "conflicts with `auth`: use one of them"));
        }
    }
    Ok(ElasticsearchConfig {
        hosts,
        index,
        batch: BatchConfig {
            max_bytes: to_usize(es.batch.max_bytes, || format!("{AT}.batch.max_bytes"))?,
            max_events: to_usize(es.batch.max_events, || format!("{AT}.batch.max_events"))?,
            timeout: positive(es.batch.timeout, || format!("{AT}.batch.timeout"))?,
        },
        gzip_level: es.compression.gzip,
        concurrency: to_usize(es.concurrency, || format!("{AT}.concurrency"))?,
        request_timeout: positive(es.request_timeout, || format!("{AT}.request_timeout"))?,
        retry: RetryConfig {
            initial_backoff,
            max_backoff: es.retry.max_backoff,
            give_up_after,
        },
        tls,
        auth,
        headers: es.headers,
        data_stream,
        template: es.template,
        dedot,
        dead_letter: {
            if es.dead_letter.max_bytes < 4096 {
                return Err(invalid(
                    format!("{AT}.dead_letter.max_bytes"),
                    "must be at least 4KiB",
                ));
            }
            super::DeadLetterConfig {
                max_bytes: es.dead_letter.max_bytes,
                max_files: es.dead_letter.max_files,
            }
        },
    })
}

fn non_empty_path(path: Option<&Path>, key: impl FnOnce() -> String) -> Result<(), Invalid> {
    match path {
        Some(p) if p.as_os_str().is_empty() => Err(invalid(key(), "must not be empty")),
        _ => Ok(()),
    }
}

/// An `http`/`https` URL with a host; returned without trailing `/` so that
/// `{host}/_bulk` is always well-formed.
fn validate_host(host: &str) -> Result<String, String> {
    let hint = if host.contains("://") {
        String::new()
    } else {
        format!(" (write \"http://{host}\" or \"https://{host}\")")
    };
    let url = reqwest::Url::parse(host).map_err(|e| format!("invalid URL {host:?}: {e}{hint}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "URL {host:?} has scheme {:?}: expected http or https{hint}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL {host:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("URL {host:?} must not have a query or fragment"));
    }
    Ok(host.trim_end_matches('/').to_owned())
}

fn positive(d: Duration, key: impl FnOnce() -> String) -> Result<Duration, Invalid> {
    if d.is_zero() {
        Err(invalid(key(), "must be greater than 0"))
    } else {
        Ok(d)
    }
}

fn to_usize(n: u64, key: impl FnOnce() -> String) -> Result<usize, Invalid> {
    usize::try_from(n).map_err(|_| invalid(key(), format!("{n} is too large for this platform")))
}

fn validate_http(raw: super::raw::RawHttp) -> Result<HttpConfig, Invalid> {
    if raw.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(
            "http.listen",
            format!(
                "{:?} is not an address:port such as 0.0.0.0:2020 or [::]:2020",
                raw.listen
            ),
        ));
    }
    Ok(HttpConfig {
        listen: raw.listen,
        per_file_lag: raw.per_file_lag,
    })
}
