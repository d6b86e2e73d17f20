//! A `_bulk` endpoint in the bench process that keeps an exact ledger.
//!
//! It serves HTTP/1.1 on `127.0.0.1`: `GET /` and `GET /_nodes/_local` (the
//! agent's start-up version check) answer as Elasticsearch 8.19.8 does, and
//! `POST …/_bulk` gunzips the body (`Content-Encoding: gzip`), walks its
//! NDJSON pairs and answers every item in Elasticsearch's format: with
//! `filter_path` in the query (the agent asks for
//! `errors,items.*.status,items.*.error`) the filtered shape
//! `{"errors":…,"items":[{"create":{"status":201}},…]}`, otherwise the full
//! one (`took`, `_index`, `_id`, `_version`, `result`, `_shards`, `_seq_no`,
//! `_primary_term`, `status`).
//!
//! The ledger identifies each document by the `id=<file>.<seq>` marker at
//! the start of its `message` and remembers the `_id` of its first
//! acknowledgement. A second `create` of that line with the same `_id` is
//! answered 409 `version_conflict_engine_exception`, as Elasticsearch would
//! (a replay: delivered, counted apart); with another `_id` it is a second
//! document in the index (a duplicate: answered 201 and a failure of the
//! run), and a document without a marker (a partial line shipped on its
//! own, say) is answered 201 and fails the run too. When a message also
//! carries ` t=<ns>` (its write time, nanoseconds since [`Endpoint::epoch`]),
//! the ledger records the time from the write to the moment this answer was
//! complete, for the first acknowledgement only.
//!
//! The endpoint can be taken down ([`Endpoint::down`]: the listening socket
//! is closed, so connections are refused, and open connections are dropped)
//! and brought back on the same port ([`Endpoint::up`]).
//!
//! Its cost (a gunzip and a scan of every body, on tokio's blocking pool
//! beside one runtime thread) is on the same cores as the agent.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use memchr::memmem;

/// The files a run wrote and how many lines each, indexed by the marker's
/// file number.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub files: Vec<ExpectedFile>,
}

#[derive(Clone, Debug)]
pub struct ExpectedFile {
    /// Shown when lines of the file are missing (its path under the run).
    pub name: String,
    /// Lines `0..lines` were written.
    pub lines: u64,
}

impl Expected {
    pub fn total(&self) -> u64 {
        self.files.iter().map(|f| f.lines).sum()
    }
}

/// What the endpoint has seen, for the figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    pub requests: u64,
    /// Request bodies as sent (gzip).
    pub body_bytes: u64,
    /// The same bodies gunzipped (NDJSON).
    pub ndjson_bytes: u64,
}

pub struct Endpoint {
    rt: tokio::runtime::Runtime,
    state: Arc<State>,
    port: u16,
    server: Option<tokio::task::JoinHandle<()>>,
}

struct State {
    epoch: Instant,
    ledger: Mutex<Ledger>,
    acknowledged: AtomicU64,
    requests: AtomicU64,
    body_bytes: AtomicU64,
    ndjson_bytes: AtomicU64,
}

/// Per line, the hash of the `_id` it was first acknowledged under (0: not
/// yet), and what went wrong.
#[derive(Default)]
struct Ledger {
    files: Vec<Vec<u64>>,
    acknowledged: u64,
    replays: u64,
    duplicates: u64,
    duplicate_examples: Vec<String>,
    unmarked: u64,
    unmarked_example: Option<String>,
    latencies_ns: Vec<u64>,
}

/// Marker numbers past these are not ours: the document counts as unmarked.
const MAX_FILES: u32 = 1 << 20;
const MAX_SEQ: u64 = 1 << 32;

impl Endpoint {
    /// An endpoint listening on a free port.
    pub fn start() -> Endpoint {
        let mut endpoint = Endpoint::reserve();
        endpoint.up();
        endpoint
    }

