//! One `_bulk` request: building its body and classifying its answer.
//!
//! A request carries a subset of a batch's items, named by [`ItemRef`]s (the
//! whole batch at first; after item-level retries or a 413 split, fewer).
//! The body is gzip'd (unless level 0; [`super::gzip`]) straight from the spans' bodies —
//! contiguous items are written as one slice, nothing is concatenated first —
//! on the blocking pool, so concurrent batches compress on all cores.
//!
//! [`BulkRequester::send`] makes one attempt and says what happened as an
//! [`Attempt`]: a bulk response (whose items the caller walks), a 413, or a
//! whole-request failure to retry. A 2xx body that is not a bulk response for
//! exactly the items sent is a failure, never a success.
//!
//! A failure without an HTTP answer is classified by [`TransportKind`] from
//! reqwest's error and its source chain: `is_connect` (refused, DNS, TLS
//! handshake, connect timeout) and `is_timeout` say the request never got an
//! answer in time; a `hyper::Error` that is an incomplete message, or an
//! `io::Error` that is a reset, broken pipe or abort, on a connection that
//! was established, says the peer cut the connection while the request was
//! being sent or before it answered ([`TransportKind::ConnectionBroken`]) —
//! what a server or proxy does to a body it finds too large.
//! [`BulkRequester::probe`] asks a host whether it answers at all (`HEAD /`).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};

use super::hosts::Hosts;
use super::response::{self, BulkItem, ItemError, NotBulkResponse};
use crate::buffer::Batch;

/// Largest 2xx response body accepted (a response to a huge batch with an
/// error on every item stays far below this).
const MAX_BULK_RESPONSE_BYTES: usize = 256 << 20;
/// How much of an error response is kept for logs.
const MAX_ERROR_BODY_BYTES: usize = 8 << 10;

/// Item `item` of span `span` of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRef {
    pub span: u32,
    pub item: u32,
}

/// Every item of `batch`, in order.
pub fn all_items(batch: &Batch) -> Vec<ItemRef> {
    let mut refs = Vec::with_capacity(batch.events);
    for (s, span) in batch.spans.iter().enumerate() {
        for i in 0..span.len() {
            refs.push(ItemRef {
                span: s as u32,
                item: i as u32,
            });
        }
    }
    refs
}

/// The bytes of one item (action line and document line).
pub fn item_bytes(batch: &Batch, r: ItemRef) -> &[u8] {
    batch.spans[r.span as usize].item(r.item as usize)
}

/// The body of `items` as slices of the spans' bodies, adjacent items merged.
fn body_slices<'a>(batch: &'a Batch, items: &[ItemRef]) -> impl Iterator<Item = &'a [u8]> {
    let mut runs: Vec<(usize, Range<usize>)> = Vec::new();
    for &r in items {
        let span = &batch.spans[r.span as usize];
        let start = span.items[r.item as usize] as usize;
        let end = span
            .items
            .get(r.item as usize + 1)
            .map_or(span.body.len(), |&e| e as usize);
        match runs.last_mut() {
            Some((s, range)) if *s == r.span as usize && range.end == start => range.end = end,
            _ => runs.push((r.span as usize, start..end)),
        }
    }
    runs.into_iter()
        .map(move |(s, range)| &batch.spans[s].body[range])
}

/// A request body ready to send (and to resend unchanged).
#[derive(Debug, Clone)]
pub struct BulkBody {
    pub bytes: Bytes,
    pub gzip: bool,
}

/// Builds the body of `items` on the blocking pool.
pub async fn build_body(
    batch: Arc<Batch>,
    items: Arc<[ItemRef]>,
    gzip_level: u32,
) -> std::io::Result<BulkBody> {
    let joined = tokio::task::spawn_blocking(move || encode_body(&batch, &items, gzip_level)).await;
    match joined {
        Ok(result) => result,
        Err(e) => Err(std::io::Error::other(format!(
            "body encoder task failed: {e}"
        ))),
    }
}

