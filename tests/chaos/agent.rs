//! The agent under the schedule: its config, start, `kill -9`, SIGTERM,
//! SIGHUP, and what it reports while it runs.
//!
//! A poller thread reads `/metrics` and `/api/v1/files` every
//! [`POLL_EVERY`] while the agent runs. From `/metrics` it keeps the last
//! value of every counter series whose name contains `lost` or `dropped`,
//! per agent process (counters start at 0 in each process; they survive
//! reloads), and the controller scrapes once more right before each kill,
//! under the same lock, so a loss the agent counted is not missed. From
//! `/api/v1/files` it keeps every file identity the agent followed in this
//! process. After each stop the controller reads `checkpoints.json`: what
//! the next process will know.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::agent_http::get;
use crate::support::logship::{Agent, Setup};
use crate::world::{AgentKnowledge, Key};

pub const POLL_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    Memory,
    Disk,
}

impl Buffer {
    pub fn name(self) -> &'static str {
        match self {
            Buffer::Memory => "memory",
            Buffer::Disk => "disk",
        }
    }
}

/// What a reload may change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub buffer: Buffer,
    pub read_from_end: bool,
    pub extra_source: bool,
    pub batch_events: usize,
}

impl AgentConfig {
    pub fn base(buffer: Buffer) -> AgentConfig {
        AgentConfig {
            buffer,
            read_from_end: false,
            extra_source: true,
            batch_events: 500,
        }
    }

    fn yaml(&self, setup: &Setup, port: u16, es_url: &str) -> String {
        let logs = setup.logs();
        let read_from = if self.read_from_end {
            "end"
        } else {
            "beginning"
        };
        let mut sources = vec![
            ("containers", logs.join("containers/*.log"), "auto"),
            ("host", logs.join("host/*.log"), "plain"),
            ("app", logs.join("app/*.log*"), "plain"),
        ];
        if self.extra_source {
            sources.push(("extra", logs.join("extra/*.log"), "plain"));
        }
        let mut yaml = format!(
            "node_name: chaos-node\ndata_dir: {}\nshutdown_timeout: 5s\n\
             http: {{listen: \"127.0.0.1:{port}\"}}\nsources:\n",
            setup.data_dir().display()
        );
        for (name, include, format) in sources {
            yaml.push_str(&format!(
                "  - name: {name}\n    include: [\"{}\"]\n    format: {format}\n    read_from: {read_from}\n",
                include.display()
            ));
        }
        yaml.push_str(&format!(
            "sink:\n  elasticsearch:\n    hosts: [\"{es_url}\"]\n    index: \"{}\"\n    \
             batch: {{max_bytes: 1MiB, max_events: {}, timeout: 200ms}}\n    concurrency: 2\n    \
             request_timeout: 10s\n    retry: {{initial_backoff: 50ms, max_backoff: 1s}}\n",
            setup.index_template, self.batch_events
        ));
        yaml.push_str(match self.buffer {
            Buffer::Memory => "buffer: {type: memory}\n",
            Buffer::Disk => "buffer: {type: disk, max_bytes: 512MiB, fsync_interval: 100ms}\n",
        });
        yaml
    }
}

/// One followed file as `/api/v1/files` reports it.
#[derive(Clone, Debug)]
pub struct FileReport {
    pub path: String,
    pub generation: u32,
    pub read: u64,
    pub acked: u64,
}

#[derive(Default)]
struct PollState {
    /// Set while an agent process runs.
    port: Option<u16>,
    process: u32,
    /// Per (process, series): the last value of a loss counter.
    losses: BTreeMap<(u32, String), f64>,
    /// Identities followed in this process.
    seen: HashSet<Key>,
    files: HashMap<Key, FileReport>,
}

struct Poller {
    state: Mutex<PollState>,
    stop: AtomicBool,
}

impl Poller {
    fn lock(&self) -> MutexGuard<'_, PollState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A loss counter series: `name{labels}`, and the unit it counts.
pub fn loss_unit(series: &str) -> &'static str {
    let name = series.split('{').next().unwrap_or(series);
    if name.contains("bytes") {
        "bytes"
    } else if name.contains("records") {
        "records"
    } else if name.contains("files") {
        // logship_files_lost_total counts files (their bytes are in
        // logship_dropped_bytes_total): reported, not compared with lines.
        "files"
    } else {
        "lines"
    }
}

