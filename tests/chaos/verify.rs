//! After a schedule: wait for the agent to settle, read every document of
//! the index, and compare with the model line by line (by the `seq=`
//! marker, never by `_count`).
//!
//! A line is *missing* if no document carries exactly its message,
//! *duplicated* if more than one document carries its marker. Missing lines
//! are split into:
//!
//! * **inherent**: no shipper could have shipped them, nor know how many
//!   there were. The agent's knowledge is taken from `/api/v1/files` while
//!   it runs and from its persisted `checkpoints.json` after it stopped:
//!   - the line's file existed only while no agent ran;
//!   - a truncation (copytruncate, rewrite in place) cut the line off while
//!     it was past what the agent had read, or past what it had
//!     acknowledged and the agent then stopped or reloaded;
//!   - its file was deleted while the agent was down, or while it held the
//!     file and then stopped, and the line is past the agent's checkpoint;
//!   - its file left the globs (renamed out, deleted, compressed) while the
//!     agent neither followed it nor had it in its checkpoints (a running
//!     agent always gets 2 s to find a file before it is moved, so this
//!     means a file born and moved while the agent was down);
//! * **owed**: every other missing line: still on disk somewhere (renamed,
//!   gzip'd, in a copytruncate copy), or acknowledged by the agent, or lost
//!   in a running agent. The agent must deliver it, or count it as lost:
//!   the owed lines must equal what its loss counters
//!   (every counter series whose name contains `lost` or `dropped`, over
//!   all its processes) say, in lines, or in bytes of the lines as written.
//!
//! Duplicates, documents whose message is not a line written (cut or
//! garbled), wrong `@timestamp`s, unexpected agent exits and harness
//! problems always fail.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{AgentCtl, loss_unit, stamp};
use crate::support::elasticsearch::Elasticsearch;
use crate::world::{
    Format, Layout, Rotation, STREAMS, Stream, World, message, parse_seq, timestamp,
};

/// Examples shown per class.
const EXAMPLES: usize = 4;
/// How long the agent gets to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Verdict {
    pub lines: u64,
    pub missing: u64,
    pub owed: u64,
    pub inherent: u64,
    pub duplicated: u64,
    pub counted_lines: f64,
    pub counted_bytes: f64,
    /// Disk buffer records (batches) counted as lost: not convertible to
    /// lines, so not part of the comparison; reported.
    pub counted_records: f64,
    /// Bytes counted as `gone_while_stopped` (see `verify`): reported.
    pub counted_gone_bytes: f64,
    /// Owed lines the counters do not account for.
    pub uncounted: u64,
    pub failed: bool,
    pub report: String,
}

impl Verdict {
    pub fn summary(&self) -> String {
        format!(
            "lines={} missing={} (counted {}, uncounted {}, inherent {}) duplicated={}{}",
            self.lines,
            self.missing,
            self.owed - self.uncounted,
            self.uncounted,
            self.inherent,
            self.duplicated,
            if self.failed { " FAILED" } else { " ok" }
        )
    }
}

