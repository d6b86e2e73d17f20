//! The files under the agent, and a model of where every line went.
//!
//! A *stream* is one writer of numbered lines: a container's stdout in the
//! kubelet layout (`pods/<ns>_<pod>_<uid>/<container>/0.log`, followed
//! through a `containers/<pod>_<ns>_<container>-<id>.log` symlink), or an
//! application's log on a host (`host/<name>.log`, logrotate style, some
//! with copytruncate), or one in a directory whose glob also matches its
//! rotations (`app/*.log*`), or one of a source that reloads add and remove
//! (`extra/`). Line `n` of stream `s` carries `seq=<s>-<n>` (seven digits)
//! in its message and is otherwise a pure function of `(s, n)` (plus, for
//! banner streams, whether it is the first line of its file), so the index
//! is checked against the model without keeping the lines.
//!
//! A *phys* is one physical file content: an inode between truncations.
//! Every line is recorded with its phys and byte range, and every phys with
//! its history (created, renamed, compressed, deleted, truncated) and with
//! what the agent could know about it when it left the agent's globs — the
//! facts the verdict needs to tell a loss the agent owes from one no
//! shipper could avoid (see `verify`).
//!
//! Each stream has a writer thread that appends bursts of lines at its own
//! rate; the schedule thread rotates, truncates, compresses and deletes
//! under the same per-stream lock, so the model is exact.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::logship::{cri_line, docker_line};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CRI, containerd: partial lines of 16 KiB.
    Containerd,
    /// CRI, CRI-O: partial lines of 8 KiB.
    CriO,
    /// docker `json-file`: chunks of 16 KiB.
    Docker,
    Plain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `pods/…/0.log`, matched through `containers/*.log` symlinks.
    Pod,
    /// `host/<name>.log`, glob `*.log`: rotations are not matched.
    Host,
    /// `app/<name>.log`, glob `*.log*`: rotations are matched too.
    App,
    /// `extra/<name>.log`, a source reloads add and remove.
    Extra,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Rename `0.log` → `0.log.<YYYYmmdd-HHMMSS>`, reopen `0.log`.
    Kubelet,
    /// Rename `x.log.N` → `x.log.N+1`, `x.log` → `x.log.1`, reopen `x.log`.
    Logrotate,
    /// Copy `x.log` → `x.log.1` (after shifting), truncate `x.log` in place.
    CopyTruncate,
    None,
}

pub struct StreamSpec {
    pub name: &'static str,
    pub format: Format,
    pub layout: Layout,
    pub rotation: Rotation,
    /// Every file of this stream starts with the same long first line
    /// (an application's start banner): same fingerprint every time.
    pub banner: bool,
    /// Lines per second its writer averages.
    pub rate: f64,
}

pub const STREAMS: &[StreamSpec] = &[
    StreamSpec {
        name: "c0",
        format: Format::Containerd,
        layout: Layout::Pod,
        rotation: Rotation::Kubelet,
        banner: false,
        rate: 60.0,
    },
    StreamSpec {
        name: "c1",
        format: Format::CriO,
        layout: Layout::Pod,
        rotation: Rotation::Kubelet,
        banner: false,
        rate: 40.0,
    },
    StreamSpec {
        name: "c2",
        format: Format::Docker,
        layout: Layout::Pod,
        rotation: Rotation::Kubelet,
        banner: false,
        rate: 40.0,
    },
    StreamSpec {
        name: "c3",
        format: Format::Containerd,
        layout: Layout::Pod,
        rotation: Rotation::Kubelet,
        banner: false,
        rate: 15.0,
    },
    StreamSpec {
        name: "h0",
        format: Format::Plain,
        layout: Layout::Host,
        rotation: Rotation::Logrotate,
        banner: false,
        rate: 40.0,
    },
    StreamSpec {
        name: "h1",
        format: Format::Plain,
        layout: Layout::Host,
        rotation: Rotation::CopyTruncate,
        banner: false,
        rate: 30.0,
    },
    StreamSpec {
        name: "h2",
        format: Format::Plain,
        layout: Layout::Host,
        rotation: Rotation::CopyTruncate,
        banner: true,
        rate: 20.0,
    },
    StreamSpec {
        name: "a0",
        format: Format::Plain,
        layout: Layout::App,
        rotation: Rotation::Logrotate,
        banner: false,
        rate: 40.0,
    },
    StreamSpec {
        name: "a1",
        format: Format::Plain,
        layout: Layout::App,
        rotation: Rotation::Logrotate,
        banner: true,
        rate: 20.0,
    },
    StreamSpec {
        name: "x0",
        format: Format::Plain,
        layout: Layout::Extra,
        rotation: Rotation::None,
        banner: false,
        rate: 5.0,
    },
];

