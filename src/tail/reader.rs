//! Physical line splitting over large positional reads of one file.
//!
//! [`LineReader`] reads a file in [`CHUNK_BYTES`] chunks at an explicit offset
//! (`pread`, so a truncation cannot move a shared file position under it)
//! into one reused buffer, and hands out complete physical lines (without
//! their `\n`) as ranges of that buffer, found with `memchr`. The incomplete
//! last line stays in the buffer for the next read.
//!
//! Memory is bounded: a line that grows past `max_line` bytes without a `\n`
//! is cut. Its first `max_line` bytes are kept, everything after them is
//! dropped (and counted) until the `\n`, and the line is then handed out with
//! `cut = true`. The buffer never holds more than `max_line + CHUNK_BYTES`.
//!
//! It does no decoding and knows nothing of rotation; reads are blocking and
//! meant to run on a blocking thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes read per call.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// One complete physical line: `buf[start..end]` of the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawLine {
    start: usize,
    end: usize,
    /// File offset of the line's first byte.
    pub offset: u64,
    /// File offset just past the line's `\n` (or the end of the data for a
    /// last line without one).
    pub next: u64,
    /// The line was longer than the limit; only its first bytes are here.
    pub cut: bool,
}

/// Splits a file into physical lines (see module doc).
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Start of the first line not yet handed out.
    start: usize,
    /// Where to continue looking for `\n`.
    scan: usize,
    /// File offset of `buf[0]` (not meaningful while a cut line is held).
    base: u64,
    /// File offset of the next read.
    read_offset: u64,
    max_line: usize,
    /// `Some(offset of the line)` while the rest of a cut line is discarded;
    /// then `buf[start..start + max_line]` is its kept prefix.
    cut_line: Option<u64>,
    dropped: u64,
    chunk: usize,
}

impl LineReader {
    /// A reader starting at `offset`, cutting lines at `max_line` bytes.
    pub fn new(offset: u64, max_line: usize) -> Self {
        Self::with_chunk(offset, max_line, CHUNK_BYTES)
    }

    /// [`LineReader::new`] with another read size (tests use small ones).
    pub fn with_chunk(offset: u64, max_line: usize, chunk: usize) -> Self {
        LineReader {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            base: offset,
            read_offset: offset,
            max_line: max_line.max(1),
            cut_line: None,
            dropped: 0,
            chunk: chunk.max(1),
        }
    }

    /// File offset of the next read: everything before it was read.
    pub fn read_offset(&self) -> u64 {
        self.read_offset
    }

    /// Forget everything and continue at `offset` (after a truncation).
    pub fn reset(&mut self, offset: u64) {
        self.buf.clear();
        self.start = 0;
        self.scan = 0;
        self.base = offset;
        self.read_offset = offset;
        self.cut_line = None;
    }

    /// Bytes read but not yet handed out as a complete line.
    pub fn has_partial(&self) -> bool {
        self.cut_line.is_some() || self.start < self.buf.len()
    }

    /// Take the count of bytes dropped from cut lines.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Reads the next chunk from `file` (blocking). Returns the number of
    /// bytes read; 0 at end of file.
    pub fn fill(&mut self, file: &File) -> io::Result<usize> {
        self.compact();
        let len = self.buf.len();
        self.buf.resize(len + self.chunk, 0);
        let n = loop {
            match file.read_at(&mut self.buf[len..], self.read_offset) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(len + n);
        self.read_offset += n as u64;
        Ok(n)
    }

    /// Moves the unreturned bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        self.buf.copy_within(self.start.., 0);
        self.buf.truncate(self.buf.len() - self.start);
        self.base += self.start as u64;
        self.scan -= self.start;
        self.start = 0;
    }

