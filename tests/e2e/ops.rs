//! Operating the agent: `/metrics` figures equal what was written and
//! shipped (parsed with `prometheus-parse`, so a malformed line fails),
//! `/readyz` follows Elasticsearch's reachability, SIGTERM during heavy
//! shipping drains within the deadline and the restart neither loses nor
//! duplicates, SIGHUP adds a source, an invalid reload changes nothing, and
//! every metric name in `deploy/` exists in a real scrape.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::expect::{
    DELIVERY_TIMEOUT, Line, assert_exactly_once, wait_for_delivery, write_numbered,
};
use crate::scenario;
use crate::support::agent_http::wait_get;
pub(crate) use crate::support::agent_http::{free_port, get, scrape, value};
use crate::support::elasticsearch::repo_root;
use crate::support::logship::{Agent, LogWriter, Options, Setup};

/// The agent's config: `sources` (name, include glob under logs/), `url`, http on `port`.
fn write_config(setup: &Setup, url: &str, port: u16, sources: &[(&str, &str)], extra: &str) {
    let mut yaml = format!(
        "node_name: e2e-node\ndata_dir: {}\nshutdown_timeout: 5s\nhttp: {{listen: \"127.0.0.1:{port}\", per_file_lag: true}}\nsources:\n",
        setup.data_dir().display()
    );
    for (name, include) in sources {
        yaml.push_str(&format!(
            "  - name: {name}\n    include: [\"{}\"]\n    format: cri\n",
            setup.logs().join(include).display()
        ));
    }
    yaml.push_str(&format!(
        "sink:\n  elasticsearch:\n    hosts: [\"{url}\"]\n    index: \"{}\"\n    batch: {{max_bytes: 1MiB, max_events: 500, timeout: 200ms}}\n    retry: {{initial_backoff: 50ms, max_backoff: 500ms}}\n    request_timeout: 5s\n{extra}",
        setup.index_template
    ));
    std::fs::write(setup.config_path(), yaml).expect("write config");
}

