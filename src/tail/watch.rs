//! inotify watches on the directories a scan lists ([`discover`]), turned
//! into [`Notice`]s for the file server. Two inotify instances watch each
//! directory: one for names (entries created, renamed, deleted; the
//! directory itself moved or deleted), forwarded at once, so a file created
//! and renamed away quickly is still seen by a scan; one for writes,
//! **coalesced**: the thread reads every queued write event, sends one
//! notice naming each changed path once, and does not look at writes again
//! for [`COALESCE`]. A file written ten times a second wakes its follower at
//! most once per `COALESCE`, whatever the number of writes (issue 10: with
//! 1,000 trickling files, one wake-up per write made the inotify thread
//! alone cost ~9 % of a core, and each wake-up an `fstat`, reads, a `stat`
//! and a span sent downstream); the price is at most `COALESCE` more
//! latency. Filebeat polls at end of file every second (`backoff: 1s`) and
//! Vector's file server sleeps up to 2 s when a pass read nothing; Fluent
//! Bit reads on each inotify event.
//!
//! The watch mask is what tailing needs: writes (`IN_MODIFY`), entries
//! created, deleted and renamed in the directory, and the directory itself
//! deleted or moved. Opens, reads, closes and attribute changes (notify's
//! default mask had `IN_OPEN` and `IN_ATTRIB`) are not asked for, so our own
//! reads cost no event. A full kernel queue (`IN_Q_OVERFLOW`) or a full
//! notice channel raises `overflow`: the server then rescans and wakes every
//! follower.
//!
//! [`discover`]: super::discover

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;

/// How long the watcher waits after sending a notice before it reads
/// events again: a follower is woken at most this often.
pub const COALESCE: Duration = Duration::from_millis(250);

/// Bytes of events read at once (the kernel's events are 16 bytes plus
/// the name: a few hundred events per read).
const EVENT_BUFFER: usize = 64 * 1024;

/// What filesystem events mean for the file server: one notice per
/// coalescing period.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notice {
    /// Written to: wake their followers.
    pub written: Vec<PathBuf>,
    /// Renamed away, renamed to, or deleted: wake their followers to look
    /// at their path.
    pub moved: Vec<PathBuf>,
    /// Something was created, renamed or deleted: run a scan now.
    pub rescan: bool,
}

/// What one inotify event asks for.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Meaning {
    /// New lines, maybe: wake the path's follower.
    Written,
    /// The path was renamed away, renamed to, or deleted: wake its
    /// follower (it may be draining) and rescan.
    Moved,
    /// Something new in the directory, or the directory itself went: rescan.
    Rescan,
    /// Events were lost, or a watched directory moved or was deleted:
    /// rescan and have every follower look at its path.
    Overflow,
    /// Nothing for us.
    Nothing,
}

/// Maps an event's mask to what it asks for.
pub fn meaning(mask: EventMask) -> Meaning {
    if mask.contains(EventMask::Q_OVERFLOW) {
        Meaning::Overflow
    } else if mask.intersects(EventMask::MOVED_FROM | EventMask::MOVED_TO | EventMask::DELETE) {
        Meaning::Moved
    } else if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
        // A watched directory itself moved or went: the followers of the
        // files under it are known by paths no event names any more.
        Meaning::Overflow
    } else if mask.intersects(EventMask::CREATE | EventMask::IGNORED) {
        Meaning::Rescan
    } else if mask.intersects(EventMask::MODIFY | EventMask::CLOSE_WRITE) {
        Meaning::Written
    } else {
        Meaning::Nothing
    }
}

/// The two inotify instances: names (entries created, renamed, deleted; the
/// directory itself moved or deleted), forwarded at once, since a file
/// created and renamed away within a coalescing period would otherwise be
/// renamed out of the globs before any scan saw it; and writes, coalesced.
const NAMES: usize = 0;
const WRITES: usize = 1;

