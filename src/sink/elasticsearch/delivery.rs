//! Delivery of one batch: requests until every item is delivered or
//! dead-lettered.
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
//!   429/5xx kept and resent alone after a backoff, anything else rejected.
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
//! - a group of two or more items whose request was cut
//!   [`CUTS_BEFORE_SPLIT`] times in a row (any other outcome resets the
//!   count) makes the sink probe that host (`HEAD /`, any answer but
//!   502/503/504 counts). If the host answers, the size of the request is the
//!   likely cause: the group is split in halves, and each half is split
//!   again after a single cut (the size is already suspect). If the probe
//!   fails too, it is an outage: the whole group is retried with backoff,
//!   unsplit;
//! - connect errors (refused, DNS, TLS) and timeouts never count: the host
//!   did not cut anything, it was not there or slow.
//!
//! Splitting on a wrong guess costs only more, smaller requests; nothing is
//! dropped. A **single** document whose request keeps being cut is *not*
//! dead-lettered: a cut carries no reason, and a flapping proxy that resets
//! connections while answering `HEAD /` would then turn a network fault into
//! documents taken out of the index. It is retried with backoff and, from the
//! second cut on, logged at error level with its size, naming the body
//! limits to check (`http.max_content_length`, the proxy's); the batch stays
//! unacknowledged, so the problem shows as backpressure, not loss. A 413,
//! which does carry the reason, still dead-letters a single document.
//! Timeouts (a proxy that stops reading the body) are retried like any
//! timeout.
//!
//! Rejected items are written to the dead-letter file, durably, before
//! [`deliver`] returns; the caller then acknowledges the batch. There is no
//! give-up: only aborting the task stops a delivery, and then nothing of the
//! batch is acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, warn};

use super::dead_letter::{self, DeadLetter, DeadLetterFile};
#[cfg(doc)]
use super::request::TransportKind;
use super::request::{self, Attempt, BulkBody, BulkRequester, ItemRef};
use super::response::{self, BulkItemOutcome, ItemError};
use super::retry::{Backoff, LogLimiter};
use crate::buffer::Batch;
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
}

/// What all batch tasks of one sink share.
pub struct Delivery {
    pub requester: BulkRequester,
    pub gzip_level: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub metrics: Arc<Metrics>,
    pub dead_letters: DeadLetterFile,
    request_log: LogLimiter,
    item_log: LogLimiter,
    dead_letter_log: LogLimiter,
}

/// An item Elasticsearch refused for good.
struct Rejected {
    item: ItemRef,
    status: u16,
    error: ItemError,
}

impl Delivery {
    pub fn new(
        requester: BulkRequester,
        gzip_level: u32,
        initial_backoff: Duration,
        max_backoff: Duration,
        metrics: Arc<Metrics>,
        dead_letters: DeadLetterFile,
    ) -> Self {
        Delivery {
            requester,
            gzip_level,
            initial_backoff,
            max_backoff,
            metrics,
            dead_letters,
            request_log: LogLimiter::new(LOG_INTERVAL),
            item_log: LogLimiter::new(LOG_INTERVAL),
            dead_letter_log: LogLimiter::new(LOG_INTERVAL),
        }
    }

    /// Returns once every item of `batch` is delivered or durably
    /// dead-lettered.
    pub async fn deliver(&self, batch: &Arc<Batch>) {
        let all = request::all_items(batch);
        if all.is_empty() {
            return;
        }
        let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
        let mut groups = VecDeque::from([Group {
            items: all,
            cuts: 0,
        }]);
        let mut rejected = Vec::new();
        while let Some(group) = groups.pop_front() {
            self.send_group(batch, group, &mut backoff, &mut groups, &mut rejected)
                .await;
        }
        if !rejected.is_empty() {
            self.dead_letter(batch, &rejected, &mut backoff).await;
        }
    }

