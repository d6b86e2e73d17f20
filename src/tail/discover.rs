//! Discovery: which files the sources match, and which directories to watch.
//!
//! A scan expands every source's include globs (`glob` crate), drops paths an
//! exclude glob (`globset`) matches, skips compressed files (`.gz .zip .bz2
//! .xz .zst`) unless the source includes them, resolves symlinks
//! (`/var/log/containers/*.log` → `/var/log/pods/...`) and keeps regular
//! files only, deduplicated by `(dev, ino)`: the first source that matches a
//! file owns it.
//!
//! A scan also lists the directories worth an inotify watch: the literal
//! (glob-free) directory of every pattern, every directory its directory
//! components match (so new pod and container directories are noticed), and
//! the directory of every resolved file (so writes to a symlink's target
//! wake its follower); [`watch`](super::watch) watches them.
//!
//! Scans are blocking (directory walks) and run on a blocking thread. This
//! module opens no file for reading.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::SourceConfig;

const COMPRESSED_SUFFIXES: [&str; 5] = [".gz", ".zip", ".bz2", ".xz", ".zst"];

/// A source's patterns, compiled.
#[derive(Debug)]
pub struct SourceMatcher {
    include: Vec<String>,
    /// `include`, compiled, to ask whether a given path matches.
    include_set: GlobSet,
    exclude: GlobSet,
    include_compressed: bool,
}

impl SourceMatcher {
    pub fn new(source: &SourceConfig) -> Self {
        let mut exclude = GlobSetBuilder::new();
        for pattern in &source.exclude {
            match GlobBuilder::new(pattern).literal_separator(true).build() {
                Ok(g) => {
                    exclude.add(g);
                }
                // Config validation rejects bad globs; this is a safety net.
                Err(e) => {
                    tracing::error!(source = %source.name, %pattern, error = %e, "ignoring invalid exclude glob")
                }
            }
        }
        let exclude = exclude.build().unwrap_or_else(|e| {
            tracing::error!(source = %source.name, error = %e, "ignoring exclude globs");
            GlobSet::empty()
        });
        let mut include_set = GlobSetBuilder::new();
        for pattern in &source.include {
            if let Ok(g) = GlobBuilder::new(pattern).literal_separator(true).build() {
                include_set.add(g);
            }
        }
        SourceMatcher {
            include: source.include.clone(),
            include_set: include_set.build().unwrap_or_else(|_| GlobSet::empty()),
            exclude,
            include_compressed: source.include_compressed,
        }
    }

    /// Whether this source follows the file its globs list as `path`.
    pub fn matches(&self, path: &Path) -> bool {
        self.include_set.is_match(path) && self.accepts(path)
    }

    fn accepts(&self, path: &Path) -> bool {
        if self.exclude.is_match(path) {
            return false;
        }
        if self.include_compressed {
            return true;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        !COMPRESSED_SUFFIXES.iter().any(|s| name.ends_with(s))
    }
}

/// A file a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Index of the source that owns it.
    pub source: usize,
    /// The path with symlinks resolved.
    pub path: PathBuf,
    /// The path as the glob matched it (a symlink, before resolving).
    pub matched: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: Vec<Found>,
    /// Directories to watch.
    pub dirs: BTreeSet<PathBuf>,
    /// A pattern's literal directory does not exist (yet): nothing watched
    /// reports what will appear there, only rescans find it.
    pub uncovered: bool,
}

