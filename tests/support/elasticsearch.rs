//! A real Elasticsearch (or OpenSearch) for integration tests: one node per
//! test binary, shared by all its tests, stopped when the test process exits;
//! or, for the compatibility matrix, a node of a given server per test,
//! stopped when dropped.
//!
//! [`shared()`] starts the node on first use: `scripts/elasticsearch.sh fetch`
//! downloads the integration-test distribution from Maven Central once into
//! `$LOGSHIP_ES_CACHE` (default `/var/cache/logship-es`), then
//! `scripts/elasticsearch.sh run DIR` runs it with a fresh temporary DIR
//! (config, data, logs), loopback-only on free ports, single-node, 512 MiB
//! heap, security off, disk thresholds off. It is the script's default
//! server (Elasticsearch 8.19.8). [`start`] does the same for any
//! distribution and version the script knows ([`matrix`] lists the ones
//! tests/compat.rs runs against) and returns a node the caller owns.
//!
//! Rust tests have no teardown, so a node runs under a watchdog shell whose
//! stdin is a pipe from this process. The pipe closes when this process
//! exits, however it exits (normal end, panic, `kill -9`); the watchdog then
//! stops the node's process group and removes DIR. Dropping an owned node
//! closes the pipe and waits for the watchdog; for the shared node an
//! `atexit` handler does, so no `java` is left behind when `cargo test`
//! returns.
//!
//! Set `LOGSHIP_ES_URL` to use an already running node instead (for
//! [`shared()`] only).
//!
//! The helpers ([`Elasticsearch::count`], [`Elasticsearch::search_all`], ...)
//! panic with the response body on any error: they are for tests. They work
//! the same against Elasticsearch 8/9 and OpenSearch 2.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the node may take to answer `yellow` (override with
/// `LOGSHIP_ES_START_TIMEOUT`, in seconds).
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);

/// The watchdog: starts the node in a session of its own, waits for EOF on
/// stdin (the test process is gone or let go), then stops the session and
/// removes DIR. Signals that would end the shell before it stops the node
/// (Ctrl-C to the foreground group, a hang-up) are ignored once the node
/// runs. `$0` = scripts/elasticsearch.sh, `$1` = DIR, `$2` = console log.
/// (dash's `kill` takes no `--`.)
const WATCHDOG: &str = r#"
setsid "$0" run "$1" >"$2" 2>&1 </dev/null &
pid=$!
trap '' INT HUP TERM QUIT
echo "$pid"
cat >/dev/null
kill -TERM -$pid 2>/dev/null
i=0
while kill -0 -$pid 2>/dev/null && [ "$i" -lt 150 ]; do
    i=$((i + 1))
    sleep 0.1
done
kill -KILL -$pid 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$1"
"#;

/// Which server a node runs: `distribution` is `elasticsearch` or
/// `opensearch`, `version` e.g. `9.5.4`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub distribution: String,
    pub version: String,
}

impl Server {
    /// The major version number.
    pub fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("version {:?} has no major number", self.version))
    }

    pub fn is_opensearch(&self) -> bool {
        self.distribution == "opensearch"
    }
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.distribution, self.version)
    }
}

/// The servers of the compatibility matrix, as `scripts/elasticsearch.sh
/// matrix` lists them (the one place their versions are written down).
pub fn matrix() -> Vec<Server> {
    let script = repo_root().join("scripts/elasticsearch.sh");
    let out = Command::new(&script)
        .arg("matrix")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(out.status.success(), "`{} matrix` failed", script.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (distribution, version) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("`matrix` printed {line:?}"));
            Server {
                distribution: distribution.to_string(),
                version: version.to_string(),
            }
        })
        .collect()
}

/// The matrix entry of `distribution` with major version `major`.
pub fn matrix_server(distribution: &str, major: u32) -> Server {
    let all = matrix();
    all.iter()
        .find(|s| s.distribution == distribution && s.major() == major)
        .cloned()
        .unwrap_or_else(|| panic!("no {distribution} {major}.x in the matrix {all:?}"))
}

/// A running node and a client for it.
pub struct Elasticsearch {
    url: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// DIR of the node this process started; `None` for `LOGSHIP_ES_URL`.
    dir: Option<PathBuf>,
    /// What answered (read from `GET /` once ready).
    server: Server,
    /// The watchdog of the node this process started; taken by [`Self::stop`].
    watchdog: Mutex<Option<Child>>,
}

static SHARED: OnceLock<Elasticsearch> = OnceLock::new();

