//! Multiline events: a stack trace written as many lines becomes one event.
//!
//! The [`Joiner`] sits after decoding (CRI `P`/`F` parts and docker chunks
//! are already joined, so a trace line split by the runtime still counts as
//! one line) and before encoding. It keeps at most one open group per
//! stream (stdout and stderr are never mixed) and hands out each group as
//! one [`DecodedLine`]: the messages joined with `\n`, the first line's
//! timestamp and offset (so its `_id` is the first physical line's), the
//! last line's end, [`LineFlags::MULTILINE`] when it holds more than one
//! line. Lines that cannot start a group (normal log lines, JSON objects)
//! pass through at once, without a copy.
//!
//! **Exactly once.** A group is handed out only when it is complete: the
//! next line of its stream does not continue it, `max_lines` or
//! `max_bytes` would be passed (the group is split there: the next part
//! begins a new event at that line, nothing is cut), its file ends
//! (rotation, truncation: [`Joiner::flush`]), or no line came for
//! `timeout`. While a group is open, [`Joiner::safe_offset`] is its first
//! line: the file's checkpoint never moves past it, so after a kill -9 the
//! group is read again from its first line and handed out the same, with
//! the same `_id`. At shutdown an open group is not shipped: the next start
//! reads it again whole (as with a held CRI partial line). A group cut by
//! `timeout` is the one case decided by time rather than by content: if it
//! was not acknowledged before a crash and more of it was written since,
//! the re-read joins the rest to it and Elasticsearch keeps the first
//! (shorter) copy under that `_id` (docs/delivery.md).
//!
//! **Rules.** Built in, each from the shapes its runtime prints:
//! * `java`: a line naming an exception (`…Exception`, `…Error`,
//!   `…Throwable` followed by `:` or the end of the line, or `Exception in
//!   thread`) opens a group; `\tat …`, `Caused by: …`, `Suppressed: …`,
//!   `... N more`, `... N common frames omitted` continue it.
//! * `python`: `Traceback (most recent call last):` opens a group; indented
//!   lines continue it; the first line that is not indented (the exception)
//!   ends it. A chained exception (`During handling of the above exception,
//!   another exception occurred:` or `The above exception was the direct
//!   cause of the following exception:`, between blank lines) joins the
//!   next traceback to it.
//! * `go`: `panic: …`, `fatal error: …` or `goroutine N [...]:` opens a
//!   group; goroutine headers, `\t` file lines, function lines
//!   (`pkg.fn(...)`), `created by …`, `[signal …`, `exit status N` and the
//!   blank lines between them continue it.
//! * `ruby`: a line ending in `(SomeError)` (or naming `file:N:in`) opens
//!   a group, `\tfrom …` continues it; Ruby 2.5–2.7's reversed
//!   `Traceback (most recent call last):` with `N: from …` lines ends with
//!   the exception line.
//!
//! In every built-in rule a line that is a JSON object is never joined.
//! Custom rules (`start` and/or `continue` regexes) work as Filebeat's
//! `negate: true, match: after` (`start` only: lines not matching it join
//! the open group) and Vector's `continue_through` (`continue` only: lines
//! matching it join the group before them); with both, a line matching
//! `continue` joins, one matching `start` opens a group, anything else
//! stands alone.

use std::sync::Arc;
use std::time::Duration;

// Byte regexes: lines are matched as read, without a UTF-8 check or copy.
use regex::bytes::Regex;

use crate::event::{DecodedLine, LineFlags, Stream, Timestamp};

/// A built-in rule (also the values of the `logship.io/multiline` pod
/// annotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    Java,
    Python,
    Go,
    Ruby,
}

impl Builtin {
    pub const NAMES: [&'static str; 4] = ["java", "python", "go", "ruby"];

    pub fn parse(name: &str) -> Option<Builtin> {
        match name.trim().to_ascii_lowercase().as_str() {
            "java" => Some(Builtin::Java),
            "python" => Some(Builtin::Python),
            "go" | "golang" => Some(Builtin::Go),
            "ruby" => Some(Builtin::Ruby),
            _ => None,
        }
    }
}

/// What a source's `multiline:` says (validated; regexes compile).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MultilineConfig {
    pub rule: RuleSpec,
    pub max_lines: usize,
    pub max_bytes: usize,
    #[serde(with = "crate::config::humantime_serde_compat")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSpec {
    Builtin(Builtin),
    Custom {
        start: Option<String>,
        #[serde(rename = "continue")]
        cont: Option<String>,
    },
}