/// Scans all sources (blocking).
pub fn scan(sources: &[SourceMatcher]) -> Scan {
    let mut out = Scan::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    for (index, source) in sources.iter().enumerate() {
        for pattern in &source.include {
            out.uncovered |= !watch_dirs_of_pattern(pattern, &mut out.dirs);
            let paths = match glob::glob(pattern) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(%pattern, error = %e, "invalid include glob");
                    continue;
                }
            };
            for entry in paths {
                let Ok(path) = entry else { continue };
                if !source.accepts(&path) {
                    continue;
                }
                // Resolve symlinks; a dangling link or a vanished file is skipped.
                let Ok(resolved) = std::fs::canonicalize(&path) else {
                    watch_dangling_target(&path, &mut out.dirs);
                    continue;
                };
                if resolved != path && !source.accepts(&resolved) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&resolved) else {
                    continue;
                };
                if !meta.is_file() || !seen.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                if let Some(parent) = resolved.parent() {
                    out.dirs.insert(parent.to_path_buf());
                }
                out.files.push(Found {
                    source: index,
                    matched: path,
                    path: resolved,
                    dev: meta.dev(),
                    ino: meta.ino(),
                });
            }
        }
    }
    out
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The directories a pattern's matches can appear in: its literal prefix
/// directory and every directory its directory components match. `false`
/// if the literal prefix directory is missing (nothing to watch yet).
fn watch_dirs_of_pattern(pattern: &str, dirs: &mut BTreeSet<PathBuf>) -> bool {
    let path = Path::new(pattern);
    let Some(parent) = path.parent() else {
        return true;
    };
    let mut prefix = PathBuf::new();
    let mut components = parent.components().peekable();
    while let Some(c) = components.peek() {
        let literal = match c {
            Component::Normal(s) => !has_glob_chars(&s.to_string_lossy()),
            _ => true,
        };
        if !literal {
            break;
        }
        prefix.push(c.as_os_str());
        components.next();
    }
    if !prefix.is_dir() {
        return false;
    }
    dirs.insert(canonical_dir(&prefix));
    let mut level = prefix;
    for c in components {
        level.push(c.as_os_str());
        let Some(pattern) = level.to_str() else {
            return true;
        };
        let Ok(paths) = glob::glob(pattern) else {
            return true;
        };
        for p in paths.flatten() {
            if p.is_dir() {
                dirs.insert(canonical_dir(&p));
            }
        }
    }
    true
}

/// A dangling symlink: the kubelet makes `containers/<name>.log` when it
/// creates the container, before the runtime makes the log file it points
/// to. Nothing watched would report the target's creation (its directory
/// is watched once a scan finds the file), so the nearest existing
/// directory on the target's path is watched: what is made there next
/// (the pod's directory, the container's, the file) raises an event and a
/// scan, which watches one level deeper, until the file is found.
fn watch_dangling_target(link: &Path, dirs: &mut BTreeSet<PathBuf>) {
    let Ok(target) = std::fs::read_link(link) else {
        return;
    };
    let target = match link.parent() {
        Some(dir) if target.is_relative() => dir.join(target),
        _ => target,
    };
    let mut dir = target.parent();
    while let Some(d) = dir {
        if d.is_dir() {
            dirs.insert(canonical_dir(d));
            return;
        }
        dir = d.parent();
    }
}

