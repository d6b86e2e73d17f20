//! `logship audit`: proves, line by line, that a file is in Elasticsearch.
//!
//! A document's `_id` is a function of the node name, the file's identity
//! and generation and the line's offset (`encode::id`), so the `_id`s of a
//! file's lines can be computed again and looked up. For each audited file
//! the audit
//!
//! 1. **identifies** it the way a restarted agent would: device, inode and
//!    first-line fingerprint, looked up in the checkpoint store (read only,
//!    [`checkpoint::read_only`]); a rotated copy (copytruncate, `.gz`) is
//!    matched to the file it was copied from by `tail::rotated`'s search,
//!    decompressing into a private temporary directory, never `data_dir`.
//!    The store gives the generation whose content the file holds and the
//!    offset up to which the agent's checkpoint says lines are delivered.
//!    A file whose identity the store does not know (never read, or
//!    rewritten by a copytruncate after the agent last read it), or whose
//!    first bytes are not the stored generation's, is *unknown generation*:
//!    its lines are counted, not looked up, and not called missing;
//! 2. **reads** it from its start through the agent's own pipeline
//!    ([`scan`], `tail::pipeline`): the source's format, `max_line_bytes`,
//!    multiline rule and processors, and the pod's annotations when the
//!    Kubernetes metadata can be had (the same `k8s::start` and `resolve`
//!    as the agent; a pod that is gone falls back to the source's settings,
//!    with a note);
//! 3. **looks up** the `_id`s in batches of [`BATCH_IDS`], [`CONCURRENCY`]
//!    requests in flight, as `ids` searches over the index pattern of
//!    `sink.elasticsearch.index` (`sink::elasticsearch::lookup`; never a
//!    write);
//! 4. **classifies** every line (`report`): present, missing, dropped by
//!    processors, not yet shipped (not found, at or past the checkpoint),
//!    dead-lettered (its `_id` is in `data_dir/dead-letter*.ndjson`).
//!
//! The default file set is every file the sources' globs match plus every
//! file the checkpoint store knows that is still on disk (at its path, or
//! rotated beside it). journald sources are not audited (noted).
//!
//! Limits (also in `docs/audit.md`): a multiline group the agent handed
//! out on its `timeout` while the rest of the event was not written yet
//! was shipped as two events, which a whole-file read joins: the second
//! part shows as missing. Lines before where `read_from: end` started a
//! file were never shipped, by design, and show as missing. With `buffer:
//! disk`, lines in the queue but not yet delivered are behind the
//! checkpoint and show as missing. An `index` template changed since the
//! lines were shipped hides them from the lookup.

pub mod report;
pub mod scan;

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::decode::multiline::Rules;
use crate::encode::{DocumentId, Encoder, FieldTemplate, IndexTemplateError};
use crate::event::FileIdentity;
use crate::k8s::{Enricher, FileMetadata, Resolved};
use crate::processors::{Chains, FileProcessor};
use crate::sink::elasticsearch::lookup::{IdLookup, LookupError};
use crate::sink::elasticsearch::{SinkError, dead_letter};
use crate::tail::checkpoint::{self, StoredFile};
use crate::tail::discover::{self, SourceMatcher};
use crate::tail::follower::{compile_builtin, multiline_rule};
use crate::tail::identity;
use crate::tail::rotated::{self, Located};
use report::{FileReport, LineStatus, Report};
use scan::{LineOutcome, Shipped};

/// `_id`s per lookup request: the most a search's hits can hold twice
/// under Elasticsearch's default `max_result_window`. The cost of a lookup
/// is mostly per request: 5,000 audited 1 GiB in 23–29 s, 2,000 in 45 s
/// (docs/testing.md).
pub const BATCH_IDS: usize = 5_000;
const _: () = assert!(BATCH_IDS <= crate::sink::elasticsearch::lookup::MAX_IDS);
/// Lookup requests in flight at once.
pub const CONCURRENCY: usize = 4;
/// Files at least this large report their progress on stderr...
const PROGRESS_BYTES: u64 = 64 << 20;
/// ...this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("checkpoint store {0}")]
    Checkpoints(String),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Template(#[from] IndexTemplateError),
    #[error("starting Kubernetes metadata: {0}")]
    Kubernetes(String),
    #[error("compiling processors: {0}")]
    Processors(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// What to audit.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The files (none: the default set, see the module doc).
    pub paths: Vec<PathBuf>,
    /// Report the progress of large files on stderr.
    pub progress: bool,
}

/// How a file's content is known to the checkpoint store.
enum Identified {
    /// As generation `entry.checkpoint.generation` of `entry.identity`.
    Known(StoredFile),
    /// Not: its lines are counted, not looked up.
    Unknown {
        identity: Option<FileIdentity>,
        reason: String,
    },
}

/// A file to audit.
struct Target {
    /// The file as named on disk.
    shown: PathBuf,
    /// The open file (for a `.gz`, its decompressed copy); `None` if it
    /// could not be read (then `error` says why).
    file: Option<File>,
    identified: Identified,
    /// The source whose settings it is read with.
    source: Option<usize>,
    /// A decompressed copy, removed when the target is done.
    copy: Option<PathBuf>,
    error: Option<String>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(copy) = &self.copy {
            let _ = std::fs::remove_file(copy);
        }
    }
}