/// Reads the loss counters and followed files into `st` (one GET each).
fn poll_once(st: &mut PollState) {
    let Some(port) = st.port else { return };
    if let Some((200, body)) = get(port, "/metrics") {
        let Ok(scrape) = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        else {
            return;
        };
        for s in &scrape.samples {
            let name = s.metric.as_str();
            if !(name.contains("lost") || name.contains("dropped")) || !name.ends_with("_total") {
                continue;
            }
            // The exposition types the base name (`# TYPE x counter`) while
            // samples are `x_total`, which the parser then calls untyped.
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v)
                | prometheus_parse::Value::Gauge(v) => v,
                _ => continue,
            };
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let series = format!("{name}{{{}}}", labels.join(","));
            let slot = st.losses.entry((st.process, series)).or_insert(0.0);
            *slot = slot.max(v);
        }
    }
    if let Some((200, body)) = get(port, "/api/v1/files")
        && let Ok(serde_json::Value::Array(files)) = serde_json::from_str(&body)
    {
        st.files.clear();
        for f in files {
            let id = &f["identity"];
            let (Some(dev), Some(ino), Some(fp)) = (
                id["dev"].as_u64(),
                id["ino"].as_u64(),
                id["fingerprint"]
                    .as_str()
                    .and_then(|h| u64::from_str_radix(h, 16).ok()),
            ) else {
                continue;
            };
            let key = (dev, ino, fp);
            st.seen.insert(key);
            st.files.insert(
                key,
                FileReport {
                    path: f["path"].as_str().unwrap_or_default().to_string(),
                    generation: f["generation"].as_u64().unwrap_or(0) as u32,
                    read: f["read_offset"].as_u64().unwrap_or(0),
                    acked: f["acked_offset"].as_u64().unwrap_or(0),
                },
            );
        }
    }
}

/// A timeline entry.
pub struct Event {
    pub at: Duration,
    pub what: String,
}

pub struct AgentCtl {
    pub setup: Setup,
    agent: Agent,
    running: bool,
    pub port: u16,
    es_url: String,
    pub config: AgentConfig,
    base: AgentConfig,
    /// When the process started or stopped.
    since: Instant,
    poller: Arc<Poller>,
    poll_thread: Option<JoinHandle<()>>,
    /// `checkpoints.json` after the last stop: `(dev, ino, fp)` →
    /// `(generation, offset)`.
    pub checkpoints: HashMap<Key, Checkpoint>,
    pub t0: Instant,
    pub events: Vec<Event>,
    /// Exits other than by our SIGKILL, and SIGTERM exits that were not 0.
    pub bad_exits: Vec<String>,
    pub kills: u64,
    pub starts: u64,
    /// Process stops so far (kill, SIGTERM, or an exit of its own).
    pub stops: u64,
}

impl AgentCtl {
    pub fn start(setup: Setup, es_url: &str, config: AgentConfig, t0: Instant) -> AgentCtl {
        let port = crate::support::agent_http::free_port();
        std::fs::write(setup.config_path(), config.yaml(&setup, port, es_url))
            .expect("write config");
        let agent = setup.start();
        let poller = Arc::new(Poller {
            state: Mutex::new(PollState {
                port: Some(port),
                process: 1,
                ..PollState::default()
            }),
            stop: AtomicBool::new(false),
        });
        let poll_thread = {
            let poller = poller.clone();
            std::thread::spawn(move || {
                while !poller.stop.load(Ordering::SeqCst) {
                    poll_once(&mut poller.lock());
                    std::thread::sleep(POLL_EVERY);
                }
            })
        };
        let mut ctl = AgentCtl {
            setup,
            agent,
            running: true,
            port,
            es_url: es_url.to_string(),
            base: config.clone(),
            config,
            since: Instant::now(),
            poller,
            poll_thread: Some(poll_thread),
            checkpoints: HashMap::new(),
            t0,
            events: Vec::new(),
            bad_exits: Vec::new(),
            kills: 0,
            starts: 1,
            stops: 0,
        };
        ctl.event("agent started".to_string());
        ctl
    }

    pub fn event(&mut self, what: String) {
        self.events.push(Event {
            at: self.t0.elapsed(),
            what,
        });
    }

    pub fn running(&self) -> bool {
        self.running
    }

    /// Time since the process started (or stopped, when down).
    pub fn uptime(&self) -> Duration {
        self.since.elapsed()
    }

