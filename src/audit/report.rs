//! What an audit found, per file and in total, and how it is shown.
//!
//! Each logical line of an audited file is counted in exactly one bucket
//! ([`LineStatus`]): present (Elasticsearch holds its `_id`), missing,
//! dropped by processors, not yet shipped (not found, and at or past the
//! file's acknowledged checkpoint: the agent has not delivered it yet),
//! dead-lettered (not found, and its `_id` is in a dead-letter file), or
//! unknown generation (the checkpoints do not know this content, so its
//! `_id`s cannot be computed; not looked up). `lines` is their sum.
//!
//! Rendered as text for people ([`Report::text`]) or as one JSON object for
//! scripts ([`Report`] serialises; the format is in `docs/audit.md`). The
//! exit code is 0 when no line is missing, 1 when one is, 70 when a file
//! could not be audited ([`Report::exit_code`]).

use std::path::PathBuf;

use serde::Serialize;

use crate::event::{FileIdentity, Generation};

/// Missing offsets listed per file (the count is always exact).
pub const MAX_LISTED_OFFSETS: usize = 1000;
/// Missing lines shown with their text per file.
pub const MAX_EXAMPLES: usize = 5;
/// Bytes of a missing line's text shown.
pub const EXAMPLE_BYTES: usize = 200;

/// Where one logical line stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStatus {
    /// Elasticsearch holds its `_id` (`copies` times: more than one is a
    /// line indexed twice, in two indices).
    Present {
        copies: u32,
    },
    Missing,
    Dropped,
    NotYetShipped,
    DeadLettered,
    UnknownGeneration,
}

/// The status of a line shipping makes a document of: found `copies`
/// times, its `_id` in a dead-letter file or not, starting at `offset`
/// in a file acknowledged up to `acknowledged` (the checkpoint's offset).
pub fn classify(copies: u32, dead_lettered: bool, offset: u64, acknowledged: u64) -> LineStatus {
    if copies > 0 {
        LineStatus::Present { copies }
    } else if dead_lettered {
        LineStatus::DeadLettered
    } else if offset >= acknowledged {
        LineStatus::NotYetShipped
    } else {
        LineStatus::Missing
    }
}

/// A missing line, with its text as the file holds it (its first physical
/// line, cut at [`EXAMPLE_BYTES`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MissingLine {
    pub offset: u64,
    pub id: String,
    pub text: String,
}

/// Lines per bucket (see the module doc); `lines` is the sum of all but
/// `duplicated`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub lines: u64,
    pub present: u64,
    pub missing: u64,
    pub dropped: u64,
    pub not_yet_shipped: u64,
    pub dead_lettered: u64,
    pub unknown_generation: u64,
    /// Lines found more than once (each also counts as present).
    pub duplicated: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.lines += other.lines;
        self.present += other.present;
        self.missing += other.missing;
        self.dropped += other.dropped;
        self.not_yet_shipped += other.not_yet_shipped;
        self.dead_lettered += other.dead_lettered;
        self.unknown_generation += other.unknown_generation;
        self.duplicated += other.duplicated;
    }
}

/// One audited file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The file read (a rotated copy: where it was found).
    pub path: PathBuf,
    /// The path the agent followed it under, when another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub followed_as: Option<PathBuf>,
    /// Its identity and the generation its `_id`s were computed for.
    pub identity: Option<FileIdentity>,
    pub generation: Option<Generation>,
    /// Offset up to which the agent's checkpoint says lines are delivered.
    pub acknowledged: Option<u64>,
    /// Bytes read.
    pub bytes: u64,
    #[serde(flatten)]
    pub counts: Counts,
    /// Offsets of the first missing lines (at most [`MAX_LISTED_OFFSETS`]).
    pub missing_offsets: Vec<u64>,
    /// The first missing lines with their text.
    pub missing_lines: Vec<MissingLine>,
    /// Offset of the first line not yet shipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_yet_shipped_from: Option<u64>,
    /// Why the file was read the way it was (unknown generation, pod
    /// metadata unavailable, excluded), if there is something to say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Why the file could not be audited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One line: what it comes to.
    pub verdict: String,
}

