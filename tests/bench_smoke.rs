//! Every scenario of the pipeline bench (`benches/pipeline/`) at a tiny
//! size, so the bench never rots: each must end with its exact account
//! (every line written acknowledged, once; a replay under its own `_id`
//! answered 409 is allowed). No figure is asserted: the machine is shared
//! and this runs a debug build.
//!
//! The agent is the binary Cargo built for this test (`CARGO_BIN_EXE_logship`,
//! as for the e2e tests); the bulk endpoint and the writers run in this
//! process. The scenarios print what the bench prints (shown with
//! `--nocapture` or when a test fails).

#[path = "../benches/pipeline/scenarios/mod.rs"]
mod scenarios;

use std::time::Duration;

use scenarios::catch_up::CatchUp;
use scenarios::corpus::{self, CorpusKind};
use scenarios::endpoint::{Marker, marker};
use scenarios::idle::Idle;
use scenarios::latency::Latency;
use scenarios::node::{Node, NodeLoad};
use scenarios::outage::Outage;
use scenarios::{Buffer, Common};

/// A scenario's settings in a fresh temp dir (kept alive by the caller).
fn common(buffer: Buffer) -> (tempfile::TempDir, Common) {
    let dir = tempfile::Builder::new()
        .prefix("logship-bench-smoke-")
        .tempdir()
        .expect("temp dir");
    let common = Common {
        root: dir.path().join("run"),
        concurrency: 2,
        buffer,
        batch_timeout: None,
        writer_threads: 2,
        drain_timeout: Duration::from_secs(120),
    };
    (dir, common)
}

fn small_node() -> NodeLoad {
    NodeLoad {
        trickle_files: 50,
        trickle_rate: 10.0,
        busy_files: 2,
        busy_rate: 200.0,
    }
}

fn catch_up(kind: CorpusKind) {
    let (dir, common) = common(Buffer::Memory);
    let catch_up = CatchUp {
        common,
        corpus: kind,
        cache: dir.path().join("corpus"),
        mib: 8,
        files: 4,
    };
    let corpus = catch_up.prepare();
    let run = catch_up
        .run_once(&corpus, Buffer::Memory)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.account.acknowledged, corpus.expected.total());
}

#[test]
fn catch_up_ships_the_realistic_corpus_exactly_once() {
    catch_up(CorpusKind::Realistic);
}

#[test]
fn easy_ships_the_easy_corpus_exactly_once() {
    catch_up(CorpusKind::Easy);
}

#[test]
fn node_ships_every_line_written_while_it_runs() {
    let (_dir, common) = common(Buffer::Memory);
    let run = Node {
        common,
        load: small_node(),
        secs: 5,
    }
    .run()
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.account.acknowledged, run.account.written);
}

#[test]
fn idle_ships_every_line_and_nothing_more() {
    let (_dir, common) = common(Buffer::Memory);
    let run = Idle {
        common,
        files: 50,
        lines_per_file: 20,
        secs: 2,
    }
    .run()
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.account.acknowledged, 50 * 20);
}

fn outage(buffer: Buffer) {
    let (_dir, common) = common(buffer);
    let run = Outage {
        common,
        load: small_node(),
        secs: 5,
        sample_every: Duration::from_secs(1),
    }
    .run()
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.account.acknowledged, run.account.written);
}

#[test]
fn outage_with_the_memory_buffer_delivers_every_line_once_the_endpoint_is_back() {
    outage(Buffer::Memory);
}

#[test]
fn outage_with_the_disk_buffer_delivers_every_line_once_the_endpoint_is_back() {
    outage(Buffer::Disk);
}

#[test]
fn latency_is_recorded_for_every_line() {
    let (_dir, common) = common(Buffer::Memory);
    let runs = Latency {
        common,
        files: 4,
        rates: vec![1000, 10000],
        secs: 2,
    }
    .run()
    .unwrap_or_else(|e| panic!("{e}"));
    for run in runs {
        assert_eq!(run.account.acknowledged, run.account.written);
        assert!(run.p50 <= run.max);
    }
}