/// Waits until the agent has nothing left to ship: no lag, nothing in
/// flight, empty buffers, and a document count that stopped moving.
/// Returns a note if it did not settle in time.
fn settle(es: &Elasticsearch, pattern: &str, ctl: &mut AgentCtl, written: u64) -> Option<String> {
    let started = Instant::now();
    let mut last_count = u64::MAX;
    let mut quiet_polls = 0;
    loop {
        if !ctl.check_alive() {
            return Some("the agent exited while settling".to_string());
        }
        let count = es.count(pattern);
        let idle = ctl.get("/metrics").is_some_and(|(status, body)| {
            status == 200 && {
                let sum = |name: &str| -> f64 {
                    body.lines()
                        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
                        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                        .sum()
                };
                sum("logship_lag_bytes") == 0.0
                    && sum("logship_bulk_requests_in_flight") == 0.0
                    && sum("logship_buffer_records") == 0.0
                    && sum("logship_buffer_used_spans") == 0.0
            }
        });
        if idle && count == last_count {
            quiet_polls += 1;
        } else {
            quiet_polls = 0;
        }
        // Everything is in: one more quiet poll lets late duplicates land.
        if quiet_polls >= 4 || (quiet_polls >= 2 && count >= written) {
            return None;
        }
        if started.elapsed() > SETTLE_TIMEOUT {
            return Some(format!(
                "did not settle within {SETTLE_TIMEOUT:?} (documents {count}, idle {idle})"
            ));
        }
        last_count = count;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One document's verdict against the model.
#[derive(Default, Clone, Copy)]
struct Copies {
    exact: u32,
    /// Carries the marker but not the exact message.
    garbled: u32,
    wrong_time: u32,
}

pub fn verify(
    es: &Elasticsearch,
    pattern: &str,
    world: &World,
    ctl: &mut AgentCtl,
    harness: &[String],
) -> Verdict {
    let written = world.lines_written();
    let settle_note = settle(es, pattern, ctl, written);
    let docs = es.search_all(pattern);
    let losses = ctl.losses();
    let mut v = Verdict {
        lines: written,
        ..Verdict::default()
    };
    let mut report = String::new();

    let index_of: HashMap<&str, usize> = STREAMS
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name, i))
        .collect();
    let streams: Vec<_> = (0..STREAMS.len()).map(|i| world.lock(i)).collect();
    let mut copies: Vec<Vec<Copies>> = streams
        .iter()
        .map(|s| vec![Copies::default(); s.lines.len()])
        .collect();
    let mut strangers: Vec<String> = Vec::new();
    for doc in &docs {
        let msg = doc["message"].as_str().unwrap_or_default();
        let Some((i, n)) = parse_seq(msg)
            .and_then(|(s, n)| Some((*index_of.get(s)?, n)))
            .filter(|(i, n)| (*n as usize) < copies[*i].len())
        else {
            strangers.push(describe_doc(doc));
            continue;
        };
        let loc = streams[i].lines[n as usize];
        let c = &mut copies[i][n as usize];
        if msg == message(i, n, loc.banner) {
            c.exact += 1;
            if STREAMS[i].format != Format::Plain && !same_instant(doc, &timestamp(i, n)) {
                c.wrong_time += 1;
            }
        } else {
            c.garbled += 1;
            if c.garbled == 1 {
                strangers.push(format!(
                    "garbled copy of seq={}-{n:07}: {}",
                    STREAMS[i].name,
                    describe_doc(doc)
                ));
            }
        }
    }

    // Missing and duplicated lines, by class.
    let mut owed: BTreeMap<String, Vec<(usize, u64)>> = BTreeMap::new();
    let mut inherent: BTreeMap<String, Vec<(usize, u64)>> = BTreeMap::new();
    let mut dups: BTreeMap<String, Vec<(usize, u64, u32)>> = BTreeMap::new();
    let mut wrong_time = Vec::new();
    let mut owed_bytes = 0u64;
    for (i, s) in streams.iter().enumerate() {
        for (n, c) in copies[i].iter().enumerate() {
            let n = n as u64;
            let total = c.exact + c.garbled;
            if total > 1 {
                dups.entry(label(s, n)).or_default().push((i, n, total));
            }
            if c.wrong_time > 0 {
                wrong_time.push(format!("seq={}-{n:07}", s.name()));
            }
            if c.exact > 0 {
                continue;
            }
            v.missing += 1;
            match inherent_reason(s, n) {
                Some(why) => inherent.entry(why).or_default().push((i, n)),
                None => {
                    owed_bytes += u64::from(s.lines[n as usize].len);
                    owed.entry(label(s, n)).or_default().push((i, n));
                }
            }
        }
    }
    v.owed = owed.values().map(|l| l.len() as u64).sum();
    v.inherent = inherent.values().map(|l| l.len() as u64).sum();
    v.duplicated = dups.values().map(|l| l.len() as u64).sum();

    // Losses the agent counted.
    for (series, value) in &losses {
        if series.contains("line_too_long") || *value == 0.0 {
            continue;
        }
        if series.contains("gone_while_stopped") {
            // Files deleted (or rewritten with no copy) while the agent was
            // down: their lines past the checkpoint are inherent losses
            // above, and the bytes counted are those read and not
            // acknowledged, some of which may have been indexed before the
            // stop: an upper bound, not an exact figure. Reported.
            if loss_unit(series) == "bytes" {
                v.counted_gone_bytes += value;
            }
            continue;
        }
        match loss_unit(series) {
            "bytes" => v.counted_bytes += value,
            "records" => v.counted_records += value,
            "files" => {}
            _ => v.counted_lines += value,
        }
    }
    let counted_ok = if v.counted_bytes == 0.0 {
        v.counted_lines == v.owed as f64
    } else if v.counted_lines == 0.0 {
        v.counted_bytes == owed_bytes as f64
    } else {
        // Both units: only bounds can be checked.
        v.counted_lines <= v.owed as f64 && v.counted_bytes <= owed_bytes as f64
    };
    v.uncounted = if counted_ok {
        0
    } else if v.counted_bytes == 0.0 {
        v.owed.saturating_sub(v.counted_lines as u64)
    } else {
        v.owed
    };

    // The report.
    let _ = writeln!(
        report,
        "{} lines written, {} documents; missing {} (owed {} = {} bytes as written, inherent {}), duplicated {}",
        written,
        docs.len(),
        v.missing,
        v.owed,
        owed_bytes,
        v.inherent,
        v.duplicated
    );
    let counters: Vec<String> = losses
        .iter()
        .map(|(k, v)| format!("{k} = {v} ({})", loss_unit(k)))
        .collect();
    let _ = writeln!(
        report,
        "loss counters (summed over agent processes): {}",
        if counters.is_empty() {
            "none exposed".to_string()
        } else {
            counters.join("; ")
        }
    );
    if !counted_ok {
        let _ = writeln!(
            report,
            "UNCOUNTED LOSS: {} owed lines ({} bytes) missing, the agent counted {} lines and {} bytes",
            v.owed, owed_bytes, v.counted_lines, v.counted_bytes
        );
    }
    if v.counted_gone_bytes > 0.0 {
        let _ = writeln!(
            report,
            "NOTE: the agent counted {} bytes of files gone while it was stopped (read, not \
             acknowledged: at most that much of them is lost); those lines are inherent above",
            v.counted_gone_bytes
        );
    }
    if v.counted_records > 0.0 {
        let _ = writeln!(
            report,
            "NOTE: the agent counted {} disk buffer records (batches) as lost; a count of batches \
             cannot be matched to lines, so it is not part of the comparison",
            v.counted_records
        );
    }
    let mut touched: Vec<(usize, u32)> = Vec::new();
    let where_indexed = |i: usize, n: u64| -> Vec<String> {
        docs.iter()
            .filter(|d| {
                d["message"]
                    .as_str()
                    .and_then(parse_seq)
                    .is_some_and(|(s, m)| s == STREAMS[i].name && m == n)
            })
            .map(|d| {
                format!(
                    "_id {} {} offset {}",
                    d["_id"].as_str().unwrap_or("?"),
                    d["log"]["file"]["path"].as_str().unwrap_or("?"),
                    d["log"]["offset"]
                )
            })
            .collect()
    };
    for (class, lines) in &owed {
        let _ = writeln!(report, "MISSING (owed) [{class}]: {} lines", lines.len());
        example_lines(&mut report, &streams, lines, &mut touched);
        // Where the neighbours of the missing run went (which reader, which
        // generation: the `_id` names it), to tell a line never read from
        // one read and then dropped.
        if let Some(&(i, last)) = lines.last() {
            let s = &streams[i];
            let phys = s.lines[last as usize].phys;
            let first = lines
                .iter()
                .find(|&&(j, _)| j == i)
                .map_or(last, |&(_, n)| n);
            let same_phys = |n: u64| {
                usize::try_from(n)
                    .ok()
                    .and_then(|n| s.lines.get(n))
                    .is_some_and(|l| l.phys == phys)
            };
            let present = (0..s.lines.len() as u64)
                .filter(|&n| same_phys(n) && copies[i][n as usize].exact > 0)
                .count();
            let _ = writeln!(
                report,
                "    lines of that file present in the index: {present}"
            );
            for n in [first.checked_sub(1), Some(last + 1)].into_iter().flatten() {
                if same_phys(n) {
                    let _ = writeln!(
                        report,
                        "    neighbour seq={}-{n:07}: {}",
                        STREAMS[i].name,
                        where_indexed(i, n).join("; ")
                    );
                }
            }
        }
    }
    for (class, lines) in &dups {
        let _ = writeln!(report, "DUPLICATED [{class}]: {} lines", lines.len());
        let plain: Vec<(usize, u64)> = lines.iter().map(|&(i, n, _)| (i, n)).collect();
        let shown: Vec<String> = lines
            .iter()
            .take(EXAMPLES)
            .map(|&(i, n, c)| format!("seq={}-{n:07} ×{c}", STREAMS[i].name))
            .collect();
        let _ = writeln!(report, "  {}", shown.join(", "));
        example_lines(&mut report, &streams, &plain, &mut touched);
        for &(i, n, _) in lines.iter().take(2) {
            let ids = where_indexed(i, n);
            let _ = writeln!(
                report,
                "    copies of seq={}-{n:07}: {}",
                STREAMS[i].name,
                ids.join("; ")
            );
        }
    }
    for (class, lines) in &inherent {
        let shown: Vec<String> = lines
            .iter()
            .take(EXAMPLES)
            .map(|&(i, n)| format!("seq={}-{n:07}", STREAMS[i].name))
            .collect();
        let _ = writeln!(
            report,
            "missing, inherent (not a failure) [{class}]: {} lines, e.g. {}",
            lines.len(),
            shown.join(", ")
        );
    }
    if !strangers.is_empty() {
        let _ = writeln!(
            report,
            "DOCUMENTS THAT ARE NOT A LINE WRITTEN: {}",
            strangers.len()
        );
        for s in strangers.iter().take(EXAMPLES) {
            let _ = writeln!(report, "  {s}");
        }
    }
    if !wrong_time.is_empty() {
        let _ = writeln!(
            report,
            "WRONG @timestamp: {} lines, e.g. {}",
            wrong_time.len(),
            wrong_time[..wrong_time.len().min(EXAMPLES)].join(", ")
        );
    }
    for p in harness {
        let _ = writeln!(report, "HARNESS: {p}");
    }
    for b in &ctl.bad_exits {
        let _ = writeln!(report, "AGENT EXIT: {b}");
    }
    if let Some(note) = &settle_note {
        let _ = writeln!(report, "SETTLE: {note}");
    }

    v.failed = !counted_ok
        || v.duplicated > 0
        || !strangers.is_empty()
        || !wrong_time.is_empty()
        || !harness.is_empty()
        || !ctl.bad_exits.is_empty()
        || settle_note.is_some();

    if v.failed {
        // What the agent said about the files concerned.
        let log = AgentLog::parse(&ctl.stderr(), world.t0_wall);
        touched.sort_unstable();
        touched.dedup();
        for &(i, p) in touched.iter().take(6) {
            let s = &streams[i];
            let phys = &s.phys[p as usize];
            let _ = writeln!(
                report,
                "agent log on {} file #{p} (inode {}), #n = agent process:",
                s.name(),
                phys.ino
            );
            for l in log.about(s, p as usize) {
                let _ = writeln!(report, "    {l}");
            }
        }
        let _ = writeln!(report, "timeline (agent, Elasticsearch, files):");
        let events: Vec<String> = ctl
            .events
            .iter()
            .map(|e| format!("{} {}", stamp(e.at), e.what))
            .collect();
        for chunk in events.chunks(4) {
            let _ = writeln!(report, "    {}", chunk.join(" | "));
        }
    }
    v.report = report;
    v
}

