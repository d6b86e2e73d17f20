//! The compatibility matrix: the same sink scenarios, through the real
//! `logship` binary, against each server `scripts/elasticsearch.sh matrix`
//! lists (Elasticsearch 8 and 9, OpenSearch 2; each a real node from its
//! Maven Central integration-test zip, started by this binary and stopped at
//! the end of its test).
//!
//! Against each server:
//! - a mixed batch: one line the server cannot map (stamped before 1970,
//!   which the installed template's `date_nanos` cannot hold) is
//!   dead-lettered with the server's reason, every other line of the same
//!   batch is indexed exactly once, and the installed template's mappings
//!   are in the index;
//! - data-stream mode with the template installed: the lines land in the
//!   stream's backing index, with the pod's dedotted labels;
//! - a replay of everything already indexed (checkpoints gone): only 409s,
//!   counted as duplicates, and no new document;
//! - the dotted labels `app: x` and `app.kubernetes.io/name: y` with
//!   `dedot: false`: both searchable thanks to the template's flat field
//!   type (`flattened` or `flat_object`), while the same document without
//!   the template is rejected.
//!
//! Labels reach logship the way a sidecar sees them: a downward-API labels
//! file.

#[path = "support/mod.rs"]
mod support;

#[path = "e2e/expect.rs"]
#[allow(dead_code)]
mod expect;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use expect::{Line, assert_exactly_once, cri_stdout};
use support::agent_http::{free_port, scrape, value};
use support::elasticsearch::{self, Elasticsearch, Server};
use support::logship::{Agent, Options, Setup, append, cri_line};

#[test]
fn elasticsearch_8() {
    run_matrix(&elasticsearch::matrix_server("elasticsearch", 8), "es8");
}

#[test]
fn elasticsearch_9() {
    run_matrix(&elasticsearch::matrix_server("elasticsearch", 9), "es9");
}

#[test]
fn opensearch_2() {
    run_matrix(&elasticsearch::matrix_server("opensearch", 2), "os2");
}

/// One scenario: the node, and the tag that makes its index names unique.
type Scenario = fn(&Elasticsearch, &str);

/// Starts `server`, runs every scenario against it, stops it.
fn run_matrix(server: &Server, tag: &str) {
    let started = Instant::now();
    let es = elasticsearch::start(server);
    eprintln!("{server}: ready in {:?}", started.elapsed());
    let scenarios: [(&str, Scenario); 3] = [
        ("mixed batch with a mapping failure", mixed_batch),
        (
            "data stream, then a replay of only 409s",
            data_stream_and_replay,
        ),
        ("dotted labels without dedot", dotted_labels),
    ];
    for (name, scenario) in scenarios {
        let t = Instant::now();
        scenario(&es, tag);
        eprintln!("{server}: {name}: ok in {:?}", t.elapsed());
    }
    drop(es);
    eprintln!("{server}: all scenarios in {:?}", started.elapsed());
}

fn options() -> Options {
    Options {
        format: "cri",
        ..Options::default()
    }
}

/// The setup's config with its `index:` line replaced by `keys` (sink keys,
/// 4-space indented) and `top` appended (top-level YAML).
fn configure(setup: &Setup, keys: &str, top: &str) {
    let line = format!("    index: \"{}\"\n", setup.index_template);
    let yaml = setup.config_yaml();
    assert!(yaml.contains(&line), "{yaml}");
    std::fs::write(setup.config_path(), yaml.replace(&line, keys) + top).expect("write config");
}

/// Top-level YAML: sidecar mode for one pod whose labels file holds `app`
/// and `app.kubernetes.io/name`, keys dedotted or not.
fn sidecar(setup: &Setup, dedot: bool) -> String {
    let labels = setup.root().join("labels");
    std::fs::write(&labels, "app=\"x\"\napp.kubernetes.io/name=\"y\"\n").expect("labels file");
    format!(
        "kubernetes:\n  mode: sidecar\n  dedot: {dedot}\n  pod:\n    name: compat-pod\n    namespace: compat\n    uid: 6c3e0c1a-2b4d-4e5f-8a9b-0c1d2e3f4a5b\n    container: app\n    labels_file: {}\n",
        labels.display()
    )
}

