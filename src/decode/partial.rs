//! Reassembly of logical lines from parts (CRI `P` … `F`, docker chunks
//! without a trailing `\n`), bounded by `max_line_bytes`.
//!
//! [`Assembler`] owns the held partial line and the decoder's counters, and
//! is where every line leaves the decoder, so the rules live in one place:
//!
//! * A complete single-part line is emitted as a slice of its input — no copy.
//! * Parts are copied into one reused buffer that never holds more than
//!   `max_line_bytes`; past that the line is cut (on a UTF-8 character
//!   boundary when the cut falls inside one), flagged `TRUNCATED`, and the
//!   rest of it is dropped and counted, until its last part arrives.
//! * A held line is flushed, flagged `INCOMPLETE`, before any other line is
//!   emitted (another stream, an unparsable line, the end of the file), so
//!   emitted lines come in file order and their `[offset, end)` ranges tile
//!   the file: no byte is in two lines, none is skipped.

use super::DecodeStats;
use crate::event::{DecodedLine, LineFlags, Stream, Timestamp};

/// A reused buffer grown past this is released after its line is emitted,
/// so one huge line does not pin memory for the life of the file.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// One physical line's worth of a logical line.
#[derive(Clone, Copy, Debug)]
pub struct Part<'a> {
    pub timestamp: Timestamp,
    pub stream: Option<Stream>,
    pub content: &'a [u8],
    /// This part ends the logical line (CRI `F`, docker `log` ending in `\n`).
    pub last: bool,
    /// File offset of the physical line, and just past its `\n`.
    pub offset: u64,
    pub next: u64,
    /// The reader cut the physical line short.
    pub cut: bool,
}

/// The partial line held between parts.
#[derive(Debug, Default)]
struct Held {
    active: bool,
    buf: Vec<u8>,
    timestamp: Timestamp,
    stream: Option<Stream>,
    offset: u64,
    end: u64,
    truncated: bool,
}

#[derive(Debug)]
pub struct Assembler {
    max_line_bytes: usize,
    held: Held,
    pub stats: DecodeStats,
}

impl Assembler {
    pub fn new(max_line_bytes: usize) -> Self {
        Assembler {
            max_line_bytes,
            held: Held::default(),
            stats: DecodeStats::default(),
        }
    }

    pub fn has_partial(&self) -> bool {
        self.held.active
    }

    /// Bytes reserved for the held line (tests check the memory bound).
    #[cfg(test)]
    pub fn held_capacity(&self) -> usize {
        self.held.buf.capacity()
    }

    /// Add one part; emits when it completes a line (and first flushes a
    /// held line of another stream).
    pub fn push(&mut self, part: Part<'_>, emit: &mut dyn FnMut(&DecodedLine<'_>)) {
        if self.held.active && self.held.stream != part.stream {
            self.flush(LineFlags::INCOMPLETE, emit);
        }
        if !self.held.active {
            if part.last {
                self.emit_whole(
                    part.timestamp,
                    part.stream,
                    part.content,
                    LineFlags::empty(),
                    part.offset,
                    part.next,
                    part.cut,
                    emit,
                );
                return;
            }
            let held = &mut self.held;
            held.active = true;
            held.timestamp = part.timestamp;
            held.stream = part.stream;
            held.offset = part.offset;
            held.truncated = false;
            held.buf.clear();
        }
        self.append(part.content);
        self.held.end = part.next;
        if part.cut {
            self.mark_truncated();
        }
        if part.last {
            self.flush(LineFlags::empty(), emit);
        }
    }

    /// Emit a one-part line that is not in the file's format (or a plain
    /// line), after any held line.
    #[allow(clippy::too_many_arguments)]
    pub fn emit_whole(
        &mut self,
        timestamp: Timestamp,
        stream: Option<Stream>,
        message: &[u8],
        mut flags: LineFlags,
        offset: u64,
        next: u64,
        cut: bool,
        emit: &mut dyn FnMut(&DecodedLine<'_>),
    ) {
        if self.held.active {
            self.flush(LineFlags::INCOMPLETE, emit);
        }
        let mut message = message;
        if message.len() > self.max_line_bytes {
            let keep = utf8_floor(message, self.max_line_bytes);
            self.stats.dropped_bytes += (message.len() - keep) as u64;
            message = &message[..keep];
            flags.insert(LineFlags::TRUNCATED);
        } else if cut {
            flags.insert(LineFlags::TRUNCATED);
        }
        if flags.contains(LineFlags::TRUNCATED) {
            self.stats.truncated_lines += 1;
        }
        emit(&DecodedLine {
            timestamp,
            stream,
            message,
            flags,
            offset,
            end: next,
        });
    }

    /// Emit the held line, if any, with `flags` added, and forget it.
    pub fn flush(&mut self, mut flags: LineFlags, emit: &mut dyn FnMut(&DecodedLine<'_>)) {
        let held = &mut self.held;
        if !held.active {
            return;
        }
        if held.truncated {
            flags.insert(LineFlags::TRUNCATED);
        }
        emit(&DecodedLine {
            timestamp: held.timestamp,
            stream: held.stream,
            message: &held.buf,
            flags,
            offset: held.offset,
            end: held.end,
        });
        self.discard();
    }

    /// Frees the buffer of the held line when none is held (an idle file).
    pub fn release_idle(&mut self) {
        if !self.held.active {
            self.held.buf = Vec::new();
        }
    }

    /// Forget the held line without emitting it.
    pub fn discard(&mut self) {
        let held = &mut self.held;
        held.active = false;
        held.truncated = false;
        held.buf.clear();
        if held.buf.capacity() > RETAINED_CAPACITY {
            held.buf = Vec::new();
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let held = &mut self.held;
        if held.truncated {
            self.stats.dropped_bytes += bytes.len() as u64;
            return;
        }
        let room = self.max_line_bytes - held.buf.len();
        let keep = if bytes.len() <= room {
            bytes.len()
        } else {
            utf8_floor(bytes, room)
        };
        // Grow by doubling but never past the limit: the buffer's memory is
        // what the limit bounds.
        let needed = held.buf.len() + keep;
        if needed > held.buf.capacity() {
            let target = needed.max(held.buf.capacity() * 2).min(self.max_line_bytes);
            held.buf.reserve_exact(target - held.buf.len());
        }
        held.buf.extend_from_slice(&bytes[..keep]);
        if keep < bytes.len() {
            self.stats.dropped_bytes += (bytes.len() - keep) as u64;
            self.mark_truncated();
        }
    }

    fn mark_truncated(&mut self) {
        if !self.held.truncated {
            self.held.truncated = true;
            self.stats.truncated_lines += 1;
        }
    }
}

/// The largest cut point `<= max` in `b` that does not split a UTF-8
/// sequence, looking back at most three bytes (else `max`: not UTF-8 anyway).
fn utf8_floor(b: &[u8], max: usize) -> usize {
    if max >= b.len() {
        return b.len();
    }
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| b[i] & 0xC0 != 0x80)
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_floor_never_splits_a_character() {
        let s = "aé中😀z";
        for max in 0..=s.len() {
            let k = utf8_floor(s.as_bytes(), max);
            assert!(k <= max);
            assert!(s.is_char_boundary(k), "max {max} → {k}");
            assert!(max - k < 4);
        }
        // Not UTF-8: cut at the limit.
        assert_eq!(utf8_floor(&[0x80; 10], 5), 5);
    }
}
