//! A fault-injecting fake Elasticsearch `_bulk` endpoint for tests.
//!
//! [`FakeEs::start`] serves `POST …/_bulk` on `127.0.0.1:0` (HTTP/1.1). It
//! gunzips the body (`Content-Encoding: gzip`), parses the NDJSON pairs and
//! answers in Elasticsearch's real response format (`took`, `errors`, and per
//! item `{"create":{"_index","_id","status",…}}` with `error.type`/`reason`/
//! `caused_by`). Like Elasticsearch it keys documents by (`_index`, `_id`):
//! a second `create` of an `_id` already stored in the same index answers
//! 409 `version_conflict_engine_exception`, while the same `_id` sent to
//! another index is a second document there; a document line that is not
//! JSON answers 400 `document_parsing_exception`. `filter_path` is ignored (the full format is
//! a superset of the filtered one).
//!
//! Faults a test can script:
//! - per `_id` item errors (in any index) for the next N attempts
//!   ([`FakeEs::fail_item`]), or an error for every item for a duration (a
//!   red index, an overloaded cluster: [`FakeEs::fail_all_items_for`]);
//! - whole-request faults for the next N requests ([`FakeEs::fail_requests`])
//!   or for a duration ([`FakeEs::fail_requests_for`]): an ES error status
//!   (503, 429, 401, …), an nginx HTML 502 page, a 200 whose body is
//!   truncated, has no `items` or one item too few — none of which store
//!   anything, so a client that took them as success would lose documents;
//!   or a stall that stores the items and then answers late (a client timeout
//!   after Elasticsearch indexed);
//! - a body size limit answered with an empty 413 ([`FakeEs::set_max_content_length`]);
//! - a delay before every answer ([`FakeEs::set_response_delay`]);
//! - a limit on a request's `Content-Length` enforced the way proxies and
//!   overloaded servers do it, at the TCP level ([`FakeEs::close_above`]):
//!   the connection is closed after the headers without an answer, reset
//!   (`SO_LINGER` 0) after part of the body, or answered with an empty 413
//!   and closed without reading the body ([`Oversized`]);
//! - outages: the port closed and reopened ([`FakeEs::stop`],
//!   [`FakeEs::restart`], which also drop open connections), or every
//!   connection reset as soon as it is accepted, probes included
//!   ([`FakeEs::reset_connections_for`]).
//!
//! It records every request (path, headers, item count, status; status 0
//! when it closed the connection without answering) and the highest number
//! of requests it was handling at once.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A whole-request fault.
#[derive(Clone, Debug)]
pub enum RequestFault {
    /// This status with Elasticsearch's error body (`{"error":{…},"status":…}`);
    /// 413 is answered with an empty body, as Elasticsearch does.
    Status(u16),
    /// 502 with an nginx HTML page.
    HtmlBadGateway,
    /// 200 with the first half of a successful bulk response.
    TruncatedJson,
    /// 200 with `{"took":1,"errors":false}`.
    NoItems,
    /// 200 with a successful bulk response that lacks the last item.
    MissingItem,
    /// Stores the items normally, then waits this long before answering.
    Stall(Duration),
}

/// What the fake does with a `_bulk` request whose `Content-Length` is over
/// the limit set by [`FakeEs::close_above`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oversized {
    /// Closes the socket right after the headers, without an answer (the
    /// unread body makes the kernel reset the connection).
    CloseAfterHeaders,
    /// Reads about half the body, then resets the connection (`SO_LINGER` 0).
    ResetMidBody,
    /// Answers an empty 413 at once and closes without reading the body, as
    /// nginx does past `client_max_body_size`.
    Answer413AndClose,
}

/// An error for one item.
#[derive(Clone, Debug)]
pub struct ItemFault {
    pub status: u16,
    pub error_type: String,
    pub reason: String,
    pub caused_by: Option<Value>,
}

impl ItemFault {
    pub fn rejected_execution() -> Self {
        ItemFault {
            status: 429,
            error_type: "es_rejected_execution_exception".into(),
            reason: "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, \
                     replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1024, max_coordinating_and_primary_bytes=0]"
                .into(),
            caused_by: None,
        }
    }

