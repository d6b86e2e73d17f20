//! Segment files: a header, then framed records appended in id order.
//!
//! ```text
//! offset size field
//! 0      8    magic   b"LSSEGMNT"
//! 8      4    version u32 LE = 1
//! 12     4    reserved, 0
//! 16     ...  records (see `record`)
//! ```
//!
//! A segment is named `<first id, 20 digits>.seg` after the first id it was
//! opened for. [`Scanner`] walks a segment's records, resynchronising on the
//! next record magic after damage, so a reader never stalls on bad bytes.

use std::io;
use std::path::{Path, PathBuf};

use super::record::{self, Frame, Source};

pub const MAGIC: [u8; 8] = *b"LSSEGMNT";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: u64 = 16;

pub fn header() -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// True if `src` starts with a valid version-1 header.
pub fn header_ok<S: Source + ?Sized>(src: &S) -> bool {
    let mut h = [0u8; HEADER_BYTES as usize];
    src.size() >= HEADER_BYTES && src.read_exact_at(&mut h, 0).is_ok() && h == header()
}

pub fn file_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

pub fn path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(file_name(first_id))
}

/// The first id encoded in a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A file (or slice) seen only up to `len` bytes: the part of the segment
/// being written that holds complete records.
pub struct Limited<'a, S: Source + ?Sized> {
    pub src: &'a S,
    pub len: u64,
}

impl<S: Source + ?Sized> Source for Limited<'_, S> {
    fn size(&self) -> u64 {
        self.len.min(self.src.size())
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        if pos + buf.len() as u64 > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.src.read_exact_at(buf, pos)
    }
}

/// One step of a [`Scanner`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Record {
        id: u64,
    },
    /// Bytes `at..resumed` were not valid records and were skipped.
    Damaged {
        at: u64,
        resumed: u64,
    },
    End,
}

/// Walks the records of one segment from a position.
#[derive(Clone, Debug)]
pub struct Scanner {
    pub pos: u64,
    started: bool,
}

impl Scanner {
    /// Starts after the header. A bad header is reported as damage of the
    /// bytes up to the first record magic on the first step.
    pub fn new() -> Self {
        Scanner {
            pos: 0,
            started: false,
        }
    }

    pub fn next<S: Source + ?Sized>(&mut self, src: &S, payload: &mut Vec<u8>) -> io::Result<Step> {
        if !self.started {
            if src.size() == 0 {
                return Ok(Step::End);
            }
            self.started = true;
            if header_ok(src) {
                self.pos = HEADER_BYTES;
            } else {
                let resumed = record::find_magic(src, 0)?.unwrap_or(src.size());
                self.pos = resumed;
                if resumed > 0 {
                    return Ok(Step::Damaged { at: 0, resumed });
                }
            }
        }
        match record::decode_at(src, self.pos, payload)? {
            Frame::Record { id, next } => {
                self.pos = next;
                Ok(Step::Record { id })
            }
            Frame::End => Ok(Step::End),
            Frame::Damaged => {
                let at = self.pos;
                let resumed = record::find_magic(src, at + 1)?.unwrap_or(src.size().max(at + 1));
                self.pos = resumed;
                Ok(Step::Damaged { at, resumed })
            }
        }
    }
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name(&file_name(12)), Some(12));
        assert_eq!(parse_name("12.seg"), None);
        assert_eq!(parse_name("ledger"), None);
    }

    #[test]
    fn scanner_skips_garbage_between_records() {
        let mut seg = header().to_vec();
        let mut h = [0u8; record::HEADER_BYTES];
        record::encode_header(1, b"one", &mut h);
        seg.extend_from_slice(&h);
        seg.extend_from_slice(b"one");
        seg.extend_from_slice(b"garbage!");
        record::encode_header(2, b"two", &mut h);
        seg.extend_from_slice(&h);
        seg.extend_from_slice(b"two");
        seg.extend_from_slice(&h[..7]); // torn tail
        let mut s = Scanner::new();
        let mut p = Vec::new();
        let mut steps = Vec::new();
        loop {
            let st = s.next(&seg[..], &mut p).unwrap();
            if st == Step::End {
                break;
            }
            steps.push(st);
        }
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert_eq!(steps[0], Step::Record { id: 1 });
        assert!(matches!(steps[1], Step::Damaged { .. }));
        assert_eq!(steps[2], Step::Record { id: 2 });
        assert!(matches!(steps[3], Step::Damaged { .. }));
    }
}
