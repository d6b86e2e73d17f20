//! `ElasticsearchSink` against a fault-injecting fake `_bulk` endpoint:
//! every document arrives exactly once or is dead-lettered with its reason,
//! and every batch is acknowledged exactly once, whatever the endpoint does;
//! batches read back from a disk buffer (packed: their stored gzip sent as
//! it is) included.

#[path = "support/fake_es.rs"]
mod fake_es;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_es::{FakeEs, ItemFault, Oversized, RequestFault};
use logship::buffer::disk::stage::{DiskBuffer, encode_batch};
use logship::buffer::disk::{Options, Queue};
use logship::buffer::{Acknowledger, Batch};
use logship::config::{BatchConfig, ElasticsearchConfig, RetryConfig, WhenFull};
use logship::event::{EncodedSpan, SpanOrigin};
use logship::sink::elasticsearch::ElasticsearchSink;
use logship::sink::elasticsearch::replay::ReplaySummary;
use logship::telemetry::Metrics;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const INDEX: &str = "logs-test";
/// Generous bound on a test's sink run (each normally takes well under 1 s).
const RUN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct RecordingAcks {
    acked: Mutex<Vec<SpanOrigin>>,
}

impl Acknowledger for RecordingAcks {
    fn delivered(&self, spans: &[SpanOrigin]) {
        self.acked.lock().unwrap().extend_from_slice(spans);
    }
}

impl RecordingAcks {
    /// Acknowledged spans as sorted `(file, seq)` keys, duplicates kept.
    fn keys(&self) -> Vec<(u64, u64)> {
        let mut keys: Vec<_> = self
            .acked
            .lock()
            .unwrap()
            .iter()
            .map(|o| (o.file, o.seq))
            .collect();
        keys.sort();
        keys
    }
}

fn config(hosts: Vec<String>, concurrency: usize) -> ElasticsearchConfig {
    ElasticsearchConfig {
        hosts,
        index: INDEX.into(),
        batch: BatchConfig {
            max_bytes: 1 << 20,
            max_events: 1000,
            timeout: Duration::from_secs(1),
        },
        gzip_level: 1,
        concurrency,
        request_timeout: Duration::from_secs(5),
        retry: RetryConfig {
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(40),
            give_up_after: Duration::from_secs(3600),
        },
        tls: None,
        auth: None,
        headers: Default::default(),
        data_stream: None,
        template: logship::config::TemplateMode::None,
        dedot: true,
        dead_letter: logship::config::DeadLetterConfig {
            max_bytes: 64 << 20,
            max_files: 4,
        },
    }
}

fn doc_id(file: u64, line: u64) -> String {
    format!("f{file}-{line:05}")
}

fn document(file: u64, line: u64) -> String {
    format!(
        r#"{{"@timestamp":"2026-11-26T01:02:03.000000000Z","message":"line {line:05} of file {file}","log":{{"offset":{}}}}}"#,
        line * 100
    )
}

/// A span of lines `lines` of `file`, the `seq`-th span of that file.
fn span(file: u64, seq: u64, lines: std::ops::Range<u64>) -> EncodedSpan {
    let mut span = EncodedSpan::default();
    span.origin = Some(SpanOrigin {
        file,
        generation: 0,
        seq,
        end: lines.end * 100,
    });
    for line in lines {
        push_item(&mut span, &doc_id(file, line), &document(file, line));
    }
    span
}

fn push_item(span: &mut EncodedSpan, id: &str, document: &str) {
    push_item_to(span, INDEX, id, document);
}

fn push_item_to(span: &mut EncodedSpan, index: &str, id: &str, document: &str) {
    span.items.push(span.body.len() as u32);
    span.body.extend_from_slice(
        format!("{{\"create\":{{\"_index\":\"{index}\",\"_id\":\"{id}\"}}}}\n").as_bytes(),
    );
    span.body.extend_from_slice(document.as_bytes());
    span.body.push(b'\n');
}

fn batch(spans: Vec<EncodedSpan>) -> Batch {
    let mut b = Batch::default();
    for s in spans {
        b.push(s);
    }
    b
}

/// `n` batches of two spans (two files) of `per_span` lines each.
fn batches(n: u64, per_span: u64) -> Vec<Batch> {
    (0..n).map(|i| numbered_batch(i, per_span)).collect()
}

/// Batch `i` of [`batches`].
fn numbered_batch(i: u64, per_span: u64) -> Batch {
    let lines = i * per_span..(i + 1) * per_span;
    batch(vec![span(1, i, lines.clone()), span(2, i, lines)])
}

/// The `_id`s in `batches`, sorted.
fn ids_of(batches: &[Batch]) -> Vec<String> {
    let mut ids: Vec<String> = batches
        .iter()
        .flat_map(|b| &b.spans)
        .flat_map(|s| (0..s.len()).map(move |i| item_id(s.item(i))))
        .collect();
    ids.sort();
    ids
}

fn item_id(item: &[u8]) -> String {
    let action = item.split(|&b| b == b'\n').next().unwrap();
    let v: Value = serde_json::from_slice(action).unwrap();
    v["create"]["_id"].as_str().unwrap().to_string()
}

/// Sorted `(file, seq)` of every span in `batches`.
fn origins_of(batches: &[Batch]) -> Vec<(u64, u64)> {
    let mut keys: Vec<_> = batches
        .iter()
        .flat_map(Batch::origins)
        .map(|o| (o.file, o.seq))
        .collect();
    keys.sort();
    keys
}

struct Run {
    metrics: Arc<Metrics>,
    acks: Arc<RecordingAcks>,
}

/// Runs a sink over `batches` until it returns (channel closed and drained).
async fn run_sink(cfg: &ElasticsearchConfig, data_dir: &Path, batches: Vec<Batch>) -> Run {
    run_panicking_sink(cfg, data_dir, batches, 0).await
}

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    Metrics::get(counter)
}