    pub fn unavailable_shards() -> Self {
        ItemFault {
            status: 503,
            error_type: "unavailable_shards_exception".into(),
            reason: "[logs-test][0] primary shard is not active Timeout: [1m]".into(),
            caused_by: None,
        }
    }

    pub fn document_parsing() -> Self {
        ItemFault {
            status: 400,
            error_type: "document_parsing_exception".into(),
            reason: "[1:44] failed to parse field [message] of type [long] in document".into(),
            caused_by: Some(json!({
                "type": "illegal_argument_exception",
                "reason": "For input string: \"hello\""
            })),
        }
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub path_and_query: String,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Length of the body after gunzip.
    pub decoded_bytes: usize,
    /// Items parsed from the body (0 if it could not be read).
    pub items: usize,
    pub status: u16,
}

/// A stored document's key, as Elasticsearch's: (`_index`, `_id`).
type DocKey = (String, String);

#[derive(Default)]
struct State {
    stored: BTreeMap<DocKey, Value>,
    /// Attempts per `_id`, whatever the index.
    sent: HashMap<String, u32>,
    item_faults: HashMap<String, (ItemFault, u32)>,
    all_items_fault: Option<(Instant, ItemFault)>,
    request_faults: VecDeque<RequestFault>,
    fault_until: Option<(Instant, RequestFault)>,
    max_content_length: Option<usize>,
    delay: Duration,
    close_above: Option<(usize, Oversized)>,
    reset_until: Option<Instant>,
    in_flight: usize,
    max_in_flight: usize,
    requests: Vec<RecordedRequest>,
    seq_no: u64,
}

/// The running fake; stops accepting connections when dropped.
pub struct FakeEs {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// The accept loop; it owns every connection's task, so aborting it
    /// closes the port and drops every open connection.
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FakeEs {
    fn drop(&mut self) {
        self.stop();
    }
}

impl FakeEs {
    pub async fn start() -> FakeEs {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake ES");
        let addr = listener.local_addr().expect("fake ES address");
        let state = Arc::new(Mutex::new(State::default()));
        let server = tokio::spawn(serve(listener, state.clone()));
        FakeEs {
            addr,
            state,
            server: Mutex::new(Some(server)),
        }
    }

    /// Closes the port (connections are refused) and drops every open
    /// connection, as when Elasticsearch stops.
    pub fn stop(&self) {
        if let Some(server) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            server.abort();
        }
    }

