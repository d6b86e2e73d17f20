//! The exactly-once check: the index holds exactly the lines written, each
//! once, with the right fields.
//!
//! Every line a test writes carries a unique marker (`seq=000123`) in its
//! message, so documents are matched to lines by message. A message that is
//! missing, indexed twice, or not written at all fails the test with a list
//! of which ones; so does a wrong `stream`, `@timestamp` or `log.flags`, or a
//! missing `log.file.path` / `log.offset`.

use crate::support::elasticsearch::Elasticsearch;
use crate::support::logship::{Agent, LogWriter};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long the agent gets to deliver everything that was written.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(45);

/// Show at most this many examples per kind of problem.
const EXAMPLES: usize = 12;

/// One line as written, and what its document must say.
#[derive(Clone, Debug)]
pub struct Line {
    pub message: String,
    /// `stream` field; `None`: must be absent (plain files).
    pub stream: Option<&'static str>,
    /// The timestamp as written (RFC 3339); compared as an instant.
    /// `None`: only checked to be present (read time for plain files).
    pub timestamp: Option<String>,
    /// Exactly these `log.flags` (empty: none or an empty list).
    pub flags: Vec<&'static str>,
}

impl Line {
    pub fn new(message: impl Into<String>, stream: &'static str, timestamp: &str) -> Line {
        Line {
            message: message.into(),
            stream: Some(stream),
            timestamp: Some(timestamp.to_string()),
            flags: Vec::new(),
        }
    }

    /// A plain-text line: no `stream`, `@timestamp` is the read time.
    pub fn plain(message: impl Into<String>) -> Line {
        Line {
            message: message.into(),
            stream: None,
            timestamp: None,
            flags: Vec::new(),
        }
    }

    pub fn flagged(mut self, flag: &'static str) -> Line {
        self.flags.push(flag);
        self
    }
}

