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
//! **Identity before every read.** The reader remembers the last
//! [`TAIL_BYTES`] bytes it read (the bytes just before its read offset).
//! [`LineReader::fill_checked`] reads, then checks that those bytes, and the
//! file's first line, are still what they were: if the file was truncated
//! and written again (copytruncate) before this read, the bytes read at
//! the old offset belong to new content and must not be read under the old
//! identity. Checking after the read, not before, closes the race with a
//! truncation between check and read. A rewrite goes unnoticed only if its
//! first line and the 64 bytes before the read offset are both the same as
//! before (say, a run of identical lines across the offset): content is
//! the only evidence a reader that did not watch the truncation has.
//!
//! It does no decoding and knows nothing of rotation. Reads are blocking:
//! the follower runs small reads at a file's live end on its own task (a
//! page-cache copy of a few KiB costs microseconds, a hop to a blocking
//! thread costs more) and catch-up reads on a blocking thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::checkpoint::Head;

/// Bytes read per call.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// The smallest read (see `LineReader::read_chunk`).
const MIN_READ: usize = 4096;

/// Bytes before the read offset that are re-checked after every read, and
/// hashed into a checkpoint (`identity::tail_hash`).
pub const TAIL_BYTES: usize = 64;

/// What [`LineReader::fill_checked`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filled {
    /// This many bytes were read (0: end of file).
    Read(usize),
    /// The bytes before the read offset or the first line changed: the file
    /// was truncated or rewritten. Nothing was read.
    Changed,
}

/// Reads up to `buf.len()` bytes at `offset`, fewer only at end of file.
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Hash of the (up to [`TAIL_BYTES`]) bytes of `file` just before `offset`
/// (`identity::tail_hash`), or `None` if the file is shorter or cannot be
/// read (blocking: one small `pread`).
pub fn hash_before(file: &File, offset: u64) -> Option<u64> {
    LineReader::new(offset, 1).prime_tail(file).ok().flatten()
}