    /// Listens again on the same port, with the same stored documents.
    pub async fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("fake ES: rebinding {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("fake ES: cannot rebind {}: {e}", self.addr),
            }
        };
        let server = tokio::spawn(serve(listener, self.state.clone()));
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
    }

    /// `_bulk` requests with a `Content-Length` over `bytes` (the body as
    /// sent, gzip'd or not) are cut off as `how` says.
    pub fn close_above(&self, bytes: usize, how: Oversized) {
        self.state().close_above = Some((bytes, how));
    }

    /// Ends [`FakeEs::close_above`].
    pub fn accept_any_size(&self) {
        self.state().close_above = None;
    }

    /// For `duration`, every connection is reset as soon as it is accepted
    /// (a load balancer without a healthy backend).
    pub fn reset_connections_for(&self, duration: Duration) {
        self.state().reset_until = Some(Instant::now() + duration);
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `times` attempts to create `id` fail with `fault`.
    pub fn fail_item(&self, id: &str, fault: ItemFault, times: u32) {
        self.state()
            .item_faults
            .insert(id.to_string(), (fault, times));
    }

    /// Every item of every bulk request in the next `duration` gets `fault`.
    pub fn fail_all_items_for(&self, fault: ItemFault, duration: Duration) {
        self.state().all_items_fault = Some((Instant::now() + duration, fault));
    }

    /// The next `n` requests get `fault` (after any already queued).
    pub fn fail_requests(&self, fault: RequestFault, n: usize) {
        self.state()
            .request_faults
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Every request in the next `duration` gets `fault`.
    pub fn fail_requests_for(&self, fault: RequestFault, duration: Duration) {
        self.state().fault_until = Some((Instant::now() + duration, fault));
    }

    /// Ends any timed or queued request faults.
    pub fn heal(&self) {
        let mut s = self.state();
        s.fault_until = None;
        s.request_faults.clear();
    }

    /// Bodies longer than `bytes` (after gunzip) get an empty 413.
    pub fn set_max_content_length(&self, bytes: usize) {
        self.state().max_content_length = Some(bytes);
    }

    pub fn set_response_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// The `_id` of every stored document, sorted; an `_id` stored in two
    /// indices is two documents and appears twice.
    pub fn stored_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .state()
            .stored
            .keys()
            .map(|(_, id)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Every stored document's (`_index`, `_id`), sorted.
    pub fn stored_keys(&self) -> Vec<(String, String)> {
        self.state().stored.keys().cloned().collect()
    }

    /// The document stored under `id` in `index`.
    pub fn stored(&self, index: &str, id: &str) -> Option<Value> {
        self.state()
            .stored
            .get(&(index.to_string(), id.to_string()))
            .cloned()
    }

    /// The indices holding a document with this `_id`, sorted.
    pub fn stored_indices(&self, id: &str) -> Vec<String> {
        self.state()
            .stored
            .keys()
            .filter(|(_, stored_id)| stored_id == id)
            .map(|(index, _)| index.clone())
            .collect()
    }

    /// How many requests carried `id` (to any index).
    pub fn times_sent(&self, id: &str) -> u32 {
        self.state().sent.get(id).copied().unwrap_or(0)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state().max_in_flight
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Waits (polling) until the fake has seen at least `n` requests.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.state().requests.len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (reset, close_above) = {
            let s = state.lock().unwrap_or_else(|p| p.into_inner());
            let reset = s.reset_until.is_some_and(|until| Instant::now() < until);
            (reset, s.close_above)
        };
        let state = state.clone();
        connections.spawn(async move {
            if reset {
                let _ = stream.set_zero_linger();
                return;
            }
            match close_above {
                Some((limit, how)) => guarded_connection(stream, state, limit, how).await,
                None => serve_connection(stream, state, true).await,
            }
        });
    }
}

async fn serve_connection<S>(stream: S, state: Arc<Mutex<State>>, keep_alive: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(state.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(keep_alive)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// One request per connection: its headers are read here, and an oversized
/// `_bulk` body is refused at the TCP level; anything else is served
/// normally (then the connection closes, so the next request is checked too).
async fn guarded_connection(
    mut stream: tokio::net::TcpStream,
    state: Arc<Mutex<State>>,
    limit: usize,
    how: Oversized,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    };
    let text = String::from_utf8_lossy(&head[..header_end]).into_owned();
    let is_bulk = text
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("POST ") && l.contains("/_bulk"));
    let content_length = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    let oversized = is_bulk && content_length.is_some_and(|n| n > limit);
    if !oversized {
        let stream = Prefixed {
            prefix: head,
            pos: 0,
            inner: stream,
        };
        serve_connection(stream, state, false).await;
        return;
    }
    let path = text
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_string();
    let status = match how {
        Oversized::CloseAfterHeaders => 0,
        Oversized::ResetMidBody => {
            let want = content_length.unwrap_or(0) / 2;
            let mut read = head.len() - header_end;
            while read < want {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            let _ = stream.set_zero_linger();
            0
        }
        Oversized::Answer413AndClose => {
            let _ = stream
                .write_all(b"HTTP/1.1 413 Request Entity Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = stream.flush().await;
            413
        }
    };
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .requests
        .push(RecordedRequest {
            path_and_query: path,
            content_type: None,
            content_encoding: None,
            decoded_bytes: 0,
            items: 0,
            status,
        });
    drop(stream);
}

/// A stream that yields `prefix` (bytes already read from `inner`) first.
struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: tokio::net::TcpStream,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Decrements the in-flight count when a request is done (or dropped).
struct InFlight(Arc<Mutex<State>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).in_flight -= 1;
    }
}

struct Pair {
    index: String,
    id: String,
    document: Result<Value, String>,
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // The sink's start-up version check (`GET /`): answered like
    // Elasticsearch, outside the fault plan and the request log.
    if req.uri().path() != "/_bulk" {
        let body =
            r#"{"name":"fake","version":{"number":"8.19.8"},"tagline":"You Know, for Search"}"#;
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap_or_default());
    }
    let (fault, delay) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let fault = match &s.fault_until {
            Some((until, fault)) if Instant::now() < *until => Some(fault.clone()),
            _ => s.request_faults.pop_front(),
        };
        (fault, s.delay)
    };
    let _in_flight = InFlight(state.clone());

    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut record = RecordedRequest {
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        content_type: header("content-type"),
        content_encoding: header("content-encoding"),
        decoded_bytes: 0,
        items: 0,
        status: 0,
    };
    let is_bulk = req.method() == hyper::Method::POST && req.uri().path().ends_with("/_bulk");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let response = answer(&state, is_bulk, &body, fault, &mut record).await;
    record.status = response.status().as_u16();
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .requests
        .push(record);
    Ok(response)
}