    /// An endpoint that is down on a port that was free a moment ago
    /// (nothing listens there: connections are refused).
    pub fn reserve() -> Endpoint {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free local port")
            .port();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-endpoint")
            .enable_all()
            .build()
            .expect("endpoint runtime");
        Endpoint {
            rt,
            state: Arc::new(State {
                epoch: Instant::now(),
                ledger: Mutex::new(Ledger::default()),
                acknowledged: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                body_bytes: AtomicU64::new(0),
                ndjson_bytes: AtomicU64::new(0),
            }),
            port,
            server: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The instant write times (` t=<ns>`) are counted from.
    pub fn epoch(&self) -> Instant {
        self.state.epoch
    }

    /// Starts listening on the endpoint's port.
    pub fn up(&mut self) {
        if self.server.is_some() {
            return;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        // std sets SO_REUSEADDR on Unix: the port is taken again at once.
        let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| {
            panic!("cannot listen on {addr} again (another process took the port?): {e}")
        });
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let state = self.state.clone();
        let _guard = self.rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        self.server = Some(self.rt.spawn(serve(listener, state)));
    }

    /// Closes the port and drops every open connection.
    pub fn down(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // Dropping the accept loop drops the listener and, with its
            // JoinSet, every connection task.
            let _ = self.rt.block_on(server);
        }
    }

    /// Distinct lines acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.state.acknowledged.load(Ordering::Relaxed)
    }

    pub fn traffic(&self) -> Traffic {
        Traffic {
            requests: self.state.requests.load(Ordering::Relaxed),
            body_bytes: self.state.body_bytes.load(Ordering::Relaxed),
            ndjson_bytes: self.state.ndjson_bytes.load(Ordering::Relaxed),
        }
    }

    /// Write-to-answer times (ns) recorded so far, taken out of the ledger.
    pub fn take_latencies(&self) -> Vec<u64> {
        std::mem::take(&mut self.ledger().latencies_ns)
    }

