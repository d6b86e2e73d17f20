//! Running the real `logship` binary against files in a temp dir, and
//! writing log files the way container runtimes and kubelet do.
//!
//! A [`Setup`] is one scenario's world: a temp dir with `logs/` (the files
//! the agent follows) and `data/` (its `data_dir`), and the YAML config that
//! points the agent there and at an Elasticsearch. [`Agent`] is one running
//! agent process for a setup: its stderr goes to a file (appended across
//! restarts, shown when a test fails), and it is killed with SIGKILL when
//! dropped, and also if this test process dies (`PR_SET_PDEATHSIG`).
//!
//! The writers produce exactly the bytes runtimes write: CRI lines
//! (`<RFC3339Nano> <stream> <P|F> <content>\n`), docker `json-file` lines
//! (`{"log":"…","stream":"…","time":"…"}\n`), and the kubelet's rotation
//! (rename `0.log` → `0.log.<YYYYmmdd-HHMMSS>`, create a new `0.log`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of the agent binary Cargo built for these tests.
pub const LOGSHIP_BIN: &str = env!("CARGO_BIN_EXE_logship");

/// What goes into the agent's config besides paths and the ES URL.
#[derive(Clone, Debug)]
pub struct Options {
    /// `format:` of the one source (`auto`, `cri`, `docker`, `plain`).
    pub format: &'static str,
    /// Glob relative to `logs/` (default `*.log`).
    pub include: &'static str,
    pub max_line_bytes: usize,
    pub batch_max_events: usize,
    /// `batch.timeout`, humantime (`200ms`).
    pub batch_timeout: &'static str,
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            format: "auto",
            include: "*.log",
            max_line_bytes: 1024 * 1024,
            batch_max_events: 500,
            batch_timeout: "200ms",
            concurrency: 2,
        }
    }
}

/// One scenario's directories and config.
pub struct Setup {
    root: tempfile::TempDir,
    /// Index name template written to the config, e.g. `e2e-cri-%Y.%m.%d`.
    pub index_template: String,
    /// A pattern matching every index the template can produce (`e2e-cri-*`).
    pub index_pattern: String,
    pub es_url: String,
    pub options: Options,
}

impl Setup {
    /// A fresh world for test `name` (lowercase letters, digits, `-`),
    /// shipping to `es_url` into indices `e2e-<name>-%Y.%m.%d`.
    pub fn new(name: &str, es_url: &str, options: Options) -> Setup {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "test name {name:?} must be a valid index name part"
        );
        let root = tempfile::Builder::new()
            .prefix(&format!("logship-e2e-{name}-"))
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(root.path().join("logs")).expect("mkdir logs");
        std::fs::create_dir(root.path().join("data")).expect("mkdir data");
        let setup = Setup {
            root,
            index_template: format!("e2e-{name}-%Y.%m.%d"),
            index_pattern: format!("e2e-{name}-*"),
            es_url: es_url.to_string(),
            options,
        };
        std::fs::write(setup.config_path(), setup.config_yaml()).expect("write config");
        setup
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
    /// The directory the agent follows.
    pub fn logs(&self) -> PathBuf {
        self.root.path().join("logs")
    }
    /// A file in [`logs`](Self::logs).
    pub fn log(&self, file: &str) -> PathBuf {
        self.logs().join(file)
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.path().join("logship.yaml")
    }
    pub fn stderr_path(&self) -> PathBuf {
        self.root.path().join("logship.stderr")
    }

    /// The YAML config, in the shape of the reference (docs/configuration.md).
    pub fn config_yaml(&self) -> String {
        let o = &self.options;
        format!(
            r#"node_name: e2e-node
data_dir: {data}
sources:
  - name: e2e
    include: ["{include}"]
    format: {format}
    read_from: beginning
    max_line_bytes: {max_line_bytes}
sink:
  elasticsearch:
    hosts: ["{url}"]
    index: "{index}"
    batch: {{max_bytes: 1048576, max_events: {max_events}, timeout: {timeout}}}
    compression: {{gzip: 1}}
    concurrency: {concurrency}
"#,
            data = self.data_dir().display(),
            include = self.logs().join(o.include).display(),
            format = o.format,
            max_line_bytes = o.max_line_bytes,
            url = self.es_url,
            index = self.index_template,
            max_events = o.batch_max_events,
            timeout = o.batch_timeout,
            concurrency = o.concurrency,
        )
    }

    /// Starts an agent on this setup.
    pub fn start(&self) -> Agent {
        Agent::start(self)
    }
}

/// A running `logship run --config …` process.
pub struct Agent {
    config: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Agent {
    fn start(setup: &Setup) -> Agent {
        let mut agent = Agent {
            config: setup.config_path(),
            stderr: setup.stderr_path(),
            child: None,
            starts: 0,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        self.starts += 1;
        let mut stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .expect("open agent stderr file");
        writeln!(stderr, "===== logship start #{} =====", self.starts).expect("write stderr file");
        let mut command = Command::new(LOGSHIP_BIN);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup stderr file"))
            .stderr(stderr);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                // SIGKILL the agent if the thread that spawned it (a test) dies.
                if prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {LOGSHIP_BIN}: {e}")),
        );
    }

    /// Process id of the running agent.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent not running").id()
    }

