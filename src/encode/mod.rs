//! Encoding: decoded lines → bulk pairs (`create` action + ECS document).
//!
//! TODO(encode helper): hand-written document writer, fast JSON string
//! escaping, deterministic `_id`, index name templates.

use std::path::Path;

use crate::event::{DecodedLine, EncodedSpan, FileIdentity, Generation};

/// Error in an index name template.
#[derive(Debug, thiserror::Error)]
#[error("invalid index template {template:?}: {reason}")]
pub struct IndexTemplateError {
    pub template: String,
    pub reason: String,
}

/// What encoding one line found out, for the caller's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOutcome {
    pub invalid_utf8: bool,
}

/// Per-file encoding state: the parts of every document that do not change
/// from line to line, serialised once.
pub struct FileContext {
    _private: (),
}

/// Writes bulk pairs. One per tailer (it caches the current index name).
pub struct Encoder {
    _private: (),
}

impl Encoder {
    pub fn new(node_name: &str, index_template: &str) -> Result<Self, IndexTemplateError> {
        let _ = (node_name, index_template);
        todo!()
    }

    /// Serialises the per-file parts (`log.file.path`, `host`, `agent`) and the
    /// `_id` seed for this file generation.
    pub fn file_context(
        &self,
        path: &Path,
        identity: FileIdentity,
        generation: Generation,
    ) -> FileContext {
        let _ = (path, identity, generation);
        todo!()
    }

    /// Appends one bulk item (action line + document line) to `out`.
    pub fn encode(
        &mut self,
        file: &FileContext,
        line: &DecodedLine<'_>,
        out: &mut EncodedSpan,
    ) -> EncodeOutcome {
        let _ = (file, line, out);
        todo!()
    }
}

/// Checks an index name template (used by config validation): strftime
/// directives must be valid and the literal parts must be allowed in an
/// Elasticsearch index name.
pub fn validate_index_template(template: &str) -> Result<(), IndexTemplateError> {
    let _ = template;
    todo!()
}