fn mask(kind: usize) -> WatchMask {
    if kind == WRITES {
        return WatchMask::MODIFY | WatchMask::ONLYDIR;
    }
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// The directories watched, by watch descriptor (for events) and by path
/// (for `update`).
#[derive(Default)]
struct Dirs {
    /// Per instance ([`NAMES`], [`WRITES`]).
    by_wd: [HashMap<i32, PathBuf>; 2],
    by_path: HashMap<PathBuf, [WatchDescriptor; 2]>,
    /// Watched directories off a local filesystem: writes made by other
    /// machines raise no event there.
    remote: HashSet<PathBuf>,
}

impl Dirs {
    /// The kernel dropped a watch (its directory was deleted): forget the
    /// directory (the other instance's watch goes with it).
    fn forget_wd(&mut self, kind: usize, wd: i32) {
        if let Some(path) = self.by_wd[kind].remove(&wd) {
            if let Some(wds) = self.by_path.remove(&path) {
                let other = 1 - kind;
                self.by_wd[other].remove(&wds[other].get_watch_descriptor_id());
            }
            self.remote.remove(&path);
        }
    }
}

/// What [`Watcher::update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// Every directory asked for is watched, on a local filesystem: inotify
    /// reports every new file and every write.
    pub complete: bool,
    /// Directories watched for the first time (an entry made in one before
    /// its watch was added raised no event: scan again).
    pub added: usize,
}

/// True for the local disk and memory filesystems (ext2/3/4, XFS, btrfs,
/// F2FS, ZFS, tmpfs, overlayfs, ramfs), by `statfs` type: there inotify
/// sees every change and a `stat` never waits for a network.
pub fn local_fs_type(kind: i64) -> bool {
    const LOCAL: [i64; 8] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // XFS
        0x9123_683E, // btrfs
        0xF2F5_2010, // F2FS
        0x2FC1_2FC1, // ZFS
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
        0x8584_58F6, // ramfs
    ];
    LOCAL.contains(&kind)
}