impl Scratch {
    /// A new directory of its own under the temp dir, mode 0700, never one
    /// that already exists (a predictable name in a shared /tmp could be a
    /// symlink planted elsewhere; decompressed logs must not be readable by
    /// others).
    fn create() -> Result<Scratch, (PathBuf, io::Error)> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut last = None;
        for attempt in 0..100u32 {
            let path = base.join(format!(
                "logship-audit-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Scratch(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
                Err(e) => return Err((path, e)),
            }
        }
        Err(last.unwrap_or_else(|| (base, io::Error::other("no free name"))))
    }
}

/// A private directory for decompressed rotations, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything a file's audit shares with the others.
struct Auditor<'c> {
    config: &'c Config,
    multiline: Vec<Option<Arc<Rules>>>,
    chains: Chains,
    enricher: Enricher,
    lookup: Arc<IdLookup>,
    pattern: Arc<str>,
    dead_lettered: Arc<HashSet<DocumentId>>,
    progress: bool,
}

/// Audits the files of `options` against the Elasticsearch of `config`.
pub async fn audit(config: &Config, options: &Options) -> Result<Report, AuditError> {
    let started = Instant::now();
    let store = checkpoint::read_only(&config.data_dir).map_err(AuditError::Checkpoints)?;
    let dead_lettered = dead_lettered_ids(&config.data_dir)?;
    let lookup = Arc::new(IdLookup::new(&config.sink)?);
    let pattern: Arc<str> = FieldTemplate::parse(&config.sink.index)?.pattern().into();
    let chains = Chains::build(config, &crate::telemetry::Metrics::default().processors)
        .map_err(|e| AuditError::Processors(e.to_string()))?;
    let k8s_stop = CancellationToken::new();
    let _k8s_guard = k8s_stop.clone().drop_guard();
    let (enricher, _pod_watch) = crate::k8s::start(&config.kubernetes, k8s_stop)
        .await
        .map_err(|e| AuditError::Kubernetes(e.to_string()))?;
    let scratch = Scratch::create().map_err(|(path, source)| AuditError::Io { path, source })?;

    let mut report = Report {
        index_pattern: pattern.to_string(),
        ..Report::default()
    };
    if !config.journald.is_empty() {
        report.notes.push(format!(
            "{} journald source(s) not audited: journal entries are not files (their _ids come from journal sequence numbers)",
            config.journald.len()
        ));
    }
    let (targets, gone) = {
        let (cfg, paths, dir) = (config.clone(), options.paths.clone(), scratch.0.clone());
        tokio::task::spawn_blocking(move || {
            if paths.is_empty() {
                return default_targets(&cfg, &store, &dir);
            }
            let matchers: Vec<SourceMatcher> = cfg.sources.iter().map(SourceMatcher::new).collect();
            let targets = paths
                .iter()
                .map(|p| named_target(p, &cfg, &matchers, &store, &dir))
                .collect();
            (targets, 0)
        })
        .await
        .map_err(|e| AuditError::Io {
            path: config.data_dir.clone(),
            source: io::Error::other(e),
        })?
    };
    if gone > 0 {
        report.notes.push(format!(
            "{gone} file(s) the checkpoints know are no longer on disk (deleted, or rotated to a name logship does not look for): not audited"
        ));
    }
    let auditor = Auditor {
        config,
        multiline: config
            .sources
            .iter()
            .map(|s| s.multiline.as_ref().and_then(|m| m.compile().ok()))
            .collect(),
        chains,
        enricher,
        lookup: lookup.clone(),
        pattern,
        dead_lettered: Arc::new(dead_lettered),
        progress: options.progress,
    };
    for target in targets {
        let file = auditor.file(target).await?;
        report.files.push(file);
    }
    report.requests = lookup.requests();
    report.seconds = started.elapsed().as_secs_f64();
    report.conclude();
    Ok(report)
}