/// True if `file` holds `expected` just before `offset` (blocking).
pub fn bytes_before_are(file: &File, offset: u64, expected: &[u8]) -> io::Result<bool> {
    if expected.is_empty() {
        return Ok(true);
    }
    let Some(start) = offset.checked_sub(expected.len() as u64) else {
        return Ok(false);
    };
    let mut bytes = [0u8; TAIL_BYTES];
    let len = expected.len().min(TAIL_BYTES);
    let got = read_exact_at(file, &mut bytes[..len], start)?;
    Ok(got == len && bytes[..len] == expected[..len])
}

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
#[derive(Debug)]
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
    /// The last `tail_len` bytes before `read_offset`, as read.
    tail: [u8; TAIL_BYTES],
    tail_len: usize,
    /// The generation's first bytes (up to `identity::HEAD_BYTES`) as read,
    /// when this reader read them (it started at offset 0); the follower
    /// hashes its stored head from them, never from the file as it is by
    /// then (a copytruncate may have refilled it). Freed by `drop_head`.
    head: Vec<u8>,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader::with_chunk(0, 1, CHUNK_BYTES)
    }
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
            tail: [0; TAIL_BYTES],
            tail_len: 0,
            head: Vec::new(),
        }
    }

    /// The same reader, cutting lines at `max_line` bytes.
    pub fn with_limit(mut self, max_line: usize) -> Self {
        self.max_line = max_line.max(1);
        self
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
        self.tail_len = 0;
        self.head = Vec::new();
    }

    /// The first `len` bytes of the file as this reader read them, if it
    /// read them (see the `head` field).
    pub fn head_bytes(&self, len: u64) -> Option<&[u8]> {
        let len = usize::try_from(len).ok()?;
        self.head.get(..len)
    }

    /// Frees the captured first bytes (the follower has what it needs).
    pub fn drop_head(&mut self) {
        self.head = Vec::new();
    }

    /// Bytes read but not yet handed out as a complete line.
    pub fn has_partial(&self) -> bool {
        self.cut_line.is_some() || self.start < self.buf.len()
    }

    /// Bytes read and not yet handed out (the lines still to come from
    /// this read).
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Take the count of bytes dropped from cut lines.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Reads the next chunk from `file` (blocking). Returns the number of
    /// bytes read; 0 at end of file.
    pub fn fill(&mut self, file: &File) -> io::Result<usize> {
        let (start, n) = self.read_chunk(file, None)?;
        self.push_tail(start, n);
        Ok(n)
    }

    /// [`LineReader::fill`], then checks that the file is still the one read
    /// so far (module doc): the bytes before the old read offset are
    /// unchanged and, if `fingerprint` is given, so is the first line (read
    /// from the bytes just read when they start at offset 0). On a change
    /// the bytes just read are discarded.
    pub fn fill_checked(&mut self, file: &File, fingerprint: Option<u64>) -> io::Result<Filled> {
        self.fill_checked_sized(file, fingerprint, None, None)
    }

    /// [`LineReader::fill_checked`] with the file's size as the caller just
    /// saw it (`fstat`), so the read is sized without another one, and the
    /// stored first bytes of the generation being read, if any: a read that
    /// starts inside them (offset 0 after a restart, say) checks that the
    /// file still begins with them, since there are no bytes before the
    /// read offset yet to tell a rewrite by (chaos seed 7006: a copytruncate
    /// just after a restart resumed a generation at offset 0, and its new
    /// content was shipped under that generation, then again under the
    /// next one once the next start saw that the head differed).
    pub fn fill_checked_sized(
        &mut self,
        file: &File,
        fingerprint: Option<u64>,
        size: Option<u64>,
        head: Option<Head>,
    ) -> io::Result<Filled> {
        let before = self.read_offset;
        let (start, n) = self.read_chunk(file, size)?;
        let checked = (|| {
            let mut same = self.tail_matches(file, before)?;
            if same && let Some(expected) = fingerprint {
                // From offset 0 the bytes just read begin the file: they must
                // begin with the first line the identity was made from. A
                // file truncated and rewritten between its identification
                // and its first read would otherwise be read, under the old
                // generation's `_id`s, content that a later check then finds
                // changed and reads again as the next generation (long chaos
                // seed 11017: 400 lines twice).
                let read = &self.buf[start..start + n];
                let got = match super::identity::fingerprint_of(read) {
                    Some(got) if before == 0 => Some(got),
                    _ => super::identity::fingerprint(file)?,
                };
                same = got == Some(expected);
            }
            if same && let Some(h) = head.filter(|h| before < h.len) {
                same = super::identity::head_hash(file, h.len)? == Some(h.hash);
            }
            Ok::<_, io::Error>(same)
        })();
        let same = checked.inspect_err(|_| {
            // Not checked: as if not read (else the next read would compare
            // stale bytes at the new offset and take the file for rewritten).
            self.buf.truncate(start);
            self.read_offset = before;
        })?;
        if !same {
            self.buf.truncate(start);
            self.read_offset = before;
            return Ok(Filled::Changed);
        }
        self.push_tail(start, n);
        self.push_head(before, start, n);
        Ok(Filled::Read(n))
    }

    /// Reads the bytes before the read offset into the remembered tail (a
    /// reader that starts at a checkpoint) and returns their hash, or `None`
    /// if the file is shorter than the offset.
    pub fn prime_tail(&mut self, file: &File) -> io::Result<Option<u64>> {
        let len = TAIL_BYTES.min(usize::try_from(self.read_offset).unwrap_or(TAIL_BYTES));
        let mut bytes = [0u8; TAIL_BYTES];
        if read_exact_at(file, &mut bytes[..len], self.read_offset - len as u64)? < len {
            self.tail_len = 0;
            return Ok(None);
        }
        self.tail = bytes;
        self.tail_len = len;
        Ok(Some(super::identity::tail_hash(&bytes[..len])))
    }

    /// Hash of the bytes just before `end` if the reader still holds them
    /// (`end` is its read offset and it knows the bytes before it).
    pub fn tail_hash_at(&self, end: u64) -> Option<u64> {
        let want = TAIL_BYTES.min(usize::try_from(end).unwrap_or(TAIL_BYTES));
        (end == self.read_offset && self.tail_len == want)
            .then(|| super::identity::tail_hash(&self.tail[..want]))
    }

    /// True if the file still holds the remembered tail before `offset`.
    fn tail_matches(&self, file: &File, offset: u64) -> io::Result<bool> {
        bytes_before_are(file, offset, self.tail())
    }

    /// The remembered bytes just before the read offset (up to [`TAIL_BYTES`]).
    pub fn tail(&self) -> &[u8] {
        &self.tail[..self.tail_len]
    }

    /// Remembers the last bytes of `buf[start..start + n]` (just read).
    /// Keeps what a read at `before` brought of the first `HEAD_BYTES`
    /// (only while the captured head is contiguous from offset 0).
    fn push_head(&mut self, before: u64, start: usize, n: usize) {
        let cap = super::identity::HEAD_BYTES;
        if before >= cap || before != self.head.len() as u64 {
            return;
        }
        let take = n.min((cap - before) as usize);
        self.head.extend_from_slice(&self.buf[start..start + take]);
    }

    fn push_tail(&mut self, start: usize, n: usize) {
        if n >= TAIL_BYTES {
            self.tail
                .copy_from_slice(&self.buf[start + n - TAIL_BYTES..start + n]);
            self.tail_len = TAIL_BYTES;
        } else if n > 0 {
            let keep = self.tail_len.min(TAIL_BYTES - n);
            self.tail
                .copy_within(self.tail_len - keep..self.tail_len, 0);
            self.tail[keep..keep + n].copy_from_slice(&self.buf[start..start + n]);
            self.tail_len = keep + n;
        }
    }

    /// Reads one chunk at the read offset; returns where it starts in `buf`
    /// and its length.
    fn read_chunk(&mut self, file: &File, size: Option<u64>) -> io::Result<(usize, usize)> {
        self.compact();
        let len = self.buf.len();
        // Sized to what is there (one `fstat`, unless the caller did it):
        // a few new lines cost a small read, not the zero-filling of a
        // whole chunk; catch-up reads whole chunks. At least `MIN_READ`, so
        // growth since the `fstat` is picked up too.
        let size = match size {
            Some(size) => Some(size),
            None => file.metadata().ok().map(|m| m.len()),
        };
        let avail = size.map_or(u64::MAX, |s| s.saturating_sub(self.read_offset));
        let want = usize::try_from(avail)
            .unwrap_or(usize::MAX)
            .max(MIN_READ)
            .min(self.chunk);
        self.buf.resize(len + want, 0);
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
        Ok((len, n))
    }

    /// Frees the buffer of a reader with nothing pending (an idle file holds
    /// no read memory; the next read allocates what it needs), or shrinks it
    /// to the partial line it holds.
    pub fn release_idle(&mut self) {
        if self.cut_line.is_some() {
            return;
        }
        self.compact();
        if self.buf.is_empty() {
            self.buf = Vec::new();
            self.scan = 0;
        } else {
            self.buf.shrink_to(self.buf.len().max(MIN_READ));
        }
    }

    /// Memory held by the buffer (bytes).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
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

    #[test]
    fn a_rewrite_before_the_next_read_is_noticed_and_nothing_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, b"header\nold line one\nold line two\n").unwrap();
        let f = File::open(&path).unwrap();
        let fp = crate::tail::identity::fingerprint(&f).unwrap();
        let mut r = LineReader::new(0, 100);
        assert_eq!(r.fill_checked(&f, fp).unwrap(), Filled::Read(33));
        while r.next_line().is_some() {}
        assert_eq!(r.fill_checked(&f, fp).unwrap(), Filled::Read(0));
        // Truncated and refilled past the read offset, same first line.
        std::fs::write(&path, b"header\nnew content that is longer than before\n").unwrap();
        assert_eq!(r.fill_checked(&f, fp).unwrap(), Filled::Changed);
        assert_eq!(r.read_offset(), 33, "nothing read");
        assert!(!r.has_partial());
        // Appends alone are fine.
        std::fs::write(&path, b"header\nold line one\nold line two\nmore\n").unwrap();
        assert_eq!(r.fill_checked(&f, fp).unwrap(), Filled::Read(5));
    }

    #[test]
    fn the_first_bytes_are_kept_as_read_for_the_stored_head() {
        use crate::tail::identity::HEAD_BYTES;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let first: Vec<u8> = (0..1500).map(|i| b'a' + (i % 26) as u8).collect();
        let mut content = first.clone();
        content.push(b'\n');
        std::fs::write(&path, &content).unwrap();
        let f = File::open(&path).unwrap();
        // Two reads from offset 0: both captured, up to HEAD_BYTES.
        let mut r = LineReader::with_chunk(0, 4096, 700);
        assert!(matches!(
            r.fill_checked(&f, None).unwrap(),
            Filled::Read(700)
        ));
        assert_eq!(r.head_bytes(700), Some(&first[..700]));
        assert_eq!(r.head_bytes(701), None, "not read yet");
        assert!(matches!(
            r.fill_checked(&f, None).unwrap(),
            Filled::Read(700)
        ));
        assert_eq!(
            r.head_bytes(HEAD_BYTES),
            Some(&first[..HEAD_BYTES as usize])
        );
        assert_eq!(r.head_bytes(HEAD_BYTES + 1), None, "capped");
        // The file refilled since (a copytruncate): the head is still what
        // was read, which is what the generation's stored head must be.
        std::fs::write(&path, vec![b'z'; 2000]).unwrap();
        assert_eq!(
            r.head_bytes(HEAD_BYTES),
            Some(&first[..HEAD_BYTES as usize])
        );
        assert_eq!(
            crate::tail::identity::head_hash_of(r.head_bytes(HEAD_BYTES).unwrap()),
            {
                std::fs::write(&path, &content).unwrap();
                crate::tail::identity::head_hash(&f, HEAD_BYTES)
                    .unwrap()
                    .unwrap()
            },
            "the same hash as read from a file that begins with them"
        );
        r.drop_head();
        assert_eq!(r.head_bytes(1), None);
        // A reader resumed past the start has none; a reset to 0 starts over.
        let mut r = LineReader::with_chunk(5, 4096, 700);
        let _ = r.prime_tail(&f);
        assert!(matches!(r.fill_checked(&f, None).unwrap(), Filled::Read(_)));
        assert_eq!(r.head_bytes(1), None);
        r.reset(0);
        assert!(matches!(r.fill_checked(&f, None).unwrap(), Filled::Read(_)));
        assert_eq!(r.head_bytes(10), Some(&first[..10]));
    }

    #[test]
    fn a_first_read_checks_the_first_line_the_identity_was_made_from() {
        // Long chaos seed 11017: identified, then truncated and refilled
        // (copytruncate) before the first read. Read as the identified
        // generation, the new content was shipped under its `_id`s and again
        // as the next generation once a later check saw the change.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, b"old first line\nold second\n").unwrap();
        let f = File::open(&path).unwrap();
        let fp = crate::tail::identity::fingerprint(&f).unwrap();
        let mut r = LineReader::new(0, 100);
        assert_eq!(
            r.fill_checked_sized(&f, fp, None, None).unwrap(),
            Filled::Read(26)
        );
        std::fs::write(&path, b"new first line\nnew second line\n").unwrap();
        let mut r = LineReader::new(0, 100);
        assert_eq!(
            r.fill_checked_sized(&f, fp, None, None).unwrap(),
            Filled::Changed
        );
        assert_eq!(r.read_offset(), 0, "nothing read");
        // Emptied: not the identified content either.
        std::fs::write(&path, b"").unwrap();
        let mut r = LineReader::new(0, 100);
        assert_eq!(
            r.fill_checked_sized(&f, fp, None, None).unwrap(),
            Filled::Changed
        );
        // A first line longer than the fingerprint's cap: the cap is what
        // counts, as in the identity.
        let long = format!("{}\nsecond\n", "x".repeat(300));
        std::fs::write(&path, &long).unwrap();
        let fp = crate::tail::identity::fingerprint(&f).unwrap();
        let mut r = LineReader::new(0, 100);
        assert!(matches!(
            r.fill_checked_sized(&f, fp, Some(10), None).unwrap(),
            Filled::Read(_)
        ));
    }

    #[test]
    fn a_read_inside_the_stored_head_checks_that_the_file_still_begins_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, b"banner\nfirst content\n").unwrap();
        let f = File::open(&path).unwrap();
        let fp = crate::tail::identity::fingerprint(&f).unwrap();
        let head = Head {
            len: 21,
            hash: crate::tail::identity::head_hash(&f, 21).unwrap().unwrap(),
        };
        // A generation resumed at offset 0 whose head is stored: the same
        // content reads.
        let mut r = LineReader::new(0, 100);
        assert_eq!(
            r.fill_checked_sized(&f, fp, None, Some(head)).unwrap(),
            Filled::Read(21)
        );
        // Rewritten before the first read (same banner, same fingerprint):
        // not this generation, nothing read.
        std::fs::write(&path, b"banner\nother content, longer\n").unwrap();
        let mut r = LineReader::new(0, 100);
        assert_eq!(
            r.fill_checked_sized(&f, fp, None, Some(head)).unwrap(),
            Filled::Changed
        );
        assert_eq!(r.read_offset(), 0, "nothing read");
        // Without a stored head the reader cannot tell (the follower's
        // caller then relies on the head check at start).
        let mut r = LineReader::new(0, 100);
        assert_eq!(
            r.fill_checked_sized(&f, fp, None, None).unwrap(),
            Filled::Read(29)
        );
        // Past the head, the tail check is what counts; the head is not read.
        std::fs::write(&path, b"banner\nfirst content\nmore\n").unwrap();
        let mut r = LineReader::new(21, 100);
        let _ = r.prime_tail(&f);
        assert_eq!(
            r.fill_checked_sized(&f, fp, None, Some(head)).unwrap(),
            Filled::Read(5)
        );
    }

    #[test]
    fn reads_are_sized_to_the_file_and_an_idle_reader_holds_no_buffer() {
        let (_d, file) = file_with(b"one\ntwo\nthr");
        let mut r = LineReader::new(0, 1 << 20);
        assert_eq!(r.fill(&file).unwrap(), 11);
        assert!(
            r.capacity() < CHUNK_BYTES,
            "a small file got a whole chunk: {}",
            r.capacity()
        );
        assert_eq!(
            r.next_line().map(|l| r.line(&l).to_vec()),
            Some(b"one".to_vec())
        );
        assert_eq!(
            r.next_line().map(|l| r.line(&l).to_vec()),
            Some(b"two".to_vec())
        );
        assert!(r.next_line().is_none());
        // A partial line is kept through a release.
        r.release_idle();
        assert!(r.has_partial());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(_d.path().join("f.log"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"ee\n").unwrap();
        r.fill(&file).unwrap();
        let l = r.next_line().unwrap();
        assert_eq!((r.line(&l), l.offset), (&b"three"[..], 8));
        assert!(r.next_line().is_none());
        r.release_idle();
        assert_eq!(r.capacity(), 0, "an idle reader holds no buffer");
        assert_eq!(r.fill(&file).unwrap(), 0);
        assert_eq!(r.read_offset(), 14);
    }

    #[test]
    fn the_tail_follows_small_and_large_reads() {
        let mut content = Vec::new();
        for i in 0..500 {
            content.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let (_d, f) = file_with(&content);
        for chunk in [1, 5, 63, 64, 65, 1000] {
            let mut r = LineReader::with_chunk(0, 4096, chunk);
            while r.fill(&f).unwrap() > 0 {
                while r.next_line().is_some() {}
                let end = r.read_offset() as usize;
                let want = &content[end.saturating_sub(TAIL_BYTES)..end];
                assert_eq!(
                    r.tail_hash_at(end as u64),
                    Some(crate::tail::identity::tail_hash(want)),
                    "chunk {chunk} at {end}"
                );
            }
            let mut primed = LineReader::new(r.read_offset(), 4096);
            assert_eq!(
                primed.prime_tail(&f).unwrap(),
                r.tail_hash_at(r.read_offset())
            );
        }
    }
}
