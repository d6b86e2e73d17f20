//! Processors: drop the noise, parse the rest, add what the index needs.
//!
//! A source's chain is its own `processors:` list followed by the top-level
//! one (Filebeat's order: input processors, then global ones). Before the
//! chain, a pod's `logship.io/drop: REGEX` annotation drops the lines whose
//! message matches it. [`Chain::compile`] validates a list at config load:
//! regexes compile, patterns parse, every field a step reads exists at that
//! point of the chain (`message`, `stream`, the file's metadata fields, or
//! one added or parsed by an earlier step), no field is written over one
//! logship writes itself, and no field is both a value and an object.
//!
//! Each follower runs its chain with a [`FileProcessor`]: a line goes in
//! (after decoding and enrichment, before encoding) and comes out dropped,
//! or with what the encoder writes besides its usual document: a new
//! `@timestamp`, `message`/`stream` left out, and a run of members
//! (`,"http":{"method":"GET",…},"tags":[…]`). Added and parsed fields live,
//! per line, in a small vector of (field id, value) entries that the
//! follower reuses: a value is a byte range of the message (or of a static
//! value), never a copy, and field names are interned at compile time. Regex
//! capture slots are reused too; a line allocates nothing unless it grows a
//! buffer past its high-water mark. No `serde_json::Value` per line.
//!
//! **Promises.** A processor is a pure function of the line (its bytes,
//! stream, decoded timestamp) and of the file's metadata: a line read again
//! after a restart is dropped or transformed the same way, so its `_id` and
//! its document do not change (unless the config or the pod's annotations
//! changed in between: the first copy indexed wins, by `_id`). A dropped
//! line is settled for its file's ack watermark at once (the follower
//! issues and acknowledges an empty span over it) and counted per step in
//! `logship_processor_dropped_lines`; it is never counted as lost. A step
//! that fails on a line (`parse` that does not match, `timestamp` whose
//! field holds no time in its format; an absent field is not a failure)
//! never drops it: the line ships unchanged by that step, tagged
//! (`tags: ["_parse_failure"]`, unless `on_failure: keep`), and
//! `logship_processor_failures` goes up.

mod condition;
pub mod dissect;
pub mod spec;
mod timefmt;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use regex::bytes::{CaptureLocations, Regex};

use crate::encode::{escape_bytes_lossy, write_json_str};
use crate::event::{DecodedLine, Timestamp};
use crate::k8s::{FileMetadata, RESERVED_FIELDS};

use self::condition::{Cond, LineView, Matcher, Source};
use self::dissect::Dissect;
pub use self::spec::{ConditionSpec, OnFailure, ProcessorSpec, Scalar};
use self::timefmt::TimeFormat;

/// The pod annotation whose regex drops matching lines of the pod's logs.
pub const DROP_ANNOTATION: &str = "logship.io/drop";
/// The `processor` label of lines dropped by [`DROP_ANNOTATION`].
pub const DROP_ANNOTATION_COUNTER: &str = "annotation:logship.io/drop";
/// Tag of a line a `parse` step failed on.
pub const PARSE_FAILURE_TAG: &str = "_parse_failure";
/// Tag of a line a `timestamp` step failed on.
pub const TIMESTAMP_FAILURE_TAG: &str = "_timestamp_failure";
/// Top-level field processors write tags into.
const TAGS_FIELD: &str = "tags";
/// A follower settles its dropped lines at least this often (in lines),
/// not only at end of file.
pub const SETTLE_EVERY_DROPPED: u64 = 4096;

/// A list that cannot be compiled: the key (from the config's root, e.g.
/// `sources[0].processors[2].parse.regex`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ProcessorError {
    pub key: String,
    pub message: String,
}

fn error(key: impl Into<String>, message: impl Into<String>) -> ProcessorError {
    ProcessorError {
        key: key.into(),
        message: message.into(),
    }
}

/// Lines dropped and failures of one named step, shared by every follower
/// (and every step of that name).
#[derive(Debug, Default)]
pub struct ProcessorCounters {
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
}

/// Counters per step name, for `/metrics`.
#[derive(Debug, Default)]
pub struct ProcessorMetrics {
    by_name: Mutex<BTreeMap<String, Arc<ProcessorCounters>>>,
}

impl ProcessorMetrics {
    /// The counters of `name`, created at 0 the first time.
    pub fn counters(&self, name: &str) -> Arc<ProcessorCounters> {
        let mut map = match self.by_name.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(name.to_owned()).or_default().clone()
    }