    /// Notes an exit the schedule did not cause.
    pub fn check_alive(&mut self) -> bool {
        if !self.running {
            return false;
        }
        if let Some(status) = self.agent.try_exit_status() {
            let msg = format!(
                "agent exited on its own ({status}) at +{:.1}s",
                self.t0.elapsed().as_secs_f64()
            );
            self.event(msg.clone());
            self.bad_exits.push(msg);
            self.after_stop();
            return false;
        }
        true
    }

    /// `kill -9` now (after a last scrape of the loss counters).
    pub fn kill9(&mut self, why: &str) {
        self.kill9_when(why, || Some(true));
    }

    /// Scrapes the loss counters, then asks `ready` until it says to kill
    /// now (`Some(true)`: it may wait for a moment, e.g. a request in
    /// flight, answering `Some(false)` meanwhile) or not at all (`None`).
    /// Returns whether the agent was killed.
    pub fn kill9_when(&mut self, why: &str, mut ready: impl FnMut() -> Option<bool>) -> bool {
        if !self.check_alive() {
            return false;
        }
        {
            let mut st = self.poller.lock();
            poll_once(&mut st);
            loop {
                match ready() {
                    Some(true) => break,
                    Some(false) => continue,
                    None => return false,
                }
            }
            self.agent.kill_9();
            st.port = None;
        }
        self.kills += 1;
        self.event(format!("kill -9 ({why})"));
        self.after_stop();
        true
    }

    /// Waits (at most 20 s) until the agent serves HTTP: it installs its
    /// signal handlers just before, and a SIGTERM or SIGHUP before that
    /// ends the process (the default action), which is not what a test of
    /// a drain or a reload wants.
    fn wait_serving(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if !self.check_alive() {
                return false;
            }
            if get(self.port, "/healthz").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let msg = "agent did not serve /healthz within 20 s of its start".to_string();
        self.bad_exits.push(msg);
        false
    }

    /// SIGTERM and wait for the exit (at most 30 s); notes a non-zero exit.
    pub fn sigterm(&mut self) {
        if !self.wait_serving() {
            return;
        }
        let status = {
            let mut st = self.poller.lock();
            poll_once(&mut st);
            let status = self.agent.sigterm(Duration::from_secs(30));
            st.port = None;
            status
        };
        let msg = format!("SIGTERM → exit {status}");
        if !status.success() {
            self.bad_exits
                .push(format!("{msg} at +{:.1}s", self.t0.elapsed().as_secs_f64()));
        }
        self.event(msg);
        self.after_stop();
    }

    fn after_stop(&mut self) {
        self.stops += 1;
        self.running = false;
        self.since = Instant::now();
        self.poller.lock().port = None;
        self.checkpoints = read_checkpoints(&self.setup.data_dir().join("checkpoints.json"));
    }

    /// Starts a new process with the base config (a restart never starts
    /// with `read_from: end`: files created while it was down would be
    /// skipped by design).
    pub fn restart(&mut self) {
        assert!(!self.running);
        self.config = self.base.clone();
        self.write_config();
        {
            let mut st = self.poller.lock();
            self.agent.restart();
            st.process += 1;
            st.port = Some(self.port);
            st.seen.clear();
            st.files.clear();
        }
        self.running = true;
        self.starts += 1;
        self.since = Instant::now();
        self.event("agent started".to_string());
    }

    fn write_config(&self) {
        std::fs::write(
            self.setup.config_path(),
            self.config.yaml(&self.setup, self.port, &self.es_url),
        )
        .expect("write config");
    }

    /// Writes `config` and sends SIGHUP.
    pub fn reload(&mut self, config: AgentConfig) {
        if !self.wait_serving() {
            return;
        }
        let what = describe_change(&self.config, &config);
        self.config = config;
        self.write_config();
        // SAFETY: kill(2) on our own child's pid.
        self.agent.sighup();
        self.event(format!("SIGHUP ({what})"));
    }

    /// Back to the base config (SIGHUP if it differs).
    pub fn reload_base(&mut self) {
        if self.config != self.base {
            self.reload(self.base.clone());
        }
    }

    pub fn base(&self) -> &AgentConfig {
        &self.base
    }

    /// The followed files now (as the poller last saw them).
    pub fn files(&self) -> HashMap<Key, FileReport> {
        self.poller.lock().files.clone()
    }

    /// A fresh `/api/v1/files` read (agent running).
    pub fn refresh(&self) {
        poll_once(&mut self.poller.lock());
    }

