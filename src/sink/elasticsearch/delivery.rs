//! Delivery of one batch: requests until every item is delivered,
//! dead-lettered, or given up.
//!
//! The batch's items start as one group. Each group is sent until its bulk
//! response settles it:
//!
//! - whole-request failure (connect error, timeout, 429, 5xx, other 4xx, a
//!   2xx that is not a bulk response) → back off, resend the same body;
//! - 413 → split the group in halves, each sent on its own; a single item
//!   that is still too large is dead-lettered;
//! - the connection cut before an answer, repeatedly, while the host answers
//!   otherwise → split in halves as for a 413 (below);
//! - bulk response → per item: 2xx delivered, 409 duplicate (delivered),
//!   429/5xx kept and resent alone after a backoff, anything else rejected;
//! - failing in a way specific to the group for `retry.give_up_after` →
//!   its remaining items are given up: dead-lettered (below).
//!
//! ## A connection cut instead of a 413
//!
//! Elasticsearch sometimes closes the connection rather than answer 413, and
//! proxies and load balancers in front of it (nginx past
//! `client_max_body_size`, cloud load balancers) reset it while the body is
//! still being sent. To the client that is a broken connection
//! ([`TransportKind::ConnectionBroken`]: reset, broken pipe, or closed before
//! an answer, on a connection that was established), which an outage also
//! produces: a node stopping mid-request, an idle pooled connection the
//! server had closed. The rule that tells them apart:
//!
//! - a group whose request was cut [`CUTS_BEFORE_SPLIT`] times in a row (any
//!   other outcome resets the count) makes the sink probe that host
//!   (`HEAD /`, any answer but 502/503/504 counts). If the host answers, the
//!   size of the request is the likely cause: a group of two or more items
//!   is split in halves, and each half is split again after a single cut
//!   (the size is already suspect). If the probe fails too, it is an outage:
//!   the whole group is retried with backoff, unsplit;
//! - connect errors (refused, DNS, TLS) and timeouts never count: the host
//!   did not cut anything, it was not there or slow.
//!
//! Splitting on a wrong guess costs only more, smaller requests; nothing is
//! dropped. A **single** document whose request keeps being cut is not
//! dead-lettered at once: a cut carries no reason, and a flapping proxy that
//! resets connections while answering `HEAD /` would then turn a network
//! fault into documents taken out of the index. It is retried with backoff
//! and logged at error level with its size, naming the body limits to check
//! (`http.max_content_length`, the proxy's); only after being cut (with the
//! host answering the probe) for `give_up_after` is it given up. A 413,
//! which does carry the reason, dead-letters a single document at once.
//! Timeouts (a proxy that stops reading the body) are retried like any
//! timeout.
//!
//! ## Giving up (`retry.give_up_after`, default 1 h)
//!
//! A document that can never be delivered — always cut by a proxy, in a
//! request refused as a whole with a 4xx, answered 5xx forever while the
//! others are indexed, in a batch whose delivery panics every time — would
//! hold its batch unacknowledged forever, and with it its file's checkpoint
//! (or, in disk mode, the oldest segment). So each group keeps a count of the
//! time it has spent failing *in a way specific to it*. Each failed attempt
//! closes a window that began at the group's previous failed attempt (or
//! when its first attempt was sent); the window is added to the count when
//! the failure is one where the cluster answered and the answer is about
//! this request or these documents:
//!
//! - the whole request answered with a 4xx other than 408, 409, 413 and 429
//!   (or a 1xx/3xx), or with a 2xx that is not a bulk response for the items
//!   sent;
//! - a single document's request cut ([`CUTS_BEFORE_SPLIT`] or more times in
//!   a row) while its host answers the `HEAD /` probe (for a group of
//!   several, the same window counts and the group is split; only single
//!   documents are given up for cuts);
//! - items answered 429 or 5xx while the cluster accepted other documents
//!   (2xx or 409, in any request of this sink, the same response included)
//!   within the window;
//! - a request body that cannot be built.
//!
//! Every other failure adds nothing, however long it lasts: no answer
//! (connection refused, DNS, TLS, a timeout, a cut that is not repeated or
//! whose probe fails), a whole-request 408, 429 or 5xx (the cluster or its
//! proxy says it is unavailable), items answered 429/5xx while no other
//! document is accepted (an overloaded cluster, a red index taking every
//! document). Elasticsearch being down or overloaded is what the buffer and
//! backpressure are for: an outage of any length dead-letters nothing. The
//! count is kept by the group, inherited by its halves after a split and by
//! its items resent alone, and never reset (the time is specific time).
//! Once it reaches `give_up_after` the group's remaining items are written
//! to the dead-letter file — status and `error` of the last failure, the
//! reason saying what kept failing and for how long, and a `given_up`
//! object with the first failure's time and the number of attempts — counted
//! in `items_given_up` (and `items_dead_lettered`), logged at error level,
//! and the batch is acknowledged as for any dead letter, so everything
//! behind it moves on; `logship replay` sends them again. One consequence:
//! with nothing else being accepted (an idle node, `concurrency: 1`) an item
//! answered 429/5xx is retried without a limit, since the cluster may well
//! be refusing every document.
//!
//! ## Panics
//!
//! [`Delivery::deliver_until_settled`] catches a panic of the delivery (a
//! bug) where the batch's task polls it (`catch_unwind` around each poll,
//! so aborting the task still drops the delivery at once). The panic is
//! logged at error level and the batch is delivered again from its first
//! item after a backoff: never acknowledged on the way, never dropped (what
//! the panicked attempt had delivered answers 409). The window from a delivery's start (or the previous panic)
//! to its panic counts as above when the cluster accepted documents meanwhile;
//! once the count reaches `give_up_after` the whole batch is dead-lettered
//! with `error.type` `delivery_panicked` (some of its documents may be
//! indexed already; replaying those answers 409).
//!
//! Rejected and given-up items are written to the dead-letter file,
//! durably, before [`Delivery::deliver`] returns; the caller then
//! acknowledges the batch. Aborting the task stops a delivery, and then
//! nothing of the batch is acknowledged.
//!
//! A packed batch (its bodies kept only as one gzip'd bulk body) is
//! restored before any item is sent apart or dead-lettered. If that fails
//! (a bug), a batch of the disk buffer is given up as [`Unrestorable`]
//! (logged with its record id; the caller acknowledges it as lost, and the
//! buffer counts it), since after a restart the same record would fail
//! again; any other batch makes the process exit (70) and its lines are
//! read again from the files ([`unpack`]).

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{error, warn};