    /// `None` while running; the exit status once it has exited on its own.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait().expect("try_wait agent") {
            Some(status) => {
                self.child = None;
                Some(status)
            }
            None => None,
        }
    }

    /// Panics (with the agent's stderr) if the agent has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit_status() {
            panic!(
                "logship exited unexpectedly ({status}):\n{}",
                self.stderr_tail(60)
            );
        }
    }

    /// SIGHUP (re-read the config), without waiting.
    pub fn sighup(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { kill(self.pid() as i32, SIGHUP) };
        assert_eq!(rc, 0, "kill(SIGHUP) failed");
    }

    /// SIGKILL, and reap it.
    pub fn kill_9(&mut self) {
        let mut child = self.child.take().expect("agent not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for the exit; SIGKILL and panic if
    /// it does not exit in time.
    pub fn sigterm(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("agent not running");
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { kill(child.id() as i32, SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait agent") {
                return status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "logship did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.stderr_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the agent again with the same config and data dir (after
    /// [`kill_9`](Self::kill_9) or [`sigterm`](Self::sigterm)).
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// The last `n` lines the agent wrote to stderr (all runs).
    pub fn stderr_tail(&self, n: usize) -> String {
        super::elasticsearch::tail(&self.stderr, n)
    }

    /// Pids of this agent's child processes whose command name is `comm`
    /// (`/proc/<pid>/task/*/children`), e.g. its journalctl readers.
    pub fn children_named(&self, comm: &str) -> Vec<u32> {
        let mut pids = Vec::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return pids;
        };
        for task in tasks.filter_map(|t| t.ok()) {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for pid in children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if name.trim() == comm {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Paths this agent holds open that were deleted (`/proc/<pid>/fd`).
    pub fn open_deleted_files(&self) -> Vec<String> {
        let dir = format!("/proc/{}/fd", self.pid());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| p.ends_with(" (deleted)"))
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const PR_SET_PDEATHSIG: std::ffi::c_int = 1;
const SIGKILL: std::ffi::c_int = 9;
const SIGTERM: std::ffi::c_int = 15;
const SIGHUP: std::ffi::c_int = 1;

unsafe extern "C" {
    fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
    fn kill(pid: i32, sig: std::ffi::c_int) -> std::ffi::c_int;
}

// ---------------------------------------------------------------------------
// Log lines and files

/// A timestamp for line `seq`: 2026-11-26 from 01:00:00 on, one millisecond
/// per line plus `seq`-dependent nanoseconds, with a fraction length that
/// varies with `seq` (9, 6, 3 or 0 digits) the way runtimes differ.
pub fn timestamp(seq: u64) -> String {
    let base = 1_795_654_800i64; // 2026-11-26T01:00:00Z
    let secs = base + (seq / 1000) as i64;
    let nanos = ((seq % 1000) * 1_000_000 + (seq * 7919) % 1_000_000) as u32;
    let digits = [9usize, 6, 3, 0][(seq % 4) as usize];
    let time = chrono::DateTime::from_timestamp(secs, nanos).expect("valid time");
    let whole = time.format("%Y-%m-%dT%H:%M:%S").to_string();
    if digits == 0 {
        format!("{whole}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{whole}.{}Z", &frac[..digits])
    }
}

/// One CRI line: `<time> <stream> <tag> <content>\n`.
pub fn cri_line(time: &str, stream: &str, tag: &str, content: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(content.len() + 48);
    line.extend_from_slice(time.as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream.as_bytes());
    line.push(b' ');
    line.extend_from_slice(tag.as_bytes());
    line.push(b' ');
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// A CRI log entry split the containerd way: `P` lines of `part` bytes each,
/// then an `F` line with the rest, every part with the same timestamp.
/// `part` must not split a UTF-8 character when `content` is text you compare.
pub fn cri_split(time: &str, stream: &str, content: &[u8], part: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = content;
    while rest.len() > part {
        out.extend(cri_line(time, stream, "P", &rest[..part]));
        rest = &rest[part..];
    }
    out.extend(cri_line(time, stream, "F", rest));
    out
}

/// One docker `json-file` line. `log` is the chunk as the container wrote it
/// (with its trailing `\n` when the chunk ends a line).
pub fn docker_line(time: &str, stream: &str, log: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({
        "log": log,
        "stream": stream,
        "time": time,
    }))
    .expect("serialise docker line");
    line.push(b'\n');
    line
}

/// Appends `bytes` to `path` (creating it) and flushes.
pub fn append(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(bytes)
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Kubelet rotation: renames `path` to `path.<YYYYmmdd-HHMMSS>` (plus a
/// counter if that exists) and returns the new name. The caller creates the
/// new file by writing to `path` again (as the runtime does on reopen).
pub fn rotate_kubelet(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let mut rotated = PathBuf::from(format!("{}.{stamp}", path.display()));
    let mut n = 1;
    while rotated.exists() {
        rotated = PathBuf::from(format!("{}.{stamp}-{n}", path.display()));
        n += 1;
    }
    std::fs::rename(path, &rotated)
        .unwrap_or_else(|e| panic!("rename {} → {}: {e}", path.display(), rotated.display()));
    rotated
}

/// logrotate's `copytruncate`: copies `path` to `copy`, then truncates `path`
/// to zero length in place (same inode).
pub fn copytruncate(path: &Path, copy: &Path) {
    std::fs::copy(path, copy)
        .unwrap_or_else(|e| panic!("copy {} → {}: {e}", path.display(), copy.display()));
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.set_len(0)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

/// An open file a test writes to over time (a container's stdout).
pub struct LogWriter {
    pub path: PathBuf,
    file: File,
}

impl LogWriter {
    /// Opens `path` for appending, creating it.
    pub fn create(path: &Path) -> LogWriter {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        LogWriter {
            path: path.to_path_buf(),
            file,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.file
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.path.display()));
    }
}