/// Rotated files kept per stream (older ones are deleted by `prune`).
const KEEP_ROTATED: usize = 3;
/// The fingerprint window of the agent (`tail::identity::FINGERPRINT_BYTES`).
const FINGERPRINT_BYTES: usize = 256;

/// `(dev, ino, fingerprint)`: a file as the agent identifies it.
pub type Key = (u64, u64, u64);

/// What the agent knew when a phys left its globs or was truncated.
#[derive(Clone, Debug)]
pub struct Departure {
    pub agent_up: bool,
    /// The agent followed it (seen in `/api/v1/files` this run) or its
    /// persisted checkpoints name it.
    pub known: bool,
}

/// A phys deleted while the agent was down: what its checkpoint said then.
#[derive(Clone, Debug)]
pub struct Deletion {
    /// The acknowledged offset in the agent's persisted checkpoints.
    pub acked: u64,
}

/// A phys whose content was cut off by a truncation (copytruncate or a
/// rewrite in place): what the agent had read and acknowledged of it then.
#[derive(Clone, Debug)]
pub struct Truncation {
    pub agent_up: bool,
    pub read: u64,
    pub acked: u64,
    /// A copy kept the content (copytruncate), at `Phys::path`.
    pub copied: bool,
    /// The agent stopped or reloaded after the truncation (so lines it had
    /// read but not had acknowledged were gone with its memory).
    pub stopped_after: bool,
}

#[derive(Clone, Debug)]
pub struct Phys {
    pub dev: u64,
    pub ino: u64,
    /// Truncations of this inode before this content.
    pub generation: u32,
    /// Where its content is now (`None`: deleted or destroyed).
    pub path: Option<PathBuf>,
    /// Its content is gzip'd at `path`.
    pub gz: bool,
    /// Still matched by a source glob as itself (not moved out, not deleted).
    pub matched: bool,
    /// The live file its stream writes to.
    pub live: bool,
    /// logrotate index (`x.log.N`) once rotated.
    pub rot: Option<u32>,
    pub size: u64,
    /// First bytes, for the fingerprint.
    pub head: Vec<u8>,
    pub created: Duration,
    /// Matched by a glob at a moment a running agent could see it.
    pub observed: bool,
    pub departure: Option<Departure>,
    pub truncation: Option<Truncation>,
    /// Deleted while the agent was down (its lines past `acked` are gone
    /// before any agent could read them).
    pub deleted_while_down: Option<Deletion>,
    /// Created by a truncation or a re-creation that kept the identity
    /// (same inode, same first line): the agent's generation of that
    /// identity then. While the agent reports the same generation it has not
    /// noticed, and its offsets are about the content before.
    pub stale_generation: Option<u32>,
    /// Created within a reload to `read_from: end`.
    pub in_read_from_end_reload: bool,
    pub history: Vec<String>,
}

impl Phys {
    /// The agent's fingerprint of this content (`tail::identity`).
    pub fn fingerprint(&self) -> Option<u64> {
        let head = &self.head[..self.head.len().min(FINGERPRINT_BYTES)];
        match memchr::memchr(b'\n', head) {
            Some(nl) => Some(xxhash_rust::xxh3::xxh3_64(&head[..=nl])),
            None if head.len() == FINGERPRINT_BYTES => Some(xxhash_rust::xxh3::xxh3_64(head)),
            None => None,
        }
    }

    pub fn key(&self) -> Option<Key> {
        self.fingerprint().map(|fp| (self.dev, self.ino, fp))
    }

    fn note(&mut self, at: Duration, what: String) {
        self.history
            .push(format!("+{:.1}s {what}", at.as_secs_f64()));
    }
}

/// Where line `n` of a stream was written.
#[derive(Clone, Copy, Debug)]
pub struct LineLoc {
    pub phys: u32,
    pub start: u64,
    pub len: u32,
    /// Written as its file's banner (first) line.
    pub banner: bool,
}

pub struct Stream {
    pub idx: usize,
    pub spec: &'static StreamSpec,
    /// The path the writer writes to.
    pub path: PathBuf,
    file: Option<File>,
    pub lines: Vec<LineLoc>,
    pub phys: Vec<Phys>,
    pub current: usize,
    /// The writer thread pauses while set.
    pub paused: bool,
}