    /// `(name, dropped, failed)` of every step, by name.
    pub fn snapshot(&self) -> Vec<(String, u64, u64)> {
        let map = match self.by_name.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    c.dropped.load(Ordering::Relaxed),
                    c.failed.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// Index of a field path in [`Chain::paths`].
type FieldId = u16;

#[derive(Debug)]
struct FieldPath {
    /// `"segment"` per segment, JSON-escaped with quotes, and its text.
    keys: Box<[Box<[u8]>]>,
    segments: Box<[Box<str>]>,
    /// Position in the sorted order of all paths (members are written in it).
    rank: u16,
}

#[derive(Debug)]
struct StaticValue {
    text: Box<[u8]>,
    json: Box<[u8]>,
}

#[derive(Debug)]
enum Parser {
    /// Capture group index → the field it fills.
    Regex(Regex, Box<[Option<FieldId>]>),
    /// Kept keys in order → the fields they fill.
    Dissect(Dissect, Box<[FieldId]>),
}

#[derive(Debug)]
enum Step {
    Drop(Cond),
    Keep(Cond),
    Add(Box<[(FieldId, u16)]>),
    DropFields {
        ids: Box<[FieldId]>,
        message: bool,
        stream: bool,
    },
    Rename {
        from: FieldId,
        to: FieldId,
    },
    Parse {
        source: Source,
        parser: Parser,
        tag: bool,
    },
    Timestamp {
        field: FieldId,
        format: TimeFormat,
        tag: bool,
    },
}

/// A compiled chain (one per source; shared by its followers).
#[derive(Debug)]
pub struct Chain {
    steps: Box<[Step]>,
    names: Box<[String]>,
    counters: Box<[Arc<ProcessorCounters>]>,
    paths: Box<[FieldPath]>,
    statics: Box<[StaticValue]>,
    /// Conditions on the file's metadata: `(path, matcher)`, evaluated once
    /// per file.
    meta: Box<[(String, Matcher)]>,
}

/// What the chain knows while it compiles: the fields that may exist at
/// the current step.
#[derive(Default)]
struct Compiler {
    paths: Vec<String>,
    ids: HashMap<String, FieldId>,
    statics: Vec<StaticValue>,
    meta: Vec<(String, Matcher)>,
    /// Fields added or parsed that may exist here.
    present: BTreeSet<String>,
    message: bool,
    stream: bool,
}

/// Metadata fields a condition may read (constant per file).
fn metadata_field(path: &str) -> bool {
    path != "stream" && crate::encode::known_field(path)
        || path
            .strip_prefix("kubernetes.namespace_labels.")
            .is_some_and(|k| !k.is_empty())
}

impl Compiler {
    fn id(&mut self, path: &str, key: &str) -> Result<FieldId, ProcessorError> {
        if let Some(id) = self.ids.get(path) {
            return Ok(*id);
        }
        let id = FieldId::try_from(self.paths.len())
            .map_err(|_| error(key, "too many distinct fields in one chain"))?;
        self.paths.push(path.to_owned());
        self.ids.insert(path.to_owned(), id);
        Ok(id)
    }

    /// A field the chain may write at `path`: not logship's own, well formed.
    fn writable(&self, path: &str, key: &str) -> Result<(), ProcessorError> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(error(
                key,
                format!("field {path:?} is empty or has an empty dotted segment"),
            ));
        }
        let top = path.split('.').next().unwrap_or_default();
        if RESERVED_FIELDS.contains(&top) || top == TAGS_FIELD {
            return Err(error(
                key,
                format!(
                    "field {path:?} is written by logship itself ({}, {TAGS_FIELD}); choose another name",
                    RESERVED_FIELDS.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Adds `path` to the fields that may exist, refusing a path that would
    /// make a field both a value and an object.
    fn add(&mut self, path: &str, key: &str) -> Result<FieldId, ProcessorError> {
        self.writable(path, key)?;
        for other in &self.present {
            if other != path
                && (other.starts_with(&format!("{path}."))
                    || path.starts_with(&format!("{other}.")))
            {
                return Err(error(
                    key,
                    format!(
                        "field {path:?} and field {other:?} would make one a value and an object; rename one"
                    ),
                ));
            }
        }
        self.present.insert(path.to_owned());
        self.id(path, key)
    }

    /// A field a step reads: `message`, `stream`, metadata or present.
    fn readable(&mut self, path: &str, key: &str) -> Result<Source, ProcessorError> {
        match path {
            "message" if self.message => Ok(Source::Message),
            "stream" if self.stream => Ok(Source::Stream),
            _ if self.present.contains(path) => Ok(Source::Field(self.id(path, key)?)),
            _ if metadata_field(path) => Ok(Source::Meta),
            _ => Err(error(key, self.unknown(path))),
        }
    }

    fn unknown(&self, path: &str) -> String {
        let mut known: Vec<&str> = Vec::new();
        if self.message {
            known.push("message");
        }
        if self.stream {
            known.push("stream");
        }
        known.extend(self.present.iter().map(String::as_str));
        format!(
            "unknown field {path:?} here; known: {}, and the metadata fields ({}, kubernetes.labels.<key>, kubernetes.annotations.<key>, kubernetes.namespace_labels.<key>)",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
            crate::encode::KNOWN_FIELDS
                .iter()
                .filter(|f| **f != "stream")
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// A field an earlier step added or parsed (`not_ours` says why
    /// `message`, `stream` or metadata will not do).
    fn made_here(
        &mut self,
        path: &str,
        key: &str,
        not_ours: &str,
    ) -> Result<FieldId, ProcessorError> {
        if self.present.contains(path) {
            return self.id(path, key);
        }
        let why = if matches!(path, "message" | "stream") || metadata_field(path) {
            format!("{path:?} {not_ours}")
        } else {
            self.unknown(path)
        };
        Err(error(key, why))
    }

    fn regex(pattern: &str, key: &str) -> Result<Regex, ProcessorError> {
        Regex::new(pattern).map_err(|e| error(key, format!("invalid regex {pattern:?}: {e}")))
    }

    fn condition(&mut self, spec: &ConditionSpec, key: &str) -> Result<Cond, ProcessorError> {
        let leaf = |this: &mut Self, path: &str, matcher: Matcher, key: &str| {
            Ok(match this.readable(path, key)? {
                Source::Meta => {
                    this.meta.push((path.to_owned(), matcher));
                    Cond::Meta(this.meta.len() - 1)
                }
                source => Cond::Leaf(source, matcher),
            })
        };
        Ok(match spec {
            ConditionSpec::Equals(_) | ConditionSpec::Regex(_) if spec_is_empty(spec) => {
                return Err(error(key, "names no field"));
            }
            ConditionSpec::Equals(map) => {
                let mut all = Vec::new();
                for (path, value) in map {
                    let k = format!("{key}.equals.{path}");
                    let m = Matcher::Equals(value.text().as_bytes().into());
                    all.push(leaf(self, path, m, &k)?);
                }
                Cond::all(all)
            }
            ConditionSpec::Regex(map) => {
                let mut all = Vec::new();
                for (path, pattern) in map {
                    let k = format!("{key}.regex.{path}");
                    let m = Matcher::Regex(Self::regex(pattern, &k)?);
                    all.push(leaf(self, path, m, &k)?);
                }
                Cond::all(all)
            }
            ConditionSpec::And(list) => Cond::And(
                list.iter()
                    .enumerate()
                    .map(|(i, c)| self.condition(c, &format!("{key}.and[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            ConditionSpec::Or(list) => Cond::Or(
                list.iter()
                    .enumerate()
                    .map(|(i, c)| self.condition(c, &format!("{key}.or[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            ConditionSpec::Not(c) => Cond::Not(Box::new(self.condition(c, &format!("{key}.not"))?)),
        })
    }

    fn step(&mut self, spec: &ProcessorSpec, key: &str) -> Result<Step, ProcessorError> {
        let key = format!("{key}.{}", spec.kind());
        Ok(match spec {
            ProcessorSpec::Drop(s) => Step::Drop(self.condition(&s.when, &format!("{key}.when"))?),
            ProcessorSpec::Keep(s) => Step::Keep(self.condition(&s.when, &format!("{key}.when"))?),
            ProcessorSpec::AddFields(s) => {
                if s.fields.is_empty() {
                    return Err(error(format!("{key}.fields"), "adds no field"));
                }
                let mut out = Vec::new();
                for (path, value) in &s.fields {
                    let id = self.add(path, &format!("{key}.fields.{path}"))?;
                    let index = u16::try_from(self.statics.len())
                        .map_err(|_| error(&key, "too many static values in one chain"))?;
                    self.statics.push(StaticValue {
                        text: value.text().as_bytes().into(),
                        json: value.to_json().into_boxed_slice(),
                    });
                    out.push((id, index));
                }
                Step::Add(out.into_boxed_slice())
            }
            ProcessorSpec::DropFields(s) => {
                if s.fields.is_empty() {
                    return Err(error(format!("{key}.fields"), "drops no field"));
                }
                let (mut ids, mut message, mut stream) = (Vec::new(), false, false);
                for (i, path) in s.fields.iter().enumerate() {
                    let k = format!("{key}.fields[{i}]");
                    match path.as_str() {
                        "message" if self.message => {
                            message = true;
                            self.message = false;
                        }
                        "stream" if self.stream => {
                            stream = true;
                            self.stream = false;
                        }
                        _ => {
                            // The field itself, or every field under it.
                            let under: Vec<String> = self
                                .present
                                .iter()
                                .filter(|p| *p == path || p.starts_with(&format!("{path}.")))
                                .cloned()
                                .collect();
                            if under.is_empty() {
                                let why = if metadata_field(path) {
                                    format!(
                                        "{path:?} is metadata: only message, stream and fields added or parsed by processors can be dropped"
                                    )
                                } else {
                                    self.unknown(path)
                                };
                                return Err(error(k, why));
                            }
                            for p in under {
                                self.present.remove(&p);
                                ids.push(self.id(&p, &k)?);
                            }
                        }
                    }
                }
                Step::DropFields {
                    ids: ids.into_boxed_slice(),
                    message,
                    stream,
                }
            }
            ProcessorSpec::Rename(s) => {
                let from = self.made_here(
                    &s.from,
                    &format!("{key}.from"),
                    "cannot be renamed: only fields added or parsed by processors can",
                )?;
                self.present.remove(&s.from);
                let to = self.add(&s.to, &format!("{key}.to"))?;
                Step::Rename { from, to }
            }
            ProcessorSpec::Parse(s) => {
                let source = match self.readable(&s.field, &format!("{key}.field"))? {
                    source @ (Source::Message | Source::Field(_)) => source,
                    _ => {
                        return Err(error(
                            format!("{key}.field"),
                            format!(
                                "{:?} cannot be parsed: only message and fields added or parsed by processors can",
                                s.field
                            ),
                        ));
                    }
                };
                self.writable(&s.target, &format!("{key}.target"))?;
                let target = |name: &str| format!("{}.{name}", s.target);
                let parser = match (&s.regex, &s.dissect) {
                    (Some(pattern), None) => {
                        let k = format!("{key}.regex");
                        let re = Self::regex(pattern, &k)?;
                        let mut fields = Vec::new();
                        for name in re.capture_names() {
                            fields.push(match name {
                                Some(n) => Some(self.add(&target(n), &k)?),
                                None => None,
                            });
                        }
                        if fields.iter().all(Option::is_none) {
                            return Err(error(
                                k,
                                "has no named capture group ((?P<name>…)): it would add nothing",
                            ));
                        }
                        Parser::Regex(re, fields.into_boxed_slice())
                    }
                    (None, Some(pattern)) => {
                        let k = format!("{key}.dissect");
                        let d = Dissect::new(pattern)
                            .map_err(|e| error(&k, format!("pattern {pattern:?} {e}")))?;
                        let names: Vec<String> = d.keys().map(target).collect();
                        let mut fields = Vec::new();
                        for (i, n) in names.iter().enumerate() {
                            if names[..i].contains(n) {
                                return Err(error(&k, format!("key {n:?} appears twice")));
                            }
                            fields.push(self.add(n, &k)?);
                        }
                        Parser::Dissect(d, fields.into_boxed_slice())
                    }
                    _ => {
                        return Err(error(
                            key,
                            "needs exactly one of regex (named captures) or dissect (a %{key} pattern)",
                        ));
                    }
                };
                Step::Parse {
                    source,
                    parser,
                    tag: s.on_failure == OnFailure::Tag,
                }
            }
            ProcessorSpec::Timestamp(s) => {
                let field = self.made_here(
                    &s.field,
                    &format!("{key}.field"),
                    "is not a field added or parsed by processors: a timestamp is read from one (parse it out first)",
                )?;
                let format =
                    TimeFormat::new(&s.format).map_err(|e| error(format!("{key}.format"), e))?;
                Step::Timestamp {
                    field,
                    format,
                    tag: s.on_failure == OnFailure::Tag,
                }
            }
        })
    }
}

fn spec_is_empty(spec: &ConditionSpec) -> bool {
    match spec {
        ConditionSpec::Equals(m) => m.is_empty(),
        ConditionSpec::Regex(m) => m.is_empty(),
        _ => false,
    }
}

/// One list to compile: the key it is under (`processors`,
/// `sources[0].processors`) and its steps.
pub struct ListRef<'a> {
    pub key: String,
    pub steps: &'a [ProcessorSpec],
}

impl Chain {
    /// Compiles the lists of one source, in order (the source's own, then
    /// the top-level one). `None` when they are empty. `counters` gives the
    /// counters of a step name (at config validation: fresh ones).
    pub fn compile(
        source: &str,
        lists: &[ListRef<'_>],
        counters: &dyn Fn(&str) -> Arc<ProcessorCounters>,
    ) -> Result<Option<Chain>, ProcessorError> {
        if lists.iter().all(|l| l.steps.is_empty()) {
            return Ok(None);
        }
        let mut c = Compiler {
            message: true,
            stream: true,
            ..Compiler::default()
        };
        let (mut steps, mut names) = (Vec::new(), Vec::new());
        for list in lists {
            for (i, spec) in list.steps.iter().enumerate() {
                let key = format!("{}[{i}]", list.key);
                steps.push(c.step(spec, &key)?);
                names.push(match spec.name() {
                    Some(n) if !n.trim().is_empty() => n.to_owned(),
                    Some(_) => {
                        return Err(error(format!("{key}.{}.name", spec.kind()), "is empty"));
                    }
                    None if list.key.starts_with("sources[") => {
                        format!("{source}.processors[{i}].{}", spec.kind())
                    }
                    None => format!("{}.{}", key, spec.kind()),
                });
            }
        }
        let mut order: Vec<usize> = (0..c.paths.len()).collect();
        order.sort_by(|a, b| c.paths[*a].split('.').cmp(c.paths[*b].split('.')));
        let mut ranks = vec![0u16; c.paths.len()];
        for (rank, id) in order.into_iter().enumerate() {
            ranks[id] = rank as u16;
        }
        let paths = c
            .paths
            .iter()
            .zip(ranks)
            .map(|(p, rank)| FieldPath {
                keys: p
                    .split('.')
                    .map(|s| {
                        let mut k = Vec::new();
                        write_json_str(&mut k, s);
                        k.push(b':');
                        k.into_boxed_slice()
                    })
                    .collect(),
                segments: p.split('.').map(Box::from).collect(),
                rank,
            })
            .collect();
        Ok(Some(Chain {
            counters: names.iter().map(|n| counters(n)).collect(),
            names: names.into_boxed_slice(),
            steps: steps.into_boxed_slice(),
            paths,
            statics: c.statics.into_boxed_slice(),
            meta: c.meta.into_boxed_slice(),
        }))
    }

    /// The step names (metrics labels), in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Every source's chain, built once at start.
#[derive(Debug, Default, Clone)]
pub struct Chains {
    by_source: HashMap<String, Arc<Chain>>,
}

impl Chains {
    /// Compiles every source's chain, with counters registered in `metrics`.
    pub fn build(
        config: &crate::config::Config,
        metrics: &ProcessorMetrics,
    ) -> Result<Chains, ProcessorError> {
        let mut by_source = HashMap::new();
        for (i, source) in config.sources.iter().enumerate() {
            let lists = source_lists(i, &source.processors, &config.processors);
            if let Some(chain) = Chain::compile(&source.name, &lists, &|n| metrics.counters(n))? {
                by_source.insert(source.name.clone(), Arc::new(chain));
            }
        }
        metrics.counters(DROP_ANNOTATION_COUNTER);
        Ok(Chains { by_source })
    }

    pub fn for_source(&self, name: &str) -> Option<Arc<Chain>> {
        self.by_source.get(name).cloned()
    }
}

/// The lists of source `i`: its own, then the top-level one.
pub fn source_lists<'a>(
    i: usize,
    own: &'a [ProcessorSpec],
    top: &'a [ProcessorSpec],
) -> [ListRef<'a>; 2] {
    [
        ListRef {
            key: format!("sources[{i}].processors"),
            steps: own,
        },
        ListRef {
            key: "processors".to_owned(),
            steps: top,
        },
    ]
}

/// Where an added or parsed value's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    /// `message[start..end]`, a string.
    Message { start: u32, end: u32 },
    /// A static value as configured (its JSON type kept).
    Static(u16),
    /// Part of a static value's text, a string.
    StaticPart { index: u16, start: u32, end: u32 },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: FieldId,
    value: Value,
}

/// The fields one line has, reused from line to line.
#[derive(Debug, Default)]
struct Fields {
    entries: Vec<Entry>,
}

impl Fields {
    fn get(&self, id: FieldId) -> Option<Value> {
        self.entries.iter().find(|e| e.id == id).map(|e| e.value)
    }

    fn set(&mut self, id: FieldId, value: Value) {
        match self.entries.iter_mut().find(|e| e.id == id) {
            Some(e) => e.value = value,
            None => self.entries.push(Entry { id, value }),
        }
    }

    fn remove(&mut self, id: FieldId) -> Option<Value> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.entries.swap_remove(i).value)
    }
}

/// The bytes of `value`.
fn value_bytes<'a>(chain: &'a Chain, message: &'a [u8], value: Value) -> &'a [u8] {
    match value {
        Value::Message { start, end } => message.get(start as usize..end as usize).unwrap_or(&[]),
        Value::Static(i) => chain.statics.get(i as usize).map_or(&[], |s| &s.text),
        Value::StaticPart { index, start, end } => chain
            .statics
            .get(index as usize)
            .and_then(|s| s.text.get(start as usize..end as usize))
            .unwrap_or(&[]),
    }
}

/// `value` narrowed to its bytes `start..end`.
fn narrow(value: Value, start: usize, end: usize) -> Value {
    let (start, end) = (start as u32, end as u32);
    match value {
        Value::Message { start: s, .. } => Value::Message {
            start: s + start,
            end: s + end,
        },
        Value::Static(index) => Value::StaticPart { index, start, end },
        Value::StaticPart {
            index, start: s, ..
        } => Value::StaticPart {
            index,
            start: s + start,
            end: s + end,
        },
    }
}

/// What the encoder writes for a line that went through processors.
#[derive(Clone, Copy, Debug)]
pub struct Processed<'a> {
    pub timestamp: Timestamp,
    pub omit_message: bool,
    pub omit_stream: bool,
    /// `,"key":value` members (added and parsed fields, tags), or empty.
    pub members: &'a [u8],
}

const TAG_PARSE: u8 = 1;
const TAG_TIMESTAMP: u8 = 2;

/// One follower's processing state (see the module doc).
#[derive(Debug)]
pub struct FileProcessor {
    chain: Option<Arc<Chain>>,
    /// `logship.io/drop` of the file's pod.
    annotation: Option<Regex>,
    /// Results of the chain's metadata conditions for this file.
    meta: Box<[bool]>,
    /// A `logship.io/format: json` target: members under it are not
    /// written (the parsed JSON message is).
    json_top: Option<String>,
    fields: Fields,
    locations: Box<[Option<CaptureLocations>]>,
    spans: Vec<(u32, u32)>,
    order: Vec<Entry>,
    out: Vec<u8>,
    dropped: Box<[u64]>,
    failed: Box<[u64]>,
    annotation_dropped: u64,
    unsettled: u64,
}

impl FileProcessor {
    /// The state for one file with `metadata`, or `None` when nothing
    /// processes its lines (no chain, no drop annotation): the follower then
    /// encodes lines as before, at no extra cost.
    pub fn for_file(
        chain: Option<Arc<Chain>>,
        metadata: &FileMetadata,
        path: &Path,
        node_name: &str,
    ) -> Option<FileProcessor> {
        let annotation = metadata.drop_regex.as_deref().and_then(|pattern| {
            Regex::new(pattern)
                .map_err(|e| {
                    tracing::warn!(path = %path.display(), annotation = DROP_ANNOTATION, pattern, error = %e, "bad pod annotation (invalid regex); no line of this file is dropped by it");
                })
                .ok()
        });
        if chain.is_none() && annotation.is_none() {
            return None;
        }
        let steps = chain.as_ref().map_or(0, |c| c.steps.len());
        let meta = chain
            .as_ref()
            .map_or_else(Box::default, |c| meta_results(c, metadata, path, node_name));
        let locations = chain.as_ref().map_or_else(Box::default, |c| {
            c.steps
                .iter()
                .map(|s| match s {
                    Step::Parse {
                        parser: Parser::Regex(re, _),
                        ..
                    } => Some(re.capture_locations()),
                    _ => None,
                })
                .collect()
        });
        let json_top = metadata
            .json_target
            .as_deref()
            .map(|t| t.split('.').next().unwrap_or_default().to_owned());
        if let (Some(top), Some(chain)) = (&json_top, &chain)
            && chain.paths.iter().any(|p| *p.segments[0] == **top)
        {
            tracing::warn!(path = %path.display(), target = %top, "logship.io/json-target names a field processors write; the processors' fields under it are left out of this file's documents");
        }
        Some(FileProcessor {
            chain,
            annotation,
            meta,
            json_top,
            fields: Fields::default(),
            locations,
            spans: Vec::new(),
            order: Vec::new(),
            out: Vec::new(),
            dropped: vec![0; steps].into_boxed_slice(),
            failed: vec![0; steps].into_boxed_slice(),
            annotation_dropped: 0,
            unsettled: 0,
        })
    }

    /// Runs the chain on `line`: `None` if it is dropped, else what the
    /// encoder adds (valid until the next call).
    pub fn process(&mut self, line: &DecodedLine<'_>) -> Option<Processed<'_>> {
        let FileProcessor {
            chain,
            annotation,
            meta,
            json_top,
            fields,
            locations,
            spans,
            order,
            out,
            dropped,
            failed,
            annotation_dropped,
            unsettled,
        } = self;
        fields.entries.clear();
        out.clear();
        let mut processed = Processed {
            timestamp: line.timestamp,
            omit_message: false,
            omit_stream: false,
            members: &[],
        };
        if annotation
            .as_ref()
            .is_some_and(|re| re.is_match(line.message))
        {
            *annotation_dropped += 1;
            *unsettled += 1;
            return None;
        }
        let Some(chain) = chain.as_deref() else {
            return Some(processed);
        };
        // Offsets are u32: a longer message is never parsed (counted as a
        // failure), everything else applies.
        let addressable = u32::try_from(line.message.len()).is_ok();
        let mut tags = 0u8;
        for (i, step) in chain.steps.iter().enumerate() {
            match step {
                Step::Drop(cond) | Step::Keep(cond) => {
                    let fields = &*fields;
                    let view = LineView {
                        message: (!processed.omit_message).then_some(line.message),
                        stream: line.stream.filter(|_| !processed.omit_stream),
                        meta,
                        field: &|id| fields.get(id).map(|v| value_bytes(chain, line.message, v)),
                    };
                    if cond.eval(&view) == matches!(step, Step::Drop(_)) {
                        dropped[i] += 1;
                        *unsettled += 1;
                        return None;
                    }
                }
                Step::Add(list) => {
                    for &(id, index) in list.iter() {
                        fields.set(id, Value::Static(index));
                    }
                }
                Step::DropFields {
                    ids,
                    message,
                    stream,
                } => {
                    for id in ids.iter() {
                        fields.remove(*id);
                    }
                    processed.omit_message |= *message;
                    processed.omit_stream |= *stream;
                }
                Step::Rename { from, to } => {
                    if let Some(v) = fields.remove(*from) {
                        fields.set(*to, v);
                    }
                }
                Step::Parse {
                    source,
                    parser,
                    tag,
                } => {
                    let whole = match source {
                        Source::Message if addressable => Some(Value::Message {
                            start: 0,
                            end: line.message.len() as u32,
                        }),
                        Source::Field(id) => fields.get(*id),
                        _ => None,
                    };
                    let ok = whole.is_some_and(|whole| {
                        let input = value_bytes(chain, line.message, whole);
                        match parser {
                            Parser::Regex(re, ids) => {
                                let Some(Some(locs)) = locations.get_mut(i) else {
                                    return false;
                                };
                                if re.captures_read(locs, input).is_none() {
                                    return false;
                                }
                                for (group, id) in ids.iter().enumerate() {
                                    if let (Some(id), Some((s, e))) = (id, locs.get(group)) {
                                        fields.set(*id, narrow(whole, s, e));
                                    }
                                }
                                true
                            }
                            Parser::Dissect(d, ids) => {
                                spans.clear();
                                if !d.split(input, spans) {
                                    return false;
                                }
                                for (id, &(s, e)) in ids.iter().zip(spans.iter()) {
                                    fields.set(*id, narrow(whole, s as usize, e as usize));
                                }
                                true
                            }
                        }
                    });
                    if !ok {
                        failed[i] += 1;
                        if *tag {
                            tags |= TAG_PARSE;
                        }
                    }
                }
                Step::Timestamp { field, format, tag } => {
                    // An absent field (its parse failed, and counted) is
                    // not a failure of this step; a value that is not a
                    // time is.
                    let Some(value) = fields.get(*field) else {
                        continue;
                    };
                    match format.parse(value_bytes(chain, line.message, value)) {
                        Some(ts) => processed.timestamp = ts,
                        None => {
                            failed[i] += 1;
                            if *tag {
                                tags |= TAG_TIMESTAMP;
                            }
                        }
                    }
                }
            }
        }
        write_members(
            chain,
            line.message,
            &fields.entries,
            json_top.as_deref(),
            tags,
            order,
            out,
        );
        processed.members = out;
        Some(processed)
    }

    /// Lines dropped since the last [`FileProcessor::take_unsettled`].
    pub fn unsettled(&self) -> u64 {
        self.unsettled
    }

    /// The same, with `n` lines dropped by a processor it replaces that the
    /// follower has not settled yet.
    pub fn with_unsettled(mut self, n: u64) -> Self {
        self.unsettled += n;
        self
    }

    /// Forgets the lines dropped so far, returning how many (the follower
    /// settles them).
    pub fn take_unsettled(&mut self) -> u64 {
        std::mem::take(&mut self.unsettled)
    }

    /// Adds this file's counts to the shared counters, and zeroes them.
    pub fn flush(&mut self, metrics: &ProcessorMetrics) {
        if let Some(chain) = &self.chain {
            for (i, counters) in chain.counters.iter().enumerate() {
                let d = std::mem::take(&mut self.dropped[i]);
                let f = std::mem::take(&mut self.failed[i]);
                if d > 0 {
                    counters.dropped.fetch_add(d, Ordering::Relaxed);
                }
                if f > 0 {
                    counters.failed.fetch_add(f, Ordering::Relaxed);
                }
            }
        }
        let a = std::mem::take(&mut self.annotation_dropped);
        if a > 0 {
            metrics
                .counters(DROP_ANNOTATION_COUNTER)
                .dropped
                .fetch_add(a, Ordering::Relaxed);
        }
    }
}

/// The chain's metadata conditions evaluated for one file.
fn meta_results(chain: &Chain, metadata: &FileMetadata, path: &Path, node: &str) -> Box<[bool]> {
    if chain.meta.is_empty() {
        return Box::default();
    }
    let document = crate::encode::metadata_object(&metadata.fragment);
    let file_path = path.to_string_lossy();
    chain
        .meta
        .iter()
        .map(|(field, matcher)| {
            let value = match field.as_str() {
                "host.name" => Some(node),
                "log.file.path" => Some(&*file_path),
                _ => crate::encode::lookup_field(&document, field),
            };
            value.is_some_and(|v| matcher.matches(v.as_bytes()))
        })
        .collect()
}

/// Writes the members of `entries` (nested by path, in path order) and the
/// tags into `out`.
fn write_members(
    chain: &Chain,
    message: &[u8],
    entries: &[Entry],
    json_top: Option<&str>,
    tags: u8,
    order: &mut Vec<Entry>,
    out: &mut Vec<u8>,
) {
    order.clear();
    order.extend(entries.iter().copied().filter(|e| {
        json_top.is_none_or(|top| {
            chain
                .paths
                .get(e.id as usize)
                .is_some_and(|p| *p.segments[0] != *top)
        })
    }));
    order.sort_unstable_by_key(|e| chain.paths.get(e.id as usize).map_or(0, |p| p.rank));
    let mut prev: Option<&FieldPath> = None;
    for e in order.iter() {
        let Some(path) = chain.paths.get(e.id as usize) else {
            continue;
        };
        let common = prev.map_or(0, |p| {
            p.segments
                .iter()
                .zip(path.segments.iter())
                .take(p.segments.len().min(path.segments.len()) - 1)
                .take_while(|(a, b)| a == b)
                .count()
        });
        if let Some(p) = prev {
            for _ in common..p.segments.len() - 1 {
                out.push(b'}');
            }
        }
        for (level, key) in path.keys.iter().enumerate().skip(common) {
            if level == 0 || (level == common && prev.is_some()) {
                out.push(b',');
            }
            out.extend_from_slice(key);
            if level + 1 < path.keys.len() {
                out.push(b'{');
            }
        }
        match e.value {
            Value::Static(i) => match chain.statics.get(i as usize) {
                Some(s) => out.extend_from_slice(&s.json),
                None => out.extend_from_slice(b"null"),
            },
            v => {
                out.push(b'"');
                escape_bytes_lossy(out, value_bytes(chain, message, v));
                out.push(b'"');
            }
        }
        prev = Some(path);
    }
    if let Some(p) = prev {
        for _ in 0..p.segments.len() - 1 {
            out.push(b'}');
        }
    }
    if tags != 0 && json_top != Some(TAGS_FIELD) {
        out.extend_from_slice(b",\"tags\":[");
        let mut first = true;
        for (bit, tag) in [
            (TAG_PARSE, PARSE_FAILURE_TAG),
            (TAG_TIMESTAMP, TIMESTAMP_FAILURE_TAG),
        ] {
            if tags & bit != 0 {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_json_str(out, tag);
            }
        }
        out.push(b']');
    }
}

#[cfg(test)]
mod tests;