use super::dead_letter::{self, DeadLetter, DeadLetterFile, GivenUp};
#[cfg(doc)]
use super::request::TransportKind;
use super::request::{self, Attempt, BulkBody, BulkRequester, ItemRef, RequestFailure};
use super::response::{self, BulkItemOutcome, ItemError};
use super::retry::{Backoff, LogLimiter};
use crate::buffer::Batch;
use crate::buffer::disk::stage::DISK_ORIGIN_FILE;
use crate::telemetry::Metrics;

/// At most one retry warning of each kind per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Consecutive cut connections before a group of several items is split
/// (if its host still answers a probe).
pub const CUTS_BEFORE_SPLIT: u32 = 2;

/// Items sent together until their response settles them.
struct Group {
    items: Vec<ItemRef>,
    /// Cuts counted before this group existed: a half of a group split
    /// because of cuts starts at `CUTS_BEFORE_SPLIT - 1`.
    cuts: u32,
    /// Inherited from the group this one was split from.
    failing: Failing,
}

/// How long a group (or a batch whose delivery panics) has been failing in
/// a way specific to it (module doc, "Giving up").
#[derive(Debug, Clone, Default)]
struct Failing {
    /// The time counted toward `give_up_after`.
    counted: Duration,
    /// When the previous failed attempt ended: the next window starts there.
    last_failure: Option<Instant>,
    /// When the first attempt failed, for the dead letter.
    first_failure: Option<DateTime<Utc>>,
    /// Failed attempts so far.
    attempts: u32,
}

impl Failing {
    /// Where the window closed by a failure of an attempt sent at `sent_at`
    /// starts.
    fn window_start(&self, sent_at: Instant) -> Instant {
        self.last_failure.unwrap_or(sent_at)
    }

