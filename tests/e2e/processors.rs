//! Processors end to end (issue 15): an nginx-style access log whose health
//! checks are dropped and whose other lines are parsed, with `kill -9` in
//! the middle of shipping. Afterwards the index holds every kept line
//! exactly once (matched line by line, by message), none of the dropped
//! ones, the parsed fields are searchable, lines the parse does not fit are
//! tagged, `@timestamp` comes from the access log's own time, the
//! checkpoint of each file reaches its end although it ends in dropped
//! lines, and the drop counter covers the dropped lines the last run read.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::buffer::checkpoint_offset;
use crate::expect::{Line, assert_exactly_once_docs, kill_9_once_shipping};
use crate::ops::{free_port, scrape, value};
use crate::scenario;
use crate::support::logship::{LogWriter, Options, cri_line, timestamp};

/// The processors under the one source (see docs/configuration.md).
const PROCESSORS: &str = r#"    processors:
      - drop:
          name: health
          when: {regex: {message: '"GET /healthz'}}
      - parse:
          name: access
          dissect: '%{client} - - [%{time}] "%{method} %{path} %{?protocol}" %{status} %{bytes}'
          target: http
      - timestamp: {field: http.time, format: '%d/%b/%Y:%H:%M:%S %z'}
      - drop_fields: {fields: [http.time]}
"#;

/// What the lines of one file are made of.
#[derive(Default)]
struct Written {
    kept: Vec<Line>,
    health: u64,
    unparsed: u64,
    posts: u64,
    not_found: u64,
}

