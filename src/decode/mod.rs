//! Decoding: physical lines from a file → logical [`DecodedLine`]s.
//!
//! TODO(decode helper): CRI, docker json-file, plain, auto-detection,
//! partial-line reassembly bounded by `max_line_bytes`.

use crate::config::SourceFormat;
use crate::event::{DecodedLine, Timestamp};

/// Counters a decoder keeps for its file; the owner reads and resets them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Lines that did not parse in the file's format (shipped as plain, flagged).
    pub unparsed_lines: u64,
    /// Lines cut at `max_line_bytes`.
    pub truncated_lines: u64,
    /// Bytes dropped from cut lines.
    pub dropped_bytes: u64,
}

/// Decodes the physical lines of one file, in order.
pub struct LineDecoder {
    _format: SourceFormat,
    _max_line_bytes: usize,
}

impl LineDecoder {
    pub fn new(format: SourceFormat, max_line_bytes: usize) -> Self {
        LineDecoder {
            _format: format,
            _max_line_bytes: max_line_bytes,
        }
    }

    /// Decode one physical line.
    ///
    /// * `line` — the line without its trailing `\n` (a trailing `\r` is still there).
    /// * `offset` — file offset of the line's first byte; `next` — offset just past its `\n`.
    /// * `cut` — the reader cut this physical line at its own limit and
    ///   discarded the rest up to the `\n` (the result must be flagged truncated).
    /// * `now` — read time, used as `@timestamp` for plain lines and lines that
    ///   carry no parseable time.
    ///
    /// Calls `emit` zero or more times with complete logical lines. A partial
    /// line (CRI `P`, docker `log` without trailing `\n`) is held until it
    /// completes; no more than `max_line_bytes` of it are held.
    pub fn decode(
        &mut self,
        line: &[u8],
        offset: u64,
        next: u64,
        cut: bool,
        now: Timestamp,
        emit: &mut dyn FnMut(&DecodedLine<'_>),
    ) {
        let _ = (line, offset, next, cut, now, emit);
        todo!()
    }

    /// The file ended for good (deleted and read to its end, or shutdown of a
    /// file that will not be continued): emit a held partial line, if any,
    /// flagged `INCOMPLETE`.
    pub fn finish(&mut self, now: Timestamp, emit: &mut dyn FnMut(&DecodedLine<'_>)) {
        let _ = (now, emit);
        todo!()
    }

    /// Forget held partial state (the file was truncated). Keeps the detected format.
    pub fn reset(&mut self) {
        todo!()
    }

    /// True while a partial line is held (its bytes are not yet in any emitted line).
    pub fn has_partial(&self) -> bool {
        todo!()
    }

    /// Take and reset the counters.
    pub fn take_stats(&mut self) -> DecodeStats {
        todo!()
    }
}