/// Every file the sources match, then every file the store knows that is
/// still on disk elsewhere (see module doc), and how many it knows that are
/// gone.
fn default_targets(config: &Config, store: &[StoredFile], scratch: &Path) -> (Vec<Target>, usize) {
    let matchers: Vec<SourceMatcher> = config.sources.iter().map(SourceMatcher::new).collect();
    let mut targets: Vec<Target> = discover::scan(&matchers)
        .files
        .into_iter()
        .map(|found| {
            let mut t = target(&found.path, store, scratch);
            t.source = Some(found.source);
            t
        })
        .collect();
    let mut taken: HashSet<(u64, u64)> = HashSet::new();
    let mut seen: HashSet<FileIdentity> = HashSet::new();
    for t in &targets {
        if let Some(meta) = t.file.as_ref().and_then(|f| f.metadata().ok()) {
            taken.insert((meta.dev(), meta.ino()));
        }
        if let Identified::Known(e) = &t.identified {
            seen.insert(e.file.identity);
        }
    }
    let mut gone = 0;
    for e in store {
        if seen.contains(&e.file.identity) {
            continue;
        }
        let source = source_named(config, e.file.source.as_deref());
        // A tombstoned entry (the agent saw it truncated, replaced or
        // deleted) is looked for only in copies: its path holds other content.
        let located = if e.gone {
            rotated::locate_elsewhere(&e.file, &taken, scratch)
        } else {
            rotated::locate(&e.file, &taken, scratch)
        };
        match located {
            Located::AtPath if e.gone => {}
            Located::Gone if e.gone => {}
            Located::AtPath => {
                let mut t = target(&e.file.path, store, scratch);
                t.source = source.or(t.source);
                targets.push(t);
            }
            Located::Found(c) => {
                if let Ok(meta) = std::fs::metadata(&c.found_at) {
                    taken.insert((meta.dev(), meta.ino()));
                }
                targets.push(Target {
                    shown: c.found_at,
                    file: Some(c.file),
                    identified: Identified::Known(e.clone()),
                    source,
                    copy: c.copy,
                    error: None,
                });
            }
            Located::Gone => gone += 1,
        }
        seen.insert(e.file.identity);
    }
    (targets, gone)
}

/// A file named on the command line, read with the settings of the first
/// source whose globs match it, else of the source the store says followed
/// it.
fn named_target(
    path: &Path,
    config: &Config,
    matchers: &[SourceMatcher],
    store: &[StoredFile],
    scratch: &Path,
) -> Target {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut t = target(&resolved, store, scratch);
    t.shown = path.to_path_buf();
    t.source = matchers
        .iter()
        .position(|m| m.matches(&resolved) || m.matches(path))
        .or_else(|| match &t.identified {
            Identified::Known(e) => source_named(config, e.file.source.as_deref()),
            Identified::Unknown { .. } => None,
        });
    t
}

fn source_named(config: &Config, name: Option<&str>) -> Option<usize> {
    let name = name?;
    config.sources.iter().position(|s| s.name == name)
}

/// Opens and identifies `path` (see [`identify`]).
fn target(path: &Path, store: &[StoredFile], scratch: &Path) -> Target {
    let mut t = Target {
        shown: path.to_path_buf(),
        file: None,
        identified: Identified::Unknown {
            identity: None,
            reason: String::new(),
        },
        source: None,
        copy: None,
        error: None,
    };
    match identify(path, store, scratch) {
        Ok((file, identified, copy)) => {
            t.file = file;
            t.identified = identified;
            t.copy = copy;
        }
        Err(e) => t.error = Some(format!("cannot read it: {e}")),
    }
    t
}