/// Appends CRI lines `seqs` to `logs/a.log`, recording them in `expected`.
fn write_lines(setup: &Setup, name: &str, seqs: std::ops::Range<u64>, expected: &mut Vec<Line>) {
    let mut bytes = Vec::new();
    for seq in seqs {
        bytes.extend(cri_stdout(seq, format!("{name} seq={seq:06}"), expected));
    }
    append(&setup.log("a.log"), &bytes);
}

/// Documents of `index` whose `field` is exactly `value`.
fn hits(es: &Elasticsearch, index: &str, field: &str, value: &str) -> u64 {
    es.refresh(index);
    let query = json!({"query": {"term": {field: value}}});
    let response = es.json(
        reqwest::Method::POST,
        &format!("{index}/_count"),
        Some(&query),
    );
    response["count"].as_u64().expect("count")
}

/// The only index (or backing index) `index` resolves to and its mapping.
fn mapping_of(es: &Elasticsearch, index: &str) -> (String, Value) {
    let mapping = es.json(reqwest::Method::GET, &format!("{index}/_mapping"), None);
    let all = mapping.as_object().expect("mapping object");
    assert_eq!(all.len(), 1, "{index} is not one index: {mapping}");
    let (name, body) = all.iter().next().expect("one index");
    (name.clone(), body["mappings"].clone())
}

/// Waits until the dead-letter file holds `n` records; returns them.
fn dead_letters(setup: &Setup, n: usize, agent: &mut Agent) -> Vec<Value> {
    let path = setup.data_dir().join("dead-letter.ndjson");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        agent.assert_running();
        let records: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("dead letter is JSON"))
            .collect();
        if records.len() >= n || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn mixed_batch(es: &Elasticsearch, tag: &str) {
    let setup = Setup::new(&format!("{tag}-mixed"), es.url(), options());
    configure(
        &setup,
        &format!(
            "    index: \"{}\"\n    template: install\n",
            setup.index_template
        ),
        "",
    );
    // Written before the agent starts, so they are read and batched together
    // (batch.max_events 500): the bad line sits in the middle of one batch.
    let mut expected = Vec::new();
    write_lines(&setup, "mixed", 0..30, &mut expected);
    let bad = "mixed seq=before-1970";
    append(
        &setup.log("a.log"),
        &cri_line("1969-12-31T23:59:59.5Z", "stdout", "F", bad.as_bytes()),
    );
    write_lines(&setup, "mixed", 30..60, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);

    let records = dead_letters(&setup, 1, &mut agent);
    assert_eq!(records.len(), 1, "{records:?}\n{}", agent.stderr_tail(30));
    let record = &records[0];
    assert_eq!(record["document"]["message"], bad, "{record}");
    assert_eq!(record["status"], 400, "{record}");
    let error_type = record["error"]["type"].as_str().unwrap_or_default();
    assert!(
        ["document_parsing_exception", "mapper_parsing_exception"].contains(&error_type),
        "not a mapping failure: {record}"
    );
    let reason = record["error"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("@timestamp"), "reason: {record}");
    let delivered = expected.len() as u64;
    assert_eq!(es.count(&setup.index_pattern), delivered);
    let server = es.server();
    let connected = format!("connected to {} {}", server.distribution, server.version);
    assert!(
        agent.stderr_tail(200).contains(&connected),
        "the version check did not say {connected:?}:\n{}",
        agent.stderr_tail(30)
    );

    // The template logship installed shaped the index.
    let (_, mappings) = mapping_of(es, &format!("e2e-{tag}-mixed-2026.*"));
    let properties = &mappings["properties"];
    assert_eq!(properties["message"]["type"], "text", "{mappings}");
    assert_eq!(properties["@timestamp"]["type"], "date_nanos", "{mappings}");
    assert_eq!(
        properties["log"]["properties"]["file"]["properties"]["path"]["type"], "keyword",
        "{mappings}"
    );
    agent.sigterm(Duration::from_secs(30));
}