fn encode_body(batch: &Batch, items: &[ItemRef], gzip_level: u32) -> std::io::Result<BulkBody> {
    let raw_len: usize = body_slices(batch, items).map(<[u8]>::len).sum();
    if gzip_level == 0 {
        let mut out = Vec::with_capacity(raw_len);
        body_slices(batch, items).for_each(|s| out.extend_from_slice(s));
        return Ok(BulkBody {
            bytes: out.into(),
            gzip: false,
        });
    }
    Ok(BulkBody {
        bytes: super::gzip::gzip(body_slices(batch, items), raw_len, gzip_level)?.into(),
        gzip: true,
    })
}

/// Frees the spans' bodies of `batch`, keeping `whole` (the body of every
/// item of the batch, as [`build_body`] made it) to restore them from.
///
/// An in-flight batch then costs its compressed body (~4x smaller) instead
/// of both: with `concurrency` 2 and 3 MiB batches, ~5 MiB less during an
/// outage (the `outage` bench: 38.9 → 33.6 MiB flat). The freed bodies go
/// to the span pool, for the followers' next spans. Items sent apart (a
/// 413 split, item-level retries) or dead-lettered need the bodies: those
/// paths [`unpack`] first, once per batch. Does nothing unless `whole`
/// covers every byte.
pub fn pack(batch: &mut Batch, whole: &BulkBody) {
    if batch.can_pack() {
        batch.keep_packed(whole.bytes.clone(), whole.gzip);
    }
}

/// Restores the spans' bodies that [`pack`] freed, decoding straight into
/// each (a gunzip of ~3 MiB: a few milliseconds, on the calling thread).
/// On error the batch is left packed, its spans without bodies.
pub fn unpack(batch: &mut Batch) -> std::io::Result<()> {
    use std::io::Read;
    let Some(packed) = batch.packed.take() else {
        return Ok(());
    };
    let mut input: Box<dyn Read + '_> = if packed.gzip {
        Box::new(flate2::read::GzDecoder::new(&packed.bytes[..]))
    } else {
        Box::new(&packed.bytes[..])
    };
    let mut bodies = Vec::with_capacity(packed.lens.len());
    let mut result = Ok(());
    for &len in &packed.lens {
        let mut body = Vec::with_capacity(len);
        match input.by_ref().take(len as u64).read_to_end(&mut body) {
            Ok(n) if n == len => bodies.push(body),
            Ok(n) => {
                result = Err(std::io::Error::other(format!(
                    "a packed batch body ends {} bytes short of its spans",
                    len - n
                )));
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        let mut rest = [0u8; 1];
        result = match input.read(&mut rest) {
            Ok(0) => Ok(()),
            Ok(_) => Err(std::io::Error::other(
                "a packed batch body holds more bytes than its spans",
            )),
            Err(e) => Err(e),
        };
    }
    drop(input);
    if let Err(e) = result {
        batch.packed = Some(packed);
        return Err(e);
    }
    for (span, body) in batch.spans.iter_mut().zip(bodies) {
        span.body = body;
    }
    Ok(())
}

/// The outcome of one request.
#[derive(Debug)]
pub enum Attempt {
    /// A bulk response with one item per item sent, in order.
    Bulk(Vec<BulkItem>),
    /// 413: the body is larger than Elasticsearch accepts.
    TooLarge,
    /// The request failed as a whole; retry it after a backoff.
    Failed(RequestFailure),
}

/// How a request without an HTTP answer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection: refused, DNS, TLS handshake, connect timeout.
    Connect,
    /// No answer within the request timeout.
    Timeout,
    /// The connection was established, then reset or closed by the peer
    /// before an answer: while the body was sent, or after.
    ConnectionBroken,
    /// Anything else (e.g. a body that could not be encoded).
    Other,
}