    /// Records a failed attempt sent at `sent_at`, adding its window to the
    /// count if `counts`. True when the count has reached `bound` on a
    /// failure that counts.
    fn record(&mut self, sent_at: Instant, counts: bool, bound: Duration) -> bool {
        let now = Instant::now();
        if counts {
            self.counted += now.saturating_duration_since(self.window_start(sent_at));
        }
        self.last_failure = Some(now);
        self.first_failure.get_or_insert_with(Utc::now);
        self.attempts += 1;
        counts && self.counted >= bound
    }

    fn given_up(&self) -> GivenUp {
        GivenUp {
            first_failure: self.first_failure.unwrap_or_else(Utc::now),
            attempts: self.attempts,
        }
    }
}

/// A failure that counts toward giving up: what the dead letter says.
struct SpecificFailure {
    /// HTTP status of the last failure; 0 when there was no HTTP answer.
    status: u16,
    error: ItemError,
}

impl SpecificFailure {
    fn new(status: u16, kind: &str, reason: String) -> Self {
        SpecificFailure {
            status,
            error: ItemError {
                kind: Some(kind.to_string()),
                reason: Some(reason),
                caused_by: None,
            },
        }
    }

    /// A whole-request failure that counts, if `failure` is one: a 4xx
    /// other than 408/409/413/429 (or a 1xx/3xx), or a 2xx that is not a
    /// bulk response.
    fn of_request(failure: &RequestFailure) -> Option<Self> {
        match failure {
            RequestFailure::Rejected { status, error, .. }
                if !matches!(status.as_u16(), 408 | 409) =>
            {
                Some(SpecificFailure {
                    status: status.as_u16(),
                    error: ItemError {
                        kind: Some(failure.error_type().to_string()),
                        reason: Some(format!("the whole request was answered {failure}")),
                        caused_by: error.as_ref().and_then(|e| e.caused_by.clone()),
                    },
                })
            }
            RequestFailure::NotBulk { status, .. } => Some(SpecificFailure::new(
                status.as_u16(),
                failure.error_type(),
                format!("the answer was not a bulk response: {failure}"),
            )),
            _ => None,
        }
    }
}

/// What all batch tasks of one sink share.
pub struct Delivery {
    pub requester: BulkRequester,
    pub gzip_level: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// `retry.give_up_after` (module doc).
    pub give_up_after: Duration,
    pub metrics: Arc<Metrics>,
    pub dead_letters: DeadLetterFile,
    /// When this sink started; the origin of `last_accepted`.
    epoch: Instant,
    /// Nanoseconds after `epoch` at which Elasticsearch last accepted a
    /// document (2xx or 409) for any batch; 0 if never.
    last_accepted: AtomicU64,
    /// Test seam: panic after this many more bulk responses are walked.
    injected_panics: AtomicU32,
    request_log: LogLimiter,
    item_log: LogLimiter,
    dead_letter_log: LogLimiter,
}

/// An item Elasticsearch refused for good, or one given up.
struct Rejected {
    item: ItemRef,
    status: u16,
    error: ItemError,
    given_up: Option<GivenUp>,
}

/// An item answered 429 or 5xx, to be resent.
struct Retry {
    item: ItemRef,
    status: u16,
    error: Option<ItemError>,
}

impl Delivery {
    pub fn new(
        requester: BulkRequester,
        gzip_level: u32,
        retry: &crate::config::RetryConfig,
        metrics: Arc<Metrics>,
        dead_letters: DeadLetterFile,
    ) -> Self {
        Delivery {
            requester,
            gzip_level,
            initial_backoff: retry.initial_backoff,
            max_backoff: retry.max_backoff,
            give_up_after: retry.give_up_after,
            metrics,
            dead_letters,
            epoch: Instant::now(),
            last_accepted: AtomicU64::new(0),
            injected_panics: AtomicU32::new(0),
            request_log: LogLimiter::new(LOG_INTERVAL),
            item_log: LogLimiter::new(LOG_INTERVAL),
            dead_letter_log: LogLimiter::new(LOG_INTERVAL),
        }
    }