/// Why a missing line is inherent, or `None` if the agent owes it.
fn inherent_reason(s: &Stream, n: u64) -> Option<String> {
    let loc = s.lines[n as usize];
    let phys = &s.phys[loc.phys as usize];
    let end = loc.start + u64::from(loc.len);
    if !phys.observed {
        return Some(
            "its file existed only while the agent was down (gone or truncated before it started)"
                .to_string(),
        );
    }
    if let Some(t) = &phys.truncation {
        if end > t.read {
            return Some(format!(
                "{}: truncated before the agent read it",
                if t.copied {
                    "copytruncate"
                } else {
                    "rewritten in place"
                }
            ));
        }
        if end > t.acked && t.stopped_after {
            return Some(format!(
                "{}: read, not yet acknowledged when truncated, agent stopped or reloaded before the ack",
                if t.copied {
                    "copytruncate"
                } else {
                    "rewritten in place"
                }
            ));
        }
    }
    if let Some(d) = &phys.deleted_while_down
        && end > d.acked
    {
        return Some(
            "deleted while the agent was down, or while it held the file and then stopped; \
             past its checkpoint"
                .to_string(),
        );
    }
    if let Some(d) = &phys.departure
        && !d.known
    {
        return Some(format!(
            "left the globs while the agent {} and did not know the file",
            if d.agent_up { "was up" } else { "was down" }
        ));
    }
    None
}