/// Why a whole request failed, for logs.
#[derive(Debug)]
pub enum RequestFailure {
    /// No HTTP response: connect error, timeout, broken connection.
    Transport { error: String, kind: TransportKind },
    /// 429 or 5xx (Elasticsearch or a proxy in front of it is overloaded or down).
    Unavailable {
        status: StatusCode,
        error: Option<ItemError>,
    },
    /// Another 4xx: a configuration problem (auth, URL, proxy) the operator
    /// must fix. Retried so that no data is lost meanwhile.
    Rejected {
        status: StatusCode,
        error: Option<ItemError>,
        body: String,
    },
    /// A 2xx whose body is not a bulk response for the items sent.
    NotBulk {
        status: StatusCode,
        why: NotBulkResponse,
        body: String,
    },
}

impl RequestFailure {
    /// Whether the peer cut an established connection before answering.
    pub fn is_connection_broken(&self) -> bool {
        matches!(
            self,
            RequestFailure::Transport {
                kind: TransportKind::ConnectionBroken,
                ..
            }
        )
    }

    /// Whether the operator has to act (logged at error, not warn).
    pub fn needs_operator(&self) -> bool {
        matches!(self, RequestFailure::Rejected { .. })
    }

    /// The HTTP status, if there was a response.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RequestFailure::Transport { .. } => None,
            RequestFailure::Unavailable { status, .. }
            | RequestFailure::Rejected { status, .. }
            | RequestFailure::NotBulk { status, .. } => Some(*status),
        }
    }

    /// Elasticsearch's `error.type`, or what kind of failure it was.
    pub fn error_type(&self) -> &str {
        match self {
            RequestFailure::Transport { kind, .. } => match kind {
                TransportKind::Connect => "connect",
                TransportKind::Timeout => "timeout",
                TransportKind::ConnectionBroken => "connection_broken",
                TransportKind::Other => "transport",
            },
            RequestFailure::Unavailable { error: Some(e), .. }
            | RequestFailure::Rejected { error: Some(e), .. } => e.kind_or_unknown(),
            RequestFailure::Unavailable { error: None, .. }
            | RequestFailure::Rejected { error: None, .. } => "no_elasticsearch_error",
            RequestFailure::NotBulk { .. } => "not_a_bulk_response",
        }
    }
}

impl std::fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = |e: &Option<ItemError>| {
            e.as_ref()
                .and_then(|e| e.reason.clone())
                .unwrap_or_else(|| "(no reason given)".to_string())
        };
        match self {
            RequestFailure::Transport {
                error,
                kind: TransportKind::Timeout,
            } => write!(f, "request timed out: {error}"),
            RequestFailure::Transport {
                error,
                kind: TransportKind::ConnectionBroken,
            } => write!(f, "connection closed before an answer: {error}"),
            RequestFailure::Transport { error, .. } => write!(f, "{error}"),
            RequestFailure::Unavailable { status, error } => {
                write!(f, "HTTP {status}: {}", reason(error))
            }
            RequestFailure::Rejected {
                status,
                error,
                body,
            } => write!(
                f,
                "HTTP {status}: {} (body: {body:?}); check the hosts, credentials and permissions",
                reason(error)
            ),
            RequestFailure::NotBulk { status, why, body } => {
                write!(f, "HTTP {status}: {why} (body: {body:?})")
            }
        }
    }
}

/// Sends bulk bodies: one shared HTTP client and the host rotation.
pub struct BulkRequester {
    client: reqwest::Client,
    hosts: Hosts,
}

impl BulkRequester {
    pub fn new(client: reqwest::Client, hosts: Hosts) -> Self {
        BulkRequester { client, hosts }
    }

    /// One attempt to send `body`, which holds `sent` items, to the next
    /// host; returns that host (for logs) and what happened.
    pub async fn send(&self, body: &BulkBody, sent: usize) -> (&str, Attempt) {
        let (i, attempt) = self.send_indexed(body, sent).await;
        (&self.hosts.get(i).display, attempt)
    }