    /// Test seam: the next `n` walks of a bulk response panic right after
    /// the response was counted (`u32::MAX`: every one).
    pub fn inject_panics(&self, n: u32) {
        self.injected_panics.store(n, Ordering::Relaxed);
    }

    fn note_accepted(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_accepted.fetch_max(now.max(1), Ordering::Relaxed);
    }

    /// Whether Elasticsearch accepted a document after `since`.
    fn accepted_since(&self, since: Instant) -> bool {
        let since = u64::try_from(since.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX);
        self.last_accepted.load(Ordering::Relaxed) > since
    }

    /// Delivers `batch` until it is settled: a panic of the delivery is
    /// caught and logged and the batch delivered again (module doc,
    /// "Panics"). Returns once every item is delivered, dead-lettered or
    /// given up; the caller then acknowledges the batch. `Err`: a disk
    /// buffer batch whose documents could not be restored ([`unpack`]); the
    /// caller acknowledges it as lost. Dropping the future (aborting the
    /// task) drops the delivery at once.
    pub async fn deliver_until_settled(&self, batch: &mut Arc<Batch>) -> Result<(), Unrestorable> {
        let mut failing = Failing::default();
        let mut last_panic = String::new();
        let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
        let mut give_up = false;
        loop {
            let sent_at = Instant::now();
            let job = give_up.then(|| {
                let reason = format!(
                    "the delivery of this batch panicked {} times ({last_panic}); \
                     this document may have been indexed already",
                    failing.attempts
                );
                (failing.given_up(), reason)
            });
            let attempt = async {
                match job {
                    Some((given_up, reason)) => {
                        self.give_up_batch(&mut *batch, given_up, reason).await
                    }
                    None => self.deliver(&mut *batch).await,
                }
            };
            let panic = match CatchUnwind(Box::pin(attempt)).await {
                Ok(settled) => return settled,
                Err(panic) => panic,
            };
            last_panic = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let counts = self.accepted_since(failing.window_start(sent_at));
            give_up = failing.record(sent_at, counts, self.give_up_after);
            let delay = backoff.next_delay();
            let next = if give_up {
                "it has kept panicking for retry.give_up_after: the batch is given up (dead-lettered)"
            } else {
                "the batch is not acknowledged and is delivered again from its first document \
                 (those already indexed answer 409)"
            };
            error!(
                panics = failing.attempts,
                events = batch.events,
                retry_in = ?delay,
                "a batch delivery task panicked ({last_panic}); {next}"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Returns once every item of `batch` is delivered, durably
    /// dead-lettered, or given up (which is dead-lettered too); or at once
    /// if the batch is found [`Unrestorable`].
    pub async fn deliver(&self, batch: &mut Arc<Batch>) -> Result<(), Unrestorable> {
        let all = request::all_items(batch);
        if all.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
        let mut groups = VecDeque::from([Group {
            items: all,
            cuts: 0,
            failing: Failing::default(),
        }]);
        let mut rejected = Vec::new();
        while let Some(group) = groups.pop_front() {
            self.send_group(&mut *batch, group, &mut backoff, &mut groups, &mut rejected)
                .await?;
        }
        if !rejected.is_empty() {
            self.dead_letter(&mut *batch, &rejected, &mut backoff)
                .await?;
        }
        Ok(())
    }

    /// Dead-letters every item of `batch` as given up for `reason`.
    async fn give_up_batch(
        &self,
        batch: &mut Arc<Batch>,
        given_up: GivenUp,
        reason: String,
    ) -> Result<(), Unrestorable> {
        let error = ItemError {
            kind: Some("delivery_panicked".into()),
            reason: Some(self.given_up_reason(&given_up, &reason)),
            caused_by: None,
        };
        let rejected: Vec<Rejected> = request::all_items(batch)
            .into_iter()
            .map(|item| Rejected {
                item,
                status: 0,
                error: error.clone(),
                given_up: Some(given_up.clone()),
            })
            .collect();
        if !rejected.is_empty() {
            let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
            self.dead_letter(&mut *batch, &rejected, &mut backoff)
                .await?;
        }
        Ok(())
    }

    /// The dead letter's `error.reason` for an item given up after `last`.
    fn given_up_reason(&self, given_up: &GivenUp, last: &str) -> String {
        let since = Utc::now()
            .signed_duration_since(given_up.first_failure)
            .to_std()
            .unwrap_or_default();
        format!(
            "given up after failing since {} ({} ago, retry.give_up_after {}), {} attempts; last: {last}",
            given_up
                .first_failure
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(Duration::from_secs(since.as_secs())),
            humantime::format_duration(self.give_up_after),
            given_up.attempts,
        )
    }

    /// Moves `items` to `rejected` as given up after `last`.
    fn give_up(
        &self,
        items: &[ItemRef],
        failing: &Failing,
        last: SpecificFailure,
        rejected: &mut Vec<Rejected>,
    ) {
        let given_up = failing.given_up();
        let mut error = last.error;
        error.reason = Some(self.given_up_reason(
            &given_up,
            error.reason.as_deref().unwrap_or("(no reason given)"),
        ));
        rejected.extend(items.iter().map(|&item| Rejected {
            item,
            status: last.status,
            error: error.clone(),
            given_up: Some(given_up.clone()),
        }));
    }

    /// Sends `group` until each of its items is delivered, rejected or given
    /// up, or until a 413 or repeated cuts split it into two groups pushed to
    /// the front of `groups`.
    async fn send_group(
        &self,
        batch: &mut Arc<Batch>,
        group: Group,
        backoff: &mut Backoff,
        groups: &mut VecDeque<Group>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), Unrestorable> {
        let Group {
            items,
            mut cuts,
            mut failing,
        } = group;
        let mut items: Arc<[ItemRef]> = items.into();
        let mut body: Option<BulkBody> = None;
        loop {
            let sent_at = Instant::now();
            let whole = items.len() == batch.events;
            let current = match (&body, &batch.packed) {
                (Some(b), _) => b.clone(),
                // The whole of a packed batch (read gzip'd from the disk
                // buffer, or again after a panicked delivery): its body is
                // the packed one, sent as it is.
                (None, Some(packed)) if whole => body
                    .insert(BulkBody {
                        bytes: packed.bytes.clone(),
                        gzip: packed.gzip,
                    })
                    .clone(),
                (None, _) => {
                    unpack(batch)?;
                    match request::build_body(batch.clone(), items.clone(), self.gzip_level).await {
                        Ok(b) => {
                            if whole && let Some(only) = Arc::get_mut(batch) {
                                request::pack(only, &b);
                            }
                            body.insert(b).clone()
                        }
                        Err(e) => {
                            error!(error = %e, "cannot build bulk request body; retrying");
                            if failing.record(sent_at, true, self.give_up_after) {
                                let last = SpecificFailure::new(
                                    0,
                                    "request_body_error",
                                    format!("cannot build the bulk request body: {e}"),
                                );
                                self.give_up(&items, &failing, last, rejected);
                                return Ok(());
                            }
                            tokio::time::sleep(backoff.next_delay()).await;
                            continue;
                        }
                    }
                }
            };
            let timer = self.metrics.sink.start(current.bytes.len(), items.len());
            let (host_index, attempt) = self.requester.send_indexed(&current, items.len()).await;
            let host = self.requester.display(host_index);
            match &attempt {
                // A 413 is an answer too: Elasticsearch is reachable.
                Attempt::Bulk(_) | Attempt::TooLarge => timer.answered(),
                Attempt::Failed(failure) => timer.failed(format_args!("{host}: {failure}")),
            }
            match attempt {
                Attempt::Bulk(results) => {
                    Metrics::add(&self.metrics.requests_ok, 1);
                    cuts = 0;
                    let retry = self.walk_items(host, &items, results, rejected);
                    if self
                        .injected_panics
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        panic!("injected panic (test seam) after a bulk response");
                    }
                    if retry.len() < items.len() {
                        backoff.reset();
                    }
                    if retry.is_empty() {
                        return Ok(());
                    }
                    let counts = self.accepted_since(failing.window_start(sent_at));
                    if failing.record(sent_at, counts, self.give_up_after) {
                        for r in retry {
                            let error = r.error.unwrap_or_default();
                            let last = SpecificFailure {
                                status: r.status,
                                error: ItemError {
                                    reason: Some(format!(
                                        "the item was answered {} {}: {} while other documents were accepted",
                                        r.status,
                                        error.kind_or_unknown(),
                                        error.reason.as_deref().unwrap_or("(no reason given)")
                                    )),
                                    ..error
                                },
                            };
                            self.give_up(&[r.item], &failing, last, rejected);
                        }
                        return Ok(());
                    }
                    Metrics::add(&self.metrics.items_retried, retry.len() as u64);
                    tokio::time::sleep(backoff.next_delay()).await;
                    items = retry.iter().map(|r| r.item).collect();
                    body = None;
                }
                Attempt::TooLarge => {
                    Metrics::add(&self.metrics.requests_failed, 1);
                    if let [item] = *items {
                        rejected.push(Rejected {
                            item,
                            status: 413,
                            error: ItemError {
                                kind: Some("request_entity_too_large".into()),
                                reason: Some(
                                    "this document alone is larger than Elasticsearch accepts in one request \
                                     (http.max_content_length or a proxy's body limit)"
                                        .into(),
                                ),
                                caused_by: None,
                            },
                            given_up: None,
                        });
                        return Ok(());
                    }
                    if let Some(suppressed) = self.request_log.check() {
                        warn!(
                            host,
                            status = 413,
                            items = items.len(),
                            bytes = current.bytes.len(),
                            suppressed,
                            "bulk request too large; splitting it in halves"
                        );
                    }
                    split(&items, 0, &failing, groups);
                    return Ok(());
                }
                Attempt::Failed(failure) => {
                    Metrics::add(&self.metrics.requests_failed, 1);
                    if failure.is_connection_broken() {
                        cuts += 1;
                    } else {
                        cuts = 0;
                    }
                    let mut specific = SpecificFailure::of_request(&failure);
                    if cuts >= CUTS_BEFORE_SPLIT && self.requester.probe(host_index).await {
                        if items.len() > 1 {
                            if let Some(suppressed) = self.request_log.check() {
                                warn!(
                                    host,
                                    items = items.len(),
                                    bytes = current.bytes.len(),
                                    cuts,
                                    suppressed,
                                    "the connection was cut {cuts} times while sending this bulk request, \
                                     yet the host answers: taking it as too large and splitting it in halves ({failure})"
                                );
                            }
                            failing.record(sent_at, true, self.give_up_after);
                            split(&items, CUTS_BEFORE_SPLIT - 1, &failing, groups);
                            return Ok(());
                        }
                        unpack(batch)?;
                        let document_bytes = request::item_bytes(batch, items[0]).len();
                        if let Some(suppressed) = self.request_log.check() {
                            error!(
                                host,
                                document_bytes,
                                body_bytes = current.bytes.len(),
                                cuts,
                                suppressed,
                                "the connection is cut each time this single document is sent, yet the host \
                                 answers; if a body limit (Elasticsearch http.max_content_length, a proxy's \
                                 client_max_body_size) is below its size, raise it. Retrying; given up (dead-lettered) \
                                 after being cut for retry.give_up_after ({failure})"
                            );
                        }
                        specific = Some(SpecificFailure::new(
                            0,
                            failure.error_type(),
                            format!(
                                "the connection was cut {cuts} times in a row while this document \
                                 ({document_bytes} bytes) alone was sent, the host answering HEAD /: \
                                 a body limit below its size? (Elasticsearch http.max_content_length, \
                                 a proxy's client_max_body_size); last: {failure}"
                            ),
                        ));
                    }
                    if failing.record(sent_at, specific.is_some(), self.give_up_after)
                        && let Some(last) = specific
                    {
                        self.give_up(&items, &failing, last, rejected);
                        return Ok(());
                    }
                    let delay = backoff.next_delay();
                    if let Some(suppressed) = self.request_log.check() {
                        let status = failure.status().map(|s| s.as_u16());
                        let error_type = failure.error_type();
                        if failure.needs_operator() {
                            error!(host, status, error_type, items = items.len(), retry_in = ?delay, suppressed,
                                "Elasticsearch refused the bulk request as a whole: {failure}");
                        } else {
                            warn!(host, status, error_type, items = items.len(), retry_in = ?delay, suppressed,
                                "bulk request failed: {failure}");
                        }
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Counts delivered items, moves rejected ones to `rejected`, and returns
    /// those to resend.
    fn walk_items(
        &self,
        host: &str,
        items: &[ItemRef],
        results: Vec<response::BulkItem>,
        rejected: &mut Vec<Rejected>,
    ) -> Vec<Retry> {
        let (mut delivered, mut duplicates) = (0u64, 0u64);
        let mut retry = Vec::new();
        for (&item, result) in items.iter().zip(results) {
            match result.outcome() {
                BulkItemOutcome::Delivered => delivered += 1,
                BulkItemOutcome::Duplicate => duplicates += 1,
                BulkItemOutcome::Retry => retry.push(Retry {
                    item,
                    status: result.status,
                    error: result.error,
                }),
                BulkItemOutcome::Reject => rejected.push(Rejected {
                    item,
                    status: result.status,
                    error: result.error.unwrap_or_default(),
                    given_up: None,
                }),
            }
        }
        if delivered + duplicates > 0 {
            self.note_accepted();
        }
        Metrics::add(&self.metrics.items_delivered, delivered);
        Metrics::add(&self.metrics.items_duplicate, duplicates);
        if let Some(first) = retry.first()
            && let Some(suppressed) = self.item_log.check()
        {
            let error = first.error.clone().unwrap_or_default();
            warn!(
                host,
                status = first.status,
                error_type = error.kind_or_unknown(),
                reason = error.reason.as_deref().unwrap_or(""),
                retrying = retry.len(),
                of = items.len(),
                suppressed,
                "Elasticsearch rejected bulk items temporarily; resending them"
            );
        }
        retry
    }

    /// Writes `rejected` to the dead-letter file and waits until it is durable.
    async fn dead_letter(
        &self,
        batch: &mut Arc<Batch>,
        rejected: &[Rejected],
        backoff: &mut Backoff,
    ) -> Result<(), Unrestorable> {
        unpack(batch)?;
        let mut records = Vec::new();
        // (given up, status, type) → (count, first reason), for the summary lines.
        let mut why: BTreeMap<(bool, u16, &str), (usize, &str)> = BTreeMap::new();
        for r in rejected {
            let bytes = request::item_bytes(batch, r.item);
            let (action, document) = split_item(bytes);
            dead_letter::serialize(
                &DeadLetter {
                    meta: response::parse_action_line(action),
                    status: r.status,
                    error: r.error.clone(),
                    given_up: r.given_up.clone(),
                    document,
                },
                &mut records,
            );
            let given_up = r.given_up.is_some();
            why.entry((given_up, r.status, r.error.kind_or_unknown()))
                .or_insert((0, r.error.reason.as_deref().unwrap_or("")))
                .0 += 1;
        }
        let records = Arc::new(records);
        loop {
            let file = self.dead_letters.clone();
            let records = records.clone();
            let written = tokio::task::spawn_blocking(move || file.append_durably(&records)).await;
            let result = written.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match result {
                Ok(()) => break,
                Err(e) => {
                    let delay = backoff.next_delay();
                    if let Some(suppressed) = self.dead_letter_log.check() {
                        error!(path = %self.dead_letters.path().display(), error = %e, retry_in = ?delay, suppressed,
                            "cannot write the dead-letter file; the batch stays unacknowledged until it can");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
        let given_up = rejected.iter().filter(|r| r.given_up.is_some()).count();
        Metrics::add(&self.metrics.items_dead_lettered, rejected.len() as u64);
        Metrics::add(&self.metrics.items_given_up, given_up as u64);
        let summary = |of_given_up: bool| -> String {
            why.iter()
                .filter(|((g, _, _), _)| *g == of_given_up)
                .map(|((_, status, kind), (count, reason))| {
                    format!("{count}× {status} {kind} (e.g. {reason:?})")
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let path = self.dead_letters.path().display();
        if given_up < rejected.len() {
            warn!(
                %path,
                count = rejected.len() - given_up,
                "Elasticsearch rejected documents; written to the dead-letter file: {}",
                summary(false)
            );
        }
        if given_up > 0 {
            error!(
                %path,
                count = given_up,
                give_up_after = %humantime::format_duration(self.give_up_after),
                "gave up on documents that kept failing for retry.give_up_after; written to the \
                 dead-letter file (`logship replay` sends them again) so that what follows them \
                 moves on: {}",
                summary(true)
            );
        }
        Ok(())
    }
}

/// A future that returns a panic of `F` (while polled) as an error instead
/// of unwinding further. The panicked future is dropped with it; what it
/// shares (atomics, the dead-letter file's and log limiters' mutexes, which
/// tolerate poisoning) stays consistent, hence the `AssertUnwindSafe`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A batch from the disk buffer whose documents cannot be restored from
/// its stored body ([`unpack`]): its delivery ends, and the sink
/// acknowledges it as lost (`Acknowledger::lost`).
#[derive(Debug)]
pub struct Unrestorable;

/// Restores the spans' bodies of `batch` if they are packed: by
/// [`request::pack`], or as read from the disk buffer (a gunzip of one
/// batch body, ~3 ms, on the calling task).
///
/// If that fails (the batch is shared, or its packed body does not gunzip
/// to its spans; neither happens unless a bug made it so), the batch's items
/// exist nowhere else in memory: a panic would be caught and the delivery
/// retried forever (and dead-lettering needs the items too).
///
/// - A batch of the disk buffer (its origin is a record) is given up:
///   logged with its record id, `Err` (the caller acknowledges it as lost,
///   counted in the buffer's lost records). Exiting would not help: after
///   the restart the same record would be read, and fail, again.
/// - Any other batch: the process exits (70, internal error). The batch was
///   not acknowledged, so its lines are read again from the files after the
///   restart, as after a `kill -9`.
fn unpack(batch: &mut Arc<Batch>) -> Result<(), Unrestorable> {
    if batch.packed.is_none() {
        return Ok(());
    }
    // A shared batch is a bug here that a restart does not repeat: exit
    // (below) even for a disk record, which is then read again.
    let (result, shared) = match Arc::get_mut(batch) {
        Some(only) => (request::unpack(only), false),
        None => (Err(std::io::Error::other("the batch is shared")), true),
    };
    let Err(e) = result else {
        return Ok(());
    };
    let record = batch
        .origins()
        .into_iter()
        .find(|o| o.file == DISK_ORIGIN_FILE && !shared)
        .map(|o| o.seq);
    if let Some(record) = record {
        error!(
            record,
            events = batch.events,
            error = %e,
            "cannot restore the documents of a disk buffer record from its stored body (a bug); \
             the record is given up (counted in logship_buffer_lost_records_total) and acknowledged: \
             its documents not yet delivered are lost"
        );
        return Err(Unrestorable);
    }
    error!(
        error = %e,
        "cannot restore a batch's documents from its compressed request body (a bug); \
         exiting: its lines are read again after the restart (from the files, or the disk buffer)"
    );
    std::process::exit(70);
}

/// Pushes the two halves of `items` to the front of `groups`, in order;
/// both inherit `failing`.
fn split(items: &[ItemRef], cuts: u32, failing: &Failing, groups: &mut VecDeque<Group>) {
    let (front, back) = items.split_at(items.len() / 2);
    groups.push_front(Group {
        items: back.to_vec(),
        cuts,
        failing: failing.clone(),
    });
    groups.push_front(Group {
        items: front.to_vec(),
        cuts,
        failing: failing.clone(),
    });
}

/// Splits one item into its action line and document line (without newlines).
fn split_item(item: &[u8]) -> (&[u8], &[u8]) {
    let item = item.strip_suffix(b"\n").unwrap_or(item);
    match memchr::memchr(b'\n', item) {
        Some(i) => (&item[..i], &item[i + 1..]),
        None => (item, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::split_item;

    #[test]
    fn items_split_into_action_and_document() {
        assert_eq!(
            split_item(b"{\"create\":{}}\n{\"m\":1}\n"),
            (&b"{\"create\":{}}"[..], &b"{\"m\":1}"[..])
        );
        assert_eq!(
            split_item(b"{\"create\":{}}"),
            (&b"{\"create\":{}}"[..], &b""[..])
        );
    }
}