/// What the agent knows, as the schedule's agent controller sees it now.
pub trait AgentKnowledge {
    fn up(&self) -> bool;
    /// The agent follows this file now, or followed it in this run, or its
    /// persisted checkpoints name it.
    fn knows(&self, key: Key) -> bool;
    /// `(read, acked)` offsets of this file: from `/api/v1/files` when the
    /// agent runs, from its checkpoints when it does not.
    fn position(&self, key: Key) -> (u64, u64);
    /// The agent's generation of this file (same source as `position`).
    fn generation(&self, key: Key) -> Option<u32>;
    /// The stored head of that generation (`len`, `hash`: its first bytes as
    /// the agent read them), when its checkpoints say.
    fn head(&self, key: Key) -> Option<(u64, u64)>;
}

/// Same first line, other content (a banner): the stored head of the
/// generation the agent's checkpoint is about is not this content's first
/// bytes, so the checkpoint (its offsets, its knowing the file) is about
/// another content of the same inode.
fn other_content(phys: &Phys, key: Key, agent: &dyn AgentKnowledge) -> bool {
    agent.head(key).is_some_and(|(len, hash)| {
        usize::try_from(len).is_ok_and(|len| {
            phys.head.len() >= len
                && logship::tail::identity::head_hash_of(&phys.head[..len]) != hash
        })
    })
}

/// First bytes kept per phys: the agent's stored head covers up to this many.
const HEAD_BYTES: usize = logship::tail::identity::HEAD_BYTES as usize;

pub struct World {
    pub streams: Vec<Arc<Mutex<Stream>>>,
    pub t0: Instant,
    /// `t0` on the wall clock (the agent's log is in wall-clock time).
    pub t0_wall: std::time::SystemTime,
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<()>>,
}

impl World {
    /// Creates the directories and every stream's first file (with a few
    /// lines), and starts the writers.
    pub fn create(logs: &Path, seed: u64) -> World {
        for dir in ["containers", "pods", "host", "app", "extra"] {
            std::fs::create_dir_all(logs.join(dir)).expect("mkdir");
        }
        let t0 = Instant::now();
        let t0_wall = std::time::SystemTime::now();
        let mut streams = Vec::new();
        for (idx, spec) in STREAMS.iter().enumerate() {
            let path = match spec.layout {
                Layout::Pod => {
                    let dir = logs
                        .join("pods")
                        .join(format!("chaos_pod-{0}_0000-{0}", spec.name))
                        .join("app");
                    std::fs::create_dir_all(&dir).expect("mkdir pod dir");
                    let link = logs.join("containers").join(format!(
                        "pod-{0}_chaos_app-{1:016x}.log",
                        spec.name,
                        xxhash_rust::xxh3::xxh3_64(spec.name.as_bytes())
                    ));
                    let target = dir.join("0.log");
                    std::os::unix::fs::symlink(&target, &link).expect("symlink");
                    target
                }
                Layout::Host => logs.join("host").join(format!("{}.log", spec.name)),
                Layout::App => logs.join("app").join(format!("{}.log", spec.name)),
                Layout::Extra => logs.join("extra").join(format!("{}.log", spec.name)),
            };
            let mut stream = Stream {
                idx,
                spec,
                path,
                file: None,
                lines: Vec::new(),
                phys: Vec::new(),
                current: 0,
                paused: false,
            };
            stream.open_new(t0.elapsed(), "created");
            stream.write_lines(5);
            streams.push(Arc::new(Mutex::new(stream)));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers = streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.clone();
                let stop = stop.clone();
                let mut rng = fastrand::Rng::with_seed(seed ^ (0x9e37_79b9 * (i as u64 + 1)));
                std::thread::spawn(move || writer(&s, &stop, &mut rng))
            })
            .collect();
        World {
            streams,
            t0,
            t0_wall,
            stop,
            writers,
        }
    }

    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    pub fn lock(&self, i: usize) -> MutexGuard<'_, Stream> {
        self.streams[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the writers (after their current burst).
    pub fn stop_writers(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.writers.drain(..) {
            let _ = w.join();
        }
    }

    /// The agent runs now: every file its globs match can be seen by it.
    pub fn observe(&self) {
        for i in 0..self.streams.len() {
            for p in &mut self.lock(i).phys {
                if p.matched {
                    p.observed = true;
                }
            }
        }
    }

    pub fn lines_written(&self) -> u64 {
        (0..self.streams.len())
            .map(|i| self.lock(i).lines.len() as u64)
            .sum()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_writers();
    }
}

