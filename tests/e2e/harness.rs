//! The harness itself: the Elasticsearch node answers real queries, and the
//! exactly-once check fails when it should.

use crate::expect::{Line, compare};
use crate::support::elasticsearch;
use crate::support::logship::timestamp;
use serde_json::json;
use std::time::Duration;

#[test]
fn elasticsearch_indexes_and_returns_documents() {
    let es = elasticsearch::shared();
    let index = "e2e-harness-roundtrip";
    let mut body = String::new();
    for i in 0..7 {
        body.push_str(&json!({"create": {"_index": index, "_id": format!("id-{i}")}}).to_string());
        body.push('\n');
        body.push_str(
            &json!({"message": format!("hello seq={i:06}"), "@timestamp": timestamp(i)})
                .to_string(),
        );
        body.push('\n');
    }
    let response = es.bulk(&body);
    assert_eq!(response["errors"], json!(false), "{response}");
    assert_eq!(es.wait_for_count(index, 7, Duration::from_secs(10)), 7);

    // Replaying the same `_id`s with `create` is rejected per item with 409,
    // the contract the agent relies on for exactly-once.
    let replay = es.bulk(&body);
    let statuses: Vec<u64> = replay["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["create"]["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, vec![409; 7], "{replay}");
    assert_eq!(es.count(index), 7);

    let mut docs = es.search_all(index);
    docs.sort_by_key(|d| d["_id"].as_str().unwrap_or_default().to_string());
    assert_eq!(docs.len(), 7);
    assert_eq!(docs[3]["_id"], json!("id-3"));
    assert_eq!(docs[3]["message"], json!("hello seq=000003"));
    assert_eq!(docs[3]["@timestamp"], json!(timestamp(3)));
}

#[test]
fn search_all_pages_past_one_page() {
    let es = elasticsearch::shared();
    let index = "e2e-harness-paging";
    let n = 12_345;
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!(
            "{{\"create\":{{\"_index\":\"{index}\"}}}}\n{{\"n\":{i}}}\n"
        ));
    }
    assert_eq!(es.bulk(&body)["errors"], json!(false));
    let docs = es.search_all(index);
    let mut seen: Vec<u64> = docs.iter().map(|d| d["n"].as_u64().expect("n")).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<u64>>());
}

fn doc(message: &str, stream: &str, ts: &str, offset: u64) -> serde_json::Value {
    json!({
        "_id": format!("id-{offset}"),
        "message": message, "stream": stream, "@timestamp": ts,
        "log": {"file": {"path": "/x/0.log"}, "offset": offset},
    })
}

#[test]
fn exactly_once_check_accepts_exact_and_rejects_loss_duplicates_and_wrong_fields() {
    let ts = "2026-11-26T01:02:03.123456789Z";
    let lines = vec![
        Line::new("a seq=000001", "stdout", ts),
        Line::new("b seq=000002", "stderr", ts),
    ];
    let exact = vec![
        doc("a seq=000001", "stdout", ts, 0),
        doc("b seq=000002", "stderr", ts, 50),
    ];
    assert_eq!(compare(&lines, &exact), Ok(()));
    // The same instant written differently is the same timestamp.
    let other_zone = vec![
        doc(
            "a seq=000001",
            "stdout",
            "2026-11-26T03:02:03.123456789+02:00",
            0,
        ),
        doc("b seq=000002", "stderr", ts, 50),
    ];
    assert_eq!(compare(&lines, &other_zone), Ok(()));

    let missing = compare(&lines, &exact[..1]).unwrap_err();
    assert!(
        missing.contains("missing (written, not indexed): 1"),
        "{missing}"
    );
    assert!(missing.contains("b seq=000002"), "{missing}");

    let mut twice = exact.clone();
    twice.push(doc("b seq=000002", "stderr", ts, 99));
    let duplicated = compare(&lines, &twice).unwrap_err();
    assert!(duplicated.contains("duplicated: 1"), "{duplicated}");

    let mut extra = exact.clone();
    extra.push(doc("c seq=000003", "stdout", ts, 80));
    assert!(
        compare(&lines, &extra)
            .unwrap_err()
            .contains("not written but indexed: 1")
    );

    let wrong_stream = vec![doc("a seq=000001", "stderr", ts, 0), exact[1].clone()];
    assert!(
        compare(&lines, &wrong_stream)
            .unwrap_err()
            .contains("stream")
    );

    let wrong_time = vec![
        doc("a seq=000001", "stdout", "2026-11-26T01:02:03.123Z", 0),
        exact[1].clone(),
    ];
    assert!(
        compare(&lines, &wrong_time)
            .unwrap_err()
            .contains("@timestamp")
    );

    let flagged = vec![lines[0].clone().flagged("invalid_utf8"), lines[1].clone()];
    assert!(compare(&flagged, &exact).unwrap_err().contains("log.flags"));

    let mut no_offset = exact.clone();
    no_offset[0]["log"] = json!({"file": {"path": "/x/0.log"}});
    assert!(
        compare(&lines, &no_offset)
            .unwrap_err()
            .contains("log.offset")
    );
}
