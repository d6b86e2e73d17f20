//! Finding a file again after a restart: "a restart is a rotation too".
//!
//! While logship is down the kubelet (or logrotate) may rename a file it
//! was following (`0.log` → `0.log.20261128-093000`), compress an older
//! rotation (`….gz`, a new inode) or delete one. The include globs usually
//! do not match the rotated names (`/var/log/containers/*.log`), so a scan
//! alone would never read the lines written between the last
//! acknowledgement and the rotation. For every file the checkpoint store
//! knows that no follower claimed and that was not read to its end
//! ([`Unfinished`]), [`locate`] looks, in the file's own directory (the
//! kubelet and logrotate rename in place):
//!
//! 1. at its path: the same device and inode with the same first-line
//!    fingerprint means it is still there, just no longer matched by its
//!    source's globs ([`Located::AtPath`]: left alone);
//! 2. for an entry with the same device and inode and fingerprint: renamed
//!    ([`Located::Renamed`]);
//! 3. for `<name>.*.gz` / `<name>.gz` whose decompressed first line has the
//!    fingerprint: compressed. The whole file is decompressed into
//!    `<data_dir>/rotated/` and read from there; offsets in the
//!    decompressed stream are the original file's offsets, so the same
//!    lines get the same `_id`s ([`Located::Unpacked`]);
//! 4. otherwise it is gone ([`Located::Gone`]): deleted, or its inode now
//!    holds other content. The caller counts the loss.
//!
//! A found file is read from its checkpoint to its end and closed (the
//! follower's `drain_only`), and the checkpoint's tail hash is verified as
//! for any resume. Blocking: directory listings, opens, decompression.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::checkpoint::Unfinished;
use super::identity::{self, FINGERPRINT_BYTES};

/// Directory under `data_dir` holding decompressed rotations being read.
pub const SCRATCH_DIR: &str = "rotated";

/// Where an unfinished file is now.
#[derive(Debug)]
pub enum Located {
    /// At its path, not matched by any glob any more.
    AtPath,
    /// Renamed: `path` is its new name.
    Renamed { path: PathBuf, file: File },
    /// Compressed into `gz`; `copy` (in the scratch directory) holds its
    /// decompressed content, opened as `file`.
    Unpacked {
        gz: PathBuf,
        copy: PathBuf,
        file: File,
    },
    /// Deleted, or its inode now holds something else.
    Gone,
}

/// Looks for `u` (see module doc), unpacking into `scratch` if needed.
pub fn locate(u: &Unfinished, scratch: &Path) -> Located {
    let id = &u.identity;
    let is_it = |file: &File| -> bool {
        file.metadata()
            .is_ok_and(|m| (m.dev(), m.ino()) == (id.dev, id.ino))
            && identity::fingerprint(file).ok().flatten() == Some(id.fingerprint)
    };
    if let Ok(file) = File::open(&u.path)
        && is_it(&file)
    {
        return Located::AtPath;
    }
    let (Some(dir), Some(name)) = (u.path.parent(), u.path.file_name()) else {
        return Located::Gone;
    };
    let name = name.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir(dir) else {
        return Located::Gone;
    };
    let mut compressed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if (meta.dev(), meta.ino()) == (id.dev, id.ino) {
            if let Ok(file) = File::open(&path)
                && is_it(&file)
            {
                return Located::Renamed { path, file };
            }
            continue;
        }
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if entry_name.ends_with(".gz") && entry_name.starts_with(&format!("{name}.")) {
            compressed.push(path);
        }
    }
    compressed.sort();
    for gz in compressed {
        match gz_fingerprint(&gz) {
            Ok(Some(fp)) if fp == id.fingerprint => {}
            _ => continue,
        }
        let copy = scratch.join(format!("{}-{}-{:016x}.log", id.dev, id.ino, id.fingerprint));
        match unpack(&gz, &copy) {
            Ok(file) => return Located::Unpacked { gz, copy, file },
            Err(e) => {
                tracing::warn!(path = %gz.display(), error = %e, "cannot decompress a rotated file");
                let _ = fs::remove_file(&copy);
            }
        }
    }
    Located::Gone
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
    use crate::event::FileIdentity;
    use crate::tail::Checkpoint;
    use std::io::Write;

    fn unfinished(path: &Path) -> Unfinished {
        let file = File::open(path).unwrap();
        let identity = identity::identify(&file).unwrap().unwrap();
        Unfinished {
            identity,
            path: path.to_path_buf(),
            source: Some("s".into()),
            checkpoint: Checkpoint {
                generation: 0,
                offset: 6,
            },
            tail: None,
            known_unread: 0,
        }
    }

    #[test]
    fn finds_a_file_at_its_path_renamed_compressed_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("data").join(SCRATCH_DIR);
        let path = dir.path().join("0.log");
        fs::write(&path, b"first\nsecond\n").unwrap();
        let u = unfinished(&path);
        assert!(matches!(locate(&u, &scratch), Located::AtPath));

        let rotated = dir.path().join("0.log.20261128-093000");
        fs::rename(&path, &rotated).unwrap();
        fs::write(&path, b"a new file\n").unwrap();
        match locate(&u, &scratch) {
            Located::Renamed { path, .. } => assert_eq!(path, rotated),
            other => panic!("{other:?}"),
        }

        let gz = dir.path().join("0.log.20261128-093000.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&fs::read(&rotated).unwrap()).unwrap();
        enc.finish().unwrap();
        fs::remove_file(&rotated).unwrap();
        match locate(&u, &scratch) {
            Located::Unpacked {
                gz: found, copy, ..
            } => {
                assert_eq!(found, gz);
                assert_eq!(fs::read(&copy).unwrap(), b"first\nsecond\n");
            }
            other => panic!("{other:?}"),
        }
        clear_scratch(&scratch);
        assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);

        fs::remove_file(&gz).unwrap();
        assert!(matches!(locate(&u, &scratch), Located::Gone));
        // An inode reused by other content is not the file.
        let other = Unfinished {
            identity: FileIdentity {
                fingerprint: u.identity.fingerprint ^ 1,
                ..u.identity
            },
            ..u
        };
        assert!(matches!(locate(&other, &scratch), Located::Gone));
    }
}
