//! The pipeline bench's scenarios and everything they share.
//!
//! Every scenario runs the real `logship` binary (the one Cargo built for
//! this target: release under `cargo bench`, the test profile under
//! `cargo test`) as a child process on files in the kubelet's layout
//! ([`layout`]: `pods/<ns>_<pod>_<uid>/<container>/0.log` behind
//! `containers/*.log` symlinks, `format: cri`, as the DaemonSet runs it),
//! shipping to a `_bulk` endpoint in this process ([`endpoint`]) that
//! gunzips every request, answers in Elasticsearch's format and keeps a
//! ledger of which line it acknowledged when.
//!
//! Every line written carries a marker at the start of its message,
//! `id=<file>.<seq>` (plus ` t=<ns>`, its write time, where the scenario
//! writes while the agent runs), so a run ends with an exact account: each
//! file's lines `0..written` must each have been acknowledged, none under
//! two different `_id`s (a duplicate in the index), and no document may lack
//! a marker (a partial line shipped unjoined). A line sent again under its
//! own `_id` is answered 409, as Elasticsearch does, and counted as a replay,
//! not a failure. A run whose account is not exact returns an error that
//! names the missing lines by file and sequence range.
//!
//! Figures come from `/proc/<pid>` of the agent: CPU time (user + system,
//! all threads), `VmRSS` and `VmHWM` (peak RSS), open fds. The endpoint and
//! the writers run in the bench process on the same cores; their CPU is
//! printed too, so a reader knows what else loaded the machine, as is the
//! load average before and after.
//!
//! The scenarios ([`catch_up`], [`node`], [`idle`], [`outage`],
//! [`latency`]) each take their parameters as a struct and return their
//! [`Account`] or the reason it is not exact; `benches/pipeline/main.rs`
//! fills the structs from the environment, `tests/bench_smoke.rs` with tiny
//! sizes.
// Compiled into both: each uses a different part (the test, for one, reads
// the figures it never asserts only through the printout).
#![allow(dead_code)]

pub mod agent;
pub mod catch_up;
pub mod corpus;
pub mod endpoint;
pub mod idle;
pub mod latency;
pub mod layout;
pub mod measure;
pub mod messages;
pub mod node;
pub mod outage;
pub mod writers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent::Agent;
use endpoint::{Endpoint, Expected};

/// Where batches wait for the sink in the agent under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// The default: at most `concurrency + 1` batches in memory.
    Memory,
    /// `buffer: {type: disk, fsync_interval: 1s}` in the run's data dir.
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

/// Settings every scenario shares.
#[derive(Clone, Debug)]
pub struct Common {
    /// Each scenario's files, the agent's data dir and its log go under
    /// `<root>/<scenario>/` (recreated per run).
    pub root: PathBuf,
    /// `sink.elasticsearch.concurrency`.
    pub concurrency: u64,
    pub buffer: Buffer,
    /// `sink.elasticsearch.batch.timeout`; `None` keeps the agent's default.
    pub batch_timeout: Option<Duration>,
    /// Threads that append lines in the scenarios that write while the
    /// agent runs (each owns every n-th file).
    pub writer_threads: usize,
    /// How long to wait for the last acknowledgement once writing is done
    /// before declaring what is missing.
    pub drain_timeout: Duration,
}

impl Common {
    /// A fresh, empty `<root>/<name>` for one run.
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", dir.display()),
        }
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    }
}

/// The exact count a run ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    pub written: u64,
    /// Distinct lines acknowledged (each once, under one `_id`).
    pub acknowledged: u64,
    /// Items sent again under an `_id` already acknowledged (answered 409).
    pub replays: u64,
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} lines acknowledged, exactly once ({} replays of an acknowledged _id answered 409)",
            self.acknowledged, self.written, self.replays
        )
    }
}

/// Waits until `target` distinct lines are acknowledged, the agent exits or
/// `timeout` passes; calls `tick` about every 20 ms. Returns how long it
/// waited, or `None` if the target was not reached.
pub fn wait_for_acks(
    endpoint: &Endpoint,
    agent: &mut Agent,
    target: u64,
    timeout: Duration,
    mut tick: impl FnMut(&Agent),
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if endpoint.acknowledged() >= target {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        agent.assert_running();
        tick(agent);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the agent (SIGTERM, as Kubernetes does) and checks the endpoint's
/// ledger against what was written. The stop comes first so that anything
/// the agent sends while it shuts down is in the account too.
pub fn stop_and_account(
    endpoint: &Endpoint,
    agent: Agent,
    expected: &Expected,
) -> Result<Account, String> {
    let log = agent.log_path().to_path_buf();
    let status = agent.stop();
    let account = endpoint.account(expected);
    match (account, status.success()) {
        (Ok(a), true) => Ok(a),
        (Ok(a), false) => Err(format!(
            "{a}, but logship exited with {status} on SIGTERM:\n{}",
            agent::tail(&log, 40)
        )),
        (Err(e), _) => Err(format!("{e}\nlogship's log:\n{}", agent::tail(&log, 40))),
    }
}