/// Writes lines `seqs` of `file`: every 4th a health check, every 50th a
/// line that is not an access line, the rest access lines (every 3rd a
/// POST, every 7th a 404). With `all_health`, only health checks (whole
/// spans of dropped lines).
fn write_lines(
    w: &mut LogWriter,
    file: &str,
    seqs: std::ops::Range<u64>,
    all_health: bool,
    out: &mut Written,
) {
    let mut bytes = Vec::new();
    for seq in seqs {
        let cri_time = timestamp(seq);
        // The access log's own time: one second per line from 2026-11-26T00:00Z.
        let access =
            chrono::DateTime::from_timestamp(1_795_651_200 + seq as i64, 0).expect("valid time");
        let access_time = access.format("%d/%b/%Y:%H:%M:%S +0000").to_string();
        let message = if all_health || seq % 4 == 0 {
            out.health += 1;
            format!(r#"10.0.0.1 - - [{access_time}] "GET /healthz?{file}={seq} HTTP/1.1" 200 2"#)
        } else if seq % 50 == 1 {
            out.unparsed += 1;
            let m = format!("{file} seq={seq} worker restarted, not an access line");
            out.kept.push(Line::new(m.clone(), "stdout", &cri_time));
            m
        } else {
            let method = if seq % 3 == 0 { "POST" } else { "GET" };
            let status = if seq % 7 == 0 { 404 } else { 200 };
            out.posts += u64::from(method == "POST");
            out.not_found += u64::from(status == 404);
            let m = format!(
                r#"10.1.{}.{} - - [{access_time}] "{method} /api/{file}/orders/{seq} HTTP/1.1" {status} {}"#,
                seq % 250,
                seq % 200,
                seq * 13 % 5000
            );
            out.kept.push(Line::new(
                m.clone(),
                "stdout",
                &access.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ));
            m
        };
        bytes.extend(cri_line(&cri_time, "stdout", "F", message.as_bytes()));
    }
    w.write(&bytes);
}

#[test]
fn nginx_health_checks_dropped_fields_parsed_exactly_once_across_kill_9() {
    let (es, setup) = scenario(
        "processors",
        Options {
            format: "cri",
            batch_max_events: 200,
            ..Options::default()
        },
    );
    let port = free_port();
    let yaml = setup.config_yaml().replace(
        "    max_line_bytes:",
        &format!("{PROCESSORS}    max_line_bytes:"),
    ) + &format!("http: {{listen: \"127.0.0.1:{port}\"}}\n");
    std::fs::write(setup.config_path(), yaml).expect("write config");

    let files = ["a.log", "b.log"];
    let mut writers: Vec<LogWriter> = files
        .iter()
        .map(|f| LogWriter::create(&setup.log(f)))
        .collect();
    let mut written = Written::default();
    let per_round = 6_000;
    for (w, f) in writers.iter_mut().zip(files) {
        write_lines(w, f, 0..per_round, false, &mut written);
        // A run of dropped lines longer than a span in the middle.
        write_lines(w, f, per_round..per_round + 1_000, true, &mut written);
    }
    let mut next = per_round + 1_000;
    let mut agent = setup.start();
    let mut kills_mid_stream = 0;
    let mut health_last_run = 0;
    for round in 0..2 {
        let kept = written.kept.len();
        if kill_9_once_shipping(es, &setup.index_pattern, &mut agent, kept, round) {
            kills_mid_stream += 1;
        }
        // While the agent is dead: more lines, ending in dropped ones.
        let health_before = written.health;
        for (w, f) in writers.iter_mut().zip(files) {
            write_lines(w, f, next..next + per_round / 2, false, &mut written);
            write_lines(
                w,
                f,
                next + per_round / 2..next + per_round / 2 + 300,
                true,
                &mut written,
            );
        }
        next += per_round / 2 + 300;
        health_last_run = written.health - health_before;
        agent.restart();
    }
    assert!(
        kills_mid_stream > 0,
        "no kill happened mid-stream; the test needs more lines"
    );

    let docs = assert_exactly_once_docs(es, &setup.index_pattern, &written.kept, &mut agent);
    // Parsed fields are in the documents and searchable.
    let tagged = docs
        .iter()
        .filter(|d| d["tags"] == json!(["_parse_failure"]))
        .count();
    assert_eq!(
        tagged as u64, written.unparsed,
        "lines the parse did not fit are tagged"
    );
    assert!(
        docs.iter().all(|d| d["http"].get("time").is_none()),
        "http.time was dropped"
    );
    let count = |query: serde_json::Value| {
        es.json(
            reqwest::Method::POST,
            &format!("{}/_count", setup.index_pattern),
            Some(&json!({ "query": query })),
        )["count"]
            .as_u64()
            .expect("a count")
    };
    assert_eq!(
        count(json!({"match": {"http.method": "POST"}})),
        written.posts
    );
    assert_eq!(
        count(json!({"term": {"http.status.keyword": "404"}})),
        written.not_found
    );
    assert_eq!(
        count(json!({"match_phrase": {"message": "GET /healthz"}})),
        0
    );

    // Each file's checkpoint reaches its end, past its last (dropped) lines.
    let started = Instant::now();
    for f in files {
        let size = std::fs::metadata(setup.log(f)).expect("log file").len();
        while checkpoint_offset(&setup, f) < size {
            agent.assert_running();
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{f}: checkpoint {} never reached the end {size} (the file ends in dropped lines)",
                checkpoint_offset(&setup, f)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The last run read at least the health checks written while the agent
    // was down before it; it cannot have dropped more than were written.
    let scraped = scrape(port, &mut agent);
    let dropped = value(
        &scraped,
        "logship_processor_dropped_lines_total",
        &[("processor", "health")],
    )
    .expect("the health step's counter") as u64;
    assert!(
        (health_last_run..=written.health).contains(&dropped),
        "dropped {dropped}: the last run read at least {health_last_run} health checks, {} were written",
        written.health
    );
    let failed = value(
        &scraped,
        "logship_processor_failures_total",
        &[("processor", "access")],
    )
    .expect("the parse step's counter");
    assert!(
        failed >= 1.0,
        "the parse failures of the last run are counted"
    );
}