/// What the store knows of the content at `path`: the file itself (same
/// identity, and its first bytes are the stored generation's), or a copy
/// of a file it knows (a copytruncate copy, a `.gz`); else unknown. Returns
/// the file to read (a decompressed copy for a `.gz`, with its path).
fn identify(
    path: &Path,
    store: &[StoredFile],
    scratch: &Path,
) -> io::Result<(Option<File>, Identified, Option<PathBuf>)> {
    let compressed = path.extension().is_some_and(|e| e == "gz");
    if compressed {
        if let Some((file, e, copy)) = copy_of(path, store, scratch) {
            return Ok((Some(file), Identified::Known(e), copy));
        }
        // The file must be readable to say anything of it.
        File::open(path)?;
        let reason = "a compressed file that is no copy of a file the checkpoints know".into();
        return Ok((
            None,
            Identified::Unknown {
                identity: None,
                reason,
            },
            None,
        ));
    }
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let Some(fingerprint) = identity::fingerprint(&file)? else {
        let reason = "no complete first line yet: nothing of it is shipped until it has one".into();
        return Ok((
            Some(file),
            Identified::Unknown {
                identity: None,
                reason,
            },
            None,
        ));
    };
    let id = FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
        fingerprint,
    };
    if let Some(e) = store.iter().find(|e| e.file.identity == id && !e.gone) {
        // What the agent checks before it resumes: the stored first bytes,
        // and the bytes before the checkpoint (and before what it read).
        if !rotated::still_holds(&file, &e.file) {
            let reason = format!(
                "its content is not that of generation {} that the checkpoints know (its first bytes or the bytes before the checkpoint differ: rewritten after the agent last read it)",
                e.file.checkpoint.generation
            );
            return Ok((
                Some(file),
                Identified::Unknown {
                    identity: Some(id),
                    reason,
                },
                None,
            ));
        }
        return Ok((Some(file), Identified::Known(e.clone()), None));
    }
    if let Some((file, e, copy)) = copy_of(path, store, scratch) {
        return Ok((Some(file), Identified::Known(e), copy));
    }
    let reason = "the checkpoints know no file with this identity: never read by the agent, or rewritten (copytruncate) after it last read it".into();
    Ok((
        Some(file),
        Identified::Unknown {
            identity: Some(id),
            reason,
        },
        None,
    ))
}

/// The store entry `path` is a rotated copy of (`tail::rotated`'s search
/// among the siblings of each file the store knows in `path`'s directory).
fn copy_of(
    path: &Path,
    store: &[StoredFile],
    scratch: &Path,
) -> Option<(File, StoredFile, Option<PathBuf>)> {
    let dir = path.parent()?;
    let same = |a: &Path| std::fs::canonicalize(a).ok() == std::fs::canonicalize(path).ok();
    // Tombstoned entries too: a copytruncate seen by a running agent marks
    // the old identity gone, and its copy holds that generation.
    for e in store.iter().filter(|e| e.file.path.parent() == Some(dir)) {
        match rotated::locate_elsewhere(&e.file, &HashSet::new(), scratch) {
            Located::Found(c) if same(&c.found_at) => return Some((c.file, e.clone(), c.copy)),
            Located::Found(c) => {
                if let Some(copy) = c.copy {
                    let _ = std::fs::remove_file(copy);
                }
            }
            _ => {}
        }
    }
    None
}