async fn answer(
    state: &Arc<Mutex<State>>,
    is_bulk: bool,
    body: &[u8],
    fault: Option<RequestFault>,
    record: &mut RecordedRequest,
) -> Response<Full<Bytes>> {
    if !is_bulk {
        return es_error(
            404,
            "resource_not_found_exception",
            "only POST /_bulk is faked",
        );
    }
    let decoded = if record.content_encoding.as_deref() == Some("gzip") {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(body).read_to_end(&mut out) {
            return es_error(
                400,
                "parse_exception",
                &format!("cannot gunzip the body: {e}"),
            );
        }
        out
    } else {
        body.to_vec()
    };
    record.decoded_bytes = decoded.len();
    let pairs = match parse_pairs(&decoded) {
        Ok(p) => p,
        Err(reason) => return es_error(400, "illegal_argument_exception", &reason),
    };
    record.items = pairs.len();
    {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        for p in &pairs {
            *s.sent.entry(p.id.clone()).or_default() += 1;
        }
    }

    let stall = match fault {
        None => None,
        Some(RequestFault::Stall(d)) => Some(d),
        Some(RequestFault::Status(413)) => return empty(413),
        Some(RequestFault::Status(status)) => return status_error(status),
        Some(RequestFault::HtmlBadGateway) => {
            let html = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                        <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n\
                        </body>\r\n</html>\r\n";
            return Response::builder()
                .status(502)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from(html)))
                .expect("static response");
        }
        Some(RequestFault::TruncatedJson) => {
            let full = success_response(&pairs, pairs.len()).to_string();
            return json_response(200, full[..full.len() / 2].to_string());
        }
        Some(RequestFault::NoItems) => {
            return json_response(200, r#"{"took":1,"errors":false}"#.to_string());
        }
        Some(RequestFault::MissingItem) => {
            return json_response(
                200,
                success_response(&pairs, pairs.len().saturating_sub(1)).to_string(),
            );
        }
    };
    let too_large = {
        let s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.max_content_length.is_some_and(|max| decoded.len() > max)
    };
    if too_large {
        return empty(413);
    }

    let (items, errors) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let mut errors = false;
        let items: Vec<Value> = pairs
            .into_iter()
            .map(|p| {
                let item = apply(&mut s, p);
                errors |= item["create"]["status"].as_u64().is_none_or(|st| st >= 300);
                item
            })
            .collect();
        (items, errors)
    };
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    json_response(
        200,
        json!({"took": 3, "errors": errors, "items": items}).to_string(),
    )
}