fn writer(stream: &Mutex<Stream>, stop: &AtomicBool, rng: &mut fastrand::Rng) {
    while !stop.load(Ordering::SeqCst) {
        let burst = rng.usize(1..=12);
        let rate = {
            let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
            if !s.paused {
                s.write_lines(burst);
            }
            s.spec.rate
        };
        let secs = burst as f64 / rate * (0.5 + rng.f64());
        std::thread::sleep(Duration::from_secs_f64(secs.min(2.0)));
    }
}

impl Stream {
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// Opens a new, empty file at `path` (the runtime reopening its log).
    fn open_new(&mut self, at: Duration, why: &str) {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path.display()));
        let meta = file.metadata().expect("fstat");
        let mut phys = Phys {
            dev: meta.dev(),
            ino: meta.ino(),
            generation: 0,
            path: Some(self.path.clone()),
            gz: false,
            matched: true,
            live: true,
            rot: None,
            size: meta.len(),
            head: Vec::new(),
            created: at,
            observed: false,
            departure: None,
            truncation: None,
            deleted_while_down: None,
            stale_generation: None,
            in_read_from_end_reload: false,
            history: Vec::new(),
        };
        phys.note(
            at,
            format!("{why}: {} (inode {})", self.short(&self.path), phys.ino),
        );
        self.file = Some(file);
        self.phys.push(phys);
        self.current = self.phys.len() - 1;
    }

    /// A path relative to the logs dir, for reports.
    pub fn short(&self, path: &Path) -> String {
        let s = path.display().to_string();
        match s.find("/logs/") {
            Some(i) => s[i + 6..].to_string(),
            None => s,
        }
    }

    /// Appends `n` lines to the live file in one write.
    pub fn write_lines(&mut self, n: usize) {
        let mut bytes = Vec::new();
        let mut locs = Vec::with_capacity(n);
        let cur = self.current;
        let mut offset = self.phys[cur].size;
        for _ in 0..n {
            let seq = self.lines.len() as u64 + locs.len() as u64;
            let banner = self.spec.banner && offset == 0;
            let line = line_bytes(self.idx, seq, banner);
            locs.push(LineLoc {
                phys: cur as u32,
                start: offset,
                len: line.len() as u32,
                banner,
            });
            offset += line.len() as u64;
            bytes.extend(line);
        }
        self.append_raw(&bytes);
        self.lines.extend(locs);
    }

    /// Writes bytes to the open file and records them in the current phys.
    fn append_raw(&mut self, bytes: &[u8]) {
        let file = self.file.as_mut().expect("stream file open");
        file.write_all(bytes)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.path.display()));
        let phys = &mut self.phys[self.current];
        if phys.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - phys.head.len()).min(bytes.len());
            phys.head.extend_from_slice(&bytes[..take]);
        }
        phys.size += bytes.len() as u64;
    }

    /// Rotated (not live) phys whose content still exists, oldest first.
    fn rotated(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.phys.len())
            .filter(|&i| !self.phys[i].live && self.phys[i].path.is_some())
            .collect();
        v.sort_by_key(|&i| self.phys[i].created);
        v
    }

    /// The agent's globs stop matching phys `i` (renamed out, deleted, or
    /// compressed): records what the agent knew then.
    fn depart(&mut self, i: usize, at: Duration, agent: &dyn AgentKnowledge, why: &str) {
        if !self.phys[i].matched {
            return;
        }
        self.phys[i].matched = false;
        let phys = &self.phys[i];
        let known = phys
            .key()
            .is_some_and(|k| agent.knows(k) && !other_content(phys, k, agent));
        let phys = &mut self.phys[i];
        phys.departure = Some(Departure {
            agent_up: agent.up(),
            known,
        });
        let state = match (agent.up(), known) {
            (true, true) => "agent up, following it",
            (true, false) => "agent up, NOT following it",
            (false, true) => "agent down, file in its checkpoints",
            (false, false) => "agent down, file NOT in its checkpoints",
        };
        phys.note(at, format!("{why}; leaves the globs ({state})"));
    }

    /// What the agent has read and acknowledged of phys `i`: `(0, 0)` if
    /// its offsets cannot be about this content (past its size, or from
    /// before a truncation or re-creation it has not noticed).
    fn agent_position(&self, i: usize, agent: &dyn AgentKnowledge) -> (u64, u64) {
        let phys = &self.phys[i];
        let Some(key) = phys.key() else {
            return (0, 0);
        };
        let (read, acked) = agent.position(key);
        let stale =
            phys.stale_generation.is_some() && agent.generation(key) == phys.stale_generation;
        if stale || other_content(phys, key, agent) || read > phys.size {
            (0, 0)
        } else {
            (read, acked)
        }
    }

    /// Phys `i` was deleted: if the agent is down, what it had acknowledged.
    fn deleted(&mut self, i: usize, agent: &dyn AgentKnowledge) {
        if !agent.up() {
            let acked = self.agent_position(i, agent).1;
            self.phys[i].deleted_while_down = Some(Deletion { acked });
        }
    }

    /// The agent process stopped: files deleted while it held them are out
    /// of reach of the next one; what it had acknowledged of them is what
    /// `agent` (its checkpoints) says.
    pub fn agent_stopped(&mut self, agent: &dyn AgentKnowledge) {
        for i in 0..self.phys.len() {
            if self.phys[i].path.is_none()
                && self.phys[i].truncation.is_none()
                && self.phys[i].deleted_while_down.is_none()
            {
                self.deleted(i, agent);
            }
        }
    }

    /// Rotates the live file the stream's way. Returns a description, or
    /// `None` if the stream does not rotate.
    pub fn rotate(
        &mut self,
        at: Duration,
        agent: &dyn AgentKnowledge,
        late_lines: usize,
    ) -> Option<String> {
        match self.spec.rotation {
            Rotation::Kubelet => {
                let rotated = crate::support::logship::rotate_kubelet(&self.path);
                let cur = self.current;
                self.phys[cur].path = Some(rotated.clone());
                self.phys[cur].live = false;
                let msg = format!("kubelet rename → {}", self.short(&rotated));
                self.depart(cur, at, agent, &msg);
                // The runtime writes on to the old file until it reopens.
                self.write_lines(late_lines);
                if late_lines > 0 {
                    self.phys[cur].note(at, format!("{late_lines} lines written after the rename"));
                }
                self.open_new(at, "reopened after rotation");
                Some(msg)
            }
            Rotation::Logrotate => {
                self.shift(at);
                let cur = self.current;
                let to = self.rot_path(1, false);
                std::fs::rename(&self.path, &to).expect("logrotate rename");
                let phys = &mut self.phys[cur];
                phys.path = Some(to.clone());
                phys.live = false;
                phys.rot = Some(1);
                let msg = format!("logrotate rename → {}", self.short(&to));
                if self.spec.layout == Layout::App {
                    self.phys[cur].note(at, format!("{msg} (still matched by the glob)"));
                } else {
                    self.depart(cur, at, agent, &msg);
                }
                self.write_lines(late_lines);
                self.open_new(at, "reopened after rotation");
                Some(msg)
            }
            Rotation::CopyTruncate => Some(self.copytruncate(at, agent)),
            Rotation::None => None,
        }
    }

    fn rot_path(&self, n: u32, gz: bool) -> PathBuf {
        let p = format!("{}.{n}", self.path.display());
        PathBuf::from(if gz { format!("{p}.gz") } else { p })
    }

    /// logrotate: `x.log.N[.gz]` → `x.log.N+1[.gz]`, highest first.
    fn shift(&mut self, at: Duration) {
        let mut rotated: Vec<usize> = self.rotated();
        rotated.sort_by_key(|&i| std::cmp::Reverse(self.phys[i].rot));
        for i in rotated {
            let Some(n) = self.phys[i].rot else { continue };
            let gz = self.phys[i].gz;
            let to = self.rot_path(n + 1, gz);
            let from = self.phys[i].path.clone().expect("rotated path");
            std::fs::rename(&from, &to).expect("logrotate shift");
            let short = self.short(&to);
            let phys = &mut self.phys[i];
            phys.rot = Some(n + 1);
            phys.path = Some(to);
            phys.note(at, format!("shifted → {short}"));
        }
    }

    /// logrotate's copytruncate: shift, copy `x.log` to `x.log.1`, truncate
    /// `x.log` in place; the writer goes on through its `O_APPEND` fd.
    pub fn copytruncate(&mut self, at: Duration, agent: &dyn AgentKnowledge) -> String {
        self.shift(at);
        let copy = self.rot_path(1, false);
        std::fs::copy(&self.path, &copy).expect("copytruncate copy");
        self.truncate_in_place(at, agent, Some(copy.clone()), "copytruncate");
        format!("copytruncate → {}", self.short(&copy))
    }

    /// The application rewrites its log from the start (`O_TRUNC`), same
    /// inode; what was in it is gone.
    pub fn rewrite_in_place(&mut self, at: Duration, agent: &dyn AgentKnowledge) -> String {
        self.truncate_in_place(at, agent, None, "rewritten in place (O_TRUNC)");
        format!("rewrite in place {}", self.short(&self.path))
    }

    fn truncate_in_place(
        &mut self,
        at: Duration,
        agent: &dyn AgentKnowledge,
        copy: Option<PathBuf>,
        why: &str,
    ) {
        let cur = self.current;
        let (read, acked) = self.agent_position(cur, agent);
        let stale = self.phys[cur].key().and_then(|k| agent.generation(k));
        self.file
            .as_ref()
            .expect("stream file open")
            .set_len(0)
            .expect("truncate");
        let old = &mut self.phys[cur];
        old.truncation = Some(Truncation {
            agent_up: agent.up(),
            read,
            acked,
            copied: copy.is_some(),
            stopped_after: false,
        });
        old.live = false;
        old.matched = false;
        old.rot = copy.as_ref().map(|_| 1);
        let size = old.size;
        let generation = old.generation;
        let desc = match &copy {
            Some(c) => format!("{why}; content kept in {}", self.short(c)),
            None => format!("{why}; content destroyed"),
        };
        let old = &mut self.phys[cur];
        old.path = copy;
        old.note(
            at,
            format!(
                "{desc} at size {size}; agent {} had read {read}, acked {acked}",
                if agent.up() {
                    "(up)"
                } else {
                    "(down, checkpoint)"
                }
            ),
        );
        let mut next = old.clone();
        next.generation = generation + 1;
        next.path = Some(self.path.clone());
        next.gz = false;
        next.matched = true;
        next.live = true;
        next.rot = None;
        next.size = 0;
        next.head = Vec::new();
        next.created = at;
        next.observed = false;
        next.departure = None;
        next.truncation = None;
        next.deleted_while_down = None;
        next.stale_generation = None;
        next.in_read_from_end_reload = false;
        next.history = Vec::new();
        next.note(
            at,
            format!("same inode after {why}: {}", self.short(&self.path)),
        );
        next.stale_generation = stale;
        self.phys.push(next);
        self.current = self.phys.len() - 1;
    }

    /// The application restarts with a new file at the same path (delete,
    /// create): the new file's first line is the same banner, and its
    /// inode may be the one just freed.
    pub fn recreate(&mut self, at: Duration, agent: &dyn AgentKnowledge) -> String {
        let cur = self.current;
        std::fs::remove_file(&self.path).expect("delete live file");
        self.phys[cur].path = None;
        self.phys[cur].live = false;
        self.deleted(cur, agent);
        self.depart(cur, at, agent, "deleted (application restart)");
        self.file = None;
        let old_generation = self.phys[cur].key().and_then(|k| agent.generation(k));
        self.open_new(at, "recreated (application restart)");
        let ino = self.phys[self.current].ino;
        let reused = self.phys[cur].ino == ino;
        if reused && self.spec.banner {
            // Same inode, same first line: the agent's identity of the old file.
            let new = self.current;
            self.phys[new].stale_generation = old_generation;
        }
        format!(
            "recreate {}{}",
            self.short(&self.path),
            if reused { " (inode reused)" } else { "" }
        )
    }

    /// Deletes rotated files beyond [`KEEP_ROTATED`], oldest first.
    pub fn prune(&mut self, at: Duration, agent: &dyn AgentKnowledge) -> Vec<String> {
        let rotated = self.rotated();
        let excess = rotated.len().saturating_sub(KEEP_ROTATED);
        let mut done = Vec::new();
        for &i in &rotated[..excess] {
            let path = self.phys[i].path.clone().expect("rotated path");
            std::fs::remove_file(&path).expect("delete rotated file");
            let short = self.short(&path);
            self.phys[i].path = None;
            self.deleted(i, agent);
            if self.phys[i].matched {
                self.depart(i, at, agent, &format!("deleted {short}"));
            } else {
                let state = if agent.up() { "agent up" } else { "agent down" };
                self.phys[i].note(at, format!("deleted {short} ({state})"));
            }
            done.push(short);
        }
        done
    }

    /// gzips rotated files other than the newest (kubelet and logrotate's
    /// `delaycompress`): writes `<name>.gz`, deletes the original.
    pub fn compress(&mut self, at: Duration, agent: &dyn AgentKnowledge) -> Vec<String> {
        let rotated = self.rotated();
        let mut done = Vec::new();
        let Some((_, older)) = rotated.split_last() else {
            return done;
        };
        for &i in older {
            if self.phys[i].gz {
                continue;
            }
            let from = self.phys[i].path.clone().expect("rotated path");
            let to = PathBuf::from(format!("{}.gz", from.display()));
            // Written beside it under a name no glob matches (`app/*.log*`
            // matched `<name>.gz.tmp`: the agent rightly shipped the gzip
            // bytes being written as lines, long seed 8008), then renamed
            // into place, so the `.gz` appears whole (logrotate's gzip writes
            // the `.gz` in place: reading one half-written is not tried here).
            let tmp = from
                .parent()
                .expect("rotated file's directory")
                .join(format!(".compressing-{i}.tmp"));
            let content = std::fs::read(&from).expect("read rotated file");
            let mut gz = flate2::write::GzEncoder::new(
                File::create(&tmp).expect("create gz"),
                flate2::Compression::fast(),
            );
            gz.write_all(&content).expect("gzip");
            gz.finish().expect("gzip finish");
            std::fs::rename(&tmp, &to).expect("rename gz");
            std::fs::remove_file(&from).expect("delete compressed original");
            let short = self.short(&to);
            self.phys[i].path = Some(to);
            self.phys[i].gz = true;
            if self.phys[i].matched {
                self.depart(i, at, agent, &format!("compressed → {short}"));
            } else {
                let state = if agent.up() { "agent up" } else { "agent down" };
                self.phys[i].note(
                    at,
                    format!("compressed → {short}, original deleted ({state})"),
                );
            }
            done.push(short);
        }
        done
    }

    /// The live phys, for reload bookkeeping.
    pub fn current_phys(&mut self) -> &mut Phys {
        &mut self.phys[self.current]
    }

    /// Whether the bytes of line `n` are still on disk where the model says
    /// they are (reading through gzip), and a description.
    pub fn on_disk(&self, n: u64) -> (bool, String) {
        let loc = self.lines[n as usize];
        let phys = &self.phys[loc.phys as usize];
        let Some(path) = &phys.path else {
            return (false, "its file no longer exists".to_string());
        };
        let content = match std::fs::read(path) {
            Ok(c) => c,
            Err(e) => return (false, format!("{}: {e}", self.short(path))),
        };
        let content = if phys.gz {
            let mut out = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&content[..]),
                &mut out,
            ) {
                return (false, format!("{}: gunzip: {e}", self.short(path)));
            }
            out
        } else {
            content
        };
        let (start, end) = (loc.start as usize, loc.start as usize + loc.len as usize);
        let token = seq_token(self.spec.name, n);
        let ok = content
            .get(start..end)
            .is_some_and(|b| memchr::memmem::find(b, token.as_bytes()).is_some());
        let what = if ok {
            "on disk"
        } else {
            "NOT at its recorded place"
        };
        (
            ok,
            format!(
                "{what}: {}{} bytes {start}..{end}",
                self.short(path),
                if phys.gz { " (gzip'd)" } else { "" }
            ),
        )
    }
}