/// The `_id`s in `data_dir`'s dead-letter files (`dead-letter.ndjson` and
/// its rotations).
fn dead_lettered_ids(data_dir: &Path) -> Result<HashSet<DocumentId>, AuditError> {
    #[derive(serde::Deserialize)]
    struct Record {
        #[serde(default)]
        id: Option<String>,
    }
    let mut ids = HashSet::new();
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ids),
        Err(source) => {
            return Err(AuditError::Io {
                path: data_dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rotated = name
            .strip_prefix("dead-letter.")
            .and_then(|n| n.strip_suffix(".ndjson"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if name != dead_letter::FILE_NAME && !rotated {
            continue;
        }
        let path = entry.path();
        let io_err = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let reader = BufReader::new(File::open(&path).map_err(io_err)?);
        for line in reader.split(b'\n') {
            let line = line.map_err(io_err)?;
            // A record that is not JSON names no id: skipped.
            if let Ok(Record { id: Some(id) }) = serde_json::from_slice::<Record>(&line)
                && let Some(id) = DocumentId::parse(id.as_bytes())
            {
                ids.insert(id);
            }
        }
    }
    Ok(ids)
}

/// A batch of lines and, for those with an `_id`, how often each was found.
type Looked = Result<(Vec<LineOutcome>, Vec<u32>), LookupError>;

impl Auditor<'_> {
    /// Audits one file.
    async fn file(&self, mut t: Target) -> Result<FileReport, AuditError> {
        let mut report = FileReport::new(t.shown.clone());
        if let Some(e) = t.error.take() {
            report.error = Some(e);
            report.conclude();
            return Ok(report);
        }
        let Some(file) = t.file.take() else {
            if let Identified::Unknown { reason, .. } = &t.identified {
                report.notes.push(format!("unknown generation: {reason}"));
            }
            report.conclude();
            return Ok(report);
        };
        let Some(source) = t.source.and_then(|i| self.config.sources.get(i)) else {
            report.error = Some(
                "no source of the config matches it and the checkpoints name none: its format and rules are unknown"
                    .into(),
            );
            report.conclude();
            return Ok(report);
        };
        let source_index = t.source.unwrap_or_default();
        let (identity, generation, acknowledged, followed) = match &t.identified {
            Identified::Known(e) => {
                let cp = e.file.checkpoint;
                report.identity = Some(e.file.identity);
                report.generation = Some(cp.generation);
                report.acknowledged = Some(cp.offset);
                if e.file.path != t.shown {
                    report.followed_as = Some(e.file.path.clone());
                }
                (
                    e.file.identity,
                    cp.generation,
                    Some(cp.offset),
                    e.file.path.clone(),
                )
            }
            Identified::Unknown { identity, reason } => {
                report.notes.push(format!("unknown generation: {reason}"));
                let id = identity.unwrap_or(FileIdentity {
                    dev: 0,
                    ino: 0,
                    fingerprint: 0,
                });
                (id, 0, None, t.shown.clone())
            }
        };
        let metadata = match self.enricher.resolve(&followed).await {
            Resolved::Metadata(m) => m,
            Resolved::Missing(pod) => {
                report.notes.push(format!(
                    "pod {}/{} is not in the metadata cache (deleted, or the API server cannot be reached): read with the source's multiline rule and processors (its annotations, if it had any, are unknown)",
                    pod.namespace, pod.pod_name
                ));
                FileMetadata::default()
            }
            Resolved::Excluded(_) => {
                report.notes.push(
                    "excluded by a pod or namespace annotation: the agent does not ship it".into(),
                );
                report.conclude();
                return Ok(report);
            }
        };
        let encoder = Encoder::new(&self.config.node_name, &self.config.sink.index)?;
        let ctx = metadata.file_context(&encoder, &followed, identity, generation);
        let reading = scan::Reading {
            format: source.format,
            max_line_bytes: source.max_line_bytes,
            multiline: multiline_rule(&metadata, self.multiline[source_index].clone(), |rule| {
                compile_builtin(rule, source.max_line_bytes)
            }),
            processor: FileProcessor::for_file(
                self.chains.for_source(&source.name),
                &metadata,
                &followed,
                &self.config.node_name,
            ),
            encoder,
            ctx,
        };
        let file = Arc::new(file);
        let size = file.metadata().map(|m| m.len()).unwrap_or_default();
        let (batches_tx, mut batches) = mpsc::channel::<Vec<LineOutcome>>(CONCURRENCY * 2);
        let reader = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                let mut batch = Vec::with_capacity(BATCH_IDS);
                let read = scan::read(&file, reading, |line| {
                    batch.push(line);
                    if batch.len() >= BATCH_IDS {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_IDS));
                        // The receiver is gone only when the audit failed.
                        let _ = batches_tx.blocking_send(full);
                    }
                });
                if !batch.is_empty() {
                    let _ = batches_tx.blocking_send(batch);
                }
                read
            })
        };
        let mut in_flight: VecDeque<tokio::task::JoinHandle<Looked>> = VecDeque::new();
        let mut last_progress = Instant::now();
        while let Some(batch) = batches.recv().await {
            if in_flight.len() >= CONCURRENCY
                && let Some(oldest) = in_flight.pop_front()
            {
                self.tally(&mut report, oldest.await, acknowledged)?;
            }
            if self.progress
                && size >= PROGRESS_BYTES
                && last_progress.elapsed() >= PROGRESS_EVERY
                && let Some(last) = batch.last()
            {
                last_progress = Instant::now();
                eprintln!(
                    "logship audit: {}: {}% read, {} lines counted",
                    t.shown.display(),
                    last.offset * 100 / size.max(1),
                    report.counts.lines
                );
            }
            in_flight.push_back(self.look_up(batch, acknowledged.is_some()));
        }
        while let Some(oldest) = in_flight.pop_front() {
            self.tally(&mut report, oldest.await, acknowledged)?;
        }
        report.bytes = match reader.await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                report.error = Some(format!("read failed: {e}"));
                0
            }
            Err(e) => {
                report.error = Some(format!("read task failed: {e}"));
                0
            }
        };
        for missing in &mut report.missing_lines {
            missing.text = line_at(&file, missing.offset);
        }
        report.conclude();
        Ok(report)
    }

    /// Looks the batch's `_id`s up (`known`: the generation is known; else
    /// nothing is looked up).
    fn look_up(&self, batch: Vec<LineOutcome>, known: bool) -> tokio::task::JoinHandle<Looked> {
        let (lookup, pattern) = (self.lookup.clone(), self.pattern.clone());
        tokio::spawn(async move {
            let ids: Vec<DocumentId> = batch
                .iter()
                .map(|l| match l.shipped {
                    Shipped::Document(id) | Shipped::Dropped(id) => id,
                })
                .collect();
            let counts = if known && !ids.is_empty() {
                lookup.count(&pattern, &ids).await?
            } else {
                Vec::new()
            };
            Ok((batch, counts))
        })
    }

    /// Counts a looked-up batch into `report` (`acknowledged`: the
    /// checkpoint's offset; `None`: unknown generation).
    fn tally(
        &self,
        report: &mut FileReport,
        looked: Result<Looked, tokio::task::JoinError>,
        acknowledged: Option<u64>,
    ) -> Result<(), AuditError> {
        let (batch, counts) = looked.map_err(|e| AuditError::Io {
            path: report.path.clone(),
            source: io::Error::other(e),
        })??;
        let mut counts = counts.into_iter();
        for line in batch {
            match (line.shipped, acknowledged) {
                (Shipped::Dropped(_), None) => report.add(line.offset, None, LineStatus::Dropped),
                (Shipped::Dropped(id), Some(_)) => {
                    // Dropped by today's processors; found all the same: it
                    // was shipped under another config.
                    let copies = counts.next().unwrap_or_default();
                    let status = if copies > 0 {
                        LineStatus::Present { copies }
                    } else {
                        LineStatus::Dropped
                    };
                    report.add(line.offset, Some(id.as_str()), status);
                }
                (Shipped::Document(id), None) => report.add(
                    line.offset,
                    Some(id.as_str()),
                    LineStatus::UnknownGeneration,
                ),
                (Shipped::Document(id), Some(acked)) => {
                    let copies = counts.next().unwrap_or_default();
                    let status = report::classify(
                        copies,
                        self.dead_lettered.contains(&id),
                        line.offset,
                        acked,
                    );
                    report.add(line.offset, Some(id.as_str()), status);
                }
            }
        }
        Ok(())
    }
}

