//! Journal cursors and the store of acknowledged positions.
//!
//! A cursor (`__CURSOR`) is journald's name for an entry's place:
//! `s=<seqnum id>;i=<seqnum hex>;b=<boot id>;m=<monotonic hex>;t=<realtime
//! hex>;x=<xor hash hex>`. [`Cursor`] keeps the text (what `journalctl
//! --after-cursor` takes) and the parts logship uses: the seqnum id and
//! seqnum (with the boot id, the entry's stable identity, from which its
//! `_id` is made) and the realtime (the lag, and the time span of a loss).
//!
//! ## On-disk format
//!
//! `{data_dir}/journald.json`, written only when something changed, by
//! writing `journald.json.tmp`, `fsync`ing it, renaming it over the old file
//! and `fsync`ing the directory (as `tail::checkpoint` does):
//!
//! ```text
//! {"version":1,"sources":{
//!   "host":{"cursor":"s=…;i=…;b=…;m=…;t=…;x=…","directory":"/var/log/journal"}
//! }}
//! ```
//!
//! `cursor` is the last entry of the longest run of acknowledged entries
//! from where the source started (the ack watermark); `directory` the
//! source's `journald.directory` when it was written (absent: the local
//! journal). A file that cannot be read or parsed, has an unknown version
//! or holds a cursor that does not parse is reported with
//! `tracing::error!`, renamed to `journald.json.corrupt-<unix time>`, and
//! the store starts empty (each source then starts at its `since`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "journald.json";
const TMP_NAME: &str = "journald.json.tmp";
const FORMAT_VERSION: u32 = 1;

/// An entry's cursor, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    text: String,
    pub seqnum_id: String,
    pub seqnum: u64,
    pub boot_id: String,
    /// Microseconds since the Unix epoch.
    pub realtime_usec: u64,
}