impl FileReport {
    pub fn new(path: PathBuf) -> Self {
        FileReport {
            path,
            ..FileReport::default()
        }
    }

    /// Counts one line (in file order; `id` is its `_id`, if it has one).
    pub fn add(&mut self, offset: u64, id: Option<&str>, status: LineStatus) {
        self.counts.lines += 1;
        match status {
            LineStatus::Present { copies } => {
                self.counts.present += 1;
                if copies > 1 {
                    self.counts.duplicated += 1;
                }
            }
            LineStatus::Missing => {
                self.counts.missing += 1;
                if self.missing_offsets.len() < MAX_LISTED_OFFSETS {
                    self.missing_offsets.push(offset);
                }
                if self.missing_lines.len() < MAX_EXAMPLES {
                    self.missing_lines.push(MissingLine {
                        offset,
                        id: id.unwrap_or_default().to_owned(),
                        text: String::new(),
                    });
                }
            }
            LineStatus::Dropped => self.counts.dropped += 1,
            LineStatus::NotYetShipped => {
                self.counts.not_yet_shipped += 1;
                self.not_yet_shipped_from.get_or_insert(offset);
            }
            LineStatus::DeadLettered => self.counts.dead_lettered += 1,
            LineStatus::UnknownGeneration => self.counts.unknown_generation += 1,
        }
    }

    /// Sets the one-line verdict from the counts.
    pub fn conclude(&mut self) {
        self.verdict = if let Some(e) = &self.error {
            format!("ERROR: not audited: {e}")
        } else if self.counts.missing > 0 {
            format!(
                "MISSING: {} of {} lines are not in Elasticsearch (first at byte {})",
                self.counts.missing,
                self.counts.lines,
                self.missing_offsets.first().copied().unwrap_or_default()
            )
        } else if self.counts.unknown_generation > 0 || self.generation.is_none() {
            format!(
                "UNKNOWN GENERATION: the checkpoints do not know this content; its {} lines were not looked up",
                self.counts.unknown_generation
            )
        } else {
            let mut also = Vec::new();
            if self.counts.not_yet_shipped > 0 {
                also.push(format!("{} not yet shipped", self.counts.not_yet_shipped));
            }
            if self.counts.dead_lettered > 0 {
                also.push(format!("{} dead-lettered", self.counts.dead_lettered));
            }
            if self.counts.dropped > 0 {
                also.push(format!("{} dropped by processors", self.counts.dropped));
            }
            if self.counts.duplicated > 0 {
                also.push(format!("{} indexed more than once", self.counts.duplicated));
            }
            let also = if also.is_empty() {
                String::new()
            } else {
                format!("; {}", also.join(", "))
            };
            format!(
                "OK: {} of {} lines present{also}",
                self.counts.present, self.counts.lines
            )
        };
    }
}

/// Totals over every file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub files: u64,
    #[serde(flatten)]
    pub counts: Counts,
    /// Files that could not be audited.
    pub errors: u64,
}

/// The whole audit.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub files: Vec<FileReport>,
    pub totals: Totals,
    /// What was not audited and why (journald sources, files gone).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Index pattern the `_id`s were looked up in.
    pub index_pattern: String,
    /// Search requests sent to Elasticsearch.
    pub requests: u64,
    pub seconds: f64,
    pub verdict: String,
}

impl Report {
    /// Adds up the files and sets the verdict.
    pub fn conclude(&mut self) {
        let mut t = Totals::default();
        for f in &self.files {
            t.files += 1;
            t.counts.add(&f.counts);
            t.errors += u64::from(f.error.is_some());
        }
        let with_missing = self.files.iter().filter(|f| f.counts.missing > 0).count();
        self.verdict = if t.errors > 0 {
            format!(
                "ERROR: {} of {} files could not be audited",
                t.errors, t.files
            )
        } else if t.counts.missing > 0 {
            format!(
                "MISSING: {} lines in {with_missing} of {} files are not in Elasticsearch",
                t.counts.missing, t.files
            )
        } else {
            format!(
                "OK: nothing missing in {} files ({} lines present)",
                t.files, t.counts.present
            )
        };
        self.totals = t;
    }