/// The ledger's marker is read from the message, and a document without one
/// is told apart (it fails a run).
#[test]
fn markers_are_read_from_the_message() {
    let doc =
        br#"{"@timestamp":"x","message":"id=12.345 t=678 hello \"id=1.2\"","stream":"stdout"}"#;
    assert_eq!(
        marker(doc),
        Some(Marker {
            file: 12,
            seq: 345,
            written_at: Some(678)
        })
    );
    let doc = br#"{"message":"id=3.4 rest"}"#;
    assert_eq!(
        marker(doc).map(|m| (m.file, m.seq, m.written_at)),
        Some((3, 4, None))
    );
    assert_eq!(marker(br#"{"message":"tail of a partial line"}"#), None);
}

/// The realistic corpus has the properties its doc states.
#[test]
fn realistic_messages_have_the_stated_properties() {
    let stats = corpus::realistic_sample(20, 2_000);
    let n = stats.logical as f64;
    let escapes = stats.escapes as f64 / n;
    let partial = stats.partial as f64 / stats.physical as f64;
    let long = stats.long as f64 / n;
    assert!(
        (7.0..=14.0).contains(&escapes),
        "{escapes} escapes per line"
    );
    assert!(
        (0.08..=0.14).contains(&partial),
        "{partial} of CRI lines are P"
    );
    assert!((0.35..=0.55).contains(&long), "{long} of messages are long");
    assert!(stats.non_ascii > 0, "no non-ASCII message");
}

/// POSTs an uncompressed `_bulk` body to the endpoint; returns the answer.
fn post_bulk(url: &str, query: &str, body: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the endpoint");
    write!(
        stream,
        "POST /_bulk{query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    let (head, json) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// The instrument itself: missing lines are named by file and range, a line
/// under a second `_id` is a duplicate, a replay under its own `_id` is
/// answered 409 in Elasticsearch's format, an unmarked document fails.
#[test]
fn the_endpoint_names_what_is_missing_duplicated_or_unmarked() {
    use scenarios::endpoint::{Endpoint, Expected, ExpectedFile};
    let endpoint = Endpoint::start();
    let item = |id: &str, message: &str| {
        format!(
            "{{\"create\":{{\"_index\":\"logs-2026.11.26\",\"_id\":\"{id}\"}}}}\n\
             {{\"@timestamp\":\"2026-11-26T01:02:03Z\",\"message\":\"{message}\"}}\n"
        )
    };
    let first = [
        item("a0", "id=0.0 x"),
        item("a1", "id=0.1 y"),
        item("a3", "id=0.3 z"),
    ]
    .concat();
    let answer = post_bulk(
        &endpoint.url(),
        "?filter_path=errors,items.*.status,items.*.error",
        &first,
    );
    assert_eq!(answer["errors"], false);
    assert_eq!(answer["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(answer["items"][0]["create"]["status"], 201);
    let second = [
        item("a1", "id=0.1 y"),
        item("b0", "id=0.0 x"),
        item("c", "no marker"),
    ]
    .concat();
    let answer = post_bulk(&endpoint.url(), "", &second);
    assert_eq!(answer["errors"], true);
    let replay = &answer["items"][0]["create"];
    assert_eq!(replay["status"], 409);
    assert_eq!(replay["_id"], "a1");
    assert_eq!(replay["error"]["type"], "version_conflict_engine_exception");
    assert_eq!(answer["items"][1]["create"]["status"], 201);
    assert_eq!(answer["items"][1]["create"]["result"], "created");
    assert_eq!(endpoint.acknowledged(), 3);

    let expected = Expected {
        files: vec![ExpectedFile {
            name: "pods/ns_pod_uid/app/0.log".into(),
            lines: 5,
        }],
    };
    let err = endpoint.account(&expected).expect_err("lines are missing");
    for part in [
        "2 of 5 lines never acknowledged",
        "pods/ns_pod_uid/app/0.log (file 0) seq 2..=2 (1 lines)",
        "seq 4..=4",
        "1 lines indexed twice under different _ids: file 0 seq 0 again as _id b0",
        "1 documents without an id= marker",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
}