// ---------------------------------------------------------------------------
// Lines

/// `seq=<stream>-<n>`, the marker that identifies a line.
pub fn seq_token(stream: &str, n: u64) -> String {
    format!("seq={stream}-{n:07}")
}

/// Parses the marker out of a message: (stream name, n).
pub fn parse_seq(message: &str) -> Option<(&str, u64)> {
    let at = message.find("seq=")?;
    let rest = &message[at + 4..];
    let token = rest.split(|c: char| c.is_whitespace()).next()?;
    let (stream, n) = token.rsplit_once('-')?;
    if n.len() != 7 {
        return None;
    }
    Some((stream, n.parse().ok()?))
}

/// The start banner of banner streams: longer than the fingerprint window,
/// so every file of theirs has the same identity but for its inode.
const BANNER: &str = "application starting: version 1.2.3, build 4567, config /etc/app/app.yaml loaded, \
listening on 0.0.0.0:8080, metrics on 0.0.0.0:9090, workers 8, queue 1024, cache 256 MiB, \
feature flags: a=on b=off c=on d=off e=on, tracing off, log level info, pid file /run/app.pid ok";

const WORDS: &[&str] = &[
    "request", "handled", "user", "id", "status", "ok", "latency", "ms", "cache", "miss",
    "upstream", "retry", "queue", "depth", "worker", "db", "query", "rows", "GET", "POST",
];