    /// The run's account against what was written, or what is wrong with it.
    pub fn account(&self, expected: &Expected) -> Result<super::Account, String> {
        let ledger = self.ledger();
        let mut problems = Vec::new();
        let mut missing_total = 0u64;
        let mut missing_ranges = Vec::new();
        let mut unexpected = 0u64;
        for (i, file) in expected.files.iter().enumerate() {
            let seen = ledger.files.get(i).map(Vec::as_slice).unwrap_or(&[]);
            let mut seq = 0u64;
            while seq < file.lines {
                if seen.get(seq as usize).is_some_and(|&h| h != 0) {
                    seq += 1;
                    continue;
                }
                let first = seq;
                while seq < file.lines && seen.get(seq as usize).is_none_or(|&h| h == 0) {
                    seq += 1;
                }
                missing_total += seq - first;
                if missing_ranges.len() < 20 {
                    missing_ranges.push(format!(
                        "{} (file {i}) seq {first}..={} ({} lines)",
                        file.name,
                        seq - 1,
                        seq - first
                    ));
                }
            }
            unexpected += seen
                .iter()
                .skip(file.lines as usize)
                .filter(|&&h| h != 0)
                .count() as u64;
        }
        for seen in ledger.files.iter().skip(expected.files.len()) {
            unexpected += seen.iter().filter(|&&h| h != 0).count() as u64;
        }
        if missing_total > 0 {
            problems.push(format!(
                "{missing_total} of {} lines never acknowledged: {}{}",
                expected.total(),
                missing_ranges.join("; "),
                if missing_ranges.len() == 20 {
                    "; …"
                } else {
                    ""
                }
            ));
        }
        if unexpected > 0 {
            problems.push(format!(
                "{unexpected} acknowledged lines were never written (marker past a file's last line)"
            ));
        }
        if ledger.duplicates > 0 {
            problems.push(format!(
                "{} lines indexed twice under different _ids: {}",
                ledger.duplicates,
                ledger.duplicate_examples.join("; ")
            ));
        }
        if ledger.unmarked > 0 {
            problems.push(format!(
                "{} documents without an id= marker (a partial line shipped on its own?), e.g. {}",
                ledger.unmarked,
                ledger.unmarked_example.as_deref().unwrap_or("?")
            ));
        }
        if problems.is_empty() {
            Ok(super::Account {
                written: expected.total(),
                acknowledged: ledger.acknowledged,
                replays: ledger.replays,
            })
        } else {
            Err(format!(
                "the account is not exact ({} distinct lines acknowledged, {} written): {}",
                ledger.acknowledged,
                expected.total(),
                problems.join(" | ")
            ))
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.state.ledger.lock().expect("ledger lock")
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.down();
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                connections.spawn(async move {
                    let svc = service_fn(move |req| handle(req, state.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

const ROOT: &str = r#"{"name":"bench","cluster_name":"bench","cluster_uuid":"bench-cluster-uuid","version":{"number":"8.19.8","build_flavor":"default","build_type":"tar","lucene_version":"9.12.2","minimum_wire_compatibility_version":"7.17.0","minimum_index_compatibility_version":"7.0.0"},"tagline":"You Know, for Search"}"#;
const NODES: &str = r#"{"nodes":{"bench-node-id":{"version":"8.19.8"}}}"#;

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    let filtered = req.uri().query().is_some_and(|q| q.contains("filter_path"));
    if path.ends_with("/_bulk") && req.method() == Method::POST {
        let gzip = req
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let body = req.into_body().collect().await?.to_bytes();
        let answer = tokio::task::spawn_blocking(move || bulk(&state, &body, gzip, filtered))
            .await
            .unwrap_or_else(|e| Err(format!("bulk handler panicked: {e}")));
        return Ok(match answer {
            Ok(body) => json(StatusCode::OK, body),
            Err(reason) => json(
                StatusCode::BAD_REQUEST,
                format!(
                    r#"{{"error":{{"root_cause":[{{"type":"parse_exception","reason":{r}}}],"type":"parse_exception","reason":{r}}},"status":400}}"#,
                    r = serde_json::Value::String(reason)
                ),
            ),
        });
    }
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/") => json(StatusCode::OK, ROOT.to_string()),
        (&Method::GET, "/_nodes/_local") => json(StatusCode::OK, NODES.to_string()),
        _ => json(
            StatusCode::NOT_FOUND,
            format!(
                r#"{{"error":"no handler found for uri [{path}] and method [{}]"}}"#,
                req.method()
            ),
        ),
    })
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-elastic-product", "Elasticsearch")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// One bulk item as the endpoint decided it.
struct Item<'a> {
    index: &'a [u8],
    id: &'a [u8],
    status: u16,
    /// Write time (ns since the epoch) of a first acknowledgement.
    written_at: Option<u64>,
}

/// Answers one `_bulk` body (and books it in the ledger).
fn bulk(state: &State, body: &[u8], gzip: bool, filtered: bool) -> Result<String, String> {
    let started = Instant::now();
    let ndjson;
    let ndjson: &[u8] = if gzip {
        let mut out = Vec::with_capacity(body.len() * 4);
        flate2::read::MultiGzDecoder::new(body)
            .read_to_end(&mut out)
            .map_err(|e| format!("request body is not valid gzip: {e}"))?;
        ndjson = out;
        &ndjson
    } else {
        body
    };
    state.requests.fetch_add(1, Ordering::Relaxed);
    state
        .body_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    state
        .ndjson_bytes
        .fetch_add(ndjson.len() as u64, Ordering::Relaxed);

    let mut lines = ndjson.split(|&b| b == b'\n');
    let mut parsed = Vec::new();
    while let Some(action) = lines.next() {
        if action.is_empty() {
            // The body's final newline.
            break;
        }
        let doc = lines
            .next()
            .filter(|d| !d.is_empty())
            .ok_or("an action line without its document")?;
        let index = field(action, b"\"_index\":\"").unwrap_or(b"");
        let id = field(action, b"\"_id\":\"").unwrap_or(b"");
        parsed.push((index, id, marker(doc), doc));
    }

    let mut items = Vec::with_capacity(parsed.len());
    {
        let mut ledger = state.ledger.lock().expect("ledger lock");
        for (index, id, marker, doc) in parsed {
            let mut item = Item {
                index,
                id,
                status: 201,
                written_at: None,
            };
            match marker {
                Some(m) if m.file < MAX_FILES && m.seq < MAX_SEQ => {
                    let file = m.file as usize;
                    if ledger.files.len() <= file {
                        ledger.files.resize_with(file + 1, Vec::new);
                    }
                    let seen = &mut ledger.files[file];
                    if seen.len() <= m.seq as usize {
                        let grow = (m.seq as usize + 1).max(seen.len() * 2).max(1024);
                        seen.resize(grow, 0);
                    }
                    let slot = &mut seen[m.seq as usize];
                    let hash = fnv1a(id) | 1;
                    if *slot == 0 {
                        *slot = hash;
                        ledger.acknowledged += 1;
                        item.written_at = m.written_at;
                    } else if *slot == hash {
                        ledger.replays += 1;
                        item.status = 409;
                    } else {
                        ledger.duplicates += 1;
                        if ledger.duplicate_examples.len() < 5 {
                            ledger.duplicate_examples.push(format!(
                                "file {} seq {} again as _id {}",
                                m.file,
                                m.seq,
                                String::from_utf8_lossy(id)
                            ));
                        }
                    }
                }
                _ => {
                    ledger.unmarked += 1;
                    if ledger.unmarked_example.is_none() {
                        let shown = &doc[..doc.len().min(300)];
                        ledger.unmarked_example = Some(String::from_utf8_lossy(shown).into_owned());
                    }
                }
            }
            items.push(item);
        }
        state
            .acknowledged
            .store(ledger.acknowledged, Ordering::Relaxed);
    }

    let answer = respond(&items, filtered, started.elapsed());
    let answered_at = state.epoch.elapsed().as_nanos() as u64;
    let latencies: Vec<u64> = items
        .iter()
        .filter_map(|i| i.written_at)
        .map(|t| answered_at.saturating_sub(t))
        .collect();
    if !latencies.is_empty() {
        let mut ledger = state.ledger.lock().expect("ledger lock");
        ledger.latencies_ns.extend(latencies);
    }
    Ok(answer)
}

fn respond(items: &[Item<'_>], filtered: bool, took: Duration) -> String {
    let errors = items.iter().any(|i| i.status >= 300);
    let mut out = String::with_capacity(64 + items.len() * if filtered { 28 } else { 220 });
    if filtered {
        out.push_str(&format!(r#"{{"errors":{errors},"items":["#));
    } else {
        out.push_str(&format!(
            r#"{{"took":{},"errors":{errors},"items":["#,
            took.as_millis()
        ));
    }
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let index = String::from_utf8_lossy(item.index);
        let id = String::from_utf8_lossy(item.id);
        let error = |out: &mut String| {
            out.push_str(&format!(
                r#""error":{{"type":"version_conflict_engine_exception","reason":"[{id}]: version conflict, document already exists (current version [1])","index_uuid":"bench-index-uuid","shard":"0","index":"{index}"}}"#
            ));
        };
        match (filtered, item.status) {
            (true, 201) => out.push_str(r#"{"create":{"status":201}}"#),
            (true, status) => {
                out.push_str(&format!(r#"{{"create":{{"status":{status},"#));
                error(&mut out);
                out.push_str("}}");
            }
            (false, 201) => out.push_str(&format!(
                r#"{{"create":{{"_index":"{index}","_id":"{id}","_version":1,"result":"created","_shards":{{"total":2,"successful":1,"failed":0}},"_seq_no":{n},"_primary_term":1,"status":201}}}}"#
            )),
            (false, status) => {
                out.push_str(&format!(
                    r#"{{"create":{{"_index":"{index}","_id":"{id}","status":{status},"#
                ));
                error(&mut out);
                out.push_str("}}");
            }
        }
    }
    out.push_str("]}");
    out
}

/// The bytes of a JSON string field, found by its `"key":"` prefix (our
/// action lines never escape these values).
fn field<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let start = memmem::find(line, prefix)? + prefix.len();
    let len = memchr::memchr(b'"', &line[start..])?;
    Some(&line[start..start + len])
}

/// A line's identity and write time, from its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub file: u32,
    pub seq: u64,
    pub written_at: Option<u64>,
}

/// Reads `id=<file>.<seq>[ t=<ns>]` at the start of a document's message.
pub fn marker(doc: &[u8]) -> Option<Marker> {
    const PREFIX: &[u8] = b"\"message\":\"id=";
    let rest = &doc[memmem::find(doc, PREFIX)? + PREFIX.len()..];
    let (file, rest) = number(rest)?;
    let rest = rest.strip_prefix(b".")?;
    let (seq, rest) = number(rest)?;
    let written_at = rest.strip_prefix(b" t=").and_then(number).map(|(t, _)| t);
    Some(Marker {
        file: u32::try_from(file).ok()?,
        seq,
        written_at,
    })
}

fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()?;
    Some((value, &bytes[digits..]))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