/// Compares indexed documents with the lines written. Returns a readable
/// report of every problem, or `Ok` if each line is there exactly once with
/// the right fields and nothing else is.
pub fn compare(expected: &[Line], docs: &[Value]) -> Result<(), String> {
    let mut by_message: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut without_message = Vec::new();
    for doc in docs {
        match doc["message"].as_str() {
            Some(m) => by_message.entry(m).or_default().push(doc),
            None => without_message.push(doc),
        }
    }
    let mut missing = Vec::new();
    let mut duplicated = Vec::new();
    let mut wrong = Vec::new();
    let mut written: HashMap<&str, usize> = HashMap::new();
    for line in expected {
        *written.entry(line.message.as_str()).or_default() += 1;
    }
    for (message, times) in &written {
        assert_eq!(
            *times, 1,
            "test bug: message written {times} times: {message:?}"
        );
    }
    for line in expected {
        match by_message.get(line.message.as_str()).map(Vec::as_slice) {
            None | Some([]) => missing.push(short(&line.message)),
            Some([doc]) => {
                let problems = field_problems(line, doc);
                if !problems.is_empty() {
                    wrong.push(format!("{}: {}", short(&line.message), problems.join("; ")));
                }
            }
            Some(docs) => duplicated.push(format!(
                "{} ×{} (_ids {})",
                short(&line.message),
                docs.len(),
                docs.iter()
                    .map(|d| d["_id"].as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    let unexpected: Vec<String> = by_message
        .iter()
        .filter(|(m, _)| !written.contains_key(*m))
        .map(|(m, docs)| format!("{} ×{}", short(m), docs.len()))
        .collect();

    let mut report = String::new();
    section(&mut report, "missing (written, not indexed)", &missing);
    section(&mut report, "duplicated", &duplicated);
    section(&mut report, "not written but indexed", &unexpected);
    section(&mut report, "wrong fields", &wrong);
    if !without_message.is_empty() {
        let examples: Vec<String> = without_message.iter().map(|d| d.to_string()).collect();
        section(&mut report, "documents without a message", &examples);
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} lines written, {} documents indexed\n{report}",
            expected.len(),
            docs.len()
        ))
    }
}

fn field_problems(line: &Line, doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    match (line.stream, doc.get("stream")) {
        (Some(want), Some(Value::String(got))) if got == want => {}
        (None, None | Some(Value::Null)) => {}
        (want, got) => problems.push(format!("stream {got:?}, want {want:?}")),
    }
    match (&line.timestamp, doc["@timestamp"].as_str()) {
        (_, None) => problems.push("no @timestamp".to_string()),
        (Some(want), Some(got)) => match (instant(want), instant(got)) {
            (Some(w), Some(g)) if w == g => {}
            (_, None) => problems.push(format!("@timestamp {got:?} is not RFC 3339")),
            _ => problems.push(format!("@timestamp {got:?}, written {want:?}")),
        },
        (None, Some(got)) => {
            if instant(got).is_none() {
                problems.push(format!("@timestamp {got:?} is not RFC 3339"));
            }
        }
    }
    let mut flags: Vec<&str> = doc["log"]["flags"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    flags.sort_unstable();
    let mut want_flags = line.flags.clone();
    want_flags.sort_unstable();
    if flags != want_flags {
        problems.push(format!("log.flags {flags:?}, want {want_flags:?}"));
    }
    if !doc["log"]["file"]["path"].is_string() {
        problems.push("no log.file.path".to_string());
    }
    if !doc["log"]["offset"].is_u64() {
        problems.push(format!(
            "log.offset {} is not an offset",
            doc["log"]["offset"]
        ));
    }
    problems
}

/// (seconds, nanoseconds) since the epoch of an RFC 3339 timestamp.
pub fn instant(text: &str) -> Option<(i64, u32)> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some((t.timestamp(), t.timestamp_subsec_nanos()))
}

fn short(message: &str) -> String {
    if message.len() <= 100 {
        format!("{message:?}")
    } else {
        let mut cut = 80;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{:?}… ({} bytes)", &message[..cut], message.len())
    }
}

fn section(report: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let mut sorted = items.to_vec();
    sorted.sort();
    report.push_str(&format!("{title}: {}\n", items.len()));
    for item in sorted.iter().take(EXAMPLES) {
        report.push_str(&format!("  {item}\n"));
    }
    if items.len() > EXAMPLES {
        report.push_str(&format!("  … and {} more\n", items.len() - EXAMPLES));
    }
}

/// Polls the document count of `index` until it reaches `n` or
/// [`DELIVERY_TIMEOUT`] passes, failing at once (with its stderr) if the
/// agent exits. Returns the last count.
pub fn wait_for_delivery(es: &Elasticsearch, index: &str, n: u64, agent: &mut Agent) -> u64 {
    let started = std::time::Instant::now();
    loop {
        agent.assert_running();
        let count = es.count(index);
        if count >= n || started.elapsed() > DELIVERY_TIMEOUT {
            return count;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until `index` holds as many documents as lines were written (or the
/// delivery timeout passes), lets late duplicates arrive, then asserts the
/// exactly-once property. Panics with the report, the agent's stderr and the
/// number of documents per file on failure.
pub fn assert_exactly_once(es: &Elasticsearch, index: &str, expected: &[Line], agent: &mut Agent) {
    assert_exactly_once_docs(es, index, expected, agent);
}

/// [`assert_exactly_once`], returning the documents it checked (one per
/// line written), for tests that look at more fields than [`compare`] does.
pub fn assert_exactly_once_docs(
    es: &Elasticsearch,
    index: &str,
    expected: &[Line],
    agent: &mut Agent,
) -> Vec<Value> {
    wait_for_delivery(es, index, expected.len() as u64, agent);
    // Anything still in flight (a duplicate, say) shows up within a few batch timeouts.
    std::thread::sleep(Duration::from_millis(1500));
    let docs = es.search_all(index);
    if let Err(report) = compare(expected, &docs) {
        let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
        for doc in &docs {
            let path = doc["log"]["file"]["path"].as_str().unwrap_or("<none>");
            *per_file.entry(path.to_string()).or_default() += 1;
        }
        panic!(
            "index {index} does not hold exactly the lines written:\n{report}\
             documents per log.file.path: {per_file:?}\n\
             --- logship stderr (tail; LOGSHIP_E2E_STDERR_LINES for more) ---\n{}",
            agent.stderr_tail(
                std::env::var("LOGSHIP_E2E_STDERR_LINES")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(40)
            )
        );
    }
    docs
}

/// One stdout CRI `F` line carrying `message`, timestamped from `seq`
/// (`support::logship::timestamp`), recorded in `expected`.
pub fn cri_stdout(seq: u64, message: String, expected: &mut Vec<Line>) -> Vec<u8> {
    let ts = crate::support::logship::timestamp(seq);
    let bytes = crate::support::logship::cri_line(&ts, "stdout", "F", message.as_bytes());
    expected.push(Line::new(message, "stdout", &ts));
    bytes
}

/// Writes stdout CRI lines `seqs` of scenario `name` to `writer`, each
/// message naming the file and its seq, and records them in `expected`.
/// With `pause_every: Some((n, pause))` the lines go out `n` at a time with
/// `pause` in between. Returns the bytes written.
pub fn write_numbered(
    name: &str,
    writer: &mut LogWriter,
    seqs: std::ops::Range<u64>,
    expected: &mut Vec<Line>,
    pause_every: Option<(u64, Duration)>,
) -> u64 {
    let file = writer
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut written = 0;
    let mut bytes = Vec::new();
    for seq in seqs {
        bytes.extend(cri_stdout(
            seq,
            format!("{name} {file} seq={seq:07} a line of typical length for an application log"),
            expected,
        ));
        if let Some((every, pause)) = pause_every
            && seq % every == every - 1
        {
            writer.write(&bytes);
            written += bytes.len() as u64;
            bytes.clear();
            std::thread::sleep(pause);
        }
    }
    writer.write(&bytes);
    written + bytes.len() as u64
}