    /// The next complete line in what was read, if any.
    pub fn next_line(&mut self) -> Option<RawLine> {
        let len = self.buf.len();
        if let Some(line_offset) = self.cut_line {
            let keep_end = self.start + self.max_line;
            // Everything after the kept prefix was read after the cut, so the
            // bytes buf[keep_end..] are the last bytes before `read_offset`.
            return match memchr::memchr(b'\n', &self.buf[keep_end..]) {
                None => {
                    self.dropped += (len - keep_end) as u64;
                    self.buf.truncate(keep_end);
                    self.scan = keep_end;
                    None
                }
                Some(k) => {
                    let nl = keep_end + k;
                    let next = self.read_offset - (len - nl - 1) as u64;
                    self.dropped += k as u64;
                    self.cut_line = None;
                    let line = RawLine {
                        start: self.start,
                        end: keep_end,
                        offset: line_offset,
                        next,
                        cut: true,
                    };
                    self.start = nl + 1;
                    self.scan = nl + 1;
                    self.base = next - (nl + 1) as u64;
                    Some(line)
                }
            };
        }
        match memchr::memchr(b'\n', &self.buf[self.scan..]) {
            Some(k) => {
                let nl = self.scan + k;
                let line = RawLine {
                    start: self.start,
                    end: nl,
                    offset: self.base + self.start as u64,
                    next: self.base + nl as u64 + 1,
                    cut: false,
                };
                self.start = nl + 1;
                self.scan = nl + 1;
                Some(line)
            }
            None => {
                self.scan = len;
                if len - self.start > self.max_line {
                    self.cut_line = Some(self.base + self.start as u64);
                    let keep_end = self.start + self.max_line;
                    self.dropped += (len - keep_end) as u64;
                    self.buf.truncate(keep_end);
                    self.scan = keep_end;
                }
                None
            }
        }
    }

    /// The bytes of `line` (valid until the next [`LineReader::fill`]).
    pub fn line(&self, line: &RawLine) -> &[u8] {
        &self.buf[line.start..line.end]
    }

    /// The bytes after the last `\n` read, as a final line without one
    /// (the file ended for good). Call after [`LineReader::next_line`]
    /// returned `None`.
    pub fn take_rest(&mut self) -> Option<RawLine> {
        let line = match self.cut_line.take() {
            Some(offset) => RawLine {
                start: self.start,
                end: self.start + self.max_line,
                offset,
                next: self.read_offset,
                cut: true,
            },
            None if self.start < self.buf.len() => RawLine {
                start: self.start,
                end: self.buf.len(),
                offset: self.base + self.start as u64,
                next: self.read_offset,
                cut: false,
            },
            None => return None,
        };
        self.start = self.buf.len();
        self.scan = self.buf.len();
        self.base = self.read_offset - self.buf.len() as u64;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Reads the whole file and returns (text, offset, next, cut) per line,
    /// plus what take_rest returns at the end.
    fn read_all(reader: &mut LineReader, file: &File) -> Vec<(String, u64, u64, bool)> {
        let mut out = Vec::new();
        loop {
            while let Some(l) = reader.next_line() {
                out.push((
                    String::from_utf8_lossy(reader.line(&l)).into_owned(),
                    l.offset,
                    l.next,
                    l.cut,
                ));
            }
            if reader.fill(file).unwrap() == 0 {
                break;
            }
        }
        out
    }

    fn file_with(content: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, content).unwrap();
        let f = File::open(&path).unwrap();
        (dir, f)
    }

    #[test]
    fn lines_split_across_chunk_boundaries_keep_their_offsets() {
        let mut content = Vec::new();
        let mut expected = Vec::new();
        for i in 0..200 {
            let line = format!("line {i} {}", "x".repeat(i % 23));
            let offset = content.len() as u64;
            content.extend_from_slice(line.as_bytes());
            content.push(b'\n');
            expected.push((line, offset, content.len() as u64, false));
        }
        for chunk in [1, 2, 7, 64, 1000, CHUNK_BYTES] {
            let (_d, f) = file_with(&content);
            let mut r = LineReader::with_chunk(0, 4096, chunk);
            assert_eq!(read_all(&mut r, &f), expected, "chunk {chunk}");
            assert!(!r.has_partial());
            assert_eq!(r.read_offset(), content.len() as u64);
        }
    }

