//! One file generation read from its start through the shipping pipeline
//! (`tail::pipeline`: the agent's decoder, joiner, processors and encoder),
//! yielding each logical line's offset and what shipping makes of it: a
//! document with this `_id`, or a line the processors drop.
//!
//! The `_id` is read back from the action line the encoder wrote, so it is
//! the one the agent sends, not a recomputation. Blocking (file reads).

use std::fs::File;
use std::io;
use std::sync::Arc;

use crate::config::SourceFormat;
use crate::decode::LineDecoder;
use crate::decode::multiline::{Joiner, Rules};
use crate::encode::{DOCUMENT_ID_LEN, DocumentId, Encoder, FileContext};
use crate::event::{DecodedLine, EncodedSpan, Timestamp};
use crate::processors::FileProcessor;
use crate::tail::follower::READ_LINE_SLACK;
use crate::tail::pipeline;
use crate::tail::reader::LineReader;

/// What shipping makes of one logical line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shipped {
    /// A document with this `_id`.
    Document(DocumentId),
    /// Dropped by a processor (or the pod's `logship.io/drop`) under
    /// today's config, with the `_id` it has if it was shipped all the same
    /// (under another config): it is looked up too.
    Dropped(DocumentId),
}

/// One logical line: where it starts (its first physical line's first
/// byte) and what shipping makes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineOutcome {
    pub offset: u64,
    pub shipped: Shipped,
}

/// How a file is read, as its follower would read it.
pub struct Reading {
    pub format: SourceFormat,
    pub max_line_bytes: usize,
    pub multiline: Option<Arc<Rules>>,
    pub processor: Option<FileProcessor>,
    pub encoder: Encoder,
    /// The file generation's context (its `_id` key among others).
    pub ctx: FileContext,
}

/// Reads `file` from offset 0 to its end, calling `each` for every logical
/// line in order. Returns the bytes read.
pub fn read(file: &File, reading: Reading, mut each: impl FnMut(LineOutcome)) -> io::Result<u64> {
    let Reading {
        format,
        max_line_bytes,
        multiline,
        mut processor,
        mut encoder,
        ctx,
    } = reading;
    let mut reader = LineReader::new(0, max_line_bytes.saturating_add(READ_LINE_SLACK));
    let mut decoder = LineDecoder::new(format, max_line_bytes);
    let mut joiner = multiline.map(Joiner::new);
    let mut span = EncodedSpan::default();
    let (mut span_end, mut events, mut invalid_utf8, mut decoded_end) = (0, 0, 0, 0);
    // Read time: only plain lines' `@timestamp` (and so index) take it,
    // never their `_id`.
    let now = Timestamp::now();
    let mut sink = |d: &DecodedLine<'_>| {
        span.body.clear();
        span.items.clear();
        let encoded = pipeline::encode_line(
            &mut encoder,
            &ctx,
            &mut processor,
            &mut span,
            &mut span_end,
            &mut events,
            &mut invalid_utf8,
            d,
        );
        let shipped = match encoded.then(|| encoded_id(&span.body)).flatten() {
            Some(id) => Shipped::Document(id),
            None => Shipped::Dropped(ctx.document_id(d.offset)),
        };
        each(LineOutcome {
            offset: d.offset,
            shipped,
        });
    };
    loop {
        if reader.fill(file)? == 0 {
            break;
        }
        while let Some(line) = reader.next_line() {
            pipeline::feed(
                &mut decoder,
                joiner.as_mut(),
                reader.line(&line),
                &line,
                now,
                &mut decoded_end,
                &mut sink,
            );
        }
    }
    let rest = reader.take_rest();
    pipeline::finish(
        &mut decoder,
        joiner.as_mut(),
        rest.as_ref().map(|line| (reader.line(line), line)),
        now,
        &mut decoded_end,
        &mut sink,
    );
    Ok(reader.read_offset())
}