/// Line `n` of stream `stream`'s message (without framing).
pub fn message(stream: usize, n: u64, banner: bool) -> String {
    let name = STREAMS[stream].name;
    let token = seq_token(name, n);
    if banner {
        return format!("{BANNER} {token}");
    }
    let mut rng = fastrand::Rng::with_seed(line_seed(stream, n));
    let long = rng.u32(0..50) == 0;
    let mut m = token;
    m.push(' ');
    if long {
        let len = match STREAMS[stream].format {
            Format::CriO => rng.usize(8_500..30_000),
            Format::Plain => rng.usize(2_000..20_000),
            _ => rng.usize(16_500..40_000),
        };
        while m.len() < len {
            m.push_str(WORDS[rng.usize(0..WORDS.len())]);
            m.push(if rng.u8(0..10) == 0 { '=' } else { ' ' });
        }
        m.truncate(len);
    } else {
        for _ in 0..rng.usize(3..30) {
            m.push_str(WORDS[rng.usize(0..WORDS.len())]);
            m.push(' ');
        }
        if rng.u8(0..16) == 0 {
            m.push_str("héllo wörld 日本語 🚀");
        } else {
            m.push_str("end");
        }
    }
    m
}

fn line_seed(stream: usize, n: u64) -> u64 {
    (stream as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n.wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Line `n`'s `stream` field for CRI and docker streams.
pub fn stdio(n: u64) -> &'static str {
    if n.is_multiple_of(7) {
        "stderr"
    } else {
        "stdout"
    }
}

/// Line `n`'s timestamp as the runtime writes it (CRI: `Z`, `+02:00` or
/// `-05:00`, 0–9 fraction digits; docker: `Z`, nanoseconds).
pub fn timestamp(stream: usize, n: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(line_seed(stream, n) ^ 0x5555);
    let base = 1_795_654_800i64 + stream as i64 * 3600; // 2026-11-26T01:00:00Z
    let total_ms = n * 10;
    let nanos = ((total_ms % 1000) * 1_000_000 + rng.u64(0..1_000_000)) as u32;
    let utc = chrono::DateTime::from_timestamp(base + (total_ms / 1000) as i64, nanos)
        .expect("valid time");
    let (digits, offset) = if STREAMS[stream].format == Format::Docker {
        (9, 0)
    } else {
        (
            [9usize, 6, 3, 0, 7][rng.usize(0..5)],
            [0i32, 0, 2 * 3600, -5 * 3600][rng.usize(0..4)],
        )
    };
    let zone = chrono::FixedOffset::east_opt(offset).expect("offset");
    let local = utc.with_timezone(&zone);
    let whole = local.format("%Y-%m-%dT%H:%M:%S").to_string();
    let frac = if digits == 0 {
        String::new()
    } else {
        format!(".{}", &format!("{nanos:09}")[..digits])
    };
    let z = if offset == 0 {
        "Z".to_string()
    } else {
        local.format("%:z").to_string()
    };
    format!("{whole}{frac}{z}")
}

/// The bytes of line `n` as its runtime writes them (partials included).
pub fn line_bytes(stream: usize, n: u64, banner: bool) -> Vec<u8> {
    let msg = message(stream, n, banner);
    match STREAMS[stream].format {
        Format::Plain => {
            let mut b = msg.into_bytes();
            b.push(b'\n');
            b
        }
        Format::Containerd | Format::CriO => {
            let part = if STREAMS[stream].format == Format::CriO {
                8 * 1024
            } else {
                16 * 1024
            };
            let ts = timestamp(stream, n);
            let mut out = Vec::new();
            let mut rest = msg.as_bytes();
            while rest.len() > part {
                out.extend(cri_line(&ts, stdio(n), "P", &rest[..part]));
                rest = &rest[part..];
            }
            out.extend(cri_line(&ts, stdio(n), "F", rest));
            out
        }
        Format::Docker => {
            let ts = timestamp(stream, n);
            let mut out = Vec::new();
            let mut rest = msg.as_str();
            while rest.len() > 16 * 1024 {
                let (a, b) = rest.split_at(16 * 1024);
                out.extend(docker_line(&ts, stdio(n), a));
                rest = b;
            }
            out.extend(docker_line(&ts, stdio(n), &format!("{rest}\n")));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_back_and_lines_are_deterministic() {
        for (i, s) in STREAMS.iter().enumerate() {
            for n in [0u64, 1, 49, 1234, 99_999] {
                for banner in [false, true] {
                    let m = message(i, n, banner);
                    assert_eq!(parse_seq(&m), Some((s.name, n)), "{m}");
                    assert_eq!(line_bytes(i, n, banner), line_bytes(i, n, banner));
                }
                let ts = timestamp(i, n);
                assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok(), "{ts}");
            }
        }
        assert_eq!(parse_seq("no marker"), None);
        assert_eq!(parse_seq("seq=c0-12"), None);
    }

    #[test]
    fn banner_files_share_a_fingerprint() {
        let a = message(6, 1, true);
        let b = message(6, 2, true);
        assert_ne!(a, b);
        assert!(a.len() > FINGERPRINT_BYTES && a[..FINGERPRINT_BYTES] == b[..FINGERPRINT_BYTES]);
    }
}