    #[test]
    fn incomplete_last_line_waits_for_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let mut w = File::create(&path).unwrap();
        w.write_all(b"one\ntw").unwrap();
        let f = File::open(&path).unwrap();
        let mut r = LineReader::with_chunk(0, 100, 3);
        let got = read_all(&mut r, &f);
        assert_eq!(got, vec![("one".to_string(), 0, 4, false)]);
        assert!(r.has_partial());
        w.write_all(b"o\nthree\n").unwrap();
        let got = read_all(&mut r, &f);
        assert_eq!(
            got,
            vec![
                ("two".to_string(), 4, 8, false),
                ("three".to_string(), 8, 14, false)
            ]
        );
    }

    #[test]
    fn starts_at_an_offset() {
        let (_d, f) = file_with(b"skip me\nkeep\n");
        let mut r = LineReader::new(8, 100);
        assert_eq!(
            read_all(&mut r, &f),
            vec![("keep".to_string(), 8, 13, false)]
        );
    }

    #[test]
    fn giant_line_is_cut_and_memory_stays_bounded() {
        let max_line = 1000;
        let chunk = 300;
        let giant = 50_000;
        let mut content = b"before\n".to_vec();
        content.extend(std::iter::repeat_n(b'g', giant));
        content.extend_from_slice(b"\nafter\n");
        let (_d, f) = file_with(&content);
        let mut r = LineReader::with_chunk(0, max_line, chunk);
        let mut out = Vec::new();
        let mut peak = 0;
        loop {
            while let Some(l) = r.next_line() {
                out.push((r.line(&l).to_vec(), l.offset, l.next, l.cut));
            }
            peak = peak.max(r.buf.len());
            if r.fill(&f).unwrap() == 0 {
                break;
            }
            peak = peak.max(r.buf.len());
        }
        assert!(peak <= max_line + chunk + 1, "buffer grew to {peak}");
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], (b"before".to_vec(), 0, 7, false));
        let giant_end = 7 + giant as u64 + 1;
        assert_eq!(out[1], (vec![b'g'; max_line], 7, giant_end, true));
        assert_eq!(out[2], (b"after".to_vec(), giant_end, giant_end + 6, false));
        assert_eq!(r.take_dropped(), (giant - max_line) as u64);
    }

    #[test]
    fn cut_line_whose_newline_is_in_the_same_chunk_as_more_lines() {
        let mut content = vec![b'a'; 30];
        content.extend_from_slice(b"\nb\nc\n");
        let (_d, f) = file_with(&content);
        // The first read holds 20 bytes: past the limit of 10 without `\n`.
        let mut r = LineReader::with_chunk(0, 10, 20);
        let got = read_all(&mut r, &f);
        assert_eq!(
            got,
            vec![
                ("a".repeat(10), 0, 31, true),
                ("b".to_string(), 31, 33, false),
                ("c".to_string(), 33, 35, false)
            ]
        );
    }

    #[test]
    fn take_rest_returns_the_unterminated_tail() {
        let (_d, f) = file_with(b"a\nlast words");
        let mut r = LineReader::with_chunk(0, 100, 4);
        let got = read_all(&mut r, &f);
        assert_eq!(got.len(), 1);
        let rest = r.take_rest().unwrap();
        assert_eq!(r.line(&rest), b"last words");
        assert_eq!((rest.offset, rest.next, rest.cut), (2, 12, false));
        assert!(!r.has_partial());
        assert!(r.take_rest().is_none());
    }

    #[test]
    fn reset_rereads_from_the_new_offset() {
        let (_d, f) = file_with(b"abc\ndef\n");
        let mut r = LineReader::new(0, 100);
        let _ = read_all(&mut r, &f);
        r.reset(0);
        assert_eq!(read_all(&mut r, &f).len(), 2);
    }
}