pub const DEFAULT_MAX_LINES: usize = 500;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

impl MultilineConfig {
    /// A built-in rule with the default limits (`max_bytes`: the source's
    /// `max_line_bytes`).
    pub fn builtin(rule: Builtin, max_bytes: usize) -> Self {
        MultilineConfig {
            rule: RuleSpec::Builtin(rule),
            max_lines: DEFAULT_MAX_LINES,
            max_bytes,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Compiles the rule (regexes were checked at config load; an error
    /// here names the bad one).
    pub fn compile(&self) -> Result<Arc<Rules>, regex::Error> {
        let kind = match &self.rule {
            RuleSpec::Builtin(b) => Kind::Builtin(*b, Patterns::new()),
            RuleSpec::Custom { start, cont } => Kind::Custom {
                start: start.as_deref().map(Regex::new).transpose()?,
                cont: cont.as_deref().map(Regex::new).transpose()?,
            },
        };
        Ok(Arc::new(Rules {
            kind,
            max_lines: self.max_lines.max(1),
            max_bytes: self.max_bytes.max(1),
            timeout: self.timeout,
        }))
    }
}

/// A compiled rule, shared by every follower of a source.
#[derive(Debug)]
pub struct Rules {
    kind: Kind,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
}

impl Rules {
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same patterns (not compiled again) with other limits.
    pub fn with_limits(&self, max_lines: usize, max_bytes: usize) -> Arc<Rules> {
        Arc::new(Rules {
            kind: self.kind.clone(),
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
            timeout: self.timeout,
        })
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Builtin(Builtin, Patterns),
    Custom {
        start: Option<Regex>,
        cont: Option<Regex>,
    },
}

/// The built-in rules' patterns (compiled once per rule set).
#[derive(Clone, Debug)]
struct Patterns {
    go_start: Regex,
    go_cont: Regex,
    ruby_start: Regex,
    ruby_cont: Regex,
}

impl Patterns {
    fn new() -> Self {
        let re = |p: &str| Regex::new(p).expect("built-in multiline pattern");
        Patterns {
            go_start: re(r"^(?:panic: |fatal error: |goroutine \d+ \[[^\]]*\]:$)"),
            go_cont: re(
                r"^(?:\t|goroutine \d+ \[[^\]]*\]:$|created by |\[signal |\s*panic: |exit status \d+$|[\w.\-/*()\[\]{}]+\(.*\)$)",
            ),
            ruby_start: re(r"(?::\d+:in .*|\((?:\w+::)*\w+\))$"),
            ruby_cont: re(r"^\s+(?:\d+: )?from "),
        }
    }
}

/// Where a line leaves the joiner's hands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Joins the open group of its stream.
    Append,
    /// Joins the open group and completes it.
    AppendEnd,
    /// Completes the open group (if any), then opens one with this line.
    Open,
    /// Completes the open group (if any) and passes through alone.
    Alone,
    /// A blank line inside a group that may go on: held, joined only if a
    /// line continuing the group follows.
    MaybeBlank,
}

/// Where a built-in group is (for the rules that need more than "does this
/// line continue").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Body,
    /// Python: the exception line ended a traceback; a chain marker may
    /// follow (after a blank line).
    PyAfterException,
    /// Python: a chain marker was seen; the next traceback joins.
    PyChained,
    /// Ruby 2.5–2.7 reversed traceback: `N: from` lines until the exception.
    RubyReversed,
}

#[derive(Debug, Default)]
struct Group {
    open: bool,
    buf: Vec<u8>,
    lines: usize,
    timestamp: Timestamp,
    stream: Option<Stream>,
    flags: LineFlags,
    offset: u64,
    end: u64,
    phase: Phase,
    /// Blank lines held after the group's last line: (offset, end, timestamp, flags).
    blanks: Vec<(u64, u64, Timestamp, LineFlags)>,
    /// When its last line came (for `timeout`).
    last: Option<tokio::time::Instant>,
}

/// Joins a file's lines into multiline events (module doc). One per
/// follower; holds at most one group per stream.
#[derive(Debug)]
pub struct Joiner {
    rules: Arc<Rules>,
    /// `[stdout or no stream, stderr]`.
    groups: [Group; 2],
    /// Groups handed out holding more than one line (a metric).
    pub joined: u64,
    /// Groups split at `max_lines`/`max_bytes` (a metric).
    pub split: u64,
}

fn slot(stream: Option<Stream>) -> usize {
    usize::from(stream == Some(Stream::Stderr))
}

fn is_json_object(m: &[u8]) -> bool {
    let t = m.trim_ascii();
    t.first() == Some(&b'{') && t.last() == Some(&b'}')
}

/// A Java stack line: `\tat …`, `Caused by: …`, `Suppressed: …`, `... N
/// more`, `... N common frames omitted` (matched by hand: this runs on
/// every line of a trace).
fn java_continues(m: &[u8]) -> bool {
    let rest = m.trim_ascii_start();
    let indented = rest.len() < m.len();
    if indented && rest.starts_with(b"at ") {
        return true;
    }
    if rest.starts_with(b"Caused by: ") || (indented && rest.starts_with(b"Suppressed: ")) {
        return true;
    }
    let Some(rest) = rest.strip_prefix(b"... ") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let tail = rest[digits..].trim_ascii();
    digits > 0 && (tail == b"more" || tail == b"common frames omitted")
}

/// A line naming an exception: `…Exception`, `…Error` or `…Throwable`
/// followed by `:` or the end of the line, or `Exception in thread …`
/// (matched by hand: this runs on every line of a file).
fn java_starts(m: &[u8]) -> bool {
    static FINDERS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 3]> =
        std::sync::LazyLock::new(|| {
            [
                memchr::memmem::Finder::new(b"Exception"),
                memchr::memmem::Finder::new(b"Error"),
                memchr::memmem::Finder::new(b"Throwable"),
            ]
        });
    if m.starts_with(b"Exception in thread ") {
        return true;
    }
    FINDERS.iter().any(|f| {
        let n = f.needle().len();
        f.find_iter(m).any(|at| {
            let after = &m[at + n..];
            after.first() == Some(&b':') || after.trim_ascii().is_empty()
        })
    })
}

fn indented(m: &[u8]) -> bool {
    matches!(m.first(), Some(b' ' | b'\t'))
}

const PY_TRACEBACK: &[u8] = b"Traceback (most recent call last):";
const PY_CHAIN: [&[u8]; 2] = [
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
];

impl Joiner {
    pub fn new(rules: Arc<Rules>) -> Self {
        Joiner {
            rules,
            groups: Default::default(),
            joined: 0,
            split: 0,
        }
    }