/// A short class for an owed or duplicated line: what happened to its file.
fn label(s: &Stream, n: u64) -> String {
    let loc = s.lines[n as usize];
    let phys = &s.phys[loc.phys as usize];
    let mut parts = vec![format!("{} ({})", layout_name(s), s.name())];
    if phys.in_read_from_end_reload {
        parts.push("file created during a reload to read_from: end".to_string());
    }
    if let Some(t) = &phys.truncation {
        parts.push(format!(
            "{} while the agent was {}",
            if t.copied {
                "copytruncate"
            } else {
                "rewrite in place"
            },
            if t.agent_up { "up" } else { "down" }
        ));
    } else if s.spec.rotation == Rotation::CopyTruncate && phys.generation > 0 {
        parts.push("content written after a copytruncate".to_string());
    }
    if s.spec.banner {
        parts.push("same first line as its predecessors".to_string());
    }
    match &phys.departure {
        Some(d) => parts.push(format!(
            "left the globs while the agent was {}{}",
            if d.agent_up { "up" } else { "down" },
            match (&phys.path, phys.gz) {
                (None, _) => ", now deleted",
                (Some(_), true) => ", now gzip'd",
                (Some(_), false) => ", still on disk",
            }
        )),
        None if !phys.live && s.spec.layout == Layout::App => {
            parts.push("renamed, still matched by the glob".to_string())
        }
        None if phys.live => parts.push("live file".to_string()),
        None => {}
    }
    parts.join("; ")
}

