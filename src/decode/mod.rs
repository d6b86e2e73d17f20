//! Decoding: physical lines from a file → logical [`DecodedLine`]s.
//!
//! Owns the three on-disk line formats — CRI ([`cri`]), docker json-file
//! ([`docker`]) and plain text — their per-file auto-detection
//! ([`detect`]), RFC 3339 time parsing ([`timestamp`]), and the reassembly of
//! lines that the container runtime split into parts ([`partial`]).
//!
//! Promises:
//! * Every physical line ends up in exactly one emitted line, in file order:
//!   the emitted `[offset, end)` ranges tile the input (a held partial line is
//!   emitted by [`LineDecoder::finish`] at the latest). Nothing is dropped: a
//!   line that does not parse in the file's format is shipped whole as plain
//!   text flagged `UNPARSED` and counted.
//! * A logical line is at most `max_line_bytes` (cut, flagged `TRUNCATED`,
//!   the rest counted in `dropped_bytes`), and no more than that is held in
//!   memory for a partial line.
//! * No allocation per line on the common path: a complete CRI line, a plain
//!   line and a docker line without escapes (other than its final `\n`) are
//!   emitted as slices of the input; parts and unescaped text go through
//!   reused buffers.
//!
//! Does not: validate or repair UTF-8 (the encoder does; bytes pass
//! through), strip a `\r` that is part of CRI/docker content, read files, or
//! know about Kubernetes.

pub mod cri;
pub mod detect;
pub mod docker;
pub mod multiline;
mod partial;
pub mod timestamp;

use crate::config::SourceFormat;
use crate::event::{DecodedLine, LineFlags, Timestamp};
use detect::DetectedFormat;
use docker::LogText;
use partial::{Assembler, Part};

/// Scratch buffers grown past this are released after use.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// Counters a decoder keeps for its file; the owner reads and resets them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Lines that did not parse in the file's format (shipped as plain, flagged).
    pub unparsed_lines: u64,
    /// Lines cut at `max_line_bytes` (or cut by the reader).
    pub truncated_lines: u64,
    /// Bytes dropped from cut lines (what the reader itself discarded is not
    /// counted here).
    pub dropped_bytes: u64,
}

/// Decodes the physical lines of one file, in order.
pub struct LineDecoder {
    /// `None` until auto-detection has seen a non-blank line.
    format: Option<DetectedFormat>,
    assembler: Assembler,
    /// Unescaped docker `log` text.
    scratch: Vec<u8>,
}

impl LineDecoder {
    pub fn new(format: SourceFormat, max_line_bytes: usize) -> Self {
        let format = match format {
            SourceFormat::Auto => None,
            SourceFormat::Cri => Some(DetectedFormat::Cri),
            SourceFormat::Docker => Some(DetectedFormat::Docker),
            SourceFormat::Plain => Some(DetectedFormat::Plain),
        };
        LineDecoder {
            format,
            assembler: Assembler::new(max_line_bytes),
            scratch: Vec::new(),
        }
    }

    /// The file's format, once known (given, or detected from its first
    /// non-blank line).
    pub fn format(&self) -> Option<DetectedFormat> {
        self.format
    }

    /// Sets the detected format of an auto-detected file whose reading does
    /// not start at its beginning (a resume): detection must come from the
    /// file's first non-blank line ([`detect_head`]), never from whatever
    /// line a run happens to read first, or a restart could decode (and
    /// split into logical lines, and so give `_id`s to) the same bytes
    /// differently.
    pub fn set_detected(&mut self, format: Option<DetectedFormat>) {
        self.format = format;
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
        let format = match self.format {
            Some(f) => f,
            None => match detect::detect(line) {
                Some(f) => {
                    self.format = Some(f);
                    f
                }
                None => DetectedFormat::Plain,
            },
        };
        match format {
            DetectedFormat::Cri => match cri::parse(line) {
                Some(l) => self.assembler.push(
                    Part {
                        timestamp: l.timestamp,
                        stream: Some(l.stream),
                        content: l.content,
                        last: !l.partial,
                        offset,
                        next,
                        cut,
                    },
                    emit,
                ),
                None => self.unparsed(line, offset, next, cut, now, emit),
            },
            DetectedFormat::Docker => self.decode_docker(line, offset, next, cut, now, emit),
            DetectedFormat::Plain => self.assembler.emit_whole(
                now,
                None,
                strip_cr(line),
                LineFlags::empty(),
                offset,
                next,
                cut,
                emit,
            ),
        }
    }

    fn decode_docker(
        &mut self,
        line: &[u8],
        offset: u64,
        next: u64,
        cut: bool,
        now: Timestamp,
        emit: &mut dyn FnMut(&DecodedLine<'_>),
    ) {
        let resolved =
            docker::parse(line).and_then(|d| Some((d, d.log.resolve(&mut self.scratch)?)));
        let Some((d, (text, complete))) = resolved else {
            return self.unparsed(line, offset, next, cut, now, emit);
        };
        let content = match text {
            LogText::Borrowed(b) => b,
            LogText::Unescaped => &self.scratch[..],
        };
        self.assembler.push(
            Part {
                timestamp: d.time.unwrap_or(now),
                stream: d.stream,
                content,
                last: complete,
                offset,
                next,
                cut,
            },
            emit,
        );
        if self.scratch.capacity() > RETAINED_CAPACITY {
            self.scratch = Vec::new();
        }
    }

    /// Ship a line that is not in the file's format as plain text, flagged.
    fn unparsed(
        &mut self,
        line: &[u8],
        offset: u64,
        next: u64,
        cut: bool,
        now: Timestamp,
        emit: &mut dyn FnMut(&DecodedLine<'_>),
    ) {
        self.assembler.stats.unparsed_lines += 1;
        self.assembler.emit_whole(
            now,
            None,
            strip_cr(line),
            LineFlags::UNPARSED,
            offset,
            next,
            cut,
            emit,
        );
    }

    /// The file ended for good (deleted and read to its end, or shutdown of a
    /// file that will not be continued): emit a held partial line, if any,
    /// flagged `INCOMPLETE`.
    pub fn finish(&mut self, now: Timestamp, emit: &mut dyn FnMut(&DecodedLine<'_>)) {
        let _ = now; // A held line keeps the time of its first part.
        self.assembler.flush(LineFlags::INCOMPLETE, emit);
    }

    /// Forget held partial state (the file was truncated). Keeps the detected format.
    pub fn reset(&mut self) {
        self.assembler.discard();
    }

    /// Frees buffers kept between lines (an idle file holds no decode memory
    /// but a partial line it holds).
    pub fn release_idle(&mut self) {
        self.scratch = Vec::new();
        self.assembler.release_idle();
    }

    /// True while a partial line is held (its bytes are not yet in any emitted line).
    pub fn has_partial(&self) -> bool {
        self.assembler.has_partial()
    }

    /// Take and reset the counters.
    pub fn take_stats(&mut self) -> DecodeStats {
        std::mem::take(&mut self.assembler.stats)
    }
}

/// The format of a file detected from its first bytes `head`, as the
/// decoder would on reading it from the start: its first complete
/// non-blank line decides. `None` if `head` holds no such line.
pub fn detect_head(head: &[u8]) -> Option<DetectedFormat> {
    let mut rest = head;
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        if let Some(f) = detect::detect(&rest[..nl]) {
            return Some(f);
        }
        rest = &rest[nl + 1..];
    }
    None
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests;