/// Polls `path` until `ok` holds for (status, body), or fails with the last answer.
fn wait_until(
    port: u16,
    path: &str,
    agent: &mut Agent,
    what: &str,
    ok: impl Fn(u16, &str) -> bool,
) -> String {
    let started = Instant::now();
    loop {
        let (status, body) = wait_get(port, path, agent);
        if ok(status, &body) {
            return body;
        }
        assert!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "{what}: {path} answered {status} {body}\n{}",
            agent.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes CRI lines `seqs` to `path` (see `write_numbered`), returning the bytes written.
fn write_lines(
    name: &str,
    path: &Path,
    seqs: std::ops::Range<u64>,
    expected: &mut Vec<Line>,
) -> u64 {
    write_numbered(name, &mut LogWriter::create(path), seqs, expected, None)
}

#[test]
fn metrics_equal_what_was_written_and_shipped_and_deploy_names_exist() {
    let (es, setup) = scenario("ops-metrics", Options::default());
    let port = free_port();
    // A disk buffer, so its figures are in the scrape (and the alert on them checked).
    let buffer_max_bytes: u64 = 48 << 20;
    write_config(
        &setup,
        es.url(),
        port,
        &[("apps", "*.log")],
        &format!("buffer: {{type: disk, max_bytes: {buffer_max_bytes}}}\n"),
    );
    let mut expected = Vec::new();
    let mut written = 0;
    written += write_lines("ops-metrics", &setup.log("a.log"), 0..1200, &mut expected);
    written += write_lines("ops-metrics", &setup.log("b.log"), 0..800, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
    let n = expected.len() as f64;

    let (status, health) = wait_get(port, "/healthz", &mut agent);
    assert_eq!(status, 200, "{health}");
    // Lag reaches 0 once the acks are in.
    wait_until(
        port,
        "/api/v1/files",
        &mut agent,
        "files fully acknowledged",
        |s, body| {
            let files: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            s == 200
                && files.as_array().is_some_and(|f| {
                    f.len() == 2
                        && f.iter()
                            .all(|f| f["lag_bytes"] == 0 && f["acked_offset"] == f["size"])
                })
        },
    );
    let m = scrape(port, &mut agent);
    let src = [("source", "apps")];
    assert_eq!(value(&m, "logship_lines_read_total", &src), Some(n));
    assert_eq!(
        value(&m, "logship_read_bytes_total", &src),
        Some(written as f64)
    );
    assert_eq!(value(&m, "logship_events_encoded_total", &[]), Some(n));
    // Delivered = indexed now (2xx) + already there (409 for our own _id).
    let shipped = value(&m, "logship_events_shipped_total", &[]).unwrap_or(f64::NAN);
    let duplicate = value(&m, "logship_events_duplicate_total", &[]).unwrap_or(f64::NAN);
    assert_eq!(
        shipped + duplicate,
        n,
        "shipped {shipped} + duplicate {duplicate}"
    );
    assert_eq!(
        value(&m, "logship_events_dead_lettered_total", &[]),
        Some(0.0)
    );
    assert_eq!(value(&m, "logship_files_followed", &[]), Some(2.0));
    assert_eq!(value(&m, "logship_lag_bytes", &src), Some(0.0));
    for file in ["a.log", "b.log"] {
        let path = setup.log(file).display().to_string();
        let labels = [("source", "apps"), ("path", path.as_str())];
        assert_eq!(
            value(&m, "logship_file_lag_bytes", &labels),
            Some(0.0),
            "{path}"
        );
    }
    assert_eq!(value(&m, "logship_ready", &[]), Some(1.0));
    let ok = value(&m, "logship_bulk_requests_total", &[("outcome", "ok")]).unwrap_or(0.0);
    assert!(ok >= 1.0, "bulk requests ok: {ok}");
    // Every attempt is observed once; items retried are sent again.
    let failed = value(&m, "logship_bulk_requests_total", &[("outcome", "failed")]).unwrap_or(0.0);
    let retried = value(&m, "logship_events_retried_total", &[]).unwrap_or(f64::NAN);
    assert_eq!(
        value(&m, "logship_bulk_request_events_count", &[]),
        Some(ok + failed)
    );
    let sent = value(&m, "logship_bulk_request_events_sum", &[]).unwrap_or(f64::NAN);
    assert!(
        sent >= n + retried,
        "events sent {sent} < {n} + {retried} retried"
    );
    assert!(value(&m, "process_resident_memory_bytes", &[]).unwrap_or(0.0) > 0.0);

    // The disk buffer: its capacity as configured, everything acknowledged,
    // its segment files within bounds, nothing damaged, refused or dropped.
    assert_eq!(
        value(&m, "logship_buffer_capacity_bytes", &[]),
        Some(buffer_max_bytes as f64)
    );
    let m = wait_scrape(port, &mut agent, "buffer records all acknowledged", |m| {
        value(m, "logship_buffer_records", &[]) == Some(0.0)
    });
    let used = value(&m, "logship_buffer_bytes", &[]).unwrap_or(f64::NAN);
    assert!(
        used > 0.0 && used <= buffer_max_bytes as f64,
        "buffer bytes {used} of {buffer_max_bytes}"
    );
    for name in [
        "logship_buffer_corrupt_records_total",
        "logship_buffer_corrupt_bytes_total",
        "logship_buffer_write_errors_total",
        "logship_buffer_dropped_events_total",
    ] {
        assert_eq!(value(&m, name, &[]), Some(0.0), "{name}");
    }

    // Every metric the dashboard and the alert rules use exists in the scrape.
    // prometheus-parse folds `_bucket` series into one histogram sample.
    let mut exposed: BTreeSet<String> = m.samples.iter().map(|s| s.metric.clone()).collect();
    for s in &m.samples {
        if let prometheus_parse::Value::Histogram(_) = s.value {
            exposed.insert(format!("{}_bucket", s.metric));
        }
    }
    for file in [
        "deploy/grafana/logship-dashboard.json",
        "deploy/prometheus/alerts.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).expect(file);
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{file} uses too few metrics: {used:?}");
        let missing: Vec<_> = used.iter().filter(|u| !exposed.contains(*u)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics /metrics does not expose: {missing:?}\nexposed: {exposed:?}"
        );
    }
}

/// Scrapes until `done` holds for a scrape (or the delivery timeout passes).
fn wait_scrape(
    port: u16,
    agent: &mut Agent,
    what: &str,
    done: impl Fn(&prometheus_parse::Scrape) -> bool,
) -> prometheus_parse::Scrape {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let m = scrape(port, agent);
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            agent.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Names of `logship_*` and `process_*` series in a dashboard or rule file.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["logship_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let preceded = i > 0 && rest.as_bytes()[i - 1].is_ascii_alphanumeric();
            if !preceded && end > prefix.len() {
                names.insert(tail[..end].to_owned());
            }
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn readyz_is_not_ready_while_elasticsearch_is_unreachable_and_reload_fixes_it() {
    let (es, setup) = scenario("ops-ready", Options::default());
    let port = free_port();
    let closed = format!("http://127.0.0.1:{}", free_port());
    write_config(&setup, &closed, port, &[("apps", "*.log")], "");
    let mut expected = Vec::new();
    write_lines("ops-ready", &setup.log("a.log"), 0..300, &mut expected);
    let mut agent = setup.start();
    let body = wait_until(
        port,
        "/readyz",
        &mut agent,
        "not ready while ES is unreachable",
        |s, _| s == 503,
    );
    assert!(body.contains("Elasticsearch unreachable"), "{body}");
    let files: serde_json::Value =
        serde_json::from_str(&wait_get(port, "/api/v1/files", &mut agent).1).expect("json");
    assert!(files[0]["lag_bytes"].as_u64().unwrap_or(0) > 0, "{files}");

    // Point the sink at the real node and reload.
    write_config(&setup, es.url(), port, &[("apps", "*.log")], "");
    agent.sighup();
    wait_until(
        port,
        "/readyz",
        &mut agent,
        "ready once ES answers",
        |s, _| s == 200,
    );
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
}

#[test]
fn sigterm_during_heavy_shipping_exits_in_time_and_restart_is_exact() {
    let (es, setup) = scenario("ops-sigterm", Options::default());
    let port = free_port();
    write_config(&setup, es.url(), port, &[("apps", "*.log")], "");
    let mut expected = Vec::new();
    for (i, file) in ["a.log", "b.log", "c.log", "d.log"].iter().enumerate() {
        let base = i as u64 * 1_000_000;
        write_lines(
            "ops-sigterm",
            &setup.log(file),
            base..base + 25_000,
            &mut expected,
        );
    }
    let mut agent = setup.start();
    // Stop in the middle of shipping.
    let count = wait_for_delivery(es, &setup.index_pattern, 5_000, &mut agent);
    assert!(
        count < expected.len() as u64,
        "everything shipped before SIGTERM ({count}); write more"
    );
    let stopped = Instant::now();
    // shutdown_timeout is 5s; allow the runtime a little on top.
    let status = agent.sigterm(Duration::from_secs(8));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        agent.stderr_tail(30)
    );
    eprintln!(
        "logship drained and exited {:?} after SIGTERM",
        stopped.elapsed()
    );
    agent.restart();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
}

#[test]
fn sighup_adds_a_source_and_an_invalid_reload_changes_nothing() {
    let (es, setup) = scenario("ops-reload", Options::default());
    let port = free_port();
    write_config(&setup, es.url(), port, &[("first", "a-*.log")], "");
    let mut first = Vec::new();
    let mut second = Vec::new();
    write_lines("ops-reload", &setup.log("a-1.log"), 0..500, &mut first);
    write_lines("ops-reload", &setup.log("b-1.log"), 0..400, &mut second);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &first, &mut agent);

    // An invalid config (unknown key) is refused; the old one keeps shipping.
    write_config(
        &setup,
        es.url(),
        port,
        &[("first", "a-*.log"), ("second", "b-*.log")],
        "    bogus_key: 1\n",
    );
    agent.sighup();
    let started = Instant::now();
    while !agent.stderr_tail(50).contains("config reload rejected") {
        agent.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no rejection logged:\n{}",
            agent.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        agent.stderr_tail(50).contains("bogus_key"),
        "{}",
        agent.stderr_tail(30)
    );
    write_lines("ops-reload", &setup.log("a-1.log"), 500..700, &mut first);
    assert_exactly_once(es, &setup.index_pattern, &first, &mut agent);
    let m = scrape(port, &mut agent);
    assert_eq!(
        value(&m, "logship_lines_read_total", &[("source", "second")]),
        None
    );

    // A valid one adding a source starts shipping it, losing and duplicating nothing.
    write_config(
        &setup,
        es.url(),
        port,
        &[("first", "a-*.log"), ("second", "b-*.log")],
        "",
    );
    agent.sighup();
    write_lines("ops-reload", &setup.log("a-1.log"), 700..900, &mut first);
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    assert_exactly_once(es, &setup.index_pattern, &all, &mut agent);
    let m = scrape(port, &mut agent);
    assert_eq!(
        value(&m, "logship_lines_read_total", &[("source", "second")]),
        Some(second.len() as f64)
    );
}