fn layout_name(s: &Stream) -> &'static str {
    match s.spec.layout {
        Layout::Pod => "containers/*.log → pods",
        Layout::Host => "host/*.log",
        Layout::App => "app/*.log*",
        Layout::Extra => "extra/*.log",
    }
}

/// Examples: the lines, where they are on disk, and their files' histories.
fn example_lines(
    report: &mut String,
    streams: &[std::sync::MutexGuard<'_, Stream>],
    lines: &[(usize, u64)],
    touched: &mut Vec<(usize, u32)>,
) {
    // Group by file so each history is printed once.
    let mut by_phys: BTreeMap<(usize, u32), Vec<u64>> = BTreeMap::new();
    for &(i, n) in lines {
        by_phys
            .entry((i, streams[i].lines[n as usize].phys))
            .or_default()
            .push(n);
    }
    for (&(i, p), ns) in by_phys.iter().take(EXAMPLES) {
        let s = &streams[i];
        let phys = &s.phys[p as usize];
        touched.push((i, p));
        let first = ns[0];
        let (ok, where_) = s.on_disk(first);
        let loc = s.lines[first as usize];
        let _ = writeln!(
            report,
            "  {} lines of {} file #{p} (inode {}, {} bytes), seq={}-{:07}..{:07}, first at offset {}: {}{}",
            ns.len(),
            s.name(),
            phys.ino,
            phys.size,
            s.name(),
            ns[0],
            ns[ns.len() - 1],
            loc.start,
            where_,
            if ok { " ✓" } else { "" }
        );
        for h in &phys.history {
            let _ = writeln!(report, "      {h}");
        }
    }
    if by_phys.len() > EXAMPLES {
        let _ = writeln!(
            report,
            "  … and lines of {} more files",
            by_phys.len() - EXAMPLES
        );
    }
}

/// The agent's stderr, parsed: (process number, seconds since the
/// schedule started, level and message with paths shortened).
struct AgentLog {
    lines: Vec<(u32, f64, String)>,
}

impl AgentLog {
    fn parse(stderr: &str, t0: std::time::SystemTime) -> AgentLog {
        let t0: chrono::DateTime<chrono::Utc> = t0.into();
        let mut process = 0;
        let mut lines = Vec::new();
        for l in stderr.lines() {
            if let Some(n) = l
                .strip_prefix("===== logship start #")
                .and_then(|r| r.trim_end_matches(" =====").parse().ok())
            {
                process = n;
                continue;
            }
            let Some((ts, rest)) = l.split_once(' ') else {
                continue;
            };
            let Ok(at) = chrono::DateTime::parse_from_rfc3339(ts) else {
                continue;
            };
            let rel = (at.with_timezone(&chrono::Utc) - t0).num_milliseconds() as f64 / 1000.0;
            // `/tmp/…/logs/host/a.log` → `host/a.log`; drop module paths.
            let mut text = String::new();
            for word in rest.split(' ').filter(|w| !w.is_empty()) {
                let word = match word.find("/logs/") {
                    Some(i) => {
                        let (key, _) = word.split_at(word.find('=').map_or(0, |e| e + 1));
                        format!("{key}{}", &word[i + "/logs/".len()..])
                    }
                    None if word.starts_with("logship::") && word.ends_with(':') => continue,
                    None => word.to_string(),
                };
                text.push_str(&word);
                text.push(' ');
            }
            lines.push((process, rel, text.trim_end().to_string()));
        }
        AgentLog { lines }
    }

    /// Lines about phys `p`: naming its inode, or a name it had, or the
    /// stream's path while it was the file there.
    fn about(&self, s: &Stream, p: usize) -> Vec<String> {
        let phys = &s.phys[p];
        let live = s.short(&s.path);
        let ino = format!(":{}:", phys.ino);
        let mut names: Vec<String> = Vec::new();
        for h in &phys.history {
            if let Some(i) = h.find("→ ") {
                let rel = h[i + "→ ".len()..]
                    .split([' ', ',', ';'])
                    .next()
                    .unwrap_or("");
                if !rel.is_empty() && rel != live {
                    names.push(rel.trim_end_matches(".gz").to_string());
                }
            }
        }
        let from = phys.created.as_secs_f64() - 0.5;
        let until = s
            .phys
            .get(p + 1)
            .map_or(f64::MAX, |next| next.created.as_secs_f64() + 1.0);
        let matching: Vec<String> = self
            .lines
            .iter()
            .filter(|(_, at, text)| {
                text.contains(&ino)
                    || names.iter().any(|n| {
                        text.contains(&format!("={n} ")) || text.ends_with(&format!("={n}"))
                    })
                    || ((text.contains(&format!("={live} "))
                        || text.ends_with(&format!("={live}")))
                        && *at >= from
                        && *at < until)
            })
            .map(|(n, at, text)| format!("#{n} +{at:.1}s {}", shorten(text)))
            .collect();
        if matching.len() <= 14 {
            return matching;
        }
        let mut out = matching[..4].to_vec();
        out.push(format!("… {} lines …", matching.len() - 14));
        out.extend_from_slice(&matching[matching.len() - 10..]);
        out
    }
}

fn shorten(text: &str) -> String {
    if text.len() <= 240 {
        return text.to_string();
    }
    let mut cut = 240;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

fn same_instant(doc: &Value, written: &str) -> bool {
    let got = doc["@timestamp"].as_str().unwrap_or_default();
    match (
        chrono::DateTime::parse_from_rfc3339(got),
        chrono::DateTime::parse_from_rfc3339(written),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn describe_doc(doc: &Value) -> String {
    let msg = doc["message"].as_str().unwrap_or("<no message>");
    let shown: String = msg.chars().take(90).collect();
    format!(
        "{:?}{} ({} bytes) from {} offset {}",
        shown,
        if shown.len() < msg.len() { "…" } else { "" },
        msg.len(),
        doc["log"]["file"]["path"].as_str().unwrap_or("?"),
        doc["log"]["offset"]
    )
}
