//! Finding a file again after a restart: "a restart is a rotation too".
//!
//! While logship is down the kubelet (or logrotate) may rename a file it
//! was following (`0.log` → `0.log.20261128-093000`), copy and truncate it
//! (`app.log.1`, a new inode), compress a rotation (`….gz`, a new inode) or
//! delete one. The include globs usually do not match the rotated names
//! (`/var/log/containers/*.log`), so a scan alone would never read the
//! lines written between the last acknowledgement and the rotation. For
//! every file the checkpoint store knows that no follower claimed and that
//! was not read to its end ([`Unfinished`]), [`locate`] looks among the
//! file's siblings named `<name>.*` (the kubelet and logrotate rotate in
//! place):
//!
//! 1. at its path: the same device and inode with the same first-line
//!    fingerprint means it is still there, just no longer matched by its
//!    source's globs ([`Located::AtPath`]: left alone);
//! 2. a sibling with the same device and inode and fingerprint: renamed;
//! 3. a plain sibling with another inode whose first line has the
//!    fingerprint and whose bytes before the checkpoint have the stored
//!    tail hash: a copy (copytruncate);
//! 4. a `.gz` sibling whose decompressed first line has the fingerprint and
//!    whose decompressed bytes before the checkpoint have the tail hash:
//!    compressed. It is decompressed into `<data_dir>/rotated/` and read
//!    from there; offsets in the decompressed stream are the original
//!    file's offsets, so the same lines get the same `_id`s;
//! 5. otherwise it is gone ([`Located::Gone`]): deleted, or its inode now
//!    holds other content. The caller counts the loss.
//!
//! Renames come first, then plain copies, then compressed ones, the newest
//! first within each kind. A found file ([`Located::Found`]) is read from
//! its checkpoint to its end and closed (the follower's `drain_only`),
//! under its **original** path and identity: its documents are the ones
//! its first reading would have made.
//!
//! Several rotations while logship was down leave siblings it never saw
//! (`0.log.<t1>` is the file it followed, `0.log.<t2>` a later one):
//! [`newer_rotations`] lists the kubelet-named siblings the store does not
//! know that were modified after the file was last seen, to be read from
//! their start (logrotate-named ones may be `copytruncate` copies of lines
//! already shipped under the live file's identity: not read).
//!
//! Blocking: directory listings, opens, decompression.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::checkpoint::Unfinished;
use super::identity::{self, FINGERPRINT_BYTES};
use super::reader::{LineReader, hash_before};
use crate::event::FileIdentity;

/// Directory under `data_dir` holding decompressed rotations being read.
pub const SCRATCH_DIR: &str = "rotated";

/// A file to read in place of a rotated one.
#[derive(Debug)]
pub struct Candidate {
    /// Where it was found (the rotation or the `.gz`), for the log.
    pub found_at: PathBuf,
    /// The file to read (for a `.gz`: the decompressed copy).
    pub file: File,
    /// The decompressed copy in the scratch directory, removed when done.
    pub copy: Option<PathBuf>,
}

/// Where an unfinished file is now.
#[derive(Debug)]
pub enum Located {
    /// At its path, not matched by any glob any more.
    AtPath,
    /// Renamed, copied or compressed (see module doc).
    Found(Candidate),
    /// Deleted, or its inode now holds something else.
    Gone,
}

/// A sibling `<name>.*` of a file: a rotation of it, maybe.
struct Sibling {
    path: PathBuf,
    dev: u64,
    ino: u64,
    mtime: i64,
    /// Nanoseconds of `mtime`: copies made within one second are ordered too.
    mtime_nsec: i64,
    gz: bool,
}

/// A file name without its rotation suffixes (`.1`, `.20261128-093000`,
/// `.gz`): `app.log.1.gz` → `app.log`. A file followed under a rotated
/// name (a glob matching rotations) is renamed again by the next rotation
/// (`app.log.1` → `app.log.2`), so its siblings share the stem, not its name.
fn stem(name: &str) -> &str {
    let mut stem = name;
    while let Some((head, last)) = stem.rsplit_once('.') {
        let rotation = last == "gz"
            || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
        if !rotation || head.is_empty() {
            break;
        }
        stem = head;
    }
    stem
}

