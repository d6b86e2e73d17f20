//! The stages one physical line of a file generation goes through, in the
//! order shipping applies them: decode (format, partial lines joined, long
//! lines cut), multiline join, processors, encode.
//!
//! One code path for every reader of a file: the [`Follower`] calls these
//! functions on the lines it tails, and `logship audit` ([`crate::audit`])
//! calls the same ones on a file read from its start, so the logical lines,
//! their offsets (a joined event's is its first physical line's; a CRI or
//! docker partial line's is its first part's; each piece of a line cut at
//! `max_line_bytes` has its own), the processors' verdicts and the `_id`s
//! are the agent's by construction. Nothing here reads files, knows spans'
//! boundaries or counts metrics: the caller owns the state it passes in.
//!
//! [`Follower`]: super::follower::Follower

use super::reader::RawLine;
use crate::decode::LineDecoder;
use crate::decode::multiline::Joiner;
use crate::encode::{Encoder, FileContext};
use crate::event::{DecodedLine, EncodedSpan, Timestamp};
use crate::processors::FileProcessor;

/// One complete physical line (`bytes`, read as `line`) through the decoder
/// and, if there is one, the joiner, into `sink` (the logical lines
/// complete so far). `decoded_end` is set to the end of the last line the
/// decoder handed out.
pub fn feed(
    decoder: &mut LineDecoder,
    joiner: Option<&mut Joiner>,
    bytes: &[u8],
    line: &RawLine,
    now: Timestamp,
    decoded_end: &mut u64,
    sink: &mut dyn FnMut(&DecodedLine<'_>),
) {
    match joiner {
        None => decode_line(decoder, bytes, line, now, sink),
        Some(j) => decode_line(decoder, bytes, line, now, &mut |d| {
            *decoded_end = d.end;
            j.push(d, sink);
        }),
    }
}

/// The file ends here (rotated or deleted and read to its end, or an audit
/// at end of file): its last line without `\n` (`rest`), the partial line
/// the decoder holds and the joiner's open groups go to `sink`. (The
/// follower does the same in steps, to stamp each part as first read.)
pub fn finish(
    decoder: &mut LineDecoder,
    mut joiner: Option<&mut Joiner>,
    rest: Option<(&[u8], &RawLine)>,
    now: Timestamp,
    decoded_end: &mut u64,
    sink: &mut dyn FnMut(&DecodedLine<'_>),
) {
    if let Some((bytes, line)) = rest {
        feed(
            decoder,
            joiner.as_deref_mut(),
            bytes,
            line,
            now,
            decoded_end,
            sink,
        );
    }
    finish_partial(decoder, joiner.as_deref_mut(), now, decoded_end, sink);
    if let Some(j) = joiner {
        j.flush(sink);
    }
}

/// The partial line the decoder holds (a CRI `P` or docker chunk without
/// its end: the file ended) through the joiner, if any, into `sink`.
pub fn finish_partial(
    decoder: &mut LineDecoder,
    joiner: Option<&mut Joiner>,
    now: Timestamp,
    decoded_end: &mut u64,
    sink: &mut dyn FnMut(&DecodedLine<'_>),
) {
    match joiner {
        None => decoder.finish(now, sink),
        Some(j) => decoder.finish(now, &mut |d| {
            *decoded_end = d.end.max(*decoded_end);
            j.push(d, sink);
        }),
    }
}

/// With a joiner: the checkpoint may move to the end of what the decoder
/// handed out, but not past the first line of an open group.
pub fn held_back(joiner: &Joiner, decoded_end: u64) -> u64 {
    joiner
        .safe_offset()
        .map_or(decoded_end, |held| held.min(decoded_end))
}

fn decode_line(
    decoder: &mut LineDecoder,
    bytes: &[u8],
    line: &RawLine,
    now: Timestamp,
    emit: &mut dyn FnMut(&DecodedLine<'_>),
) {
    decoder.decode(bytes, line.offset, line.next, line.cut, now, emit);
}

/// Encodes `line` into `span` (after the processors, which may drop it: it
/// is then only passed). `span_end` moves past the line either way;
/// `events` counts the lines encoded. Returns whether it was encoded.
#[allow(clippy::too_many_arguments)]
pub fn encode_line(
    encoder: &mut Encoder,
    ctx: &FileContext,
    processor: &mut Option<FileProcessor>,
    span: &mut EncodedSpan,
    span_end: &mut u64,
    events: &mut u64,
    invalid_utf8: &mut u64,
    line: &DecodedLine<'_>,
) -> bool {
    let outcome = match processor {
        None => encoder.encode(ctx, line, span),
        Some(p) => match p.process(line) {
            Some(processed) => encoder.encode_processed(ctx, line, &processed, span),
            None => {
                *span_end = line.end;
                return false;
            }
        },
    };
    *span_end = line.end;
    *events += 1;
    if outcome.invalid_utf8 {
        *invalid_utf8 += 1;
    }
    true
}