    /// The first offset of the earliest open group: the file's checkpoint
    /// stays at or before it.
    pub fn safe_offset(&self) -> Option<u64> {
        self.groups
            .iter()
            .filter(|g| g.open)
            .map(|g| g.offset)
            .min()
    }

    /// When the earliest open group times out, if one is open.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.groups
            .iter()
            .filter(|g| g.open)
            .filter_map(|g| g.last)
            .min()
            .map(|t| t + self.rules.timeout)
    }

    /// True if a group is open.
    pub fn holding(&self) -> bool {
        self.groups.iter().any(|g| g.open)
    }

    /// Takes one decoded line; hands out (`emit`) whatever is complete.
    pub fn push(&mut self, line: &DecodedLine<'_>, emit: &mut dyn FnMut(&DecodedLine<'_>)) {
        let i = slot(line.stream);
        let (step, phase) = self.classify(i, line.message);
        let g = &self.groups[i];
        // Limits: the group is handed out as it is; this line goes on in a
        // new one (nothing is cut).
        let step = match step {
            Step::Append | Step::AppendEnd | Step::MaybeBlank
                if g.open
                    && (g.lines + g.blanks.len() + 1 > self.rules.max_lines
                        || g.buf.len() + g.blanks.len() + 1 + line.message.len()
                            > self.rules.max_bytes) =>
            {
                self.split += 1;
                Step::Open
            }
            s => s,
        };
        match step {
            Step::Append | Step::AppendEnd => {
                self.append_blanks(i);
                let g = &mut self.groups[i];
                g.phase = phase;
                g.buf.push(b'\n');
                g.buf.extend_from_slice(line.message);
                g.lines += 1;
                g.end = line.end;
                g.flags.insert(line.flags);
                g.last = Some(tokio::time::Instant::now());
                if step == Step::AppendEnd {
                    self.complete(i, emit);
                }
            }
            Step::MaybeBlank => {
                let g = &mut self.groups[i];
                g.blanks
                    .push((line.offset, line.end, line.timestamp, line.flags));
                g.last = Some(tokio::time::Instant::now());
            }
            Step::Open => {
                self.complete(i, emit);
                let g = &mut self.groups[i];
                g.open = true;
                g.buf.clear();
                g.buf.extend_from_slice(line.message);
                g.lines = 1;
                g.timestamp = line.timestamp;
                g.stream = line.stream;
                g.flags = line.flags;
                g.offset = line.offset;
                g.end = line.end;
                g.phase = phase;
                g.last = Some(tokio::time::Instant::now());
            }
            Step::Alone => {
                self.complete(i, emit);
                emit(line);
            }
        }
    }

    /// Hands out every open group (its file ended: rotation, truncation).
    pub fn flush(&mut self, emit: &mut dyn FnMut(&DecodedLine<'_>)) {
        self.flush_in_order(None, emit);
    }

    /// Hands out the groups that got no line for `timeout`.
    pub fn flush_due(&mut self, now: tokio::time::Instant, emit: &mut dyn FnMut(&DecodedLine<'_>)) {
        self.flush_in_order(Some(now), emit);
    }

    fn flush_in_order(
        &mut self,
        now: Option<tokio::time::Instant>,
        emit: &mut dyn FnMut(&DecodedLine<'_>),
    ) {
        // In file order, so the checkpoint moves as far as it can.
        while self.flush_next(now, emit) {}
    }

    /// The first offset of the group [`Joiner::flush_next`] would hand out
    /// (`now`: only groups that timed out; `None`: any open group).
    pub fn next_due(&self, now: Option<tokio::time::Instant>) -> Option<u64> {
        self.next_due_slot(now).map(|i| self.groups[i].offset)
    }

    /// Hands out the earliest (in file order) open group that is due;
    /// `false` if none is. The caller may change the span (its stamp) for
    /// each: groups of two streams can belong to different spans.
    pub fn flush_next(
        &mut self,
        now: Option<tokio::time::Instant>,
        emit: &mut dyn FnMut(&DecodedLine<'_>),
    ) -> bool {
        match self.next_due_slot(now) {
            Some(i) => {
                self.complete(i, emit);
                true
            }
            None => false,
        }
    }

    fn next_due_slot(&self, now: Option<tokio::time::Instant>) -> Option<usize> {
        let timeout = self.rules.timeout;
        (0..self.groups.len())
            .filter(|&i| {
                let g = &self.groups[i];
                g.open && now.is_none_or(|now| g.last.is_none_or(|t| t + timeout <= now))
            })
            .min_by_key(|&i| self.groups[i].offset)
    }

    /// Forgets every open group (the reader starts over elsewhere).
    pub fn reset(&mut self) {
        for g in &mut self.groups {
            g.open = false;
            g.blanks.clear();
            g.buf = Vec::new();
        }
    }

    /// Frees the buffers of closed groups (an idle file holds nothing).
    pub fn release_idle(&mut self) {
        for g in &mut self.groups {
            if !g.open {
                g.buf = Vec::new();
                g.blanks = Vec::new();
            }
        }
    }

    fn append_blanks(&mut self, i: usize) {
        let g = &mut self.groups[i];
        for (_, end, _, flags) in g.blanks.drain(..) {
            g.buf.push(b'\n');
            g.lines += 1;
            g.end = end;
            g.flags.insert(flags);
        }
    }

    /// Hands out group `i` if open, then the blank lines held after it,
    /// each alone.
    fn complete(&mut self, i: usize, emit: &mut dyn FnMut(&DecodedLine<'_>)) {
        let g = &mut self.groups[i];
        if !g.open {
            return;
        }
        g.open = false;
        let mut flags = g.flags;
        if g.lines > 1 {
            flags.insert(LineFlags::MULTILINE);
            self.joined += 1;
        }
        emit(&DecodedLine {
            timestamp: g.timestamp,
            stream: g.stream,
            message: &g.buf,
            flags,
            offset: g.offset,
            end: g.end,
        });
        for (offset, end, timestamp, flags) in g.blanks.drain(..) {
            emit(&DecodedLine {
                timestamp,
                stream: g.stream,
                message: b"",
                flags,
                offset,
                end,
            });
        }
        if g.buf.capacity() > 64 * 1024 {
            g.buf = Vec::new();
        }
    }

    /// What `m` does to stream `i`'s group, and the group's phase after it.
    fn classify(&self, i: usize, m: &[u8]) -> (Step, Phase) {
        let g = &self.groups[i];
        let (open, phase) = (g.open, g.phase);
        let has_blanks = !g.blanks.is_empty();
        let text = m;
        let body = Phase::Body;
        match &self.rules.kind {
            Kind::Custom { start, cont } => {
                let starts = start.as_ref().map(|r| r.is_match(text));
                let conts = cont.as_ref().map(|r| r.is_match(text));
                let step = match (starts, conts) {
                    (_, Some(true)) if open => Step::Append,
                    (Some(true), _) => Step::Open,
                    (Some(false), None) if open => Step::Append,
                    (Some(false), None) => Step::Alone,
                    (None, _) => Step::Open,
                    (Some(false), Some(_)) => Step::Alone,
                };
                (step, body)
            }
            Kind::Builtin(_, _) if is_json_object(m) => (Step::Alone, body),
            Kind::Builtin(Builtin::Java, _) => {
                if open && java_continues(m) {
                    (Step::Append, body)
                } else if java_starts(m) {
                    (Step::Open, body)
                } else {
                    (Step::Alone, body)
                }
            }
            Kind::Builtin(Builtin::Python, _) => {
                // Compared without a trailing `\r`; a blank line is one
                // with nothing at all (its bytes are not kept while held).
                let t = m.strip_suffix(b"\r").unwrap_or(m);
                if t == PY_TRACEBACK {
                    if open && phase == Phase::PyChained {
                        return (Step::Append, body);
                    }
                    return (Step::Open, body);
                }
                if !open {
                    return (Step::Alone, body);
                }
                match phase {
                    Phase::Body if indented(m) => (Step::Append, phase),
                    Phase::Body if m.is_empty() => (Step::MaybeBlank, phase),
                    // The exception line ends the traceback; a chain may follow.
                    Phase::Body => (Step::Append, Phase::PyAfterException),
                    Phase::PyAfterException | Phase::PyChained if m.is_empty() => {
                        (Step::MaybeBlank, phase)
                    }
                    Phase::PyAfterException if has_blanks && PY_CHAIN.contains(&t) => {
                        (Step::Append, Phase::PyChained)
                    }
                    _ => (Step::Alone, body),
                }
            }
            Kind::Builtin(Builtin::Go, p) => {
                if open && !m.is_empty() && p.go_cont.is_match(text) {
                    (Step::Append, body)
                } else if open && m.is_empty() {
                    (Step::MaybeBlank, body)
                } else if p.go_start.is_match(text) {
                    (Step::Open, body)
                } else {
                    (Step::Alone, body)
                }
            }
            Kind::Builtin(Builtin::Ruby, p) => {
                if m == PY_TRACEBACK {
                    return (Step::Open, Phase::RubyReversed);
                }
                if open && p.ruby_cont.is_match(text) {
                    return (Step::Append, phase);
                }
                if open && phase == Phase::RubyReversed && p.ruby_start.is_match(text) {
                    return (Step::AppendEnd, body);
                }
                if p.ruby_start.is_match(text) {
                    (Step::Open, body)
                } else {
                    (Step::Alone, body)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (offset, end, message, flags) of each event handed out.
    type Out = Vec<(u64, u64, String, LineFlags)>;

    fn rules(rule: Builtin) -> Arc<Rules> {
        MultilineConfig::builtin(rule, 1 << 20).compile().unwrap()
    }

    fn custom(start: Option<&str>, cont: Option<&str>) -> Arc<Rules> {
        MultilineConfig {
            rule: RuleSpec::Custom {
                start: start.map(str::to_owned),
                cont: cont.map(str::to_owned),
            },
            max_lines: DEFAULT_MAX_LINES,
            max_bytes: 1 << 20,
            timeout: DEFAULT_TIMEOUT,
        }
        .compile()
        .unwrap()
    }

    /// Lines of one stream, each `len + 1` bytes in the file, then the end
    /// of the file.
    fn run_stream(rules: Arc<Rules>, text: &str, stream: Option<Stream>) -> Out {
        let mut j = Joiner::new(rules);
        let mut out = Out::new();
        let mut offset = 0;
        let mut emit = |d: &DecodedLine<'_>| {
            out.push((
                d.offset,
                d.end,
                String::from_utf8(d.message.to_vec()).unwrap(),
                d.flags,
            ))
        };
        for line in text.split_terminator('\n') {
            let end = offset + line.len() as u64 + 1;
            j.push(
                &DecodedLine {
                    timestamp: Timestamp::default(),
                    stream,
                    message: line.as_bytes(),
                    flags: LineFlags::empty(),
                    offset,
                    end,
                },
                &mut emit,
            );
            offset = end;
        }
        j.flush(&mut emit);
        out
    }

    fn run(rules: Arc<Rules>, text: &str) -> Out {
        run_stream(rules, text, Some(Stream::Stdout))
    }

    fn messages(out: &Out) -> Vec<&str> {
        out.iter().map(|(_, _, m, _)| m.as_str()).collect()
    }

    /// Every input line is in exactly one event, in order, and the events'
    /// ranges tile the input (one stream).
    fn assert_tiles(text: &str, out: &Out) {
        let joined: Vec<&str> = out.iter().flat_map(|(_, _, m, _)| m.split('\n')).collect();
        assert_eq!(joined, text.split_terminator('\n').collect::<Vec<_>>());
        let mut at = 0;
        for (offset, end, ..) in out {
            assert_eq!(*offset, at, "events tile the input: {out:?}");
            at = *end;
        }
        assert_eq!(
            at,
            text.split_terminator('\n')
                .map(|l| l.len() as u64 + 1)
                .sum::<u64>()
        );
    }

    const JAVA: &str = "2026-11-28 10:00:00 INFO starting
Exception in thread \"main\" java.lang.IllegalStateException: boom
\tat com.example.App.run(App.java:42)
\tat com.example.App.main(App.java:10)
Caused by: java.io.IOException: disk full
\tat com.example.Store.write(Store.java:7)
\t... 1 more
2026-11-28 10:00:01 INFO next
java.lang.RuntimeException: outer
\tat A.a(A.java:1)
\tSuppressed: java.lang.IllegalArgumentException: inner
\t\tat B.b(B.java:2)
\t\t... 1 more
Caused by: java.lang.NullPointerException
\tat C.c(C.java:3)
\t... 5 common frames omitted
java.lang.OutOfMemoryError: Java heap space
\tat D.d(D.java:4)
{\"level\":\"error\",\"error\":\"java.lang.Error: x\"}
\tat E.e(E.java:5)
2026-11-28 10:00:02 ERROR c.Foo - failed: java.lang.Error
";

    #[test]
    fn java_traces_with_causes_and_suppressed_are_one_event_each() {
        let out = run(rules(Builtin::Java), JAVA);
        assert_tiles(JAVA, &out);
        let m = messages(&out);
        assert_eq!(m[0], "2026-11-28 10:00:00 INFO starting");
        assert_eq!(m[1].lines().count(), 6, "{m:?}");
        assert!(m[1].starts_with("Exception in thread") && m[1].ends_with("... 1 more"));
        assert_eq!(m[2], "2026-11-28 10:00:01 INFO next");
        assert_eq!(
            m[3].lines().count(),
            8,
            "nested suppressed and cause: {m:?}"
        );
        assert_eq!(m[4].lines().count(), 2, "two traces back to back: {m:?}");
        assert!(
            m[5].starts_with('{'),
            "a JSON object is never joined: {m:?}"
        );
        assert_eq!(m[6], "\tat E.e(E.java:5)", "a stray frame stands alone");
        assert_eq!(m.len(), 8);
        for (i, (.., flags)) in out.iter().enumerate() {
            let joined = [1, 3, 4].contains(&i);
            assert_eq!(flags.contains(LineFlags::MULTILINE), joined, "event {i}");
        }
    }

    const PYTHON: &str = "INFO start
Traceback (most recent call last):
  File \"app.py\", line 10, in <module>
    main()
  File \"app.py\", line 6, in main
    raise ValueError(\"bad value\")
ValueError: bad value
INFO between
Traceback (most recent call last):
  File \"a.py\", line 2, in <module>
    1/0
ZeroDivisionError: division by zero

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File \"a.py\", line 4, in <module>
    raise KeyError(\"k\")
KeyError: 'k'

INFO after a blank line
Traceback (most recent call last):
  File \"b.py\", line 1, in <module>
    import nothere
ModuleNotFoundError: No module named 'nothere'
";

    #[test]
    fn python_tracebacks_end_at_the_exception_and_chains_join() {
        let out = run(rules(Builtin::Python), PYTHON);
        assert_tiles(PYTHON, &out);
        let m = messages(&out);
        assert_eq!(m[0], "INFO start");
        assert!(m[1].starts_with("Traceback") && m[1].ends_with("ValueError: bad value"));
        assert_eq!(m[2], "INFO between", "the exception line ended the group");
        assert_eq!(
            m[3].lines().count(),
            11,
            "a chained traceback is one event: {m:?}"
        );
        assert!(m[3].ends_with("KeyError: 'k'"));
        assert_eq!(
            m[4], "",
            "a blank line not followed by a chain stands alone"
        );
        assert_eq!(m[5], "INFO after a blank line");
        assert!(m[6].ends_with("No module named 'nothere'"));
        assert_eq!(m.len(), 7);
    }

    const GO: &str = "starting server
panic: runtime error: index out of range [5] with length 3

goroutine 1 [running]:
main.main()
\t/app/main.go:8 +0x1d
exit status 2
next run
panic: boom [recovered]
\tpanic: boom

goroutine 7 [running]:
main.worker.func1()
\t/app/w.go:12 +0x55
panic({0x4b8f40, 0xc000012345})
\t/usr/local/go/src/runtime/panic.go:884 +0x213
main.(*Worker).run(0xc000010000, {0x4b8f40, 0x5})
\t/app/w.go:20 +0x2f
created by main.main in goroutine 1
\t/app/main.go:9 +0x45

goroutine 1 [chan receive]:
main.main()
\t/app/main.go:11 +0x6b
level=info msg=restarted
fatal error: concurrent map writes

goroutine 5 [running]:
main.write(...)
\t/app/m.go:3
";

    #[test]
    fn go_panics_with_their_goroutines_are_one_event_each() {
        let out = run(rules(Builtin::Go), GO);
        assert_tiles(GO, &out);
        let m = messages(&out);
        assert_eq!(m[0], "starting server");
        assert_eq!(m[1].lines().count(), 6, "{m:?}");
        assert!(m[1].ends_with("exit status 2"));
        assert_eq!(m[2], "next run");
        assert_eq!(m[3].lines().count(), 16, "{m:?}");
        assert_eq!(m[4], "level=info msg=restarted");
        assert_eq!(m[5].lines().count(), 5, "{m:?}");
        assert_eq!(m.len(), 6);
    }

    const RUBY: &str = "I, [2026-11-28] INFO -- : Started GET /
app.rb:3:in `divide': divided by 0 (ZeroDivisionError)
\tfrom app.rb:3:in `/'
\tfrom app.rb:7:in `<main>'
I, [2026-11-28] INFO -- : Completed
Traceback (most recent call last):
\t2: from app.rb:7:in `<main>'
\t1: from app.rb:3:in `divide'
app.rb:3:in `/': divided by 0 (ZeroDivisionError)
I, [2026-11-28] INFO -- : done
/srv/lib/x.rb:12:in `call': undefined method `name' for nil:NilClass (NoMethodError)
\tfrom /srv/lib/y.rb:4:in `block in run'
";

    #[test]
    fn ruby_backtraces_both_orders_are_one_event_each() {
        let out = run(rules(Builtin::Ruby), RUBY);
        assert_tiles(RUBY, &out);
        let m = messages(&out);
        assert_eq!(m[1].lines().count(), 3, "{m:?}");
        assert_eq!(m[2], "I, [2026-11-28] INFO -- : Completed");
        assert_eq!(
            m[3].lines().count(),
            4,
            "reversed order ends at the exception: {m:?}"
        );
        assert_eq!(m[4], "I, [2026-11-28] INFO -- : done");
        assert_eq!(m[5].lines().count(), 2);
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn custom_rules_start_only_continue_only_and_both() {
        let text = "[1] a\n  more\n  more\n[2] b\n[3] c\n  x\n";
        let out = run(custom(Some(r"^\["), None), text);
        assert_tiles(text, &out);
        assert_eq!(
            messages(&out),
            ["[1] a\n  more\n  more", "[2] b", "[3] c\n  x"]
        );
        let out = run(custom(None, r"^\s".into()), text);
        assert_eq!(
            messages(&out),
            ["[1] a\n  more\n  more", "[2] b", "[3] c\n  x"]
        );
        let text = "x\n[1] a\n  more\nother\n  stray\n";
        let out = run(custom(Some(r"^\["), Some(r"^\s")), text);
        assert_tiles(text, &out);
        assert_eq!(messages(&out), ["x", "[1] a\n  more", "other", "  stray"]);
    }

    #[test]
    fn streams_are_never_mixed() {
        let mut j = Joiner::new(rules(Builtin::Java));
        let mut out = Vec::new();
        let lines: [(&str, Stream); 5] = [
            ("java.lang.Error: e", Stream::Stderr),
            ("stdout line", Stream::Stdout),
            ("\tat A.a(A.java:1)", Stream::Stderr),
            ("\tat not.a.Continuation(stdout)", Stream::Stdout),
            ("\tat B.b(B.java:2)", Stream::Stderr),
        ];
        let mut offset = 0;
        for (m, s) in lines {
            let end = offset + 10;
            j.push(
                &DecodedLine {
                    timestamp: Timestamp::default(),
                    stream: Some(s),
                    message: m.as_bytes(),
                    flags: LineFlags::empty(),
                    offset,
                    end,
                },
                &mut |d| {
                    out.push((
                        d.offset,
                        d.stream,
                        String::from_utf8_lossy(d.message).into_owned(),
                    ))
                },
            );
            if s == Stream::Stdout {
                assert_eq!(
                    j.safe_offset(),
                    Some(0),
                    "the stderr group holds the checkpoint"
                );
            }
            offset = end;
        }
        j.flush(&mut |d| {
            out.push((
                d.offset,
                d.stream,
                String::from_utf8_lossy(d.message).into_owned(),
            ))
        });
        assert_eq!(
            out,
            [
                (10, Some(Stream::Stdout), "stdout line".to_owned()),
                (
                    30,
                    Some(Stream::Stdout),
                    "\tat not.a.Continuation(stdout)".to_owned()
                ),
                (
                    0,
                    Some(Stream::Stderr),
                    "java.lang.Error: e\n\tat A.a(A.java:1)\n\tat B.b(B.java:2)".to_owned()
                ),
            ]
        );
        assert_eq!(j.safe_offset(), None);
    }

    #[test]
    fn limits_split_a_group_and_cut_nothing() {
        let rules = MultilineConfig {
            max_lines: 3,
            ..MultilineConfig::builtin(Builtin::Java, 1 << 20)
        }
        .compile()
        .unwrap();
        let text = "java.lang.Error: e\n\tat a\n\tat b\n\tat c\n\tat d\nnext\n";
        let out = run(rules, text);
        assert_tiles(text, &out);
        assert_eq!(
            messages(&out),
            [
                "java.lang.Error: e\n\tat a\n\tat b",
                "\tat c\n\tat d",
                "next"
            ]
        );
        let rules = MultilineConfig::builtin(Builtin::Java, 30)
            .compile()
            .unwrap();
        let out = run(rules, text);
        assert_tiles(text, &out);
        assert!(out.iter().all(|(_, _, m, _)| m.len() <= 30), "{out:?}");
    }

    #[test]
    fn an_open_group_holds_the_checkpoint_until_it_times_out() {
        let mut j = Joiner::new(rules(Builtin::Java));
        let mut out = Vec::new();
        for (offset, m) in [(0, "java.lang.Error: e"), (20, "\tat a")] {
            j.push(
                &DecodedLine {
                    timestamp: Timestamp::default(),
                    stream: None,
                    message: m.as_bytes(),
                    flags: LineFlags::empty(),
                    offset,
                    end: offset + 20,
                },
                &mut |d| out.push(d.end),
            );
        }
        assert!(out.is_empty());
        assert_eq!(j.safe_offset(), Some(0));
        let deadline = j.deadline().unwrap();
        j.flush_due(deadline - Duration::from_millis(1), &mut |d| {
            out.push(d.end)
        });
        assert!(out.is_empty(), "not yet");
        j.flush_due(deadline, &mut |d| out.push(d.end));
        assert_eq!(out, [40]);
        assert_eq!((j.safe_offset(), j.deadline()), (None, None));
    }

    fn vocabulary() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "INFO plain line",
            "java.lang.IllegalStateException: boom",
            "\tat com.example.A.a(A.java:1)",
            "Caused by: java.io.IOException: x",
            "\t... 3 more",
            "Traceback (most recent call last):",
            "  File \"a.py\", line 1, in <module>",
            "ValueError: v",
            "",
            "\r",
            "During handling of the above exception, another exception occurred:",
            "panic: boom",
            "goroutine 1 [running]:",
            "main.main()",
            "\t/app/main.go:8 +0x1d",
            "app.rb:3:in `x': y (ZeroDivisionError)",
            "\tfrom app.rb:7:in `<main>'",
            "{\"json\":true}",
        ])
    }

    proptest! {
        /// Joining then splitting at `\n` gives back every line, in order,
        /// once; events tile the file; whatever the rule and the limits.
        #[test]
        fn joining_loses_and_reorders_nothing(
            lines in prop::collection::vec(vocabulary(), 0..80),
            rule in 0usize..5,
            max_lines in 1usize..12,
        ) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let compiled = match rule {
                4 => custom(Some(r"^\S"), None),
                r => MultilineConfig {
                    max_lines,
                    ..MultilineConfig::builtin(
                        [Builtin::Java, Builtin::Python, Builtin::Go, Builtin::Ruby][r],
                        1 << 20,
                    )
                }
                .compile()
                .unwrap(),
            };
            let out = run_stream(compiled, &text, None);
            assert_tiles(&text, &out);
        }
    }
}