impl Cursor {
    /// Parses journald's cursor text; `None` if a part logship needs is
    /// missing or not hex.
    pub fn parse(text: &str) -> Option<Cursor> {
        // What sd_journal_seek_cursor accepts: 128-bit ids, hex numbers.
        let (mut s, mut i, mut b, mut t) = (None, None, None, None);
        let id128 = |v: &str| v.len() == 32 && v.bytes().all(|c| c.is_ascii_hexdigit());
        for part in text.split(';') {
            let (key, value) = part.split_once('=')?;
            match key {
                "s" => s = Some(value).filter(|v| id128(v)),
                "i" => i = Some(u64::from_str_radix(value, 16).ok()?),
                "b" => b = Some(value).filter(|v| id128(v)),
                "t" => t = Some(u64::from_str_radix(value, 16).ok()?),
                "m" | "x" => {
                    u64::from_str_radix(value, 16).ok()?;
                }
                _ => return None,
            }
        }
        let (s, b) = (s?, b?);
        Some(Cursor {
            text: text.to_owned(),
            seqnum_id: s.to_owned(),
            seqnum: i?,
            boot_id: b.to_owned(),
            realtime_usec: t?,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `other` names the same entry (same seqnum id and seqnum).
    pub fn same_entry(&self, other: &Cursor) -> bool {
        self.seqnum_id == other.seqnum_id && self.seqnum == other.seqnum
    }
}

#[derive(Debug, thiserror::Error)]
#[error("writing journal cursors to {path}: {source}")]
pub struct StoreError {
    path: PathBuf,
    source: std::io::Error,
}

impl StoreError {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    sources: BTreeMap<String, StoredCursor>,
}

#[derive(Debug, Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredCursor {
    cursor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    directory: Option<PathBuf>,
}

/// The acknowledged cursor of every journald source, and their file.
#[derive(Debug)]
pub struct CursorStore {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sources: BTreeMap<String, StoredCursor>,
    dirty: bool,
}

impl CursorStore {
    /// Reads `{data_dir}/journald.json` (a missing file is an empty store;
    /// a corrupt one is set aside, see the module doc).
    pub fn open(data_dir: &Path) -> CursorStore {
        let path = data_dir.join(FILE_NAME);
        let sources = match fs::read(&path) {
            Ok(bytes) => match parse_store(&bytes) {
                Ok(sources) => sources,
                Err(why) => {
                    set_aside(&path, &why);
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                set_aside(&path, &e.to_string());
                BTreeMap::new()
            }
        };
        CursorStore {
            dir: data_dir.to_owned(),
            state: Mutex::new(State {
                sources,
                dirty: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where `source` resumes: its acknowledged cursor, if it was stored
    /// for the same directory (a cursor of another journal is ignored, and
    /// that is logged).
    pub fn lookup(&self, source: &str, directory: Option<&Path>) -> Option<Cursor> {
        let st = self.state();
        let stored = st.sources.get(source)?;
        if stored.directory.as_deref() != directory {
            tracing::warn!(
                source,
                stored_for = ?stored.directory,
                directory = ?directory,
                "journald source reads another journal than its stored cursor was for; \
                 starting at `since`"
            );
            return None;
        }
        Cursor::parse(&stored.cursor)
    }

    /// Records `cursor` as acknowledged for `source` (written by the next
    /// [`CursorStore::persist`]).
    pub fn commit(&self, source: &str, directory: Option<&Path>, cursor: &Cursor) {
        let mut st = self.state();
        let new = StoredCursor {
            cursor: cursor.as_str().to_owned(),
            directory: directory.map(Path::to_owned),
        };
        if st.sources.get(source) != Some(&new) {
            st.sources.insert(source.to_owned(), new);
            st.dirty = true;
        }
    }

    /// Writes the store if it changed (atomically; see the module doc).
    pub fn persist(&self) -> Result<(), StoreError> {
        let mut st = self.state();
        if !st.dirty {
            return Ok(());
        }
        let file = StoreFile {
            version: FORMAT_VERSION,
            sources: st.sources.clone(),
        };
        let tmp = self.dir.join(TMP_NAME);
        let path = self.dir.join(FILE_NAME);
        let err = |source| StoreError {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| err(std::io::Error::other(e)))?;
        crate::tail::checkpoint::write_atomically(&self.dir, &tmp, &path, &bytes).map_err(err)?;
        st.dirty = false;
        Ok(())
    }
}

fn parse_store(bytes: &[u8]) -> Result<BTreeMap<String, StoredCursor>, String> {
    let version: VersionOnly = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if version.version != FORMAT_VERSION {
        return Err(format!("unknown version {}", version.version));
    }
    let file: StoreFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if let Some((name, bad)) = file
        .sources
        .iter()
        .find(|(_, s)| Cursor::parse(&s.cursor).is_none())
    {
        return Err(format!(
            "source {name:?}: {:?} is not a journal cursor",
            bad.cursor
        ));
    }
    Ok(file.sources)
}

fn set_aside(path: &Path, why: &str) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = path.with_extension(format!("json.corrupt-{secs}"));
    let renamed = fs::rename(path, &aside);
    tracing::error!(
        path = %path.display(),
        error = why,
        set_aside_as = %aside.display(),
        renamed = renamed.is_ok(),
        "journal cursor file unreadable; journald sources start at their `since`"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "s=777c20a2db2d46189dbb1993e98e951d;i=1f;b=11111111111111111111111111111111;m=3e8;t=60a24181e4001;x=c018fca25fe7a088";

    #[test]
    fn cursor_parts() {
        let c = Cursor::parse(C).unwrap();
        assert_eq!(c.seqnum, 0x1f);
        assert_eq!(c.seqnum_id, "777c20a2db2d46189dbb1993e98e951d");
        assert_eq!(c.boot_id, "11111111111111111111111111111111");
        assert_eq!(c.realtime_usec, 0x60a24181e4001);
        assert_eq!(c.as_str(), C);
        for bad in [
            "",
            "garbage",
            "s=;i=1;b=aa;t=1",
            "s=aa;i=zz;b=aa;t=1",
            "s=aa;b=aa;t=1",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn store_round_trip_and_directory_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::open(dir.path());
        let c = Cursor::parse(C).unwrap();
        store.commit("host", Some(Path::new("/j")), &c);
        store.persist().unwrap();
        let again = CursorStore::open(dir.path());
        assert_eq!(again.lookup("host", Some(Path::new("/j"))), Some(c));
        assert_eq!(again.lookup("host", None), None, "other journal");
        assert_eq!(again.lookup("other", Some(Path::new("/j"))), None);
    }

    #[test]
    fn a_corrupt_store_is_set_aside_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "{not json",
            r#"{"version":9,"sources":{}}"#,
            r#"{"version":1,"sources":{"host":{"cursor":"nonsense"}}}"#,
        ] {
            fs::write(dir.path().join(FILE_NAME), text).unwrap();
            let store = CursorStore::open(dir.path());
            assert_eq!(store.lookup("host", None), None, "{text}");
            assert!(!dir.path().join(FILE_NAME).exists(), "{text}: set aside");
            let aside = fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
                .count();
            assert!(aside >= 1, "{text}");
        }
    }
}