    /// Sends `group` until each of its items is delivered or rejected, or
    /// until a 413 or repeated cuts split it into two groups pushed to the
    /// front of `groups`.
    async fn send_group(
        &self,
        batch: &Arc<Batch>,
        group: Group,
        backoff: &mut Backoff,
        groups: &mut VecDeque<Group>,
        rejected: &mut Vec<Rejected>,
    ) {
        let mut cuts = group.cuts;
        let mut items: Arc<[ItemRef]> = group.items.into();
        let mut body: Option<BulkBody> = None;
        loop {
            let current = match &body {
                Some(b) => b.clone(),
                None => {
                    match request::build_body(batch.clone(), items.clone(), self.gzip_level).await {
                        Ok(b) => body.insert(b).clone(),
                        Err(e) => {
                            error!(error = %e, "cannot build bulk request body; retrying");
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
                    if retry.len() < items.len() {
                        backoff.reset();
                    }
                    if retry.is_empty() {
                        return;
                    }
                    Metrics::add(&self.metrics.items_retried, retry.len() as u64);
                    tokio::time::sleep(backoff.next_delay()).await;
                    items = retry.into();
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
                        });
                        return;
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
                    split(&items, 0, groups);
                    return;
                }
                Attempt::Failed(failure) => {
                    Metrics::add(&self.metrics.requests_failed, 1);
                    if failure.is_connection_broken() {
                        cuts += 1;
                    } else {
                        cuts = 0;
                    }
                    if cuts >= CUTS_BEFORE_SPLIT {
                        if items.len() > 1 {
                            if self.requester.probe(host_index).await {
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
                                split(&items, CUTS_BEFORE_SPLIT - 1, groups);
                                return;
                            }
                        } else if let Some(suppressed) = self.request_log.check() {
                            let document_bytes = request::item_bytes(batch, items[0]).len();
                            error!(
                                host,
                                document_bytes,
                                body_bytes = current.bytes.len(),
                                cuts,
                                suppressed,
                                "the connection is cut each time this single document is sent; if a body limit \
                                 (Elasticsearch http.max_content_length, a proxy's client_max_body_size) is below \
                                 its size, raise it. Not dead-lettered (a cut carries no reason); retrying ({failure})"
                            );
                        }
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
    ) -> Vec<ItemRef> {
        let (mut delivered, mut duplicates) = (0u64, 0u64);
        let mut retry = Vec::new();
        let mut first_retry: Option<(u16, Option<ItemError>)> = None;
        for (&item, result) in items.iter().zip(results) {
            match result.outcome() {
                BulkItemOutcome::Delivered => delivered += 1,
                BulkItemOutcome::Duplicate => duplicates += 1,
                BulkItemOutcome::Retry => {
                    retry.push(item);
                    first_retry.get_or_insert((result.status, result.error));
                }
                BulkItemOutcome::Reject => rejected.push(Rejected {
                    item,
                    status: result.status,
                    error: result.error.unwrap_or_default(),
                }),
            }
        }
        Metrics::add(&self.metrics.items_delivered, delivered);
        Metrics::add(&self.metrics.items_duplicate, duplicates);
        if let Some((status, error)) = first_retry
            && let Some(suppressed) = self.item_log.check()
        {
            let error = error.unwrap_or_default();
            warn!(
                host,
                status,
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
    async fn dead_letter(&self, batch: &Arc<Batch>, rejected: &[Rejected], backoff: &mut Backoff) {
        let mut records = Vec::new();
        // (status, type) → (count, first reason), for the one summary line.
        let mut why: BTreeMap<(u16, &str), (usize, &str)> = BTreeMap::new();
        for r in rejected {
            let bytes = request::item_bytes(batch, r.item);
            let (action, document) = split_item(bytes);
            dead_letter::serialize(
                &DeadLetter {
                    meta: response::parse_action_line(action),
                    status: r.status,
                    error: r.error.clone(),
                    document,
                },
                &mut records,
            );
            why.entry((r.status, r.error.kind_or_unknown()))
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
        Metrics::add(&self.metrics.items_dead_lettered, rejected.len() as u64);
        let summary: Vec<String> = why
            .iter()
            .map(|((status, kind), (count, reason))| {
                format!("{count}× {status} {kind} (e.g. {reason:?})")
            })
            .collect();
        warn!(
            path = %self.dead_letters.path().display(),
            count = rejected.len(),
            "Elasticsearch rejected documents; written to the dead-letter file: {}",
            summary.join("; ")
        );
    }
}

/// Pushes the two halves of `items` to the front of `groups`, in order.
fn split(items: &[ItemRef], cuts: u32, groups: &mut VecDeque<Group>) {
    let (front, back) = items.split_at(items.len() / 2);
    groups.push_front(Group {
        items: back.to_vec(),
        cuts,
    });
    groups.push_front(Group {
        items: front.to_vec(),
        cuts,
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