    /// As [`BulkRequester::send`], returning the host's index (for
    /// [`BulkRequester::probe`] and [`BulkRequester::display`]).
    pub async fn send_indexed(&self, body: &BulkBody, sent: usize) -> (usize, Attempt) {
        let i = self.hosts.pick_index();
        let host = self.hosts.get(i);
        let attempt = self.send_to(&host.bulk_url, body, sent).await;
        let unhealthy = match &attempt {
            Attempt::Failed(RequestFailure::Transport { .. }) => true,
            Attempt::Failed(RequestFailure::Unavailable { status, .. }) => {
                matches!(status.as_u16(), 502..=504)
            }
            _ => false,
        };
        self.hosts.report(i, !unhealthy);
        (i, attempt)
    }

    /// Host `i` for logs.
    pub fn display(&self, i: usize) -> &str {
        &self.hosts.get(i).display
    }

    /// Whether host `i` answers a `HEAD /` with any HTTP status but 502,
    /// 503 or 504 (a 401 or 403 still proves it is up and reachable) within
    /// [`PROBE_TIMEOUT`]. Reports the outcome to the host rotation.
    pub async fn probe(&self, i: usize) -> bool {
        let host = self.hosts.get(i);
        let mut base = host.bulk_url.clone();
        let path = base.path().trim_end_matches("_bulk").to_string();
        base.set_path(&path);
        base.set_query(None);
        let answered = match self.client.head(base).timeout(PROBE_TIMEOUT).send().await {
            Ok(r) => !matches!(r.status().as_u16(), 502..=504),
            Err(_) => false,
        };
        self.hosts.report(i, answered);
        answered
    }

    async fn send_to(&self, url: &reqwest::Url, body: &BulkBody, sent: usize) -> Attempt {
        let failed = Attempt::Failed;
        let mut request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body.bytes.clone());
        if body.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return failed(transport_failure(&e)),
        };
        let status = response.status();
        let limit = if status.is_success() {
            MAX_BULK_RESPONSE_BYTES
        } else {
            MAX_ERROR_BODY_BYTES
        };
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = limit - bytes.len();
                    bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if chunk.len() >= room {
                        break;
                    }
                }
                Ok(None) => break,
                // A 2xx whose body broke off is not a bulk response; for an
                // error status the part read is enough to log.
                Err(e) if status.is_success() => return failed(transport_failure(&e)),
                Err(_) => break,
            }
        }
        classify(status, &bytes, sent).unwrap_or_else(failed)
    }
}

/// Longest wait for a [`BulkRequester::probe`].
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

fn transport_failure(e: &reqwest::Error) -> RequestFailure {
    RequestFailure::Transport {
        // The top-level message of a reqwest error is vague; the sources say why.
        error: super::client::error_chain(e),
        kind: transport_kind(e),
    }
}

/// What kind of transport failure `e` is (see the module doc).
fn transport_kind(e: &reqwest::Error) -> TransportKind {
    if e.is_timeout() {
        return TransportKind::Timeout;
    }
    if e.is_connect() {
        return TransportKind::Connect;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return TransportKind::ConnectionBroken;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return TransportKind::ConnectionBroken;
        }
        source = s.source();
    }
    TransportKind::Other
}

fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 512;
    let s = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    if body.len() > MAX {
        format!("{s}…")
    } else {
        s.into_owned()
    }
}

/// What a response with `status` and `body` to a request of `sent` items means.
fn classify(status: StatusCode, body: &[u8], sent: usize) -> Result<Attempt, RequestFailure> {
    if status.is_success() {
        return match response::parse_bulk_response(body, sent) {
            Ok(items) => Ok(Attempt::Bulk(items)),
            Err(why) => Err(RequestFailure::NotBulk {
                status,
                why,
                body: excerpt(body),
            }),
        };
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Ok(Attempt::TooLarge);
    }
    let error = response::parse_request_error(body);
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(RequestFailure::Unavailable { status, error })
    } else {
        // Other 4xx, and 1xx/3xx which a bulk endpoint never answers.
        Err(RequestFailure::Rejected {
            status,
            error,
            body: excerpt(body),
        })
    }
}