fn data_stream_and_replay(es: &Elasticsearch, tag: &str) {
    let setup = Setup::new(&format!("{tag}-ds"), es.url(), options());
    let stream = format!("logs-compat_{tag}-t1");
    let port = free_port();
    configure(
        &setup,
        &format!(
            "    data_stream: {{dataset: compat_{tag}, namespace: t1}}\n    template: install\n"
        ),
        &format!(
            "{}http: {{listen: \"127.0.0.1:{port}\"}}\n",
            sidecar(&setup, true)
        ),
    );
    let mut expected = Vec::new();
    write_lines(&setup, "datastream", 0..200, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, &stream, &expected, &mut agent);
    let n = expected.len() as u64;

    // A data stream: its documents live in a `.ds-<stream>-…` backing index,
    // mapped by logship's template.
    let (backing, mappings) = mapping_of(es, &stream);
    assert!(backing.starts_with(&format!(".ds-{stream}-")), "{backing}");
    assert_eq!(mappings["properties"]["message"]["type"], "text");
    assert_eq!(
        mappings["properties"]["kubernetes"]["properties"]["pod"]["properties"]["name"]["type"],
        "keyword",
        "{mappings}"
    );
    // Dedotted label keys sit side by side.
    assert_eq!(hits(es, &stream, "kubernetes.labels.app", "x"), n);
    assert_eq!(
        hits(es, &stream, "kubernetes.labels.app_kubernetes_io/name", "y"),
        n
    );

    // Replay everything: checkpoints gone, the whole file is sent again.
    agent.sigterm(Duration::from_secs(30));
    std::fs::remove_dir_all(setup.data_dir()).expect("rm data dir");
    std::fs::create_dir(setup.data_dir()).expect("mkdir data dir");
    let mut agent = setup.start();
    let deadline = Instant::now() + Duration::from_secs(45);
    let (shipped, duplicate, dead) = loop {
        let m = scrape(port, &mut agent);
        let get = |name| value(&m, name, &[]).unwrap_or(0.0) as u64;
        let seen = (
            get("logship_events_shipped_total"),
            get("logship_events_duplicate_total"),
            get("logship_events_dead_lettered_total"),
        );
        if seen.0 + seen.1 + seen.2 >= n || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        (shipped, duplicate, dead),
        (0, n, 0),
        "(shipped, duplicate, dead-lettered) after the replay\n{}",
        agent.stderr_tail(30)
    );
    assert_eq!(es.count(&stream), n, "the replay added documents");
    agent.sigterm(Duration::from_secs(30));
}

fn dotted_labels(es: &Elasticsearch, tag: &str) {
    let setup = Setup::new(&format!("{tag}-dotted"), es.url(), options());
    configure(
        &setup,
        &format!(
            "    index: \"{}\"\n    template: install\n    dedot: false\n",
            setup.index_template
        ),
        &sidecar(&setup, false),
    );
    let mut expected = Vec::new();
    write_lines(&setup, "dotted", 0..20, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
    let n = expected.len() as u64;
    let docs = es.search_all(&setup.index_pattern);
    assert_eq!(
        docs[0]["kubernetes"]["labels"],
        json!({"app": "x", "app.kubernetes.io/name": "y"}),
        "the labels were not shipped with their dots"
    );
    let pattern = &setup.index_pattern;
    // The template's flat type is the server's own.
    let (_, mappings) = mapping_of(es, pattern);
    let flat = if es.server().is_opensearch() {
        "flat_object"
    } else {
        "flattened"
    };
    let kubernetes = &mappings["properties"]["kubernetes"]["properties"];
    assert_eq!(kubernetes["labels"]["type"], flat, "{mappings}");
    assert_eq!(hits(es, pattern, "kubernetes.labels.app", "x"), n);
    assert_eq!(
        hits(es, pattern, "kubernetes.labels.app.kubernetes.io/name", "y"),
        n
    );
    agent.sigterm(Duration::from_secs(30));

    // Control: dynamic mappings alone reject the same labels.
    let control = format!("e2e-{tag}-dotted-control");
    let action = json!({"create": {"_index": control}});
    let doc = json!({
        "@timestamp": "2026-11-26T01:00:00Z", "message": "control",
        "kubernetes": {"labels": {"app": "x", "app.kubernetes.io/name": "y"}},
    });
    let response = es.bulk(&format!("{action}\n{doc}\n"));
    assert_eq!(response["errors"], true, "{response}");
}
