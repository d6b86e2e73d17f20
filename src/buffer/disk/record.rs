//! Record framing: length, CRC32C and id around each payload.
//!
//! ```text
//! offset size field
//! 0      4    magic  b"LSR1" (resynchronisation marker)
//! 4      4    len    payload length, u32 LE, <= MAX_RECORD_BYTES
//! 8      4    crc    CRC32C (Castagnoli) of bytes 12..20+len (id and payload), u32 LE
//! 12     8    id     record id, u64 LE
//! 20     len  payload
//! ```
//!
//! Decoding never trusts the length beyond what the source holds and never
//! allocates more than [`MAX_RECORD_BYTES`]. After a damaged frame the reader
//! scans forward for the next magic and tries again there, so one bad record
//! costs one record, not the rest of the segment.

use std::io;

/// Marks the start of every record.
pub const MAGIC: [u8; 4] = *b"LSR1";
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 20;
/// Largest payload accepted (a bulk batch is a few MiB).
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// Something records can be read from at an offset (a segment file, or a
/// byte slice in tests and the fuzz target).
pub trait Source {
    fn size(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `pos`.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
}

impl Source for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let start = usize::try_from(pos).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

impl Source for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, pos)
    }
}

/// Writes the frame header for `payload` into `out` (cleared first).
pub fn encode_header(id: u64, payload: &[u8], out: &mut [u8; HEADER_BYTES]) {
    encode_header_parts(id, &[payload], out);
}

/// [`encode_header`] for a payload given as consecutive parts (written
/// without copying them together first).
pub fn encode_header_parts(id: u64, parts: &[&[u8]], out: &mut [u8; HEADER_BYTES]) {
    let mut crc = crc32c::crc32c(&id.to_le_bytes());
    let mut len = 0usize;
    for part in parts {
        crc = crc32c::crc32c_append(crc, part);
        len += part.len();
    }
    out[0..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out[12..20].copy_from_slice(&id.to_le_bytes());
}

/// Outcome of decoding at one position.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A valid record; its payload is in the caller's buffer. `next` is the
    /// offset just past it.
    Record { id: u64, next: u64 },
    /// No more bytes at this position.
    End,
    /// The bytes here are not a valid record (bad magic, bad CRC, a length
    /// past the end: a torn write).
    Damaged,
}

/// Decodes the record at `pos` into `payload` (cleared first).
pub fn decode_at<S: Source + ?Sized>(
    src: &S,
    pos: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Frame> {
    let size = src.size();
    if pos >= size {
        payload.clear();
        return Ok(Frame::End);
    }
    if size - pos < HEADER_BYTES as u64 {
        payload.clear();
        return Ok(Frame::Damaged);
    }
    let mut h = [0u8; HEADER_BYTES];
    src.read_exact_at(&mut h, pos)?;
    if h[0..4] != MAGIC {
        payload.clear();
        return Ok(Frame::Damaged);
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let id = u64::from_le_bytes([h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]]);
    let body_at = pos + HEADER_BYTES as u64;
    if len > MAX_RECORD_BYTES || (len as u64) > size - body_at {
        payload.clear();
        return Ok(Frame::Damaged);
    }
    // The buffer keeps its length from the previous record: only growth is
    // zeroed (clearing first would zero every payload before the read
    // overwrites it, a memset of everything read).
    if payload.len() < len {
        payload.resize(len, 0);
    } else {
        payload.truncate(len);
    }
    if let Err(e) = src.read_exact_at(payload, body_at) {
        payload.clear();
        return Err(e);
    }
    let got = crc32c::crc32c_append(crc32c::crc32c(&h[12..20]), payload);
    if got != crc {
        payload.clear();
        return Ok(Frame::Damaged);
    }
    Ok(Frame::Record {
        id,
        next: body_at + len as u64,
    })
}

/// Offset of the next [`MAGIC`] at or after `from`, if any. Reads in 64 KiB
/// windows so memory stays bounded whatever the source size.
pub fn find_magic<S: Source + ?Sized>(src: &S, from: u64) -> io::Result<Option<u64>> {
    const WINDOW: usize = 64 << 10;
    let size = src.size();
    let mut pos = from;
    let mut buf = vec![0u8; WINDOW];
    while pos < size {
        let n = WINDOW.min((size - pos) as usize);
        src.read_exact_at(&mut buf[..n], pos)?;
        if let Some(i) = memchr::memmem::find(&buf[..n], &MAGIC) {
            return Ok(Some(pos + i as u64));
        }
        if n < WINDOW {
            return Ok(None);
        }
        // Overlap by 3 bytes so a magic across the window edge is found.
        pos += (n - (MAGIC.len() - 1)) as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u64, payload: &[u8]) -> Vec<u8> {
        let mut h = [0u8; HEADER_BYTES];
        encode_header(id, payload, &mut h);
        let mut v = h.to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn round_trip_and_damage() {
        let mut bytes = frame(7, b"hello");
        bytes.extend(frame(8, b"world!"));
        let mut p = Vec::new();
        let first = decode_at(&bytes[..], 0, &mut p).unwrap();
        assert_eq!(first, Frame::Record { id: 7, next: 25 });
        assert_eq!(p, b"hello");
        assert_eq!(
            decode_at(&bytes[..], 25, &mut p).unwrap(),
            Frame::Record { id: 8, next: 51 }
        );
        assert_eq!(decode_at(&bytes[..], 51, &mut p).unwrap(), Frame::End);
        // Flip a payload bit of the first record: CRC catches it, resync finds the second.
        bytes[22] ^= 1;
        assert_eq!(decode_at(&bytes[..], 0, &mut p).unwrap(), Frame::Damaged);
        assert_eq!(find_magic(&bytes[..], 1).unwrap(), Some(25));
        // A torn tail is damaged, not a panic.
        assert_eq!(decode_at(&bytes[..40], 25, &mut p).unwrap(), Frame::Damaged);
    }
}
