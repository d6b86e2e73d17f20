//! A fault-injecting fake Elasticsearch `_bulk` endpoint for tests.
//!
//! [`FakeEs::start`] serves `POST …/_bulk` on `127.0.0.1:0` (HTTP/1.1). It
//! gunzips the body (`Content-Encoding: gzip`), parses the NDJSON pairs and
//! answers in Elasticsearch's real response format (`took`, `errors`, and per
//! item `{"create":{"_index","_id","status",…}}` with `error.type`/`reason`/
//! `caused_by`). Like Elasticsearch it stores each `_id` once: a second
//! `create` of a stored `_id` answers 409 `version_conflict_engine_exception`,
//! and a document line that is not JSON answers 400
//! `document_parsing_exception`. `filter_path` is ignored (the full format is
//! a superset of the filtered one).
//!
//! Faults a test can script:
//! - per `_id` item errors for the next N attempts ([`FakeEs::fail_item`]);
//! - whole-request faults for the next N requests ([`FakeEs::fail_requests`])
//!   or for a duration ([`FakeEs::fail_requests_for`]): an ES error status
//!   (503, 429, 401, …), an nginx HTML 502 page, a 200 whose body is
//!   truncated, has no `items` or one item too few — none of which store
//!   anything, so a client that took them as success would lose documents;
//!   or a stall that stores the items and then answers late (a client timeout
//!   after Elasticsearch indexed);
//! - a body size limit answered with an empty 413 ([`FakeEs::set_max_content_length`]);
//! - a delay before every answer ([`FakeEs::set_response_delay`]).
//!
//! It records every request (path, headers, item count, status) and the
//! highest number of requests it was handling at once.
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

#[derive(Default)]
struct State {
    stored: BTreeMap<String, (String, Value)>,
    sent: HashMap<String, u32>,
    item_faults: HashMap<String, (ItemFault, u32)>,
    request_faults: VecDeque<RequestFault>,
    fault_until: Option<(Instant, RequestFault)>,
    max_content_length: Option<usize>,
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
    requests: Vec<RecordedRequest>,
    seq_no: u64,
}

/// The running fake; stops accepting connections when dropped.
pub struct FakeEs {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
}

impl Drop for FakeEs {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeEs {
    pub async fn start() -> FakeEs {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake ES");
        let addr = listener.local_addr().expect("fake ES address");
        let state = Arc::new(Mutex::new(State::default()));
        let server_state = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = server_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeEs {
            addr,
            state,
            server,
        }
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

    /// Stored `_id`s, sorted.
    pub fn stored_ids(&self) -> Vec<String> {
        self.state().stored.keys().cloned().collect()
    }

    /// The stored document with this `_id`.
    pub fn stored(&self, id: &str) -> Option<Value> {
        self.state().stored.get(id).map(|(_, doc)| doc.clone())
    }

    /// The index a document was stored in.
    pub fn stored_index(&self, id: &str) -> Option<String> {
        self.state().stored.get(id).map(|(index, _)| index.clone())
    }

    /// How many requests carried `id`.
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
    if let Some((fault, remaining)) = s.item_faults.get_mut(&p.id)
        && *remaining > 0
    {
        *remaining -= 1;
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
    if s.stored.contains_key(&p.id) {
        return json!({"create": {"_index": p.index, "_id": p.id, "status": 409, "error": {
            "type": "version_conflict_engine_exception",
            "reason": format!("[{}]: version conflict, document already exists (current version [1])", p.id),
            "index_uuid": "3m8Qx0bWQ0-eSZnS8jI8sA", "shard": "0", "index": p.index
        }}});
    }
    s.seq_no += 1;
    let item = json!({"create": {"_index": p.index, "_id": p.id, "_version": 1, "result": "created",
        "_shards": {"total": 2, "successful": 1, "failed": 0},
        "_seq_no": s.seq_no, "_primary_term": 1, "status": 201}});
    s.stored.insert(p.id, (p.index, document));
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