/// The physical line starting at `offset`, cut at `report::EXAMPLE_BYTES`
/// (lossy UTF-8).
fn line_at(file: &File, offset: u64) -> String {
    let mut buf = vec![0u8; report::EXAMPLE_BYTES];
    let n = file.read_at(&mut buf, offset).unwrap_or(0);
    let line = &buf[..n];
    let line = memchr::memchr(b'\n', line).map_or(line, |nl| &line[..nl]);
    String::from_utf8_lossy(line).into_owned()
}

/// Hostile review of `logship audit`: reproductions of false answers. A
/// mock Elasticsearch (`Mock`) answers the `ids` searches from a set of
/// documents, honouring `size` as Elasticsearch does.
#[cfg(test)]
mod false_answers {
    use super::*;
    use crate::buffer::Acknowledger as _;
    use crate::tail::Checkpoint;
    use crate::tail::checkpoint::{Checkpointer, Head};
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::sync::Mutex;

    /// A one-node "Elasticsearch" holding `docs` (`_id` → copies) that
    /// answers `POST <pattern>/_search` with at most `size` hits.
    struct Mock {
        url: String,
        docs: Arc<Mutex<HashMap<String, u32>>>,
    }

    impl Mock {
        fn start() -> Mock {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let docs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
            let served = docs.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let docs = served.clone();
                    std::thread::spawn(move || {
                        while let Some(body) = read_request(&mut stream) {
                            let req: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or_default();
                            let size = req["size"].as_u64().unwrap_or(10) as usize;
                            let docs = docs.lock().unwrap();
                            let mut hits = Vec::new();
                            for id in req["query"]["ids"]["values"]
                                .as_array()
                                .into_iter()
                                .flatten()
                            {
                                let id = id.as_str().unwrap_or_default();
                                for _ in 0..docs.get(id).copied().unwrap_or(0) {
                                    hits.push(serde_json::json!({"_id": id}));
                                }
                            }
                            hits.truncate(size);
                            let answer = serde_json::json!({
                                "timed_out": false,
                                "_shards": {"failed": 0},
                                "hits": {"hits": hits},
                            })
                            .to_string();
                            let _ = write!(
                                stream,
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                                answer.len()
                            );
                        }
                    });
                }
            });
            Mock { url, docs }
        }

        fn put(&self, id: &DocumentId, copies: u32) {
            self.docs.lock().unwrap().insert(id.to_string(), copies);
        }
    }

    fn read_request(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).ok()?;
        Some(body)
    }

    fn config(root: &Path, es: &str) -> Config {
        config_glob(root, es, "*.log")
    }

    fn config_glob(root: &Path, es: &str, glob: &str) -> Config {
        let yaml = format!(
            "node_name: node-1\ndata_dir: {data}\n\
             sources: [{{name: app, include: ['{logs}/{glob}']}}]\n\
             sink: {{elasticsearch: {{hosts: ['{es}'], index: 'logs-%Y.%m.%d'}}}}\n",
            data = root.join("data").display(),
            logs = root.join("logs").display(),
        );
        crate::config::load_str(Path::new("t.yaml"), &yaml, |_| None).unwrap()
    }

    fn identity_of(path: &Path) -> FileIdentity {
        identity::identify(&File::open(path).unwrap())
            .unwrap()
            .unwrap()
    }

    /// The agent followed `path` (key 1, generation 0) and had everything
    /// before `offset` acknowledged, head and tail hash recorded as the
    /// follower records them.
    fn shipped(c: &Checkpointer, path: &Path, offset: u64) -> FileIdentity {
        let id = identity_of(path);
        c.follow(
            1,
            id,
            path,
            "app",
            Checkpoint {
                generation: 0,
                offset: 0,
            },
            true,
        );
        let bytes = std::fs::read(path).unwrap();
        let len = (offset).min(identity::HEAD_BYTES);
        let head = Head {
            len,
            hash: identity::head_hash_of(&bytes[..len as usize]),
        };
        c.set_head(1, 0, head);
        let tail = crate::tail::reader::hash_before(&File::open(path).unwrap(), offset);
        let span = c.issue_with_tail(1, 0, offset, tail, None);
        c.delivered(&[span]);
        id
    }

    /// Offsets of the lines of `text`.
    fn line_offsets(text: &[u8]) -> Vec<u64> {
        let mut out = vec![0];
        for (i, b) in text.iter().enumerate() {
            if *b == b'\n' && i + 1 < text.len() {
                out.push(i as u64 + 1);
            }
        }
        out
    }

    async fn run(config: &Config, paths: Vec<PathBuf>) -> Report {
        audit(
            config,
            &Options {
                paths,
                progress: false,
            },
        )
        .await
        .expect("audit runs")
    }

    /// A data_dir, a logs dir with `app.log` to come, the mock, a config.
    struct World {
        dir: tempfile::TempDir,
        data: PathBuf,
        logs: PathBuf,
        es: Mock,
        config: Config,
        live: PathBuf,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
            std::fs::create_dir_all(&data).unwrap();
            std::fs::create_dir_all(&logs).unwrap();
            let es = Mock::start();
            let config = config(dir.path(), &es.url);
            let live = logs.join("app.log");
            World {
                dir,
                data,
                logs,
                es,
                config,
                live,
            }
        }
    }

    fn lines(prefix: &str, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                format!("{prefix} line {i:04} INFO something happened here\n").into_bytes()
            })
            .collect()
    }

    /// logrotate's copytruncate while the agent runs (the usual case): the
    /// agent sees the truncation, gives the new content a new identity and
    /// tombstones the old one (`gone`). The copy `app.log.1` holds exactly
    /// the generation the tombstone names, and a line of it is not in
    /// Elasticsearch: the audit says MISSING (exit 1), named or not, whatever
    /// the glob (it said "UNKNOWN GENERATION" and exited 0 when named, and
    /// without a PATH did not audit the copy at all, with no note).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copy_of_a_file_copytruncated_under_a_running_agent_is_audited() {
        let World {
            dir,
            data,
            logs,
            es,
            config,
            live,
        } = World::new();
        let old = lines("old", 20);
        std::fs::write(&live, &old).unwrap();
        let c = Checkpointer::open(&data).unwrap();
        let old_id = shipped(&c, &live, old.len() as u64);
        // Every line of generation 0 is in Elasticsearch but the 4th.
        let key = crate::encode::FileIdKey::new("node-1", old_id, 0);
        for (i, off) in line_offsets(&old).into_iter().enumerate() {
            if i != 3 {
                es.put(&key.document_id(off), 1);
            }
        }
        // copytruncate, seen by the running agent.
        let copy = logs.join("app.log.1");
        std::fs::copy(&live, &copy).unwrap();
        std::fs::write(&live, b"new first line after the rotation\n").unwrap();
        let new_id = identity_of(&live);
        c.truncated(1, new_id, &live, 1, false);
        c.persist().unwrap();
        drop(c);
        let store = checkpoint::read_only(&data).unwrap();
        assert!(
            store.iter().any(|e| e.file.identity == old_id && e.gone),
            "the agent tombstoned the old identity: {store:?}"
        );

        // Named (source glob `*.log`: the copy matches no source), without
        // a PATH, and with a glob that matches the copy (`*.log*`).
        let named = run(&config, vec![copy.clone()]).await;
        let all = run(&config, Vec::new()).await;
        let wide = run(&config_glob(dir.path(), &es.url, "*.log*"), Vec::new()).await;
        let of_copy = |r: &Report| {
            r.files
                .iter()
                .find(|f| f.path == copy)
                .map(|f| (f.generation, f.counts.missing))
        };
        let seen = [
            (of_copy(&named), named.exit_code()),
            (of_copy(&all), all.exit_code()),
            (of_copy(&wide), wide.exit_code()),
        ];
        assert_eq!(
            seen,
            [((Some((Some(0), 1))), 1); 3],
            "the copy's lost line is not reported:\n--- named\n{}--- default\n{}--- glob *.log*\n{}",
            named.text(),
            all.text(),
            wide.text()
        );
    }

    /// A file rewritten in place (truncated and written again, agent stopped)
    /// whose first KiB is the same as the shipped generation's (a banner and
    /// a start-up preamble), with lines of the same lengths: the agent, on
    /// restart, sees the bytes before its checkpoint changed (tail hash) and
    /// reads it as a new generation. So does the audit now: unknown
    /// generation. (It checked only the 1 KiB head, took the new content for
    /// generation 0 and called its lines, never shipped, "present" — the old
    /// lines at the same offsets are: OK, exit 0.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rewrite_keeping_the_first_kib_is_not_taken_for_the_shipped_generation() {
        let World {
            dir: _dir,
            data,
            logs: _,
            es,
            config,
            live,
        } = World::new();
        let mut preamble = b"=== app 1.2.3 starting ===\n".to_vec();
        preamble.extend(lines("config", 24)); // > 1 KiB, the same on every start
        let mut before = preamble.clone();
        before.extend(lines("run-1", 40));
        std::fs::write(&live, &before).unwrap();
        let c = Checkpointer::open(&data).unwrap();
        let id = shipped(&c, &live, before.len() as u64);
        c.persist().unwrap();
        drop(c);
        let key = crate::encode::FileIdKey::new("node-1", id, 0);
        for off in line_offsets(&before) {
            es.put(&key.document_id(off), 1);
        }
        // Rewritten in place, same inode, same first KiB, other lines after.
        let mut after = preamble.clone();
        after.extend(lines("run-2", 40));
        assert_eq!(after.len(), before.len());
        std::fs::write(&live, &after).unwrap();
        assert_eq!(identity_of(&live), id);

        let report = run(&config, vec![live.clone()]).await;
        let f = &report.files[0];
        assert!(
            f.generation.is_none() && f.counts.present == 0,
            "the rewritten content's lines, never shipped, are called present: {}",
            report.text()
        );
    }

    /// A line indexed three times (e.g. an index reindexed or restored
    /// under a name the pattern also matches): the search's `size` is twice
    /// the ids, so a batch where every id has three copies gets only two
    /// thirds of the hits; a full answer is asked again in halves, so every
    /// line is present (the ids whose hits were cut were counted 0:
    /// "missing", exit 1, while every line is in Elasticsearch).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_found_in_three_indices_are_present_not_missing() {
        let World {
            dir: _dir,
            data,
            logs: _,
            es,
            config,
            live,
        } = World::new();
        let text = lines("x", 30);
        std::fs::write(&live, &text).unwrap();
        let c = Checkpointer::open(&data).unwrap();
        let id = shipped(&c, &live, text.len() as u64);
        c.persist().unwrap();
        drop(c);
        let key = crate::encode::FileIdKey::new("node-1", id, 0);
        for off in line_offsets(&text) {
            es.put(&key.document_id(off), 3);
        }
        let report = run(&config, vec![live.clone()]).await;
        assert_eq!(
            (report.totals.counts.missing, report.exit_code()),
            (0, 0),
            "{}",
            report.text()
        );
    }
}