/// The node shared by every test of this binary, started on first use.
pub fn shared() -> &'static Elasticsearch {
    SHARED.get_or_init(|| {
        let es = match std::env::var("LOGSHIP_ES_URL") {
            Ok(url) => connect(&url),
            Err(_) => Elasticsearch::start(None),
        };
        register_atexit();
        es
    })
}

/// Starts a node of `server` that the caller owns: it is stopped (and its
/// directory removed) when dropped.
pub fn start(server: &Server) -> Elasticsearch {
    Elasticsearch::start(Some(server))
}

/// A client for a node someone else runs (e.g. a node of a test cluster
/// started with `scripts/elasticsearch.sh start`), ready once it answers yellow.
pub fn connect(url: &str) -> Elasticsearch {
    let (runtime, client) = http_client();
    let mut es = Elasticsearch {
        url: url.trim_end_matches('/').to_string(),
        client,
        runtime,
        dir: None,
        server: default_server(),
        watchdog: Mutex::new(None),
    };
    es.wait_ready(DEFAULT_START_TIMEOUT);
    es
}

/// Directory holding `Cargo.toml` (and `scripts/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What an unidentified node is taken for until `GET /` says otherwise.
fn default_server() -> Server {
    Server {
        distribution: "elasticsearch".to_string(),
        version: "unknown".to_string(),
    }
}

fn http_client() -> (tokio::runtime::Runtime, reqwest::Client) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime for the Elasticsearch client");
    let client = {
        let _context = runtime.enter();
        reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client")
    };
    (runtime, client)
}

impl Elasticsearch {
    /// Starts a node of `server` (`None`: the script's default) under a
    /// watchdog. A panic on the way drops the half-built value, which stops
    /// the node.
    fn start(server: Option<&Server>) -> Elasticsearch {
        let (runtime, client) = http_client();
        let env: Vec<(&str, String)> = match server {
            Some(s) => vec![
                ("LOGSHIP_ES_DISTRIBUTION", s.distribution.clone()),
                ("LOGSHIP_ES_VERSION", s.version.clone()),
            ],
            None => Vec::new(),
        };
        let shown = server.map_or_else(|| "Elasticsearch".to_string(), Server::to_string);

        let script = repo_root().join("scripts/elasticsearch.sh");
        let fetch = Command::new(&script)
            .arg("fetch")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            fetch.status.success(),
            "`{} fetch` of {shown} failed ({}); see its stderr above",
            script.display(),
            fetch.status
        );