/// The default request timeout if the config gives none (zero).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EncodedSpan;
    use std::io::Read;

    fn span(items: &[&str]) -> EncodedSpan {
        let mut s = EncodedSpan::default();
        for id in items {
            s.items.push(s.body.len() as u32);
            s.body.extend_from_slice(
                format!("{{\"create\":{{\"_id\":\"{id}\"}}}}\n{{\"m\":\"{id}\"}}\n").as_bytes(),
            );
        }
        s
    }

    fn batch() -> Batch {
        let mut b = Batch::default();
        b.push(span(&["a", "b", "c"]));
        b.push(span(&["d", "e"]));
        b
    }

    fn expected(ids: &[&str]) -> Vec<u8> {
        ids.iter()
            .flat_map(|id| {
                format!("{{\"create\":{{\"_id\":\"{id}\"}}}}\n{{\"m\":\"{id}\"}}\n").into_bytes()
            })
            .collect()
    }

    #[test]
    fn a_packed_batch_frees_its_bodies_and_restores_every_item() {
        for level in [0, 1, 6] {
            let mut b = batch();
            let refs = all_items(&b);
            let whole = encode_body(&b, &refs, level).unwrap();
            pack(&mut b, &whole);
            assert!(
                b.spans.iter().all(|s| s.body.capacity() == 0),
                "level {level}"
            );
            assert_eq!(
                b.packed.as_ref().map(|p| p.bytes.len()),
                Some(whole.bytes.len())
            );
            unpack(&mut b).unwrap();
            assert!(b.packed.is_none());
            let ids = ["a", "b", "c", "d", "e"];
            for (r, id) in refs.iter().zip(ids) {
                assert_eq!(item_bytes(&b, *r), &expected(&[id])[..], "level {level}");
            }
            // A subset is built from the restored bodies as before.
            let again = encode_body(&b, &refs[1..3], 0).unwrap();
            assert_eq!(&again.bytes[..], &expected(&["b", "c"])[..]);
        }
    }

    #[test]
    fn a_body_of_some_items_is_not_packed_and_a_bad_one_not_unpacked() {
        let mut b = batch();
        let refs = all_items(&b);
        let some = encode_body(&b, &refs[..4], 1).unwrap();
        // pack trusts its caller to give the whole body; it checks that
        // the spans are whole, and unpack checks the length.
        pack(&mut b, &some);
        let err = unpack(&mut b).unwrap_err();
        assert!(err.to_string().contains("short"), "{err}");
        // Still packed: nothing restored from a wrong body.
        assert!(b.packed.is_some());
        assert!(b.spans.iter().all(|s| s.body.is_empty()));
        // A body longer than the spans is refused too.
        let mut b = batch();
        let whole = encode_body(&b, &all_items(&b), 0).unwrap();
        pack(&mut b, &whole);
        if let Some(p) = b.packed.as_mut() {
            let mut longer = p.bytes.to_vec();
            longer.extend_from_slice(b"extra");
            p.bytes = longer.into();
        }
        let err = unpack(&mut b).unwrap_err();
        assert!(err.to_string().contains("more bytes"), "{err}");
        assert!(b.packed.is_some());

        let mut b = batch();
        b.spans[1].items[0] = 3; // bytes before the first item: not whole
        let whole = encode_body(&b, &all_items(&b), 1).unwrap();
        pack(&mut b, &whole);
        assert!(b.packed.is_none());
    }

    #[test]
    fn body_of_a_subset_is_its_items_in_order() {
        let b = batch();
        let refs = all_items(&b);
        assert_eq!(refs.len(), 5);
        let plain = encode_body(&b, &refs, 0).unwrap();
        assert!(!plain.gzip);
        assert_eq!(&plain.bytes[..], &expected(&["a", "b", "c", "d", "e"])[..]);

        let subset = [refs[0], refs[2], refs[3], refs[4]];
        let gz = encode_body(&b, &subset, 1).unwrap();
        assert!(gz.gzip);
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gz.bytes[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, expected(&["a", "c", "d", "e"]));
    }

    #[test]
    fn every_level_and_an_empty_body_gunzip_to_the_ndjson() {
        let b = batch();
        let refs = all_items(&b);
        let ndjson = expected(&["a", "b", "c", "d", "e"]);
        for level in 1..=9 {
            for (items, want) in [(&refs[..], &ndjson[..]), (&[][..], &b""[..])] {
                let body = encode_body(&b, items, level).unwrap();
                assert!(body.gzip);
                // One gzip member: a reader that stops after the first
                // member (as some servers do) sees the whole body too.
                let (mut single, mut multi) = (Vec::new(), Vec::new());
                flate2::read::GzDecoder::new(&body.bytes[..])
                    .read_to_end(&mut single)
                    .unwrap();
                flate2::read::MultiGzDecoder::new(&body.bytes[..])
                    .read_to_end(&mut multi)
                    .unwrap();
                assert_eq!(single, want, "level {level}");
                assert_eq!(multi, want, "level {level}");
            }
        }
    }

    /// The transport failure of one POST of `body` to a server that
    /// handles its one connection with `serve` (`None`: nothing listens).
    async fn failure_kind<F, Fut>(body: usize, serve: Option<F>) -> TransportKind
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/_bulk", listener.local_addr().unwrap());
        match serve {
            Some(serve) => {
                tokio::spawn(async move {
                    let (stream, _) = listener.accept().await.unwrap();
                    serve(stream).await;
                });
            }
            None => drop(listener),
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let err = client
            .post(url)
            .body(vec![b'x'; body])
            .send()
            .await
            .expect_err("the request must fail");
        transport_kind(&err)
    }

    #[tokio::test]
    async fn transport_failures_tell_a_cut_from_an_outage() {
        use tokio::io::AsyncReadExt;
        type Serve = fn(tokio::net::TcpStream) -> std::future::Ready<()>;
        // Nothing listens: refused, never a cut.
        assert_eq!(
            failure_kind::<Serve, _>(10, None).await,
            TransportKind::Connect
        );
        // Closed right after accepting, the body unread: reset.
        let kind = failure_kind(4 << 20, Some(|s| async move { drop(s) })).await;
        assert_eq!(kind, TransportKind::ConnectionBroken);
        // Part of the body read, then reset (SO_LINGER 0).
        let kind = failure_kind(
            4 << 20,
            Some(|mut s: tokio::net::TcpStream| async move {
                let mut buf = vec![0; 64 << 10];
                let _ = s.read(&mut buf).await;
                let _ = s.set_zero_linger();
            }),
        )
        .await;
        assert_eq!(kind, TransportKind::ConnectionBroken);
        // Everything read, then closed without an answer.
        let kind = failure_kind(
            100,
            Some(|mut s: tokio::net::TcpStream| async move {
                let mut buf = vec![0; 64 << 10];
                let mut total = 0;
                while total < 100 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
            }),
        )
        .await;
        assert_eq!(kind, TransportKind::ConnectionBroken);
        // Accepted, never answered: a timeout, not a cut.
        let kind = failure_kind(
            100,
            Some(|s: tokio::net::TcpStream| async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(s);
            }),
        )
        .await;
        assert_eq!(kind, TransportKind::Timeout);
    }

    #[test]
    fn statuses_are_classified() {
        let ok = br#"{"errors":false,"items":[{"create":{"status":201}}]}"#;
        assert!(
            matches!(classify(StatusCode::OK, ok, 1), Ok(Attempt::Bulk(items)) if items.len() == 1)
        );
        assert!(matches!(
            classify(StatusCode::OK, ok, 2),
            Err(RequestFailure::NotBulk { .. })
        ));
        assert!(matches!(
            classify(StatusCode::PAYLOAD_TOO_LARGE, b"", 1),
            Ok(Attempt::TooLarge)
        ));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, b"{}", 1),
            Err(RequestFailure::Unavailable { .. })
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, b"", 1),
            Err(RequestFailure::Unavailable { .. })
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>", 1),
            Err(RequestFailure::Unavailable { error: None, .. })
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, b"", 1),
            Err(RequestFailure::Rejected { .. })
        ));
    }
}