    /// Every loss counter series with its total over all processes.
    pub fn losses(&self) -> BTreeMap<String, f64> {
        let mut total = BTreeMap::new();
        for ((_, series), v) in &self.poller.lock().losses {
            *total.entry(series.clone()).or_insert(0.0) += v;
        }
        total
    }

    /// A snapshot for the world's file operations.
    pub fn knowledge(&self) -> Knowledge {
        let st = self.poller.lock();
        Knowledge {
            up: self.running,
            seen: st.seen.clone(),
            files: st.files.clone(),
            checkpoints: self.checkpoints.clone(),
        }
    }

    /// What the last stopped process left: its checkpoints only.
    pub fn knowledge_at_last_stop(&self) -> Knowledge {
        Knowledge {
            up: false,
            seen: HashSet::new(),
            files: HashMap::new(),
            checkpoints: self.checkpoints.clone(),
        }
    }

    /// A fresh knowledge snapshot (one `/api/v1/files` read first).
    pub fn knowledge_now(&self) -> Knowledge {
        if self.running {
            self.refresh();
        }
        self.knowledge()
    }

    /// `GET path` on the agent's port.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.port, path)
    }

    /// The agent's stderr (all processes).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.setup.stderr_path()).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if self.running && self.check_alive() {
            self.sigterm();
        }
    }
}

impl Drop for AgentCtl {
    fn drop(&mut self) {
        self.poller.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.poll_thread.take() {
            let _ = t.join();
        }
    }
}

fn describe_change(from: &AgentConfig, to: &AgentConfig) -> String {
    let mut parts = Vec::new();
    if from.read_from_end != to.read_from_end {
        parts.push(format!(
            "read_from: {}",
            if to.read_from_end { "end" } else { "beginning" }
        ));
    }
    if from.extra_source != to.extra_source {
        parts.push(if to.extra_source {
            "source extra added".to_string()
        } else {
            "source extra removed".to_string()
        });
    }
    if from.batch_events != to.batch_events {
        parts.push(format!("batch.max_events: {}", to.batch_events));
    }
    if parts.is_empty() {
        "no change".to_string()
    } else {
        parts.join(", ")
    }
}

/// `checkpoints.json` as `(dev, ino, fingerprint)` → `(generation, offset,
/// head)` (empty if absent).
pub fn read_checkpoints(path: &std::path::Path) -> HashMap<Key, Checkpoint> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return HashMap::new();
    };
    json["checkpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    let id = &c["identity"];
                    Some((
                        (
                            id["dev"].as_u64()?,
                            id["ino"].as_u64()?,
                            id["fingerprint"].as_u64()?,
                        ),
                        (
                            c["generation"].as_u64()? as u32,
                            c["offset"].as_u64()?,
                            c["head"]["len"].as_u64().zip(c["head"]["hash"].as_u64()),
                        ),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the agent knows, frozen for one file operation.
pub struct Knowledge {
    up: bool,
    seen: HashSet<Key>,
    files: HashMap<Key, FileReport>,
    checkpoints: HashMap<Key, Checkpoint>,
}

/// A file's checkpoint: generation, offset, stored head (`len`, `hash`).
pub type Checkpoint = (u32, u64, Option<(u64, u64)>);

impl AgentKnowledge for Knowledge {
    fn up(&self) -> bool {
        self.up
    }

    fn knows(&self, key: Key) -> bool {
        (self.up && self.seen.contains(&key)) || self.checkpoints.contains_key(&key)
    }

    fn position(&self, key: Key) -> (u64, u64) {
        // A running agent that does not follow the file (yet) has read and
        // acknowledged what its checkpoint says.
        if let Some(f) = self.files.get(&key).filter(|_| self.up) {
            (f.read, f.acked)
        } else {
            let o = self.checkpoints.get(&key).map_or(0, |c| c.1);
            (o, o)
        }
    }

    fn head(&self, key: Key) -> Option<(u64, u64)> {
        // What `/api/v1/files` says has no head; the checkpoints' is about
        // their generation, which a running agent may have left.
        if self.up && self.files.contains_key(&key) {
            return None;
        }
        self.checkpoints.get(&key).and_then(|c| c.2)
    }

    fn generation(&self, key: Key) -> Option<u32> {
        match self.files.get(&key).filter(|_| self.up) {
            Some(f) => Some(f.generation),
            None => self.checkpoints.get(&key).map(|c| c.0),
        }
    }
}

/// Duration since `t0` as `+12.3s`.
pub fn stamp(at: Duration) -> String {
    format!("+{:.1}s", at.as_secs_f64())
}