fn dead_letters(data_dir: &Path) -> Vec<Value> {
    match std::fs::read_to_string(data_dir.join("dead-letter.ndjson")) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn assert_all_stored(es: &FakeEs, batches_ids: &[String]) {
    assert_eq!(
        es.stored_ids(),
        batches_ids,
        "stored _ids differ from those sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_is_stored_and_every_batch_acked_once() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = batches(4, 25);
    let ids = ids_of(&input);
    let origins = origins_of(&input);

    let run = run_sink(&config(vec![es.url()], 2), dir.path(), input).await;

    assert_all_stored(&es, &ids);
    let stored = es.stored(INDEX, &doc_id(2, 77)).unwrap();
    assert_eq!(
        stored,
        serde_json::from_str::<Value>(&document(2, 77)).unwrap()
    );
    assert_eq!(es.stored_indices(&doc_id(1, 3)), [INDEX]);
    assert_eq!(run.acks.keys(), origins);
    assert_eq!(get(&run.metrics.items_delivered), ids.len() as u64);
    assert_eq!(get(&run.metrics.items_duplicate), 0);
    assert_eq!(get(&run.metrics.requests_failed), 0);
    assert!(dead_letters(dir.path()).is_empty());
    // gzip'd NDJSON, response shrunk with filter_path; the fake decoded every body.
    let requests = es.requests();
    assert_eq!(requests.len() as u64, get(&run.metrics.requests_ok));
    for r in &requests {
        assert_eq!(r.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(r.content_type.as_deref(), Some("application/x-ndjson"));
        assert!(
            r.path_and_query.starts_with("/_bulk?filter_path="),
            "{}",
            r.path_and_query
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(requests.iter().map(|r| r.items).sum::<usize>(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_level_zero_sends_plain_ndjson() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = batches(2, 10);
    let ids = ids_of(&input);
    let raw_bytes: usize = input.iter().map(|b| b.body_bytes).sum();
    let mut cfg = config(vec![es.url()], 1);
    cfg.gzip_level = 0;

    run_sink(&cfg, dir.path(), input).await;

    assert_all_stored(&es, &ids);
    let requests = es.requests();
    assert!(requests.iter().all(|r| r.content_encoding.is_none()));
    assert_eq!(
        requests.iter().map(|r| r.decoded_bytes).sum::<usize>(),
        raw_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_429s_and_503s_are_resent_alone_until_delivered() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = batches(2, 20);
    let ids = ids_of(&input);
    let faults = [
        (doc_id(1, 3), ItemFault::rejected_execution(), 2),
        (doc_id(2, 3), ItemFault::rejected_execution(), 2),
        (doc_id(1, 30), ItemFault::rejected_execution(), 4),
        (doc_id(2, 39), ItemFault::unavailable_shards(), 1),
    ];
    for (id, fault, times) in &faults {
        es.fail_item(id, fault.clone(), *times);
    }

    let run = run_sink(&config(vec![es.url()], 2), dir.path(), input).await;

    assert_all_stored(&es, &ids);
    for (id, _, times) in &faults {
        assert_eq!(es.times_sent(id), times + 1, "{id}");
    }
    // Items that succeeded the first time were never resent.
    assert_eq!(es.times_sent(&doc_id(1, 4)), 1);
    let retries: u32 = faults.iter().map(|(_, _, t)| t).sum();
    assert_eq!(get(&run.metrics.items_retried), retries as u64);
    assert_eq!(get(&run.metrics.items_delivered), ids.len() as u64);
    assert_eq!(run.acks.keys(), origins_of(&batches(2, 20)));
    assert!(dead_letters(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_documents_are_dead_lettered_and_the_rest_delivered() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut input = batches(2, 10);
    // A document line that is not JSON (the fake rejects it like ES does).
    let broken_doc = r#"{"message":"cut off"#;
    let mut broken = EncodedSpan::default();
    broken.origin = Some(SpanOrigin {
        file: 3,
        generation: 0,
        seq: 0,
        end: 100,
    });
    push_item(&mut broken, "broken-1", broken_doc);
    input[1].push(broken);
    let rejected_id = doc_id(2, 4);
    es.fail_item(&rejected_id, ItemFault::document_parsing(), u32::MAX);
    let ids = ids_of(&input);
    let origins = origins_of(&input);

    let run = run_sink(&config(vec![es.url()], 2), dir.path(), input).await;

    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 2, "{letters:?}");
    let by_id = |id: &str| {
        letters
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("{id}: {letters:?}"))
    };
    let parsing = by_id(&rejected_id);
    assert_eq!(parsing["index"], INDEX);
    assert_eq!(parsing["status"], 400);
    assert_eq!(parsing["error"]["type"], "document_parsing_exception");
    assert_eq!(
        parsing["error"]["reason"],
        ItemFault::document_parsing().reason
    );
    assert_eq!(
        parsing["error"]["caused_by"]["type"],
        "illegal_argument_exception"
    );
    assert_eq!(
        parsing["document"],
        serde_json::from_str::<Value>(&document(2, 4)).unwrap()
    );
    assert!(chrono::DateTime::parse_from_rfc3339(parsing["time"].as_str().unwrap()).is_ok());
    let broken = by_id("broken-1");
    assert_eq!(broken["document"], broken_doc);
    assert_eq!(broken["error"]["type"], "document_parsing_exception");

    let delivered: Vec<String> = ids
        .iter()
        .filter(|id| **id != rejected_id && *id != "broken-1")
        .cloned()
        .collect();
    assert_all_stored(&es, &delivered);
    assert_eq!(get(&run.metrics.items_dead_lettered), 2);
    assert_eq!(get(&run.metrics.items_delivered), delivered.len() as u64);
    assert_eq!(run.acks.keys(), origins);
    // Rejected for good: sent once, not retried.
    assert_eq!(es.times_sent(&rejected_id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_request_503_for_a_while_then_recovery_loses_nothing() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    es.fail_requests_for(RequestFault::Status(503), Duration::from_millis(300));
    let input = batches(6, 15);
    let ids = ids_of(&input);
    let origins = origins_of(&input);

    let run = run_sink(&config(vec![es.url()], 2), dir.path(), input).await;

    assert_all_stored(&es, &ids);
    assert_eq!(run.acks.keys(), origins);
    let failed = es.requests().iter().filter(|r| r.status == 503).count() as u64;
    assert!(failed > 0, "the outage was not exercised");
    assert_eq!(get(&run.metrics.requests_failed), failed);
    assert_eq!(get(&run.metrics.items_delivered), ids.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_502_and_2xx_bodies_that_are_not_bulk_responses_are_retried() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    // None of these store anything: a sink that took one as success would lose documents.
    let faults = [
        RequestFault::HtmlBadGateway,
        RequestFault::TruncatedJson,
        RequestFault::NoItems,
        RequestFault::MissingItem,
        RequestFault::Status(429),
    ];
    for f in &faults {
        es.fail_requests(f.clone(), 1);
    }
    let input = batches(1, 10);
    let ids = ids_of(&input);

    let run = run_sink(&config(vec![es.url()], 1), dir.path(), input).await;

    assert_all_stored(&es, &ids);
    assert_eq!(es.requests().len(), faults.len() + 1);
    assert_eq!(get(&run.metrics.requests_failed), faults.len() as u64);
    assert_eq!(run.acks.keys(), origins_of(&batches(1, 10)));
    assert!(dead_letters(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_request_401_is_retried_not_dropped() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    es.fail_requests(RequestFault::Status(401), 3);
    es.fail_requests(RequestFault::Status(400), 1);
    let input = batches(1, 5);
    let ids = ids_of(&input);
    let origins = origins_of(&input);

    let run = run_sink(&config(vec![es.url()], 1), dir.path(), input).await;

    assert_all_stored(&es, &ids);
    assert_eq!(get(&run.metrics.requests_failed), 4);
    assert!(dead_letters(dir.path()).is_empty());
    assert_eq!(run.acks.keys(), origins);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_request_until_it_fits() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = vec![batch(vec![span(1, 0, 10..16), span(2, 0, 10..15)])];
    let ids = ids_of(&input);
    // Every item has the same length: at most three fit.
    let item_len = input[0].spans[0].item(0).len();
    assert!(
        input
            .iter()
            .flat_map(|b| &b.spans)
            .all(|s| (0..s.len()).all(|i| s.item(i).len() == item_len))
    );
    let limit = 3 * item_len;
    es.set_max_content_length(limit);

    let run = run_sink(&config(vec![es.url()], 1), dir.path(), input).await;

    assert_all_stored(&es, &ids);
    let requests = es.requests();
    let too_large = requests.iter().filter(|r| r.status == 413).count();
    assert!(too_large > 0);
    assert_eq!(get(&run.metrics.requests_failed), too_large as u64);
    for r in requests.iter().filter(|r| r.status == 200) {
        assert!(r.items <= 3 && r.decoded_bytes <= limit, "{r:?}");
    }
    assert!(dead_letters(dir.path()).is_empty());
    assert_eq!(run.acks.keys(), vec![(1, 0), (2, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_document_too_large_for_any_request_is_dead_lettered() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut big = span(1, 0, 0..4);
    let huge_id = "huge-1";
    let huge_doc = format!(r#"{{"message":"{}"}}"#, "x".repeat(10_000));
    push_item(&mut big, huge_id, &huge_doc);
    let input = vec![batch(vec![big])];
    let ids = ids_of(&input);
    es.set_max_content_length(4_096);

    let run = run_sink(&config(vec![es.url()], 1), dir.path(), input).await;

    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["id"], huge_id);
    assert_eq!(letters[0]["status"], 413);
    assert_eq!(
        letters[0]["document"],
        serde_json::from_str::<Value>(&huge_doc).unwrap()
    );
    let delivered: Vec<String> = ids.into_iter().filter(|id| id != huge_id).collect();
    assert_all_stored(&es, &delivered);
    assert_eq!(get(&run.metrics.items_dead_lettered), 1);
    assert_eq!(run.acks.keys(), vec![(1, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_documents_answer_409_and_count_as_duplicates() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = ids_of(&batches(3, 10));
    let first = run_sink(&config(vec![es.url()], 2), dir.path(), batches(3, 10)).await;
    assert_eq!(get(&first.metrics.items_delivered), ids.len() as u64);

    // A restart re-reads the same lines: same `_id`s.
    let replay = run_sink(&config(vec![es.url()], 2), dir.path(), batches(3, 10)).await;

    assert_all_stored(&es, &ids);
    assert_eq!(get(&replay.metrics.items_duplicate), ids.len() as u64);
    assert_eq!(get(&replay.metrics.items_delivered), 0);
    assert_eq!(replay.acks.keys(), origins_of(&batches(3, 10)));
    assert!(dead_letters(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_in_two_indices_is_two_documents_and_a_409_only_in_its_own() {
    // As in Elasticsearch, a document is keyed by (index, _id): the fake
    // must not hide a copy sent to a second index behind a 409.
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let two_indices = || {
        let mut s = span(1, 0, 0..0);
        for index in ["logs-a", "logs-b"] {
            push_item_to(&mut s, index, "same-id", &document(1, 0));
        }
        vec![batch(vec![s])]
    };

    let first = run_sink(&config(vec![es.url()], 1), dir.path(), two_indices()).await;
    let again = run_sink(&config(vec![es.url()], 1), dir.path(), two_indices()).await;

    assert_eq!(es.stored_ids(), ["same-id", "same-id"]);
    assert_eq!(es.stored_indices("same-id"), ["logs-a", "logs-b"]);
    assert_eq!(
        es.stored("logs-b", "same-id"),
        Some(serde_json::from_str::<Value>(&document(1, 0)).unwrap())
    );
    assert_eq!(es.stored(INDEX, "same-id"), None);
    assert_eq!(get(&first.metrics.items_delivered), 2);
    assert_eq!(get(&again.metrics.items_duplicate), 2);
    assert_eq!(get(&again.metrics.items_delivered), 0);
    assert!(dead_letters(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_elasticsearch_indexed_is_retried_as_duplicates() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    es.fail_requests(RequestFault::Stall(Duration::from_millis(1500)), 1);
    let input = batches(1, 8);
    let ids = ids_of(&input);
    let mut cfg = config(vec![es.url()], 1);
    cfg.request_timeout = Duration::from_millis(300);

    let run = run_sink(&cfg, dir.path(), input).await;

    assert_all_stored(&es, &ids);
    // The stalled request stored everything; the resend finds every `_id`.
    assert_eq!(get(&run.metrics.items_duplicate), ids.len() as u64);
    assert_eq!(get(&run.metrics.items_delivered), 0);
    // At least the stalled request timed out (a slow machine may time out more).
    assert!(get(&run.metrics.requests_failed) >= 1);
    assert_eq!(run.acks.keys().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_never_exceeds_the_configured_limit() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    es.set_response_delay(Duration::from_millis(150));
    let input = batches(10, 5);
    let ids = ids_of(&input);
    let limit = 3;

    run_sink(&config(vec![es.url()], limit), dir.path(), input).await;

    assert_all_stored(&es, &ids);
    // Reaches the limit (requests do run in parallel) and never passes it.
    assert_eq!(es.max_in_flight(), limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sink_leaves_batches_in_the_channel_and_abort_acks_nothing() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    es.fail_requests_for(RequestFault::Status(503), Duration::from_secs(600));
    let metrics = Arc::new(Metrics::default());
    let acks = Arc::new(RecordingAcks::default());
    let sink = ElasticsearchSink::new(&config(vec![es.url()], 1), dir.path(), metrics).unwrap();
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(sink.run(rx, acks.clone()));
    let mut input = batches(3, 4).into_iter();

    tx.send(input.next().unwrap()).await.unwrap();
    assert!(es.wait_for_requests(1, RUN_LIMIT).await, "sink never sent");
    // The only slot is busy retrying: the next batch waits in the channel...
    tx.send(input.next().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so the channel stays full.
    assert!(matches!(
        tx.try_send(input.next().unwrap()),
        Err(mpsc::error::TrySendError::Full(_))
    ));

    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // A request in flight at the abort still reaches the fake's log.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent_before = es.requests().len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        es.requests().len(),
        sent_before,
        "aborted sink kept sending"
    );
    assert!(acks.keys().is_empty());
    assert!(es.stored_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_refuses_connections_is_skipped() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let input = batches(3, 5);
    let ids = ids_of(&input);

    let run = run_sink(&config(vec![dead, es.url()], 1), dir.path(), input).await;

    assert_all_stored(&es, &ids);
    // Round-robin starts with the dead host.
    assert!(get(&run.metrics.requests_failed) >= 1);
    assert_eq!(get(&run.metrics.requests_ok), es.requests().len() as u64);
    assert_eq!(run.acks.keys().len(), 6);
}

#[tokio::test]
async fn invalid_hosts_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = ElasticsearchSink::new(
        &config(vec!["localhost:9200".into()], 1),
        dir.path(),
        Arc::new(Metrics::default()),
    )
    .err()
    .expect("invalid host accepted");
    assert!(err.to_string().contains("localhost:9200"), "{err}");
}

#[test]
fn test_inputs_are_distinct() {
    let ids = ids_of(&batches(4, 25));
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_healthy_hosts_and_a_dead_one_is_marked_down() {
    let a = FakeEs::start().await;
    let b = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let input = batches(40, 5);
    let ids = ids_of(&input);

    let run = run_sink(&config(vec![dead, a.url(), b.url()], 2), dir.path(), input).await;

    let mut stored = a.stored_ids();
    stored.extend(b.stored_ids());
    stored.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        stored, expected,
        "every document stored once over both hosts"
    );
    let (on_a, on_b) = (a.requests().len(), b.requests().len());
    assert!(on_a >= 10 && on_b >= 10, "load not spread: {on_a} / {on_b}");
    // Marked down after its first refusal (for at least 0.75 s, longer than
    // this run), so it is not tried for every request.
    let failed = get(&run.metrics.requests_failed);
    assert!((1..=2).contains(&failed), "dead host tried {failed} times");
}

/// A document of about `len` bytes.
fn sized_document(file: u64, line: u64, len: usize) -> String {
    format!(
        r#"{{"@timestamp":"2026-11-26T01:02:03.000000000Z","message":"line {line:05} of file {file} {}"}}"#,
        "y".repeat(len)
    )
}

/// `n` batches of two spans whose documents vary in size (up to ~1.2 KiB).
fn mixed_batches(n: u64, per_span: u64) -> Vec<Batch> {
    (0..n)
        .map(|i| {
            let spans = (1..=2)
                .map(|file| {
                    let lines = i * per_span..(i + 1) * per_span;
                    let mut s = EncodedSpan::default();
                    s.origin = Some(SpanOrigin {
                        file,
                        generation: 0,
                        seq: i,
                        end: lines.end * 100,
                    });
                    for line in lines {
                        let len = ((line * 37 + file * 101) % 1100) as usize + 20;
                        push_item(
                            &mut s,
                            &doc_id(file, line),
                            &sized_document(file, line, len),
                        );
                    }
                    s
                })
                .collect();
            batch(spans)
        })
        .collect()
}

/// Each item's `_id` and its length as sent alone (uncompressed).
fn item_sizes(batches: &[Batch]) -> Vec<(String, usize)> {
    batches
        .iter()
        .flat_map(|b| &b.spans)
        .flat_map(|s| (0..s.len()).map(move |i| (item_id(s.item(i)), s.item(i).len())))
        .collect()
}

/// The `_id`s in the dead-letter file, sorted.
fn dead_lettered_ids(data_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = dead_letters(data_dir)
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Stored and dead-lettered `_id`s are disjoint and together are `written`.
fn assert_indexed_plus_dead_lettered_is_written(es: &FakeEs, data_dir: &Path, written: &[String]) {
    let stored = es.stored_ids();
    let dead = dead_lettered_ids(data_dir);
    let mut all: Vec<String> = stored.iter().chain(&dead).cloned().collect();
    all.sort();
    assert_eq!(
        all, written,
        "indexed + dead-lettered differs from what was written (or overlaps)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_split_oversized_requests_at_several_limits() {
    let input = mixed_batches(3, 20);
    let written = ids_of(&input);
    let largest_item = item_sizes(&input).iter().map(|(_, n)| *n).max().unwrap();
    let batch_bytes = input.iter().map(|b| b.body_bytes).max().unwrap();
    // Every single document fits (a cut never dead-letters one), whole
    // batches do not.
    let limits = [largest_item, 3 * largest_item, 10 * largest_item];
    assert!(limits.iter().all(|&l| l < batch_bytes));
    for how in [Oversized::CloseAfterHeaders, Oversized::ResetMidBody] {
        for limit in limits {
            let es = FakeEs::start().await;
            es.close_above(limit, how);
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(vec![es.url()], 2);
            cfg.gzip_level = 0;

            let run = run_sink(&cfg, dir.path(), mixed_batches(3, 20)).await;

            let what = format!("{how:?} above {limit} bytes");
            assert_all_stored(&es, &written);
            assert!(dead_letters(dir.path()).is_empty(), "{what}");
            let requests = es.requests();
            let cut = requests.iter().filter(|r| r.status == 0).count();
            assert!(cut > 0, "{what}: no request was cut");
            for r in requests.iter().filter(|r| r.status == 200) {
                assert!(r.decoded_bytes <= limit, "{what}: {r:?}");
            }
            assert_eq!(run.acks.keys(), origins_of(&input), "{what}");
            assert_eq!(get(&run.metrics.items_delivered), written.len() as u64);
            eprintln!("{what}: {cut} cut, {} answered", requests.len() - cut);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_answered_413_at_several_limits_index_or_dead_letter_each_document() {
    let input = mixed_batches(3, 20);
    let written = ids_of(&input);
    let sizes = item_sizes(&input);
    let largest_item = sizes.iter().map(|(_, n)| *n).max().unwrap();
    // From below the largest document (some dead-lettered) to several per request.
    for limit in [largest_item / 2, largest_item, 4 * largest_item] {
        for how in [None, Some(Oversized::Answer413AndClose)] {
            let es = FakeEs::start().await;
            match how {
                // Elasticsearch's own empty 413 on a kept-alive connection.
                None => es.set_max_content_length(limit),
                Some(how) => es.close_above(limit, how),
            }
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(vec![es.url()], 2);
            cfg.gzip_level = 0;

            let run = run_sink(&cfg, dir.path(), mixed_batches(3, 20)).await;

            let what = format!("{how:?} above {limit} bytes");
            assert_indexed_plus_dead_lettered_is_written(&es, dir.path(), &written);
            let mut too_large: Vec<String> = sizes
                .iter()
                .filter(|(_, n)| *n > limit)
                .map(|(id, _)| id.clone())
                .collect();
            too_large.sort();
            assert_eq!(dead_lettered_ids(dir.path()), too_large, "{what}");
            assert!(dead_letters(dir.path()).iter().all(|l| l["status"] == 413));
            assert!(es.requests().iter().any(|r| r.status == 413), "{what}");
            assert_eq!(run.acks.keys(), origins_of(&input), "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_answering_413_early_to_a_multi_megabyte_body_loses_nothing() {
    // nginx past client_max_body_size answers before reading the body and
    // closes; with a body far larger than the socket buffers, the client may
    // see the 413 or only the closed connection. Either way: split, deliver.
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut span = EncodedSpan::default();
    span.origin = Some(SpanOrigin {
        file: 1,
        generation: 0,
        seq: 0,
        end: 100,
    });
    for line in 0..40 {
        push_item(
            &mut span,
            &doc_id(1, line),
            &sized_document(1, line, 64 << 10),
        );
    }
    let input = vec![batch(vec![span])];
    let written = ids_of(&input);
    assert!(input[0].body_bytes > 2 << 20);
    es.close_above(256 << 10, Oversized::Answer413AndClose);
    let mut cfg = config(vec![es.url()], 1);
    cfg.gzip_level = 0;

    let run = run_sink(&cfg, dir.path(), input).await;

    assert_all_stored(&es, &written);
    assert!(dead_letters(dir.path()).is_empty());
    assert!(es.requests().iter().any(|r| r.status == 413));
    assert_eq!(run.acks.keys(), vec![(1, 0)]);
}

/// A sink running in the background, fed batch by batch.
struct Running {
    tx: Option<mpsc::Sender<Batch>>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
    acks: Arc<RecordingAcks>,
}

impl Running {
    fn start(cfg: &ElasticsearchConfig, data_dir: &Path) -> Running {
        let metrics = Arc::new(Metrics::default());
        let acks = Arc::new(RecordingAcks::default());
        let sink = ElasticsearchSink::new(cfg, data_dir, metrics.clone()).expect("sink");
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(sink.run(rx, acks.clone()));
        Running {
            tx: Some(tx),
            task,
            metrics,
            acks,
        }
    }

    async fn send(&self, b: Batch) {
        self.tx
            .as_ref()
            .unwrap()
            .send(b)
            .await
            .expect("sink stopped");
    }

    /// Closes the channel and waits for every batch to be settled.
    async fn finish(mut self) -> Run {
        self.tx = None;
        tokio::time::timeout(RUN_LIMIT, self.task)
            .await
            .expect("sink did not finish")
            .expect("sink panicked");
        Run {
            metrics: self.metrics,
            acks: self.acks,
        }
    }
}

/// Polls `cond` every 10 ms for up to [`RUN_LIMIT`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_the_port_closed_and_reopened_never_splits_or_dead_letters() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = batches(6, 10);
    let written = ids_of(&input);
    let per_batch = input[0].events;
    let mut input = input.into_iter();
    let sink = Running::start(&config(vec![es.url()], 2), dir.path());
    sink.send(input.next().unwrap()).await;
    wait_until("first batch stored", || es.stored_ids().len() == per_batch).await;

    // Elasticsearch stops with requests in flight: they are cut, the port is
    // closed, the kept-alive connections are dropped.
    es.set_response_delay(Duration::from_secs(5));
    for b in input.by_ref().take(3) {
        sink.send(b).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    es.stop();
    es.set_response_delay(Duration::ZERO);
    wait_until("requests failing during the outage", || {
        get(&sink.metrics.requests_failed) >= 6
    })
    .await;
    es.restart().await;
    for b in input {
        sink.send(b).await;
    }
    let run = sink.finish().await;

    assert_all_stored(&es, &written);
    assert!(dead_letters(dir.path()).is_empty());
    // Never split: every answered request carried a whole batch.
    for r in es.requests() {
        assert_eq!(r.items, per_batch, "{r:?}");
    }
    assert_eq!(run.acks.keys(), origins_of(&batches(6, 10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_on_accept_probes_included_never_split_or_dead_letter() {
    // A load balancer without a healthy backend resets every connection,
    // including the probe: an outage, not a size problem.
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    es.reset_connections_for(Duration::from_secs(600));
    let input = batches(4, 10);
    let written = ids_of(&input);
    let per_batch = input[0].events;
    let sink = Running::start(&config(vec![es.url()], 2), dir.path());
    for b in input {
        sink.send(b).await;
    }
    wait_until("requests failing", || {
        get(&sink.metrics.requests_failed) >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The outage ends through a closed port, so that no cut is followed by
    // a probe the recovered host answers: that would be a size limit, split
    // rightly.
    es.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    es.reset_connections_for(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(200)).await;
    es.restart().await;
    let run = sink.finish().await;

    assert_all_stored(&es, &written);
    assert!(dead_letters(dir.path()).is_empty());
    assert!(
        get(&run.metrics.requests_failed) >= 4,
        "the outage was not exercised"
    );
    for r in es.requests() {
        assert_eq!(r.items, per_batch, "{r:?}");
    }
    assert_eq!(run.acks.keys(), origins_of(&batches(4, 10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_document_cut_every_time_is_retried_not_dead_lettered() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut big = span(1, 0, 0..6);
    let huge_id = "huge-1";
    push_item(&mut big, huge_id, &sized_document(1, 99, 20_000));
    let input = vec![batch(vec![big]), batch(vec![span(2, 0, 0..6)])];
    let written = ids_of(&input);
    let origins = origins_of(&input);
    es.close_above(8_000, Oversized::ResetMidBody);
    let mut cfg = config(vec![es.url()], 2);
    cfg.gzip_level = 0;
    let sink = Running::start(&cfg, dir.path());
    for b in input {
        sink.send(b).await;
    }

    // Everything else gets through; the huge document is tried again and again.
    let others: Vec<String> = written
        .iter()
        .filter(|id| *id != huge_id)
        .cloned()
        .collect();
    wait_until("the other documents stored", || es.stored_ids() == others).await;
    let cut = |es: &FakeEs| es.requests().iter().filter(|r| r.status == 0).count();
    let before = cut(&es);
    wait_until("the huge document retried", || cut(&es) >= before + 3).await;
    assert!(dead_letters(dir.path()).is_empty());
    assert_eq!(
        sink.acks.keys(),
        vec![(2, 0)],
        "only the batch without it is acked"
    );

    // The operator raises the proxy's limit: it is delivered, not lost.
    es.accept_any_size();
    let run = sink.finish().await;
    assert_all_stored(&es, &written);
    assert!(dead_letters(dir.path()).is_empty());
    assert_eq!(run.acks.keys(), origins);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_time_out_and_are_retried_until_delivered() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(vec![es.url()], 2);
    cfg.request_timeout = Duration::from_millis(200);
    es.set_response_delay(Duration::from_millis(600));
    let input = batches(4, 10);
    let written = ids_of(&input);
    let sink = Running::start(&cfg, dir.path());
    for b in input {
        sink.send(b).await;
    }
    wait_until("requests timing out", || {
        get(&sink.metrics.requests_failed) >= 4
    })
    .await;
    assert!(sink.acks.keys().is_empty(), "acked without an answer");
    es.set_response_delay(Duration::ZERO);
    let run = sink.finish().await;

    assert_all_stored(&es, &written);
    assert!(dead_letters(dir.path()).is_empty());
    // A slow answer may still have indexed: resent items then count as duplicates.
    assert_eq!(
        get(&run.metrics.items_delivered) + get(&run.metrics.items_duplicate),
        written.len() as u64
    );
    assert_eq!(run.acks.keys(), origins_of(&batches(4, 10)));
}

/// `retry.give_up_after` in the tests below.
const GIVE_UP: Duration = Duration::from_secs(2);

fn config_giving_up(hosts: Vec<String>, concurrency: usize) -> ElasticsearchConfig {
    let mut cfg = config(hosts, concurrency);
    cfg.retry.give_up_after = GIVE_UP;
    cfg
}

/// Re-ships the dead-letter file of `data_dir` with `logship replay`'s code.
async fn replay(cfg: &ElasticsearchConfig, data_dir: &Path) -> ReplaySummary {
    tokio::time::timeout(
        RUN_LIMIT,
        logship::sink::elasticsearch::replay::replay(cfg, &data_dir.join("dead-letter.ndjson")),
    )
    .await
    .expect("replay did not finish")
    .expect("replay")
}

/// Asserts a dead letter is a document given up with `status`, `error.type`
/// and a reason saying so and naming `what`.
fn assert_given_up(letter: &Value, status: u16, error_type: &str, what: &str) {
    assert_eq!(letter["status"], status, "{letter}");
    assert_eq!(letter["error"]["type"], error_type, "{letter}");
    let reason = letter["error"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("given up after failing since ")
            && reason.contains(&format!(
                "retry.give_up_after {}",
                humantime::format_duration(GIVE_UP)
            ))
            && reason.contains(what),
        "{reason}"
    );
    assert!(
        letter["given_up"]["attempts"].as_u64().unwrap_or(0) >= 1,
        "{letter}"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(letter["given_up"]["first_failure"].as_str().unwrap())
            .is_ok(),
        "{letter}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_document_always_cut_while_the_host_answers_is_given_up_then_replayed() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut big = span(1, 0, 0..6);
    let huge_id = "huge-1";
    let huge_doc = sized_document(1, 99, 20_000);
    push_item(&mut big, huge_id, &huge_doc);
    let input = vec![batch(vec![big]), batch(vec![span(2, 0, 0..6)])];
    let written = ids_of(&input);
    let origins = origins_of(&input);
    es.close_above(8_000, Oversized::ResetMidBody);
    let mut cfg = config_giving_up(vec![es.url()], 2);
    cfg.gzip_level = 0;

    let started = std::time::Instant::now();
    // Returns only once every batch is settled: the huge document given up.
    let run = run_sink(&cfg, dir.path(), input).await;

    assert!(started.elapsed() >= GIVE_UP, "given up too early");
    let others: Vec<String> = written
        .iter()
        .filter(|id| *id != huge_id)
        .cloned()
        .collect();
    assert_all_stored(&es, &others);
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["id"], huge_id);
    assert_eq!(letters[0]["index"], INDEX);
    assert_eq!(
        letters[0]["document"],
        serde_json::from_str::<Value>(&huge_doc).unwrap()
    );
    assert_given_up(
        &letters[0],
        0,
        "connection_broken",
        "the connection was cut",
    );
    assert!(letters[0]["given_up"]["attempts"].as_u64().unwrap() >= 3);
    // Everything behind it moved on: both batches acknowledged, once.
    assert_eq!(run.acks.keys(), origins);
    assert_eq!(get(&run.metrics.items_given_up), 1);
    assert_eq!(get(&run.metrics.items_dead_lettered), 1);
    assert_eq!(get(&run.metrics.items_delivered), others.len() as u64);

    // The proxy's limit raised, `logship replay` sends it.
    es.accept_any_size();
    let summary = replay(&cfg, dir.path()).await;
    assert_eq!(
        (summary.records, summary.delivered, summary.not_delivered),
        (1, 1, 0)
    );
    assert_all_stored(&es, &written);
}

/// Kinds of outage, each longer than `give_up_after`.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Connections refused: the port is closed.
    PortClosed,
    /// Whole requests answered 503.
    Status503,
    /// Every connection reset on accept, the `HEAD /` probes included.
    ConnectionsReset,
    /// Every item answered 503 (`unavailable_shards_exception`).
    EveryItem503,
    /// No answer within `request_timeout`.
    Timeouts,
}

/// Runs batches through an outage of `kind` lasting twice `give_up_after`;
/// asserts that nothing is dead-lettered and everything is delivered once.
async fn ride_out(kind: Outage) {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_giving_up(vec![es.url()], 2);
    cfg.request_timeout = Duration::from_millis(300);
    let outage = 2 * GIVE_UP;
    // Until ended below, after the checks.
    let until_ended = Duration::from_secs(600);
    match kind {
        Outage::PortClosed => es.stop(),
        Outage::Status503 => es.fail_requests_for(RequestFault::Status(503), until_ended),
        Outage::ConnectionsReset => es.reset_connections_for(until_ended),
        Outage::EveryItem503 => es.fail_all_items_for(ItemFault::unavailable_shards(), until_ended),
        Outage::Timeouts => es.set_response_delay(Duration::from_secs(1)),
    }
    let input = batches(4, 10);
    let written = ids_of(&input);
    let sink = Running::start(&cfg, dir.path());
    for b in input {
        sink.send(b).await;
    }
    tokio::time::sleep(outage).await;
    assert!(
        get(&sink.metrics.requests_failed) + get(&sink.metrics.items_retried) > 0,
        "{kind:?}: the outage was not exercised"
    );
    assert!(
        sink.acks.keys().is_empty(),
        "{kind:?}: acked during the outage"
    );
    match kind {
        Outage::PortClosed => es.restart().await,
        Outage::Status503 => es.heal(),
        Outage::ConnectionsReset => es.reset_connections_for(Duration::ZERO),
        Outage::EveryItem503 => {
            es.fail_all_items_for(ItemFault::unavailable_shards(), Duration::ZERO)
        }
        Outage::Timeouts => es.set_response_delay(Duration::ZERO),
    }
    let run = sink.finish().await;

    assert_all_stored(&es, &written);
    assert!(dead_letters(dir.path()).is_empty(), "{kind:?}");
    assert_eq!(get(&run.metrics.items_given_up), 0, "{kind:?}");
    assert_eq!(run.acks.keys(), origins_of(&batches(4, 10)), "{kind:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_longer_than_give_up_after_dead_letter_nothing() {
    let mut cases = tokio::task::JoinSet::new();
    for kind in [
        Outage::PortClosed,
        Outage::Status503,
        Outage::ConnectionsReset,
        Outage::EveryItem503,
        Outage::Timeouts,
    ] {
        cases.spawn(ride_out(kind));
    }
    while let Some(done) = cases.join_next().await {
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_as_a_whole_or_never_answered_with_a_bulk_response_are_given_up() {
    for (fault, status, error_type, what) in [
        (
            RequestFault::Status(403),
            403,
            "security_exception",
            "the whole request was answered HTTP 403",
        ),
        (
            RequestFault::NoItems,
            200,
            "not_a_bulk_response",
            "bulk response has no `items`",
        ),
    ] {
        let es = FakeEs::start().await;
        let dir = tempfile::tempdir().unwrap();
        es.fail_requests_for(fault.clone(), Duration::from_secs(600));
        let input = batches(1, 5);
        let written = ids_of(&input);
        let cfg = config_giving_up(vec![es.url()], 1);

        let started = std::time::Instant::now();
        let run = run_sink(&cfg, dir.path(), input).await;

        let what_fault = format!("{fault:?}");
        assert!(started.elapsed() >= GIVE_UP, "{what_fault}: too early");
        assert!(es.stored_ids().is_empty(), "{what_fault}");
        assert_eq!(dead_lettered_ids(dir.path()), written, "{what_fault}");
        for letter in dead_letters(dir.path()) {
            assert_given_up(&letter, status, error_type, what);
        }
        assert_eq!(run.acks.keys(), origins_of(&batches(1, 5)), "{what_fault}");
        assert_eq!(get(&run.metrics.items_given_up), written.len() as u64);
        assert_eq!(get(&run.metrics.items_dead_lettered), written.len() as u64);

        es.heal();
        let summary = replay(&cfg, dir.path()).await;
        assert_eq!(summary.delivered, written.len() as u64, "{what_fault}");
        assert_all_stored(&es, &written);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_answered_503_forever_while_others_are_indexed_is_given_up() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let stuck = doc_id(1, 3);
    es.fail_item(&stuck, ItemFault::unavailable_shards(), u32::MAX);
    let sink = Running::start(&config_giving_up(vec![es.url()], 2), dir.path());
    // Documents keep coming, and being indexed, until it is given up: only
    // time during which others are accepted counts.
    let started = std::time::Instant::now();
    let mut sent = 0;
    while dead_letters(dir.path()).is_empty() {
        assert!(started.elapsed() < RUN_LIMIT, "never given up");
        sink.send(numbered_batch(sent, 10)).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written = ids_of(&batches(sent, 10));
    let origins = origins_of(&batches(sent, 10));
    let run = sink.finish().await;

    assert!(started.elapsed() >= GIVE_UP);
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["id"], stuck.as_str());
    assert_given_up(
        &letters[0],
        503,
        "unavailable_shards_exception",
        "while other documents were accepted",
    );
    assert!(
        letters[0]["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("primary shard is not active")
    );
    let others: Vec<String> = written.iter().filter(|id| **id != stuck).cloned().collect();
    assert_all_stored(&es, &others);
    assert_eq!(run.acks.keys(), origins);
    assert_eq!(get(&run.metrics.items_given_up), 1);
}

/// Runs a sink whose next `panics` bulk responses panic its delivery.
async fn run_panicking_sink(
    cfg: &ElasticsearchConfig,
    data_dir: &Path,
    batches: Vec<Batch>,
    panics: u32,
) -> Run {
    let metrics = Arc::new(Metrics::default());
    let acks = Arc::new(RecordingAcks::default());
    let sink = ElasticsearchSink::new(cfg, data_dir, metrics.clone()).expect("sink");
    sink.inject_delivery_panics(panics);
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(sink.run(rx, acks.clone()));
    for b in batches {
        tx.send(b).await.expect("sink stopped early");
    }
    drop(tx);
    tokio::time::timeout(RUN_LIMIT, task)
        .await
        .expect("sink did not finish")
        .expect("sink panicked");
    Run { metrics, acks }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_delivery_is_restarted_and_its_batch_delivered_and_acked_once() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = batches(3, 10);
    let written = ids_of(&input);
    let origins = origins_of(&input);

    // The first bulk response is counted, then its delivery panics.
    let run = run_panicking_sink(&config(vec![es.url()], 2), dir.path(), input, 1).await;

    assert_all_stored(&es, &written);
    assert_eq!(run.acks.keys(), origins, "every batch acked exactly once");
    // The panicked batch was sent again whole: its documents answered 409.
    assert_eq!(get(&run.metrics.items_delivered), written.len() as u64);
    assert_eq!(get(&run.metrics.items_duplicate), 20);
    assert!(dead_letters(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_panics_every_time_is_given_up_after_the_bound() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = batches(1, 5);
    let written = ids_of(&input);

    let started = std::time::Instant::now();
    let run = run_panicking_sink(
        &config_giving_up(vec![es.url()], 1),
        dir.path(),
        input,
        u32::MAX,
    )
    .await;

    assert!(started.elapsed() >= GIVE_UP);
    assert_eq!(dead_lettered_ids(dir.path()), written);
    for letter in dead_letters(dir.path()) {
        assert_given_up(
            &letter,
            0,
            "delivery_panicked",
            "injected panic (test seam)",
        );
    }
    assert_eq!(run.acks.keys(), origins_of(&batches(1, 5)));
    assert_eq!(get(&run.metrics.items_given_up), written.len() as u64);
    // Indexed by the attempts that panicked afterwards: replaying is harmless.
    assert_all_stored(&es, &written);
}

/// Writes `batches` through a disk buffer in `dir` (payload version 2,
/// gzip'd at `gzip_level`) and returns it with nothing read yet.
async fn write_through_disk(dir: &Path, batches: Vec<Batch>, gzip_level: u32) -> DiskBuffer {
    let disk = DiskBuffer::open(dir, 64 << 20).expect("disk buffer");
    let (tx, rx) = mpsc::channel(1);
    let writer = tokio::spawn(disk.clone().run_writer(
        rx,
        Arc::new(RecordingAcks::default()),
        WhenFull::Block,
        Duration::ZERO,
        gzip_level,
    ));
    for b in batches {
        tx.send(b).await.expect("writer stopped early");
    }
    drop(tx);
    writer.await.expect("writer panicked");
    disk
}

/// Runs a sink fed by `disk`'s reader, acknowledging to the queue, until
/// every record was read and settled.
async fn run_sink_from_disk(
    cfg: &ElasticsearchConfig,
    data_dir: &Path,
    disk: &DiskBuffer,
) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::default());
    let sink = ElasticsearchSink::new(cfg, data_dir, metrics.clone()).expect("sink");
    disk.close_writing();
    let (tx, rx) = mpsc::channel(1);
    let reader = tokio::spawn(disk.clone().run_reader(tx, CancellationToken::new()));
    tokio::time::timeout(RUN_LIMIT, sink.run(rx, disk.acknowledger()))
        .await
        .expect("sink did not finish");
    reader.await.expect("reader panicked");
    metrics
}

/// Batches read back from the disk buffer are packed (their body is the
/// stored gzip, sent as it is); a 413, item retries and a dead letter make
/// the sink restore their documents. Every document arrives exactly once,
/// the dead letter holds the document itself, every record is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_buffered_batches_split_on_413_resend_items_and_dead_letter() {
    for level in [1, 0] {
        let es = FakeEs::start().await;
        let dir = tempfile::tempdir().unwrap();
        let input = batches(4, 25);
        let rejected_id = doc_id(2, 77);
        let written = ids_of(&input);
        let mut cfg = config(vec![es.url()], 2);
        cfg.gzip_level = level;
        es.fail_requests(RequestFault::Status(413), 1);
        es.fail_item(&doc_id(1, 30), ItemFault::rejected_execution(), 2);
        es.fail_item(&rejected_id, ItemFault::document_parsing(), 1);

        let disk = write_through_disk(&dir.path().join("buffer"), input, level).await;
        let metrics = run_sink_from_disk(&cfg, dir.path(), &disk).await;

        let delivered: Vec<String> = written
            .iter()
            .filter(|id| **id != rejected_id)
            .cloned()
            .collect();
        assert_all_stored(&es, &delivered);
        assert_eq!(get(&metrics.items_delivered), delivered.len() as u64);
        assert_eq!(get(&metrics.items_duplicate), 0, "level {level}");
        assert_eq!(es.times_sent(&doc_id(1, 30)), 3);
        let letters = dead_letters(dir.path());
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0]["id"], rejected_id.as_str());
        assert_eq!(
            letters[0]["document"],
            serde_json::from_str::<Value>(&document(2, 77)).unwrap()
        );
        let requests = es.requests();
        assert!(requests.iter().any(|r| r.status == 413));
        // The first request of each batch but the one answered 413 carried
        // the whole batch (its stored body) and was answered 200.
        let whole = requests
            .iter()
            .filter(|r| r.status == 200 && r.items == 50)
            .count();
        assert!(whole >= 3, "{whole} whole batches answered 200");
        assert!(
            requests
                .iter()
                .all(|r| r.content_encoding.is_some() == (level > 0)),
            "level {level}"
        );
        let stats = disk.stats();
        assert!(!disk.has_unacked(), "every record acknowledged");
        assert_eq!(Metrics::get(&stats.records_acked), 4);
        assert_eq!(Metrics::get(&stats.lost_records), 0);
    }
}

/// A record whose stored body does not restore to its spans (impossible
/// short of a bug: records are CRC'd) must not stop the agent: after a 413
/// its documents cannot be sent apart, so it is logged, counted lost and
/// acknowledged, and the records after it are delivered. (Exiting, as for
/// a memory batch, would read the same record again after every restart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_record_that_cannot_be_restored_is_acked_as_lost_not_a_crash_loop() {
    let es = FakeEs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let (bad, good) = (numbered_batch(0, 5), numbered_batch(1, 5));
    let good_ids = ids_of(std::slice::from_ref(&good));
    {
        let mut q = Queue::open(&buffer, Options::new(64 << 20), Arc::default()).unwrap();
        let mut payload = Vec::new();
        // A valid gzip of the body, but the head says it is 10 bytes longer.
        encode_batch(&bad, 1, &mut payload);
        let raw = u32::from_le_bytes(payload[12..16].try_into().unwrap());
        payload[12..16].copy_from_slice(&(raw + 10).to_le_bytes());
        q.push(&payload).unwrap();
        encode_batch(&good, 1, &mut payload);
        q.push(&payload).unwrap();
        q.flush().unwrap();
    }
    // The bad record's whole body goes out first and gunzips fine at the
    // fake; its 413 makes the sink restore the documents, which fails.
    es.fail_requests(RequestFault::Status(413), 1);
    let disk = DiskBuffer::open(&buffer, 64 << 20).unwrap();

    let metrics = run_sink_from_disk(&config(vec![es.url()], 1), dir.path(), &disk).await;

    assert_all_stored(&es, &good_ids);
    assert_eq!(get(&metrics.items_delivered), good_ids.len() as u64);
    assert!(dead_letters(dir.path()).is_empty());
    let stats = disk.stats();
    assert_eq!(Metrics::get(&stats.lost_records), 1);
    assert!(!disk.has_unacked(), "the lost record is acknowledged too");
}
