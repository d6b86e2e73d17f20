//! The agent under test: its config and its process.
//!
//! The config is the DaemonSet's (`deploy/kubernetes/configmap.yaml`) minus
//! the API server (no `kubernetes:` section: enrichment is off) and the HTTP
//! endpoint: one source on `containers/*.log` with `format: cri` and
//! `read_from: beginning`, `gzip: 1`, the default batch settings unless the
//! bench sets `batch.timeout`, and `log.level: warn`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Buffer;
use super::measure::ProcSample;

/// The binary Cargo built for this target.
pub const LOGSHIP_BIN: &str = env!("CARGO_BIN_EXE_logship");

/// What goes into one run's config.
pub struct AgentConfig<'a> {
    /// The run's directory: `logship.yaml`, `data/`, `logship.log` go here.
    pub work: &'a Path,
    /// Glob of the files to follow.
    pub include: String,
    pub url: String,
    pub concurrency: u64,
    pub buffer: Buffer,
    pub batch_timeout: Option<Duration>,
}

/// `LOGSHIP_BENCH_PROCESSORS=typical`: a drop by regex (no line of the
/// corpora matches it, so every line pays for the regex and is still
/// accounted), a dissect of access lines (the others fail it, counted, not
/// tagged) and two static fields, for every source.
const TYPICAL_PROCESSORS: &str = r#"processors:
  - drop: {when: {regex: {message: '"GET /healthz'}}}
  - parse:
      dissect: '%{client} - - [%{time}] "%{method} %{path} %{?protocol}" %{status} %{bytes} %{?rest}'
      target: http
      on_failure: keep
  - add_fields: {fields: {cluster: bench-1, env: prod}}
"#;

impl AgentConfig<'_> {
    pub fn data_dir(&self) -> PathBuf {
        self.work.join("data")
    }

    /// Writes `logship.yaml` into the work dir and returns its path.
    pub fn write(&self) -> PathBuf {
        let batch = match self.batch_timeout {
            Some(t) => format!("    batch: {{timeout: {}ms}}\n", t.as_millis()),
            None => String::new(),
        };
        let buffer = match self.buffer {
            Buffer::Memory => "",
            Buffer::Disk => "buffer: {type: disk, max_bytes: 16GiB, fsync_interval: 1s}\n",
        };
        let processors = if std::env::var("LOGSHIP_BENCH_PROCESSORS").as_deref() == Ok("typical") {
            TYPICAL_PROCESSORS
        } else {
            ""
        };
        let yaml = format!(
            "node_name: bench-node\n\
             data_dir: {data}\n\
             log: {{level: warn}}\n\
             sources:\n  \
               - name: containers\n    \
                 include: [\"{include}\"]\n    \
                 format: cri\n    \
                 read_from: beginning\n\
             sink:\n  \
               elasticsearch:\n    \
                 hosts: [\"{url}\"]\n    \
                 index: \"logs-%Y.%m.%d\"\n    \
                 compression: {{gzip: 1}}\n    \
                 concurrency: {concurrency}\n\
             {batch}{buffer}{processors}",
            data = self.data_dir().display(),
            include = self.include,
            url = self.url,
            concurrency = self.concurrency,
        );
        let path = self.work.join("logship.yaml");
        std::fs::write(&path, yaml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// The batch timeout in effect, for the report.
    pub fn batch_timeout_shown(&self) -> String {
        match self.batch_timeout {
            Some(t) => format!("{}ms", t.as_millis()),
            None => "1s (the default)".into(),
        }
    }
}

/// A running `logship run --config …`; SIGKILLed when dropped, and by the
/// kernel if the thread that started it dies (`PR_SET_PDEATHSIG`).
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
    started: Instant,
}

impl Agent {
    /// Starts the agent on `config`; its stdout and stderr go to
    /// `logship.log` next to the config.
    pub fn start(config: &Path) -> Agent {
        let log = config.with_file_name("logship.log");
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let mut command = Command::new(LOGSHIP_BIN);
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log file"))
            .stderr(out);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {LOGSHIP_BIN}: {e}"));
        Agent {
            child: Some(child),
            log,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// Time since the start.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its counters now (the last ones if it has just exited: zeroes).
    pub fn sample(&self) -> ProcSample {
        ProcSample::of(self.pid()).unwrap_or_default()
    }

    /// Panics, with its log, if the agent has exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("agent running");
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            panic!("logship exited ({status}):\n{}", tail(&self.log, 40));
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 60 s).
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let asked = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for logship") {
                return status;
            }
            if asked.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                return child.wait().expect("wait for logship");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