    /// 0: nothing missing; 1: some line is missing; 70: a file could not
    /// be audited.
    pub fn exit_code(&self) -> u8 {
        if self.totals.errors > 0 {
            70
        } else if self.totals.counts.missing > 0 {
            1
        } else {
            0
        }
    }

    /// The report for people.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for f in &self.files {
            let _ = writeln!(out, "{}", f.path.display());
            if let Some(original) = &f.followed_as {
                let _ = writeln!(out, "  followed as {}", original.display());
            }
            match (f.generation, f.acknowledged) {
                (Some(g), Some(a)) => {
                    let _ = writeln!(
                        out,
                        "  generation {g}, acknowledged up to byte {a} of {}",
                        f.bytes
                    );
                }
                _ => {
                    let _ = writeln!(out, "  {} bytes", f.bytes);
                }
            }
            for note in &f.notes {
                let _ = writeln!(out, "  note: {note}");
            }
            if f.error.is_none() {
                let _ = writeln!(
                    out,
                    "  {} lines: {} present, {} missing, {} dropped by processors, \
                     {} not yet shipped, {} dead-lettered, {} unknown generation",
                    f.counts.lines,
                    f.counts.present,
                    f.counts.missing,
                    f.counts.dropped,
                    f.counts.not_yet_shipped,
                    f.counts.dead_lettered,
                    f.counts.unknown_generation
                );
            }
            if f.counts.missing > 0 {
                let listed: Vec<String> = f
                    .missing_offsets
                    .iter()
                    .take(20)
                    .map(u64::to_string)
                    .collect();
                let more = if f.counts.missing > listed.len() as u64 {
                    format!(" and {} more", f.counts.missing - listed.len() as u64)
                } else {
                    String::new()
                };
                let _ = writeln!(out, "  missing at bytes {}{more}", listed.join(", "));
                for m in &f.missing_lines {
                    let _ = writeln!(out, "    @{} {}: {}", m.offset, m.id, m.text);
                }
            }
            if let Some(from) = f.not_yet_shipped_from {
                let _ = writeln!(out, "  not yet shipped from byte {from}");
            }
            let _ = writeln!(out, "  {}", f.verdict);
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "{} files, {} lines: {} present, {} missing, {} dropped, {} not yet shipped, \
             {} dead-lettered, {} unknown generation ({} requests to {}, {:.1} s)",
            t.files,
            t.counts.lines,
            t.counts.present,
            t.counts.missing,
            t.counts.dropped,
            t.counts.not_yet_shipped,
            t.counts.dead_lettered,
            t.counts.unknown_generation,
            self.requests,
            self.index_pattern,
            self.seconds
        );
        let _ = writeln!(out, "{}", self.verdict);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_not_found_is_dead_lettered_not_yet_shipped_or_missing_in_that_order() {
        assert_eq!(
            classify(1, true, 500, 100),
            LineStatus::Present { copies: 1 }
        );
        assert_eq!(
            classify(2, false, 0, 100),
            LineStatus::Present { copies: 2 }
        );
        assert_eq!(classify(0, true, 500, 100), LineStatus::DeadLettered);
        assert_eq!(classify(0, false, 100, 100), LineStatus::NotYetShipped);
        assert_eq!(classify(0, false, 99, 100), LineStatus::Missing);
    }

    fn file(statuses: &[(u64, LineStatus)]) -> FileReport {
        let mut f = FileReport::new("/var/log/a.log".into());
        f.generation = Some(0);
        for &(offset, status) in statuses {
            f.add(offset, Some("id"), status);
        }
        f.conclude();
        f
    }

    #[test]
    fn every_line_counts_once_and_missing_offsets_are_listed_in_order() {
        let f = file(&[
            (0, LineStatus::Present { copies: 1 }),
            (10, LineStatus::Missing),
            (20, LineStatus::Dropped),
            (30, LineStatus::Present { copies: 2 }),
            (40, LineStatus::DeadLettered),
            (50, LineStatus::Missing),
            (60, LineStatus::NotYetShipped),
            (70, LineStatus::NotYetShipped),
        ]);
        assert_eq!(
            (
                f.counts.lines,
                f.counts.present,
                f.counts.missing,
                f.counts.dropped,
                f.counts.dead_lettered
            ),
            (8, 2, 2, 1, 1)
        );
        assert_eq!((f.counts.not_yet_shipped, f.counts.duplicated), (2, 1));
        assert_eq!(f.missing_offsets, vec![10, 50]);
        assert_eq!(f.not_yet_shipped_from, Some(60));
        assert_eq!(
            f.verdict,
            "MISSING: 2 of 8 lines are not in Elasticsearch (first at byte 10)"
        );
    }

    #[test]
    fn listed_offsets_and_examples_are_capped_but_counts_are_not() {
        let statuses: Vec<(u64, LineStatus)> = (0..(MAX_LISTED_OFFSETS as u64 + 7))
            .map(|i| (i * 10, LineStatus::Missing))
            .collect();
        let f = file(&statuses);
        assert_eq!(f.counts.missing, MAX_LISTED_OFFSETS as u64 + 7);
        assert_eq!(f.missing_offsets.len(), MAX_LISTED_OFFSETS);
        assert_eq!(f.missing_lines.len(), MAX_EXAMPLES);
        assert_eq!(f.missing_lines[4].offset, 40);
    }

    #[test]
    fn verdicts_and_exit_codes() {
        let ok = file(&[
            (0, LineStatus::Present { copies: 1 }),
            (5, LineStatus::Dropped),
            (9, LineStatus::NotYetShipped),
        ]);
        assert_eq!(
            ok.verdict,
            "OK: 1 of 3 lines present; 1 not yet shipped, 1 dropped by processors"
        );
        let unknown = file(&[(0, LineStatus::UnknownGeneration)]);
        assert!(
            unknown.verdict.starts_with("UNKNOWN GENERATION"),
            "{}",
            unknown.verdict
        );
        // A compressed file that is no known copy: no lines read, no generation.
        let mut gz = FileReport::new("/var/log/a.log.3.gz".into());
        gz.conclude();
        assert_eq!(
            gz.verdict,
            "UNKNOWN GENERATION: the checkpoints do not know this content; its 0 lines were not looked up"
        );
        let missing = file(&[(0, LineStatus::Missing)]);

        let mut report = Report {
            files: vec![ok.clone(), unknown.clone()],
            ..Report::default()
        };
        report.conclude();
        assert_eq!(report.exit_code(), 0, "unknown generation is not missing");
        assert_eq!(
            report.verdict,
            "OK: nothing missing in 2 files (1 lines present)"
        );

        report.files.push(missing);
        report.conclude();
        assert_eq!(report.exit_code(), 1);
        assert_eq!(
            report.verdict,
            "MISSING: 1 lines in 1 of 3 files are not in Elasticsearch"
        );

        let mut broken = FileReport::new("/gone.log".into());
        broken.error = Some("cannot open: No such file or directory".into());
        broken.conclude();
        report.files.push(broken);
        report.conclude();
        assert_eq!(report.exit_code(), 70);
        assert!(report.text().contains("ERROR: not audited: cannot open"));
    }

    #[test]
    fn json_has_every_count_and_the_missing_lines() {
        let mut f = file(&[
            (0, LineStatus::Present { copies: 1 }),
            (7, LineStatus::Missing),
        ]);
        f.missing_lines[0].text = "hello".into();
        let json = serde_json::to_value(&f).expect("serialises");
        let buckets = serde_json::to_value(Counts::default()).expect("serialises");
        let keys = buckets.as_object().expect("an object").keys();
        assert_eq!(keys.len(), 8);
        for key in keys {
            assert!(json[key].is_u64(), "{key} in {json}");
        }
        assert_eq!(json["missing_offsets"], serde_json::json!([7]));
        assert_eq!(json["missing_lines"][0]["text"], "hello");
        assert!(json.get("error").is_none());
    }
}