/// True if the directory `dir` is on a local filesystem ([`local_fs_type`]).
fn dir_is_local(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` reads the NUL-terminated path and only writes into
    // the zeroed struct it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0;
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    ok && local_fs_type(kind)
}

/// inotify watches on directories; notices go into a bounded channel.
pub struct Watcher {
    inner: Option<Inner>,
}

struct Inner {
    /// Per instance ([`NAMES`], [`WRITES`]).
    watches: [Watches; 2],
    dirs: Arc<Mutex<Dirs>>,
    /// Written to stop the thread.
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Starts the watcher thread; notices go to `notices`; when it is full
    /// (or the kernel's queue overflowed) `overflow` is raised and `wake`
    /// notified instead. Without inotify (an error here) discovery falls
    /// back to rescans and followers to polling.
    pub fn new(
        notices: mpsc::Sender<Notice>,
        overflow: Arc<AtomicBool>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        match Inner::start(notices, overflow, wake) {
            Ok(inner) => Watcher { inner: Some(inner) },
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable: new lines are found by polling about once a second");
                Watcher { inner: None }
            }
        }
    }

    /// Watches exactly `dirs` (non-recursively) from now on.
    pub fn update(&mut self, dirs: &BTreeSet<PathBuf>) -> Coverage {
        let Some(inner) = self.inner.as_mut() else {
            return Coverage {
                complete: false,
                added: 0,
            };
        };
        let mut watched = inner.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<PathBuf> = watched
            .by_path
            .keys()
            .filter(|p| !dirs.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            watched.remote.remove(&path);
            if let Some(wds) = watched.by_path.remove(&path) {
                for (kind, wd) in wds.into_iter().enumerate() {
                    watched.by_wd[kind].remove(&wd.get_watch_descriptor_id());
                    // The directory may be gone already; the kernel dropped
                    // the watch then.
                    let _ = inner.watches[kind].remove(wd);
                }
            }
        }
        let mut all = true;
        let mut added = 0;
        for dir in dirs {
            if watched.by_path.contains_key(dir) {
                continue;
            }
            // Under the lock: an event for the new watch waits for its path.
            let names = inner.watches[NAMES].add(dir, mask(NAMES));
            let writes = inner.watches[WRITES].add(dir, mask(WRITES));
            match (names, writes) {
                (Ok(n), Ok(w)) => {
                    added += 1;
                    watched.by_wd[NAMES].insert(n.get_watch_descriptor_id(), dir.clone());
                    watched.by_wd[WRITES].insert(w.get_watch_descriptor_id(), dir.clone());
                    watched.by_path.insert(dir.clone(), [n, w]);
                    if !dir_is_local(dir) {
                        watched.remote.insert(dir.clone());
                    }
                }
                (names, writes) => {
                    all = false;
                    if let Ok(n) = names {
                        let _ = inner.watches[NAMES].remove(n);
                    }
                    if let Ok(w) = writes {
                        let _ = inner.watches[WRITES].remove(w);
                    }
                    tracing::debug!(dir = %dir.display(), "cannot watch directory");
                }
            }
        }
        Coverage {
            complete: all && watched.remote.is_empty(),
            added,
        }
    }
}

impl Inner {
    fn start(
        notices: mpsc::Sender<Notice>,
        overflow: Arc<AtomicBool>,
        wake: Arc<tokio::sync::Notify>,
    ) -> std::io::Result<Inner> {
        let names = Inotify::init()?;
        let writes = Inotify::init()?;
        let watches = [names.watches(), writes.watches()];
        // SAFETY: eventfd takes no pointer; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned here only.
        let stop = unsafe { OwnedFd::from_raw_fd(fd) };
        let dirs = Arc::new(Mutex::new(Dirs::default()));
        let thread = std::thread::Builder::new()
            .name("logship-inotify".into())
            .spawn({
                let dirs = dirs.clone();
                let stop = stop.as_raw_fd();
                move || {
                    run(
                        [names, writes],
                        stop,
                        &dirs,
                        &Forward {
                            notices,
                            overflow,
                            wake,
                        },
                    )
                }
            })?;
        Ok(Inner {
            watches,
            dirs,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        unsafe {
            libc::write(
                self.stop.as_raw_fd(),
                (&raw const one).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        // The thread reads the stop fd by number: it must be gone before the
        // fd closes (after this function).
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the thread sends what it saw.
struct Forward {
    notices: mpsc::Sender<Notice>,
    overflow: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl Forward {
    fn overflowed(&self) {
        self.overflow.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Waits until one of `fds` is readable or `stop` is, or `timeout` passed
/// (`None`: no timeout). `Err(())` once `stop` was written.
fn wait(fds: [Option<RawFd>; 2], stop: RawFd, timeout: Option<Duration>) -> Result<(), ()> {
    let poll = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut polled = [
        poll(stop),
        poll(fds[0].unwrap_or(-1)),
        poll(fds[1].unwrap_or(-1)),
    ];
    let ms = timeout.map_or(-1, |t| {
        i32::try_from(t.as_millis().max(1)).unwrap_or(i32::MAX)
    });
    loop {
        // SAFETY: `polled` is a live array of three pollfd (a negative fd
        // is ignored by poll).
        let r = unsafe { libc::poll(polled.as_mut_ptr(), 3, ms) };
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if polled[0].revents != 0 {
            return Err(());
        }
        return Ok(());
    }
}

/// Reads every event queued on one instance into `batch`; `true` if any.
fn read_all(
    inotify: &mut Inotify,
    kind: usize,
    buf: &mut [u8],
    dirs: &Mutex<Dirs>,
    batch: &mut Batch,
) -> bool {
    let mut read = false;
    loop {
        let events = match inotify.read_events(buf) {
            Ok(events) => events,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::debug!(error = %e, "inotify read failed; rescanning");
                batch.rescan = true;
                break;
            }
        };
        let mut any = false;
        let mut dirs = dirs.lock().unwrap_or_else(PoisonError::into_inner);
        for event in events {
            any = true;
            let wd = event.wd.get_watch_descriptor_id();
            let m = meaning(event.mask);
            if event.mask.contains(EventMask::IGNORED) {
                // The watch is gone (its directory was deleted).
                dirs.forget_wd(kind, wd);
            }
            batch.add(m, dirs.by_wd[kind].get(&wd), event.name);
        }
        if !any {
            break;
        }
        read = true;
    }
    read
}

/// The watcher thread: names are forwarded as soon as they come; writes
/// are read at most once per [`COALESCE`] (the descriptor is not even
/// polled in between, so a burst of writes costs one wake-up).
fn run(mut inotify: [Inotify; 2], stop: RawFd, dirs: &Mutex<Dirs>, forward: &Forward) {
    let mut buf = vec![0u8; EVENT_BUFFER];
    let mut batch = Batch::default();
    let mut writes_after = std::time::Instant::now();
    loop {
        let now = std::time::Instant::now();
        let writes_due = now >= writes_after;
        let fds = [
            Some(inotify[NAMES].as_raw_fd()),
            writes_due.then(|| inotify[WRITES].as_raw_fd()),
        ];
        let timeout = (!writes_due).then(|| writes_after - now);
        if wait(fds, stop, timeout).is_err() {
            return;
        }
        read_all(&mut inotify[NAMES], NAMES, &mut buf, dirs, &mut batch);
        if std::time::Instant::now() >= writes_after
            && read_all(&mut inotify[WRITES], WRITES, &mut buf, dirs, &mut batch)
        {
            // Whatever is written meanwhile is read in one go.
            writes_after = std::time::Instant::now() + COALESCE;
        }
        if batch.overflow {
            forward.overflowed();
        }
        if let Some(notice) = batch.take()
            && forward.notices.try_send(notice).is_err()
        {
            forward.overflowed();
        }
    }
}

/// Events read since the last notice.
#[derive(Default)]
struct Batch {
    written: HashSet<PathBuf>,
    moved: HashSet<PathBuf>,
    rescan: bool,
    overflow: bool,
}

impl Batch {
    fn add(&mut self, meaning: Meaning, dir: Option<&PathBuf>, name: Option<&OsStr>) {
        let path = || dir.zip(name).map(|(d, n)| d.join(n));
        match meaning {
            Meaning::Written => self.written.extend(path()),
            Meaning::Moved => {
                self.moved.extend(path());
                self.rescan = true;
            }
            Meaning::Rescan => self.rescan = true,
            Meaning::Overflow => self.overflow = true,
            Meaning::Nothing => {}
        }
    }

    /// The notice for what was read, if any; empties the batch.
    fn take(&mut self) -> Option<Notice> {
        self.overflow = false;
        let notice = Notice {
            written: self.written.drain().collect(),
            moved: self.moved.drain().collect(),
            rescan: std::mem::take(&mut self.rescan),
        };
        (notice != Notice::default()).then_some(notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn our_own_reads_and_opens_mean_nothing() {
        assert_eq!(meaning(EventMask::OPEN), Meaning::Nothing);
        assert_eq!(meaning(EventMask::ACCESS), Meaning::Nothing);
        assert_eq!(meaning(EventMask::CLOSE_NOWRITE), Meaning::Nothing);
        assert_eq!(meaning(EventMask::MODIFY), Meaning::Written);
        assert_eq!(meaning(EventMask::CREATE), Meaning::Rescan);
        assert_eq!(meaning(EventMask::MOVED_FROM), Meaning::Moved);
        assert_eq!(meaning(EventMask::DELETE), Meaning::Moved);
        assert_eq!(meaning(EventMask::Q_OVERFLOW), Meaning::Overflow);
        assert_eq!(meaning(EventMask::MOVE_SELF), Meaning::Overflow);
    }

    #[test]
    fn a_batch_names_each_path_once() {
        let dir = PathBuf::from("/d");
        let mut b = Batch::default();
        for _ in 0..3 {
            b.add(Meaning::Written, Some(&dir), Some(OsStr::new("a.log")));
        }
        b.add(Meaning::Written, Some(&dir), Some(OsStr::new("b.log")));
        let mut notice = b.take().expect("a notice");
        notice.written.sort();
        assert_eq!(
            notice,
            Notice {
                written: vec![dir.join("a.log"), dir.join("b.log")],
                ..Notice::default()
            }
        );
        assert_eq!(b.take(), None);
        b.add(Meaning::Moved, Some(&dir), Some(OsStr::new("a.log")));
        assert_eq!(
            b.take(),
            Some(Notice {
                moved: vec![dir.join("a.log")],
                rescan: true,
                ..Notice::default()
            })
        );
        b.add(Meaning::Rescan, Some(&dir), None);
        assert_eq!(
            b.take(),
            Some(Notice {
                rescan: true,
                ..Notice::default()
            })
        );
    }

    /// Many writes to a few files within the coalescing period arrive as
    /// one notice naming each file once; a rename as a rescan; a deleted
    /// directory loses its watch.
    #[tokio::test]
    async fn writes_are_coalesced_into_one_notice_per_period() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().canonicalize().expect("canonical");
        let (tx, mut rx) = mpsc::channel(16);
        let overflow = Arc::new(AtomicBool::new(false));
        let mut w = Watcher::new(tx, overflow.clone(), Arc::new(tokio::sync::Notify::new()));
        assert_eq!(
            w.update(&BTreeSet::from([dir.clone()])),
            Coverage {
                complete: true,
                added: 1
            }
        );
        assert_eq!(
            w.update(&BTreeSet::from([dir.clone()])),
            Coverage {
                complete: true,
                added: 0
            }
        );
        let mut files: Vec<std::fs::File> = (0..3)
            .map(|i| std::fs::File::create(dir.join(format!("{i}.log"))).expect("create"))
            .collect();
        // The creations: a rescan.
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a notice")
            .expect("open channel");
        assert!(first.rescan && first.moved.is_empty(), "{first:?}");
        // Let the coalescing period after it pass, then write 100 times to
        // each within much less than a period.
        tokio::time::sleep(COALESCE * 2).await;
        let burst = std::time::Instant::now();
        for _ in 0..100 {
            for f in &mut files {
                f.write_all(b"line\n").expect("write");
            }
        }
        let burst = burst.elapsed();
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut notices = 0;
        while seen.len() < 3 {
            let notice = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a notice")
                .expect("open channel");
            notices += 1;
            assert!(!notice.rescan && notice.moved.is_empty(), "{notice:?}");
            seen.extend(notice.written);
        }
        // 300 writes, at most two notices (a period may begin mid-burst),
        // each file named once per notice. A burst that took most of a
        // period (the test thread descheduled on a loaded machine) may
        // span one more.
        let most = if burst < COALESCE / 2 { 2 } else { 3 };
        assert!(
            notices <= most,
            "{notices} notices for one burst of {burst:?}"
        );
        assert!(seen.len() <= 3 * notices, "{seen:?}");
        std::fs::rename(dir.join("0.log"), dir.join("0.log.1")).expect("rename");
        // Both names of the rename, with a rescan (the kernel may hand the
        // two events over in two reads).
        let mut moved = Vec::new();
        let mut rescan = false;
        while moved.len() < 2 {
            let notice = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a notice")
                .expect("open channel");
            rescan |= notice.rescan;
            moved.extend(notice.moved);
        }
        moved.sort();
        assert_eq!(moved, [dir.join("0.log"), dir.join("0.log.1")]);
        assert!(rescan);
        assert!(!overflow.load(Ordering::Acquire));
        drop(w);
        // The thread stopped: the sender it held is gone.
        tokio::time::timeout(Duration::from_secs(5), async {
            while rx.recv().await.is_some() {}
        })
        .await
        .expect("the watcher thread stops when the watcher is dropped");
    }
}