        let dir = tempfile::Builder::new()
            .prefix("logship-es-")
            .tempdir()
            .expect("temp dir for Elasticsearch")
            .keep();
        let out = dir.join("es.out");
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(&script)
            .arg(&dir)
            .arg(&out)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the Elasticsearch watchdog");
        let stdout = watchdog.stdout.take();
        let mut es = Elasticsearch {
            url: String::new(),
            client,
            runtime,
            dir: Some(dir.clone()),
            server: server.cloned().unwrap_or_else(default_server),
            watchdog: Mutex::new(Some(watchdog)),
        };
        let mut pid_line = String::new();
        BufReader::new(stdout.expect("watchdog stdout"))
            .read_line(&mut pid_line)
            .expect("read the Elasticsearch pid from the watchdog");
        let pid: i32 = pid_line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("watchdog printed no pid: {pid_line:?}"));

        let timeout = std::env::var("LOGSHIP_ES_START_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_START_TIMEOUT);
        let ports = dir.join("logs/http.ports");
        let started = Instant::now();
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&ports)
                && let Some(line) = text.lines().next().filter(|l| !l.is_empty())
            {
                break line.to_string();
            }
            if !process_alive(pid) {
                let log = tail(&out, 40);
                es.stop();
                panic!("{shown} exited during start-up; last lines of its console:\n{log}");
            }
            if started.elapsed() > timeout {
                let log = tail(&out, 40);
                es.stop();
                panic!(
                    "{shown} wrote no {} within {timeout:?}; last lines of its console:\n{log}",
                    ports.display(),
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        es.url = format!("http://{addr}");
        es.wait_ready(timeout.saturating_sub(started.elapsed()));
        if let Some(wanted) = server {
            assert_eq!(&es.server, wanted, "started {wanted}, another answered");
        }
        es
    }

    /// Stops the node this process started (closes the watchdog's stdin and
    /// waits until it has stopped the node and removed its directory). A
    /// no-op for a node someone else runs, or once stopped.
    pub fn stop(&self) {
        let taken = match self.watchdog.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(mut watchdog) = taken {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }

    /// What answered: distribution and version from `GET /` (Elasticsearch's
    /// test distribution has no `GET /`, so `_nodes/_local` is asked then).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Waits for `GET /_cluster/health?wait_for_status=yellow`; on timeout
    /// stops the node (if ours) and panics with its log tail.
    fn wait_ready(&mut self, timeout: Duration) {
        let started = Instant::now();
        let url = format!(
            "{}/_cluster/health?wait_for_status=yellow&timeout=5s",
            self.url
        );
        loop {
            let health = self
                .runtime
                .block_on(async { self.client.get(&url).send().await });
            if let Ok(response) = health
                && response.status().is_success()
            {
                self.server = self.ask_server();
                return;
            }
            if started.elapsed() > timeout {
                let log = self.log_tail(40);
                self.stop();
                panic!(
                    "Elasticsearch at {} was not yellow within {timeout:?}; log tail:\n{log}",
                    self.url
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Reads distribution and version from `GET /`, or from
    /// `GET /_nodes/_local` where `GET /` has no handler (Elasticsearch's
    /// test distribution; OpenSearch always serves `GET /`).
    fn ask_server(&self) -> Server {
        let (status, root) = self.request(reqwest::Method::GET, "", "application/json", None);
        if status == 200
            && let Some(number) = root["version"]["number"].as_str()
        {
            return Server {
                distribution: root["version"]["distribution"]
                    .as_str()
                    .unwrap_or("elasticsearch")
                    .to_string(),
                version: number.to_string(),
            };
        }
        let nodes = self.json(
            reqwest::Method::GET,
            "_nodes/_local?filter_path=nodes.*.version",
            None,
        );
        let version = nodes["nodes"]
            .as_object()
            .and_then(|n| n.values().next())
            .and_then(|n| n["version"].as_str())
            .unwrap_or_else(|| panic!("_nodes/_local without a version: {nodes}"));
        Server {
            distribution: "elasticsearch".to_string(),
            version: version.to_string(),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:19200`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The last `n` lines of the node's console output (empty for `LOGSHIP_ES_URL`).
    pub fn log_tail(&self, n: usize) -> String {
        match &self.dir {
            Some(dir) => tail(&dir.join("es.out"), n),
            None => String::new(),
        }
    }

    /// Sends a request and returns (status, body as JSON, or the raw body as
    /// a `Value::String` when it is not JSON).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let url = format!("{}/{}", self.url, path.trim_start_matches('/'));
        self.runtime.block_on(async {
            let mut request = self.client.request(method.clone(), &url);
            if let Some(body) = body {
                request = request.header("content-type", content_type).body(body);
            }
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = response.status().as_u16();
            let bytes = response
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"));
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            (status, body)
        })
    }

    /// [`request`](Self::request) with an optional JSON body; panics unless
    /// the status is 2xx.
    ///
    /// A loaded single node answers 503 (`no_shard_available_action_exception`
    /// on an index created a moment ago) or 429 for a short while; those are
    /// retried for up to 30 s, since they say nothing about what is indexed.
    pub fn json(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("serialise request"));
        let started = std::time::Instant::now();
        let (status, response) = loop {
            let (status, response) =
                self.request(method.clone(), path, "application/json", bytes.clone());
            if matches!(status, 429 | 503) && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            break (status, response);
        };
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {response}"
        );
        response
    }

    /// `POST /_bulk` of an NDJSON body (must end in `\n`); returns the response.
    pub fn bulk(&self, ndjson: &str) -> Value {
        let (status, response) = self.request(
            reqwest::Method::POST,
            "_bulk",
            "application/x-ndjson",
            Some(ndjson.as_bytes().to_vec()),
        );
        assert_eq!(status, 200, "_bulk answered {status}: {response}");
        response
    }

    /// Makes everything indexed so far searchable. `index` may be a pattern;
    /// a pattern that matches nothing is fine.
    pub fn refresh(&self, index: &str) {
        self.json(
            reqwest::Method::POST,
            &format!("{index}/_refresh?allow_no_indices=true&ignore_unavailable=true"),
            None,
        );
    }

    /// Number of documents in `index` (a name or pattern; 0 if none exists),
    /// after a refresh.
    pub fn count(&self, index: &str) -> u64 {
        self.refresh(index);
        let response = self.json(
            reqwest::Method::GET,
            &format!("{index}/_count?allow_no_indices=true&ignore_unavailable=true"),
            None,
        );
        response["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("_count without a count: {response}"))
    }

    /// Polls [`count`](Self::count) until it reaches `n`; returns the last
    /// count seen (which is `< n` on timeout, or may exceed `n`).
    pub fn wait_for_count(&self, index: &str, n: u64, timeout: Duration) -> u64 {
        let started = Instant::now();
        loop {
            let count = self.count(index);
            if count >= n || started.elapsed() > timeout {
                return count;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every document of `index` (name or pattern) as its `_source` with
    /// `_id` and `_index` added, paging through a point in time with
    /// `search_after` (Elasticsearch) or a scroll (OpenSearch, whose point
    /// in time API differs). Refreshes first.
    pub fn search_all(&self, index: &str) -> Vec<Value> {
        if self.count(index) == 0 {
            return Vec::new();
        }
        if self.server.is_opensearch() {
            return self.scroll_all(index);
        }
        let pit = self.json(
            reqwest::Method::POST,
            &format!("{index}/_pit?keep_alive=1m&allow_no_indices=true&ignore_unavailable=true"),
            None,
        )["id"]
            .as_str()
            .expect("_pit without id")
            .to_string();
        let mut docs = Vec::new();
        let mut search_after: Option<Value> = None;
        loop {
            let mut query = json!({
                "size": 5000,
                "pit": {"id": pit, "keep_alive": "1m"},
                "sort": [{"_shard_doc": "asc"}],
                "track_total_hits": false,
            });
            if let Some(after) = &search_after {
                query["search_after"] = after.clone();
            }
            let page = self.json(reqwest::Method::POST, "_search", Some(&query));
            let hits = page["hits"]["hits"]
                .as_array()
                .unwrap_or_else(|| panic!("_search without hits: {page}"));
            if hits.is_empty() {
                break;
            }
            docs.extend(hits.iter().map(source_with_ids));
            search_after = hits.last().map(|h| h["sort"].clone());
        }
        // Closing early only frees resources; the PIT expires on its own.
        let _ = self.request(
            reqwest::Method::DELETE,
            "_pit",
            "application/json",
            Some(serde_json::to_vec(&json!({"id": pit})).expect("serialise")),
        );
        docs
    }
}

impl Elasticsearch {
    fn scroll_all(&self, index: &str) -> Vec<Value> {
        let mut page = self.json(
            reqwest::Method::POST,
            &format!("{index}/_search?scroll=1m&allow_no_indices=true&ignore_unavailable=true"),
            Some(&json!({"size": 5000, "sort": ["_doc"]})),
        );
        let mut docs = Vec::new();
        loop {
            let hits = page["hits"]["hits"]
                .as_array()
                .unwrap_or_else(|| panic!("_search without hits: {page}"));
            if hits.is_empty() {
                break;
            }
            docs.extend(hits.iter().map(source_with_ids));
            let scroll_id = page["_scroll_id"].clone();
            page = self.json(
                reqwest::Method::POST,
                "_search/scroll",
                Some(&json!({"scroll": "1m", "scroll_id": scroll_id})),
            );
        }
        // Clearing early only frees resources; the scroll expires on its own.
        let _ = self.request(
            reqwest::Method::DELETE,
            "_search/scroll",
            "application/json",
            Some(serde_json::to_vec(&json!({"scroll_id": page["_scroll_id"]})).expect("serialise")),
        );
        docs
    }
}

/// True while process `pid` exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

/// The last `n` lines of a text file (lossy), or a note that it is unreadable.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// Registers [`stop_at_exit`] once.
fn register_atexit() {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: `atexit` only stores the function pointer; the callback is a
        // plain `extern "C" fn` that catches its own panics.
        let rc = unsafe { atexit(stop_at_exit) };
        assert_eq!(rc, 0, "atexit failed");
    });
}

impl Drop for Elasticsearch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops the shared node, if this process started one.
fn stop_shared() {
    if let Some(es) = SHARED.get() {
        es.stop();
    }
}

extern "C" fn stop_at_exit() {
    let _ = std::panic::catch_unwind(stop_shared);
}

/// A hit's `_source` with its `_id` and `_index` added.
fn source_with_ids(hit: &Value) -> Value {
    let mut doc = hit["_source"].clone();
    doc["_id"] = hit["_id"].clone();
    doc["_index"] = hit["_index"].clone();
    doc
}
