//! File identity: device + inode + a fingerprint of the first line.
//!
//! Within one run, `(dev, ino)` alone identifies an open file: we hold its fd,
//! so the inode cannot be reused while we follow it. Across restarts an inode
//! can be reused by a different file, so checkpoints are keyed by the full
//! [`FileIdentity`], whose `fingerprint` is the xxh3-64 of the file's bytes up
//! to and including the first `\n`, capped at the first
//! [`FINGERPRINT_BYTES`] bytes. A file with no `\n` yet and fewer than
//! [`FINGERPRINT_BYTES`] bytes has no identity yet; it is skipped until it has
//! one. Appends never change a fingerprint; a truncation usually does.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::event::FileIdentity;

/// The fingerprint covers the first line, but at most this many bytes.
pub const FINGERPRINT_BYTES: usize = 256;

/// Fingerprint of the first line of `file`, or `None` if it has no complete
/// first line and fewer than [`FINGERPRINT_BYTES`] bytes.
pub fn fingerprint(file: &File) -> io::Result<Option<u64>> {
    let mut head = [0u8; FINGERPRINT_BYTES];
    let mut len = 0;
    while len < head.len() {
        match file.read_at(&mut head[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(fingerprint_of(&head[..len]))
}

/// Fingerprint of a file whose first bytes are `head` (see [`fingerprint`]).
pub fn fingerprint_of(head: &[u8]) -> Option<u64> {
    let head = &head[..head.len().min(FINGERPRINT_BYTES)];
    match memchr::memchr(b'\n', head) {
        Some(nl) => Some(xxhash_rust::xxh3::xxh3_64(&head[..=nl])),
        None if head.len() == FINGERPRINT_BYTES => Some(xxhash_rust::xxh3::xxh3_64(head)),
        None => None,
    }
}

/// Hash of the bytes just before an offset (at most `reader::TAIL_BYTES`),
/// stored with a checkpoint and compared when a file is resumed there: a
/// file rewritten with the same first line (same fingerprint) but other
/// content is not resumed in the middle of a line it never had.
pub fn tail_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, bytes.len() as u64)
}

/// How many first bytes of a generation its stored head covers (see
/// `checkpoint::Head`): beyond a constant first line (a banner), the next
/// lines tell two generations of one file apart.
pub const HEAD_BYTES: u64 = 1024;

/// The hash [`head_hash`] gives a file that begins with `bytes` (at most
/// [`HEAD_BYTES`] of them).
pub fn head_hash_of(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&bytes[..bytes.len().min(HEAD_BYTES as usize)], HEAD_SEED)
}

const HEAD_SEED: u64 = 0x6865_6164;

/// Hash of `file`'s bytes `[0, len)`, or `None` if it has fewer.
pub fn head_hash(file: &File, len: u64) -> io::Result<Option<u64>> {
    let mut head = [0u8; HEAD_BYTES as usize];
    let want = len.min(HEAD_BYTES) as usize;
    let mut got = 0;
    while got < want {
        match file.read_at(&mut head[got..want], got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(head_hash_of(&head[..want])))
}

/// True if `file` begins with the bytes `head` stands for (or no head is
/// known); false if it is shorter, differs, or cannot be read.
pub fn begins_with(file: &File, head: Option<crate::tail::checkpoint::Head>) -> bool {
    head.is_none_or(|h| matches!(head_hash(file, h.len), Ok(Some(got)) if got == h.hash))
}

/// The identity of an open file, or `None` if it has none yet.
pub fn identify(file: &File) -> io::Result<Option<FileIdentity>> {
    let meta = file.metadata()?;
    Ok(fingerprint(file)?.map(|fingerprint| FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
        fingerprint,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn no_identity_until_first_line_or_cap() {
        assert_eq!(fingerprint_of(b""), None);
        assert_eq!(fingerprint_of(b"partial line"), None);
        assert!(fingerprint_of(b"line\n").is_some());
        assert!(fingerprint_of(&[b'x'; FINGERPRINT_BYTES]).is_some());
    }

    #[test]
    fn appends_keep_the_fingerprint() {
        let a = fingerprint_of(b"first\n").unwrap();
        assert_eq!(fingerprint_of(b"first\nsecond\n"), Some(a));
        let long = vec![b'y'; FINGERPRINT_BYTES + 100];
        assert_eq!(
            fingerprint_of(&long),
            fingerprint_of(&long[..FINGERPRINT_BYTES])
        );
    }

    #[test]
    fn reused_inode_with_different_first_line_is_a_different_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"2024-01-01T00:00:00Z stdout F old\n").unwrap();
        let old = identify(&File::open(&path).unwrap()).unwrap().unwrap();
        // Same inode, rewritten with other content (what inode reuse looks
        // like to a checkpoint written before a restart).
        f.set_len(0).unwrap();
        f.write_all(b"2024-01-02T00:00:00Z stdout F new\n").unwrap();
        let new = identify(&File::open(&path).unwrap()).unwrap().unwrap();
        assert_eq!((old.dev, old.ino), (new.dev, new.ino));
        assert_ne!(old, new);
    }

    #[test]
    fn file_without_first_line_has_no_identity_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"no newline yet").unwrap();
        assert_eq!(identify(&File::open(&path).unwrap()).unwrap(), None);
        f.write_all(b"\n").unwrap();
        assert!(identify(&File::open(&path).unwrap()).unwrap().is_some());
    }
}
