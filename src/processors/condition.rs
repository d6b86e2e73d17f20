//! Conditions of `drop` and `keep`, compiled.
//!
//! A leaf reads one field of the line: `message`, `stream`, or a field
//! added or parsed by an earlier step (absent: the leaf is false, so `not`
//! of it is true). A leaf on the file's metadata (`kubernetes.*`,
//! `container.*`, `host.name`, `log.file.path`) is the same for every line
//! of a file: it is evaluated once per file (`FileProcessor::for_file`)
//! and read here by index.

use regex::bytes::Regex;

use super::FieldId;
use crate::event::Stream;

/// Where a leaf's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    Message,
    Stream,
    /// Constant per file: see the module doc.
    Meta,
    Field(FieldId),
}

#[derive(Debug)]
pub(super) enum Matcher {
    /// The whole value, as text.
    Equals(Box<[u8]>),
    /// Somewhere in the value (unanchored).
    Regex(Regex),
}

impl Matcher {
    pub(super) fn matches(&self, value: &[u8]) -> bool {
        match self {
            Matcher::Equals(v) => **v == *value,
            Matcher::Regex(re) => re.is_match(value),
        }
    }
}

#[derive(Debug)]
pub(super) enum Cond {
    Leaf(Source, Matcher),
    /// Index into the file's metadata results.
    Meta(usize),
    And(Box<[Cond]>),
    Or(Box<[Cond]>),
    Not(Box<Cond>),
}

impl Cond {
    /// One leaf as is, several as their `and`.
    pub(super) fn all(mut leaves: Vec<Cond>) -> Cond {
        if leaves.len() == 1
            && let Some(leaf) = leaves.pop()
        {
            return leaf;
        }
        Cond::And(leaves.into_boxed_slice())
    }

    pub(super) fn eval(&self, line: &LineView<'_>) -> bool {
        match self {
            Cond::Leaf(source, matcher) => {
                let value = match source {
                    Source::Message => line.message,
                    Source::Stream => line.stream.map(|s| s.as_str().as_bytes()),
                    Source::Field(id) => (line.field)(*id),
                    Source::Meta => None,
                };
                value.is_some_and(|v| matcher.matches(v))
            }
            Cond::Meta(i) => line.meta.get(*i).copied().unwrap_or(false),
            Cond::And(all) => all.iter().all(|c| c.eval(line)),
            Cond::Or(any) => any.iter().any(|c| c.eval(line)),
            Cond::Not(c) => !c.eval(line),
        }
    }
}

/// What a condition can see of a line.
pub(super) struct LineView<'a> {
    /// `None` once `message` was dropped.
    pub message: Option<&'a [u8]>,
    pub stream: Option<Stream>,
    pub meta: &'a [bool],
    pub field: &'a dyn Fn(FieldId) -> Option<&'a [u8]>,
}