/// The `_id` of the one bulk item in `body`: its action line ends in
/// `"_id":"<22 characters>"}}`.
fn encoded_id(body: &[u8]) -> Option<DocumentId> {
    let action = &body[..memchr::memchr(b'\n', body)?];
    let before = action.strip_suffix(b"\"}}")?;
    let start = before.len().checked_sub(DOCUMENT_ID_LEN)?;
    DocumentId::parse(&before[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::multiline::MultilineConfig;
    use crate::encode::FileIdKey;
    use crate::event::FileIdentity;

    fn reading(format: SourceFormat, max_line_bytes: usize, multiline: bool) -> Reading {
        let encoder = Encoder::new("node-1", "logs-%Y.%m.%d").expect("template");
        let ctx = encoder.file_context(std::path::Path::new("/x/0.log"), IDENTITY, 3);
        Reading {
            format,
            max_line_bytes,
            multiline: multiline.then(|| {
                MultilineConfig::builtin(crate::decode::multiline::Builtin::Java, 1 << 20)
                    .compile()
                    .expect("compiles")
            }),
            processor: None,
            encoder,
            ctx,
        }
    }

    const IDENTITY: FileIdentity = FileIdentity {
        dev: 1,
        ino: 2,
        fingerprint: 3,
    };

    fn outcomes(bytes: &[u8], reading: Reading) -> Vec<LineOutcome> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        std::fs::write(&path, bytes).expect("write");
        let mut out = Vec::new();
        let read =
            super::read(&File::open(&path).expect("open"), reading, |o| out.push(o)).expect("read");
        assert_eq!(read, bytes.len() as u64);
        out
    }

    fn id(offset: u64) -> Shipped {
        Shipped::Document(FileIdKey::new("node-1", IDENTITY, 3).document_id(offset))
    }

    #[test]
    fn offsets_and_ids_are_the_first_physical_lines() {
        // A CRI partial line (P then F), a full one, an unterminated last one.
        let text = b"2026-11-26T01:02:03Z stdout P part one \n\
                     2026-11-26T01:02:03Z stdout F and two\n\
                     2026-11-26T01:02:04Z stderr F whole\n\
                     2026-11-26T01:02:05Z stdout F last, no newline";
        let got = outcomes(text, reading(SourceFormat::Cri, 1 << 20, false));
        let second = text
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap();
        let third = second + text[second..].iter().position(|&b| b == b'\n').unwrap() + 1;
        let fourth = third + text[third..].iter().position(|&b| b == b'\n').unwrap() + 1;
        let offsets: Vec<u64> = got.iter().map(|o| o.offset).collect();
        assert_eq!(offsets, vec![0, third as u64, fourth as u64]);
        assert!(got.iter().all(|o| o.shipped == id(o.offset)));
    }

    #[test]
    fn a_multiline_group_is_one_line_at_its_first_offset() {
        let text = b"Exception in thread \"main\" java.lang.Error: boom\n\
                     \tat a.B.c(B.java:1)\n\
                     \tat a.B.d(B.java:2)\n\
                     next event\n";
        let got = outcomes(text, reading(SourceFormat::Plain, 1 << 20, true));
        let next = text.windows(4).position(|w| w == b"next").unwrap() as u64;
        assert_eq!(
            got,
            vec![
                LineOutcome {
                    offset: 0,
                    shipped: id(0)
                },
                LineOutcome {
                    offset: next,
                    shipped: id(next)
                },
            ]
        );
    }

    #[test]
    fn a_line_over_max_line_bytes_is_one_cut_document_at_its_offset() {
        // As shipped: cut at max_line_bytes and flagged, the rest dropped
        // (decode::partial), so one `_id`; the next line keeps its offset.
        let mut text = vec![b'x'; 250];
        text.extend_from_slice(b"\nnext\n");
        let got = outcomes(&text, reading(SourceFormat::Plain, 100, false));
        let offsets: Vec<u64> = got.iter().map(|o| o.offset).collect();
        assert_eq!(offsets, vec![0, 251]);
    }

    #[test]
    fn the_id_is_read_back_from_the_action_line() {
        let body = b"{\"create\":{\"_index\":\"logs-x\",\"_id\":\"ABCDEFGHIJKLMNOPQRSTUV\"}}\n{}\n";
        assert_eq!(
            encoded_id(body).map(|id| id.to_string()),
            Some("ABCDEFGHIJKLMNOPQRSTUV".into())
        );
        assert_eq!(encoded_id(b"{\"create\":{}}\n"), None);
    }
}