/// Applies one create like Elasticsearch would, returning its response item.
fn apply(s: &mut State, p: Pair) -> Value {
    let fault = match (&s.all_items_fault, s.item_faults.get_mut(&p.id)) {
        (Some((until, fault)), _) if Instant::now() < *until => Some(fault.clone()),
        (_, Some((fault, remaining))) if *remaining > 0 => {
            *remaining -= 1;
            Some(fault.clone())
        }
        _ => None,
    };
    if let Some(fault) = fault {
        let mut error = json!({"type": fault.error_type, "reason": fault.reason});
        if let Some(c) = &fault.caused_by {
            error["caused_by"] = c.clone();
        }
        return json!({"create": {"_index": p.index, "_id": p.id, "status": fault.status, "error": error}});
    }
    let document = match p.document {
        Ok(d) => d,
        Err(e) => {
            return json!({"create": {"_index": p.index, "_id": p.id, "status": 400, "error": {
                "type": "document_parsing_exception",
                "reason": format!("[1:1] failed to parse: {e}"),
                "caused_by": {"type": "json_parse_exception", "reason": e}
            }}});
        }
    };
    let key = (p.index, p.id);
    if s.stored.contains_key(&key) {
        let (index, id) = key;
        return json!({"create": {"_index": index, "_id": id, "status": 409, "error": {
            "type": "version_conflict_engine_exception",
            "reason": format!("[{id}]: version conflict, document already exists (current version [1])"),
            "index_uuid": "3m8Qx0bWQ0-eSZnS8jI8sA", "shard": "0", "index": index
        }}});
    }
    s.seq_no += 1;
    let (index, id) = &key;
    let item = json!({"create": {"_index": index, "_id": id, "_version": 1, "result": "created",
        "_shards": {"total": 2, "successful": 1, "failed": 0},
        "_seq_no": s.seq_no, "_primary_term": 1, "status": 201}});
    s.stored.insert(key, document);
    item
}

fn parse_pairs(body: &[u8]) -> Result<Vec<Pair>, String> {
    if !body.ends_with(b"\n") {
        return Err("The bulk request must be terminated by a newline [\\n]".into());
    }
    let mut lines = body[..body.len() - 1].split(|&b| b == b'\n');
    let mut pairs = Vec::new();
    while let Some(action) = lines.next() {
        let action: Value = serde_json::from_slice(action)
            .map_err(|e| format!("Malformed action/metadata line: {e}"))?;
        let meta = action
            .get("create")
            .ok_or_else(|| format!("fake ES only supports create, got {action}"))?;
        let field = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(index), Some(id)) = (field("_index"), field("_id")) else {
            return Err(format!("action without _index or _id: {action}"));
        };
        let document = lines
            .next()
            .ok_or_else(|| "action line without a document line".to_string())?;
        let document = serde_json::from_slice(document).map_err(|e| e.to_string());
        pairs.push(Pair {
            index,
            id,
            document,
        });
    }
    Ok(pairs)
}

fn success_response(pairs: &[Pair], n: usize) -> Value {
    let items: Vec<Value> = pairs[..n]
        .iter()
        .map(|p| json!({"create": {"_index": p.index, "_id": p.id, "_version": 1, "result": "created", "status": 201}}))
        .collect();
    json!({"took": 2, "errors": false, "items": items})
}

fn status_error(status: u16) -> Response<Full<Bytes>> {
    let (kind, reason) = match status {
        429 => (
            "es_rejected_execution_exception",
            "rejected execution of coordinating operation",
        ),
        401 => (
            "security_exception",
            "missing authentication credentials for REST request [/_bulk]",
        ),
        403 => (
            "security_exception",
            "action [indices:data/write/bulk] is unauthorized",
        ),
        503 => (
            "cluster_block_exception",
            "blocked by: [SERVICE_UNAVAILABLE/2/no master];",
        ),
        _ => ("status_exception", "injected fault"),
    };
    es_error(status, kind, reason)
}

fn es_error(status: u16, kind: &str, reason: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status
    });
    json_response(status, body.to_string())
}

fn json_response(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("valid status"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn empty(status: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("valid status"))
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}