/// A directory as inotify will name it in events: one watch per directory
/// inode, named by the last path it was added under, so a directory reached
/// through a symlink is watched under its real path, the one followers are
/// known by (else their write events named the link's path and woke none).
fn canonical_dir(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ReadFrom, SourceFormat};
    use std::time::Duration;

    fn source(include: Vec<String>, exclude: Vec<String>) -> SourceConfig {
        SourceConfig {
            name: "s".into(),
            include,
            exclude,
            format: SourceFormat::Plain,
            read_from: ReadFrom::Beginning,
            max_line_bytes: 1024,
            include_compressed: false,
            rescan_interval: Duration::from_secs(10),
            processors: Vec::new(),
            multiline: None,
        }
    }

    // Hostile review: a directory reached through a symlink was watched
    // under both its link path (pattern level) and its real path (a file's
    // directory); inotify keeps one watch per inode, named by the last path
    // added, so write events named the link's path and woke no follower.
    #[test]
    fn a_directory_reached_through_a_symlink_is_watched_under_its_real_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let real = root.join("aaa-real");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("app.log"), "a\n").unwrap();
        std::os::unix::fs::symlink(&real, root.join("zzz-link")).unwrap();
        let pattern = format!("{}/zzz-link/*.log", root.to_str().unwrap());
        let scan = scan(&[SourceMatcher::new(&source(vec![pattern], vec![]))]);
        assert_eq!(scan.files.len(), 1);
        assert_eq!(scan.dirs.iter().collect::<Vec<_>>(), vec![&real]);
    }

    #[test]
    fn globs_excludes_compressed_symlinks_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let pods = root.join("pods/ns_pod_uid/c");
        std::fs::create_dir_all(&pods).unwrap();
        let containers = root.join("containers");
        std::fs::create_dir_all(&containers).unwrap();
        std::fs::write(pods.join("0.log"), "a\n").unwrap();
        std::fs::write(pods.join("0.log.20240101.gz"), "x").unwrap();
        std::os::unix::fs::symlink(pods.join("0.log"), containers.join("pod_ns_c-1.log")).unwrap();
        std::os::unix::fs::symlink(pods.join("missing.log"), containers.join("dangling.log"))
            .unwrap();
        std::fs::write(containers.join("skip.log"), "b\n").unwrap();
        std::fs::write(containers.join("old.log.gz"), "x").unwrap();

        let root_s = root.to_str().unwrap();
        let sources = [
            SourceMatcher::new(&source(
                vec![format!("{root_s}/containers/*")],
                vec![format!("{root_s}/containers/skip.*")],
            )),
            // The same file again through another source: first source wins.
            SourceMatcher::new(&source(vec![format!("{root_s}/pods/*/*/*")], vec![])),
        ];
        let scan = scan(&sources);
        let files: Vec<(usize, PathBuf)> = scan
            .files
            .iter()
            .map(|f| (f.source, f.path.clone()))
            .collect();
        assert_eq!(files, vec![(0, pods.join("0.log"))]);
        // The literal directories, the pattern levels and the target's directory.
        for d in [
            containers.clone(),
            root.join("pods"),
            root.join("pods/ns_pod_uid"),
            pods.clone(),
        ] {
            assert!(
                scan.dirs.contains(&d),
                "{} not watched: {:?}",
                d.display(),
                scan.dirs
            );
        }
    }

    // CI: the kubelet's symlink made before the file it points to was
    // skipped, and nothing watched reported the file's creation: its lines
    // waited for the 60 s safety-net rescan.
    #[test]
    fn a_dangling_link_has_the_nearest_existing_directory_of_its_target_watched() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let containers = root.join("containers");
        std::fs::create_dir_all(&containers).unwrap();
        std::fs::create_dir_all(root.join("pods")).unwrap();
        let target = root.join("pods/ns_pod_uid/app/0.log");
        std::os::unix::fs::symlink(&target, containers.join("pod_ns_app-1.log")).unwrap();
        // A relative link whose target's directory exists.
        std::fs::create_dir_all(root.join("pods/other/app")).unwrap();
        std::os::unix::fs::symlink("../pods/other/app/0.log", containers.join("other.log"))
            .unwrap();
        let pattern = format!("{}/*.log", containers.display());
        let source = SourceMatcher::new(&source(vec![pattern.clone()], vec![]));
        let s = scan(std::slice::from_ref(&source));
        assert!(s.files.is_empty());
        assert!(s.dirs.contains(&root.join("pods")), "{:?}", s.dirs);
        assert!(
            s.dirs.contains(&root.join("pods/other/app")),
            "{:?}",
            s.dirs
        );
        // One level deeper once the pod's directory exists, then found.
        std::fs::create_dir_all(root.join("pods/ns_pod_uid")).unwrap();
        let s = scan(std::slice::from_ref(&source));
        assert!(
            s.dirs.contains(&root.join("pods/ns_pod_uid")),
            "{:?}",
            s.dirs
        );
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, "a\n").unwrap();
        let s = scan(std::slice::from_ref(&source));
        assert_eq!(s.files.len(), 1);
        assert!(
            s.dirs.contains(&root.join("pods/ns_pod_uid/app")),
            "{:?}",
            s.dirs
        );
    }

    #[test]
    fn compressed_files_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("a.log.gz"), "x").unwrap();
        let mut s = source(vec![format!("{}/*", root.display())], vec![]);
        s.include_compressed = true;
        assert_eq!(scan(&[SourceMatcher::new(&s)]).files.len(), 1);
    }
}