/// The regular files next to `path` named `<stem>.<anything>` (see
/// [`stem`]), other than `path` itself, newest first.
fn siblings(path: &Path) -> Vec<Sibling> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let own = name.to_string_lossy().into_owned();
    let prefix = format!("{}.", stem(&own));
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Sibling> = entries
        .flatten()
        .filter_map(|entry| {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !file_name.starts_with(&prefix) || file_name == own {
                return None;
            }
            let meta = entry.metadata().ok()?;
            meta.is_file().then(|| Sibling {
                path: entry.path(),
                dev: meta.dev(),
                ino: meta.ino(),
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec(),
                gz: file_name.ends_with(".gz"),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (b.mtime, b.mtime_nsec)
            .cmp(&(a.mtime, a.mtime_nsec))
            .then(b.path.cmp(&a.path))
    });
    out
}

/// True if `file` holds `u`'s generation as far as the store knows it:
/// its first bytes (the stored head), the bytes before the checkpoint
/// (the stored tail hash; trivially at offset 0, never past 0 without a
/// hash, since then nothing tells two files with the same first line
/// apart) and the bytes before what was read (a copy made after those
/// bytes were read holds them).
fn holds(file: &File, u: &Unfinished) -> bool {
    let tail = u.checkpoint.offset == 0
        || u.tail
            .is_some_and(|want| hash_before(file, u.checkpoint.offset) == Some(want));
    let read = u.checkpoint.offset + u.known_unread;
    let read_ok = u.known_unread == 0
        || u.read_tail
            .is_none_or(|want| hash_before(file, read) == Some(want));
    tail && read_ok && identity::begins_with(file, u.head) && !older(file, u)
}

/// Whether the live `file` still holds `u`'s generation as the agent
/// checks it before resuming: its stored first bytes, and the bytes before
/// the checkpoint and before what was read where their hashes are stored
/// (`logship audit`, which must not take rewritten content for shipped).
pub fn still_holds(file: &File, u: &Unfinished) -> bool {
    let before = |offset: u64, want: Option<u64>| {
        offset == 0 || want.is_none_or(|want| hash_before(file, offset) == Some(want))
    };
    identity::begins_with(file, u.head)
        && before(u.checkpoint.offset, u.tail)
        && (u.known_unread == 0 || before(u.checkpoint.offset + u.known_unread, u.read_tail))
}

/// Nothing of `u`'s generation shipped yet (no head of its own) and `file`
/// begins like one of its earlier generations: that one's content. Copies
/// are looked at newest first, and a copy of this generation can only have
/// been made after the copy of the one before it, so the search stops at
/// the first such copy (long chaos seed 10001: a copy six rotations old,
/// beyond the heads kept, was taken).
fn older(file: &File, u: &Unfinished) -> bool {
    u.head.is_none()
        && u.not_head
            .iter()
            .chain(&u.old_heads)
            .any(|h| identity::begins_with(file, Some(*h)))
}

/// True if `file` is `id`'s file: the same inode and first line.
fn is_file(file: &File, id: &FileIdentity) -> bool {
    file.metadata()
        .is_ok_and(|m| (m.dev(), m.ino()) == (id.dev, id.ino))
        && identity::fingerprint(file).ok().flatten() == Some(id.fingerprint)
}

/// Where the decompressed copy of a rotation is written.
fn copy_path(scratch: &Path, dev: u64, ino: u64, fingerprint: u64) -> PathBuf {
    scratch.join(format!("{dev}-{ino}-{fingerprint:016x}.log"))
}

/// Looks for `u` (see module doc) among the siblings not `taken` (found
/// for another file), unpacking into `scratch` if needed.
pub fn locate(u: &Unfinished, taken: &HashSet<(u64, u64)>, scratch: &Path) -> Located {
    if let Ok(file) = File::open(&u.path)
        && is_file(&file, &u.identity)
    {
        return Located::AtPath;
    }
    locate_elsewhere(u, taken, scratch)
}

/// [`locate`] among the siblings only: for a file whose path holds other
/// content under the same identity (a banner file copytruncated while
/// logship was down), where only a copy can hold the old content.
pub fn locate_elsewhere(u: &Unfinished, taken: &HashSet<(u64, u64)>, scratch: &Path) -> Located {
    let id = &u.identity;
    let mut siblings = siblings(&u.path);
    siblings.retain(|s| !taken.contains(&(s.dev, s.ino)));
    // Renamed: the same inode.
    for s in siblings
        .iter()
        .filter(|s| (s.dev, s.ino) == (id.dev, id.ino))
    {
        if let Ok(file) = File::open(&s.path)
            && is_file(&file, id)
            && holds(&file, u)
        {
            return Located::Found(Candidate {
                found_at: s.path.clone(),
                file,
                copy: None,
            });
        }
    }
    // Copied (copytruncate): another inode, the same bytes.
    for s in siblings.iter().filter(|s| !s.gz) {
        let Ok(file) = File::open(&s.path) else {
            continue;
        };
        if identity::fingerprint(&file).ok().flatten() != Some(id.fingerprint) {
            continue;
        }
        if older(&file, u) {
            break;
        }
        if holds(&file, u) {
            return Located::Found(Candidate {
                found_at: s.path.clone(),
                file,
                copy: None,
            });
        }
    }
    // Compressed.
    let copy = copy_path(scratch, id.dev, id.ino, id.fingerprint);
    for s in siblings.iter().filter(|s| s.gz) {
        if !matches!(gz_fingerprint(&s.path), Ok(Some(fp)) if fp == id.fingerprint) {
            continue;
        }
        match unpack(&s.path, &copy) {
            Ok(file) if older(&file, u) => {
                let _ = fs::remove_file(&copy);
                break;
            }
            Ok(file) if holds(&file, u) => {
                return Located::Found(Candidate {
                    found_at: s.path.clone(),
                    file,
                    copy: Some(copy),
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(path = %s.path.display(), error = %e, "cannot decompress a rotated file")
            }
        }
        let _ = fs::remove_file(&copy);
    }
    Located::Gone
}

/// What the checkpoint store can say about a file found on disk.
pub trait Known {
    /// The store has an entry for exactly this identity.
    fn knows(&self, identity: &FileIdentity) -> bool;
    /// Checkpoints (and tail hashes) of files with this first-line fingerprint.
    fn with_fingerprint(&self, fingerprint: u64) -> Vec<(crate::tail::Checkpoint, Option<u64>)>;
}

impl Known for super::Checkpointer {
    fn knows(&self, identity: &FileIdentity) -> bool {
        super::Checkpointer::knows(self, identity)
    }
    fn with_fingerprint(&self, fingerprint: u64) -> Vec<(crate::tail::Checkpoint, Option<u64>)> {
        super::Checkpointer::with_fingerprint(self, fingerprint)
    }
}

/// True if `file` (first line `fingerprint`) is a file the store knows
/// under another inode: a copy or compressed copy of it holds the bytes
/// before one of the stored checkpoints with that fingerprint.
fn copy_of_known(file: &File, fingerprint: u64, store: &dyn Known) -> bool {
    store
        .with_fingerprint(fingerprint)
        .into_iter()
        .any(|(cp, tail)| cp.offset > 0 && tail.is_some() && hash_before(file, cp.offset) == tail)
}

/// Siblings of `u`'s file (see module doc) that the store does not know
/// (neither by identity nor as a copy of a known file), that are not
/// `taken` (followed, or found for another file), and that were modified
/// at or after `u` was last seen: rotations made while logship was down
/// that it never saw. Each comes with the identity to read it under, from
/// its start.
/// True if `file` (first line `fingerprint`) is an earlier copy of one of
/// the `live` files (followed now: `(fingerprint, path)`): that file has the
/// same first line and, at `file`'s size, the same last bytes. Its lines are
/// read from the live file; reading the copy too would ship them twice.
fn prefix_of_live(file: &File, fingerprint: u64, live: &[(u64, PathBuf)]) -> bool {
    let Ok(size) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut probe = LineReader::new(size, 1);
    if probe.prime_tail(file).ok().flatten().is_none() {
        return false;
    }
    live.iter()
        .filter(|(fp, _)| *fp == fingerprint)
        .any(|(_, path)| {
            File::open(path).is_ok_and(|live| {
                super::reader::bytes_before_are(&live, size, probe.tail()).unwrap_or(false)
            })
        })
}

pub fn newer_rotations(
    u: &Unfinished,
    store: &dyn Known,
    live: &[(u64, PathBuf)],
    taken: &HashSet<(u64, u64)>,
    scratch: &Path,
) -> Vec<(FileIdentity, Candidate)> {
    let mut out = Vec::new();
    let last_seen = i64::try_from(u.last_seen).unwrap_or(i64::MAX);
    for s in siblings(&u.path) {
        if s.mtime < last_seen || taken.contains(&(s.dev, s.ino)) || !kubelet_rotation(&s.path) {
            continue;
        }
        if !s.gz {
            let Ok(file) = File::open(&s.path) else {
                continue;
            };
            let Ok(Some(identity)) = identity::identify(&file) else {
                continue;
            };
            if !store.knows(&identity)
                && !copy_of_known(&file, identity.fingerprint, store)
                && !prefix_of_live(&file, identity.fingerprint, live)
            {
                out.push((
                    identity,
                    Candidate {
                        found_at: s.path,
                        file,
                        copy: None,
                    },
                ));
            }
            continue;
        }
        let Ok(Some(fingerprint)) = gz_fingerprint(&s.path) else {
            continue;
        };
        // A compressed file never seen: identified by the `.gz` itself.
        let identity = FileIdentity {
            dev: s.dev,
            ino: s.ino,
            fingerprint,
        };
        if store.knows(&identity) {
            continue;
        }
        let copy = copy_path(scratch, s.dev, s.ino, fingerprint);
        match unpack(&s.path, &copy) {
            Ok(file)
                if copy_of_known(&file, fingerprint, store)
                    || prefix_of_live(&file, fingerprint, live) =>
            {
                let _ = fs::remove_file(&copy);
            }
            Ok(file) => out.push((
                identity,
                Candidate {
                    found_at: s.path,
                    file,
                    copy: Some(copy),
                },
            )),
            Err(e) => {
                tracing::warn!(path = %s.path.display(), error = %e, "cannot decompress a rotated file");
                let _ = fs::remove_file(&copy);
            }
        }
    }
    out
}

/// Whether `path` is named the way the kubelet names a rotation
/// (`<name>.<YYYYMMDD-HHMMSS>`, maybe `.gz`). The kubelet only renames, so
/// such a file once was the live file; logrotate's names (`.1`, `-20261128`)
/// may be `copytruncate` copies of lines already shipped, which logship
/// cannot tell from a rotation it never saw: those are not read.
fn kubelet_rotation(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let Some((_, stamp)) = name.rsplit_once('.') else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 15
        && b[8] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
}

/// Removes what an earlier run left in the scratch directory.
pub fn clear_scratch(scratch: &Path) {
    if let Ok(entries) = fs::read_dir(scratch) {
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Fingerprint of the decompressed first line of a gzip file.
fn gz_fingerprint(gz: &Path) -> io::Result<Option<u64>> {
    let mut decoder = flate2::read::MultiGzDecoder::new(File::open(gz)?);
    let mut head = [0u8; FINGERPRINT_BYTES];
    let mut len = 0;
    while len < head.len() {
        match decoder.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(identity::fingerprint_of(&head[..len]))
}

/// Decompresses `gz` into `copy` and opens the copy for reading.
fn unpack(gz: &Path, copy: &Path) -> io::Result<File> {
    if let Some(dir) = copy.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut decoder = flate2::read::MultiGzDecoder::new(io::BufReader::new(File::open(gz)?));
    let mut out = io::BufWriter::new(File::create(copy)?);
    io::copy(&mut decoder, &mut out)?;
    out.into_inner().map_err(|e| e.into_error())?;
    File::open(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::Checkpoint;
    use std::io::Write;

    fn unfinished(path: &Path, offset: u64) -> Unfinished {
        let file = File::open(path).unwrap();
        let identity = identity::identify(&file).unwrap().unwrap();
        let mut probe = LineReader::new(offset, 1);
        Unfinished {
            identity,
            path: path.to_path_buf(),
            source: Some("s".into()),
            checkpoint: Checkpoint {
                generation: 0,
                offset,
            },
            tail: probe.prime_tail(&file).unwrap(),
            known_unread: 0,
            read_tail: None,
            head: None,
            not_head: None,
            old_heads: Vec::new(),
            last_seen: 0,
        }
    }

    fn head_of(path: &Path) -> crate::tail::checkpoint::Head {
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len().min(identity::HEAD_BYTES);
        crate::tail::checkpoint::Head {
            len,
            hash: identity::head_hash(&file, len).unwrap().unwrap(),
        }
    }

    /// Chaos seed 462867: a banner file's generation followed from 0 and
    /// killed before anything was acknowledged, then rewritten in place
    /// while logship was down; the copy next to it is of an OLDER
    /// generation (same banner, other lines). At offset 0 the banner alone
    /// matched it, and its lines were shipped again under the newer
    /// generation's `_id`s (1,492 duplicates). The stored head tells them
    /// apart; the generation's own copy still matches.
    #[test]
    fn a_copy_of_an_older_generation_of_a_banner_file_is_not_taken_for_the_newer() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("h2.log");
        let banner = b"=== service h2 starting: constant banner line ===\n";
        let older: Vec<u8> = banner
            .iter()
            .copied()
            .chain((0..40).flat_map(|i| format!("old generation line {i}\n").into_bytes()))
            .collect();
        let newer: Vec<u8> = banner
            .iter()
            .copied()
            .chain((0..40).flat_map(|i| format!("new generation line {i}\n").into_bytes()))
            .collect();
        std::fs::write(&live, &newer).unwrap();
        let mut u = unfinished(&live, 0);
        u.head = Some(head_of(&live));
        // The live file was rewritten; only the older copy is next to it.
        std::fs::write(&live, banner).unwrap();
        std::fs::write(dir.path().join("h2.log.1"), &older).unwrap();
        let scratch = dir.path().join("scratch");
        let taken = HashSet::new();
        assert!(matches!(
            locate_elsewhere(&u, &taken, &scratch),
            Located::Gone
        ));
        // Without the head, the banner alone matched (the bug).
        let mut blind = u.clone();
        blind.head = None;
        assert!(matches!(
            locate_elsewhere(&blind, &taken, &scratch),
            Located::Found(_)
        ));
        // The newer generation's own copy is found.
        std::fs::write(dir.path().join("h2.log.2"), &newer).unwrap();
        match locate_elsewhere(&u, &taken, &scratch) {
            Located::Found(c) => assert!(c.found_at.ends_with("h2.log.2")),
            other => panic!("the copy of the generation was not found: {other:?}"),
        }
    }

    /// A copy must hold what was read past the checkpoint, too.
    #[test]
    fn a_copy_without_the_bytes_read_past_the_checkpoint_is_not_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.log");
        let content: Vec<u8> = (0..100)
            .flat_map(|i| format!("line {i:04} of the file\n").into_bytes())
            .collect();
        std::fs::write(&live, &content).unwrap();
        let mut u = unfinished(&live, 500);
        let file = File::open(&live).unwrap();
        u.known_unread = 1500;
        u.read_tail = hash_before(&file, 2000);
        let mut other = content[..1000].to_vec();
        other.extend((0..60).flat_map(|i| format!("LINE {i:04} of another\n").into_bytes()));
        std::fs::remove_file(&live).unwrap();
        std::fs::write(dir.path().join("app.log.1"), &other).unwrap();
        let scratch = dir.path().join("scratch");
        assert!(matches!(
            locate(&u, &HashSet::new(), &scratch),
            Located::Gone
        ));
        std::fs::write(dir.path().join("app.log.2"), &content).unwrap();
        assert!(matches!(
            locate(&u, &HashSet::new(), &scratch),
            Located::Found(_)
        ));
    }

    #[test]
    fn the_stem_drops_rotation_suffixes_only() {
        assert_eq!(stem("app.log"), "app.log");
        assert_eq!(stem("app.log.1"), "app.log");
        assert_eq!(stem("app.log.2.gz"), "app.log");
        assert_eq!(stem("0.log.20261128-093000.gz"), "0.log");
        assert_eq!(stem("syslog"), "syslog");
        assert_eq!(stem("10.gz"), "10");
    }

    /// A store that knows one identity and no fingerprints.
    struct Store(Option<FileIdentity>);

    impl Known for Store {
        fn knows(&self, identity: &FileIdentity) -> bool {
            self.0 == Some(*identity)
        }
        fn with_fingerprint(&self, _: u64) -> Vec<(Checkpoint, Option<u64>)> {
            Vec::new()
        }
    }

    fn gzip(plain: &Path, gz: &Path) {
        let mut enc = flate2::write::GzEncoder::new(
            File::create(gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&fs::read(plain).unwrap()).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn finds_a_file_at_its_path_renamed_copied_compressed_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("data").join(SCRATCH_DIR);
        let path = dir.path().join("0.log");
        fs::write(&path, b"first\nsecond\n").unwrap();
        let u = unfinished(&path, 6);
        assert!(matches!(
            locate(&u, &HashSet::new(), &scratch),
            Located::AtPath
        ));

        let rotated = dir.path().join("0.log.20261128-093000");
        fs::rename(&path, &rotated).unwrap();
        fs::write(&path, b"a new file\n").unwrap();
        match locate(&u, &HashSet::new(), &scratch) {
            Located::Found(c) => assert_eq!((c.found_at, c.copy), (rotated.clone(), None)),
            other => panic!("{other:?}"),
        }

        let gz = dir.path().join("0.log.20261128-093000.gz");
        gzip(&rotated, &gz);
        fs::remove_file(&rotated).unwrap();
        match locate(&u, &HashSet::new(), &scratch) {
            Located::Found(c) => {
                assert_eq!(c.found_at, gz);
                assert_eq!(fs::read(c.copy.unwrap()).unwrap(), b"first\nsecond\n");
            }
            other => panic!("{other:?}"),
        }
        clear_scratch(&scratch);
        assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);

        // A copy (copytruncate): another inode with the same bytes.
        let copy = dir.path().join("0.log.1");
        fs::write(&copy, b"first\nsecond\n").unwrap();
        fs::remove_file(&gz).unwrap();
        match locate(&u, &HashSet::new(), &scratch) {
            Located::Found(c) => assert_eq!(c.found_at, copy),
            other => panic!("{other:?}"),
        }
        // Same first line, other bytes before the checkpoint: not the file.
        fs::write(&copy, b"first\nSECOND\n").unwrap();
        let u7 = Unfinished {
            checkpoint: Checkpoint {
                generation: 0,
                offset: 13,
            },
            tail: Some(identity::tail_hash(b"first\nsecond\n")),
            ..u.clone()
        };
        assert!(matches!(
            locate(&u7, &HashSet::new(), &scratch),
            Located::Gone
        ));
        fs::remove_file(&copy).unwrap();
        assert!(matches!(
            locate(&u, &HashSet::new(), &scratch),
            Located::Gone
        ));
    }

    #[test]
    fn newer_unknown_rotations_are_listed_known_and_older_ones_not() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join(SCRATCH_DIR);
        let path = dir.path().join("0.log");
        fs::write(&path, b"live\n").unwrap();
        let u = Unfinished {
            last_seen: 1,
            ..unfinished(&path, 0)
        };
        let b = dir.path().join("0.log.20261128-094000");
        fs::write(&b, b"b\n").unwrap();
        let c = dir.path().join("0.log.20261128-095000.gz");
        // logrotate's names are not considered (they may be copies).
        fs::write(dir.path().join("0.log.1"), b"copy\n").unwrap();
        fs::write(dir.path().join("plain-c"), b"c\n").unwrap();
        gzip(&dir.path().join("plain-c"), &c);
        let b_id = identity::identify(&File::open(&b).unwrap())
            .unwrap()
            .unwrap();
        let found = newer_rotations(&u, &Store(None), &[], &HashSet::new(), &scratch);
        let mut paths: Vec<&Path> = found.iter().map(|(_, c)| c.found_at.as_path()).collect();
        paths.sort();
        assert_eq!(paths, vec![b.as_path(), c.as_path()]);
        // Known to the store: not listed again.
        let found = newer_rotations(&u, &Store(Some(b_id)), &[], &HashSet::new(), &scratch);
        assert_eq!(found.len(), 1);
        // An earlier copy of the live file (same first line, its bytes still
        // there): its lines are read from the live file.
        let live = dir.path().join("live.log");
        fs::write(&live, b"b\nmore\n").unwrap();
        let found = newer_rotations(
            &u,
            &Store(None),
            &[(b_id.fingerprint, live)],
            &HashSet::new(),
            &scratch,
        );
        assert_eq!(found.len(), 1, "only the .gz is left");
        // Older than when the file was last seen: not a rotation we missed.
        let recent = Unfinished {
            last_seen: u64::MAX >> 2,
            ..u
        };
        assert!(newer_rotations(&recent, &Store(None), &[], &HashSet::new(), &scratch).is_empty());
    }
}
