//! Kubernetes metadata end to end against a fake API server (real
//! list/watch protocol, real Pod JSON; see `tests/support/fake_apiserver.rs`),
//! for what a real API server cannot do on demand: a pod whose uid is known
//! before it exists (its log file appears first, as when the kubelet is
//! faster than the watch), an API server absent at a known address when the
//! agent starts, exact request counts per reconnect, and sidecar mode (no
//! server at all). Everything a real server can show — RBAC from
//! `deploy/kubernetes/`, watch timeouts, 410 after compaction, restarts,
//! label changes, namespaces, scale — is in `kubernetes_real.rs` against
//! kube-apiserver itself. As in the other e2e tests, every line written must
//! be in the real Elasticsearch exactly once (`expect::assert_exactly_once_docs`),
//! carrying its pod's metadata, and no line of an excluded pod or container
//! may be there at all.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::expect::{Line, assert_exactly_once_docs, cri_stdout, wait_for_delivery};
use crate::scenario;
use crate::support::elasticsearch::Elasticsearch;
use crate::support::fake_apiserver::{Counts, FakeApiServer, pod_json, write_kubeconfig};
use crate::support::logship::{Agent, Options, Setup, append};

const NODE: &str = "e2e-node";

pub(crate) fn options() -> Options {
    Options {
        include: "pods/*/*/*.log",
        ..Options::default()
    }
}

/// Points the setup's agent at the kubeconfig, in daemonset mode.
pub(crate) fn enable_kubernetes(setup: &Setup, kubeconfig: &Path, metadata_wait: &str) {
    let yaml = format!(
        "{}kubernetes:\n  mode: daemonset\n  kubeconfig: {}\n  metadata_wait: {metadata_wait}\n  delete_grace: 60s\n",
        setup.config_yaml(),
        kubeconfig.display()
    );
    std::fs::write(setup.config_path(), yaml).expect("write config");
}

/// Starts a fake API server and points the agent at it (daemonset mode).
fn start_api_server(setup: &Setup, metadata_wait: &str) -> FakeApiServer {
    let api = FakeApiServer::start();
    let kubeconfig = setup.root().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    enable_kubernetes(setup, &kubeconfig, metadata_wait);
    api
}

/// Turns on the agent's HTTP endpoints on a free port; returns the port.
pub(crate) fn enable_http(setup: &Setup) -> u16 {
    let port = crate::ops::free_port();
    append(
        &setup.config_path(),
        format!("http: {{listen: \"127.0.0.1:{port}\"}}\n").as_bytes(),
    );
    port
}

/// The kubelet's log path for `pod`'s first container.
pub(crate) fn pod_log(setup: &Setup, pod: &Value) -> PathBuf {
    let m = &pod["metadata"];
    let dir = setup.logs().join("pods").join(format!(
        "{}_{}_{}",
        m["namespace"].as_str().unwrap(),
        m["name"].as_str().unwrap(),
        m["uid"].as_str().unwrap()
    ));
    let container = pod["spec"]["containers"][0]["name"].as_str().unwrap();
    std::fs::create_dir_all(dir.join(container)).expect("mkdir pod log dir");
    dir.join(container).join("0.log")
}

/// Appends stdout CRI lines `range` of `tag` to `path` (each message unique:
/// tag and seq); returns them as written.
pub(crate) fn write_lines(path: &Path, tag: &str, range: std::ops::Range<u64>) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut bytes = Vec::new();
    for seq in range {
        bytes.extend(cri_stdout(seq, format!("{tag} seq={seq:06}"), &mut lines));
    }
    append(path, &bytes);
    lines
}

/// Asserts that the index holds exactly `expected`, every line once with its
/// stream and `@timestamp` ([`assert_exactly_once_docs`]); returns each
/// line's document by message.
pub(crate) fn assert_lines(
    es: &Elasticsearch,
    setup: &Setup,
    expected: &[Line],
    agent: &mut Agent,
) -> HashMap<String, Value> {
    assert_exactly_once_docs(es, &setup.index_pattern, expected, agent)
        .into_iter()
        .map(|doc| (doc["message"].as_str().unwrap().to_string(), doc))
        .collect()
}

/// Waits for `n` documents, then `settle` more for anything that should not
/// arrive (lines of excluded files) to show up.
fn wait_then_settle(
    es: &Elasticsearch,
    setup: &Setup,
    n: usize,
    agent: &mut Agent,
    settle: Duration,
) {
    wait_for_delivery(es, &setup.index_pattern, n as u64, agent);
    std::thread::sleep(settle);
}

/// The document of `line` in `docs` (from [`assert_lines`]).
pub(crate) fn doc_of<'a>(docs: &'a HashMap<String, Value>, line: &Line) -> &'a Value {
    docs.get(&line.message)
        .unwrap_or_else(|| panic!("no document for {:?}", line.message))
}

/// None of `lines` was indexed.
pub(crate) fn assert_absent(docs: &HashMap<String, Value>, lines: &[Line], why: &str) {
    let shipped: Vec<&str> = lines
        .iter()
        .filter(|l| docs.contains_key(&l.message))
        .map(|l| l.message.as_str())
        .collect();
    assert!(shipped.is_empty(), "{why}, yet indexed: {shipped:?}");
}

/// The document carries exactly the metadata the pod object describes.
fn assert_pod_metadata(doc: &Value, pod: &Value) {
    let k = &doc["kubernetes"];
    let m = &pod["metadata"];
    assert_eq!(k["namespace"], m["namespace"], "{doc}");
    assert_eq!(k["pod"]["name"], m["name"], "{doc}");
    assert_eq!(k["pod"]["uid"], m["uid"], "{doc}");
    assert_eq!(k["pod"]["ip"], pod["status"]["podIP"], "{doc}");
    assert_eq!(k["node"]["name"], pod["spec"]["nodeName"], "{doc}");
    assert_eq!(
        k["container"]["name"], pod["spec"]["containers"][0]["name"],
        "{doc}"
    );
    for (key, value) in m["labels"].as_object().unwrap() {
        assert_eq!(
            &k["labels"][key.replace('.', "_")],
            value,
            "label {key}: {doc}"
        );
    }
    for (key, value) in m["annotations"].as_object().unwrap() {
        assert_eq!(
            &k["annotations"][key.replace('.', "_")],
            value,
            "annotation {key}: {doc}"
        );
    }
    let owner = &m["ownerReferences"][0];
    assert_eq!(k["owner"]["kind"], owner["kind"], "{doc}");
    assert_eq!(k["owner"]["name"], owner["name"], "{doc}");
    let rs = owner["name"].as_str().unwrap();
    let hash = m["labels"]["pod-template-hash"].as_str().unwrap();
    assert_eq!(
        k["deployment"]["name"],
        rs.strip_suffix(&format!("-{hash}")).unwrap(),
        "{doc}"
    );
    let status = &pod["status"]["containerStatuses"][0];
    let (runtime, id) = status["containerID"]
        .as_str()
        .unwrap()
        .split_once("://")
        .unwrap();
    assert_eq!(doc["container"]["id"], id, "{doc}");
    assert_eq!(doc["container"]["runtime"], runtime, "{doc}");
    assert_eq!(
        doc["container"]["image"]["name"], pod["spec"]["containers"][0]["image"],
        "{doc}"
    );
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pod that appears 2 s after its log file: its lines wait for it and all
/// carry its metadata. A pod of another node (filtered out by the field
/// selector) ships without metadata after `metadata_wait`. One list, one watch.
#[test]
fn pod_appearing_after_its_file_gets_metadata() {
    let (es, setup) = scenario("k8s-late-pod", options());
    let api = start_api_server(&setup, "5s");
    let port = enable_http(&setup);

    let pod = pod_json(
        "shop",
        "web-7d4b9c8f6-x2x9k",
        "6b1f7e3a-1111-4c5d-9e8f-000000000001",
        NODE,
        "app",
    );
    let other = pod_json(
        "shop",
        "web-7d4b9c8f6-zzzzz",
        "6b1f7e3a-2222-4c5d-9e8f-000000000002",
        "other-node",
        "app",
    );
    api.apply_pod(&other);
    let late = write_lines(&pod_log(&setup, &pod), "late", 0..50);
    let others = write_lines(&pod_log(&setup, &other), "other", 0..5);
    let mut agent = setup.start();
    // While its pod is unknown, the file says so in the status API.
    let started = std::time::Instant::now();
    let mut waiting_seen = false;
    while started.elapsed() < Duration::from_secs(2) {
        if let Some((200, body)) = crate::ops::get(port, "/api/v1/files") {
            waiting_seen |= body.contains("waiting_for_metadata");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(waiting_seen, "no file was in state waiting_for_metadata");
    api.apply_pod(&pod);

    let docs = assert_lines(
        es,
        &setup,
        &[late.clone(), others.clone()].concat(),
        &mut agent,
    );
    for line in &late {
        assert_pod_metadata(doc_of(&docs, line), &pod);
    }
    for line in &others {
        let doc = doc_of(&docs, line);
        assert!(
            doc.get("kubernetes").is_none(),
            "pod of another node must not be watched: {doc}"
        );
    }
    assert_eq!(api.counts(), Counts::each(1, 1), "{:?}", api.requests());
    for r in api.requests() {
        if r.starts_with("/api/v1/pods") {
            assert!(r.contains("fieldSelector=spec.nodeName%3De2e-node"), "{r}");
        } else {
            assert!(r.starts_with("/api/v1/namespaces?"), "{r}");
        }
    }
}

/// A pod deleted before the agent reads its last lines keeps its metadata
/// for `delete_grace`.
#[test]
fn deleted_pod_lines_keep_metadata() {
    let (es, setup) = scenario("k8s-deleted-pod", options());
    let api = start_api_server(&setup, "5s");
    let pod = pod_json(
        "jobs",
        "batch-5c6b7f8d9b-q8w7e",
        "7c2a9d4b-3333-4e6f-8a9b-000000000003",
        NODE,
        "worker",
    );
    api.apply_pod(&pod);
    let mut agent = setup.start();
    wait_until("the agent's watch", Duration::from_secs(20), || {
        api.counts().pods.watches >= 1
    });
    std::thread::sleep(Duration::from_millis(300));
    api.delete_pod(pod["metadata"]["uid"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    // The file appears (and is read) only after the pod is gone.
    let gone = write_lines(&pod_log(&setup, &pod), "gone", 0..30);

    let docs = assert_lines(es, &setup, &gone, &mut agent);
    for line in &gone {
        assert_pod_metadata(doc_of(&docs, line), &pod);
    }
}

/// The API server is down when the agent starts: lines ship without
/// metadata after `metadata_wait` (nothing is held forever), the agent keeps
/// running, and once the server is up, later lines carry metadata.
#[test]
fn api_server_down_at_start() {
    let (es, setup) = scenario("k8s-api-down", options());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kubeconfig = setup.root().join("kubeconfig");
    write_kubeconfig(&kubeconfig, &format!("http://{port}"));
    enable_kubernetes(&setup, &kubeconfig, "1s");
    // No list yet: files wait metadata_sync_wait (not metadata_wait), then
    // ship without metadata.
    append(&setup.config_path(), b"  metadata_sync_wait: 3s\n");
    let pod = pod_json(
        "shop",
        "web-7d4b9c8f6-ccccc",
        "9e4c1f6d-6666-4081-8cbd-000000000006",
        NODE,
        "app",
    );
    let log = pod_log(&setup, &pod);
    let early = write_lines(&log, "early", 0..10);
    let mut agent = setup.start();
    let docs = assert_lines(es, &setup, &early, &mut agent);
    for line in &early {
        let doc = doc_of(&docs, line);
        assert!(doc.get("kubernetes").is_none(), "{doc}");
    }

    let api = FakeApiServer::start_on(port);
    api.apply_pod(&pod);
    wait_until("the agent to list", Duration::from_secs(60), || {
        api.counts().pods.watches >= 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    let later = write_lines(&log, "later", 10..30);
    let docs = assert_lines(
        es,
        &setup,
        &[early.clone(), later.clone()].concat(),
        &mut agent,
    );
    for line in &early {
        let doc = doc_of(&docs, line);
        assert!(doc.get("kubernetes").is_none(), "{doc}");
    }
    for line in &later {
        assert_pod_metadata(doc_of(&docs, line), &pod);
    }
    assert_eq!(api.counts(), Counts::each(1, 1), "{:?}", api.requests());
}

/// `logship.io/exclude: "true"` drops a pod's logs and
/// `logship.io/exclude-containers` a container's; other pods are shipped.
#[test]
fn annotations_exclude_pods_and_containers() {
    let (es, setup) = scenario("k8s-exclude", options());
    let api = start_api_server(&setup, "5s");
    let mut quiet = pod_json(
        "shop",
        "web-7d4b9c8f6-ddddd",
        "a05d2a7e-7777-4192-9dce-000000000007",
        NODE,
        "app",
    );
    quiet["metadata"]["annotations"]["logship.io/exclude"] = "true".into();
    let mut noisy = pod_json(
        "shop",
        "web-7d4b9c8f6-eeeee",
        "a05d2a7e-8888-4192-9dce-000000000008",
        NODE,
        "noisy",
    );
    noisy["metadata"]["annotations"]["logship.io/exclude-containers"] = "istio-proxy, noisy".into();
    let kept = pod_json(
        "shop",
        "web-7d4b9c8f6-fffff",
        "a05d2a7e-9999-4192-9dce-000000000009",
        NODE,
        "app",
    );
    for pod in [&quiet, &noisy, &kept] {
        api.apply_pod(pod);
    }
    let mut excluded = write_lines(&pod_log(&setup, &quiet), "quiet", 0..10);
    excluded.extend(write_lines(&pod_log(&setup, &noisy), "noisy", 0..10));
    let mut shipped = write_lines(&pod_log(&setup, &kept), "kept", 0..10);
    let mut agent = setup.start();
    let docs = assert_lines(es, &setup, &shipped, &mut agent);
    assert_absent(&docs, &excluded, "excluded pod or container");
    // More lines for the excluded files after they were first seen.
    excluded.extend(write_lines(&pod_log(&setup, &quiet), "quiet", 10..20));
    shipped.extend(write_lines(&pod_log(&setup, &kept), "kept", 10..20));
    wait_then_settle(
        es,
        &setup,
        shipped.len(),
        &mut agent,
        Duration::from_secs(2),
    );
    let docs = assert_lines(es, &setup, &shipped, &mut agent);
    assert_absent(&docs, &excluded, "excluded pod or container");
    for line in &shipped {
        assert_pod_metadata(doc_of(&docs, line), &kept);
    }
}

/// A pod that appears only after `metadata_wait`, annotated
/// `logship.io/exclude`: the lines read before it was known are shipped
/// (without metadata); from then on its file is not read, while another
/// pod's later lines still ship.
#[test]
fn pod_found_late_and_excluded_stops_being_read() {
    let (es, setup) = scenario("k8s-late-exclude", options());
    let api = start_api_server(&setup, "1s");
    let port = enable_http(&setup);
    let mut quiet = pod_json(
        "shop",
        "web-7d4b9c8f6-lllll",
        "a05d2a7e-aaaa-4192-9dce-00000000000a",
        NODE,
        "app",
    );
    quiet["metadata"]["annotations"]["logship.io/exclude"] = "true".into();
    let kept = pod_json(
        "shop",
        "web-7d4b9c8f6-kkkkk",
        "a05d2a7e-bbbb-4192-9dce-00000000000b",
        NODE,
        "app",
    );
    api.apply_pod(&kept);
    let early = write_lines(&pod_log(&setup, &quiet), "early", 0..20);
    let mut kept_lines = write_lines(&pod_log(&setup, &kept), "kept", 0..5);
    let mut agent = setup.start();
    // Lines of the unknown pod ship, without metadata, after metadata_wait.
    let docs = assert_lines(
        es,
        &setup,
        &[early.clone(), kept_lines.clone()].concat(),
        &mut agent,
    );
    for line in &early {
        let doc = doc_of(&docs, line);
        assert!(doc.get("kubernetes").is_none(), "{doc}");
    }
    // The follower looks its pod up again when the file has new lines: wait
    // until the watch has delivered the pod, then write.
    let cached = |agent: &mut crate::support::logship::Agent| {
        let m = crate::ops::scrape(port, agent);
        crate::ops::value(&m, "logship_k8s_cache_pods", &[])
            .unwrap_or_else(|| panic!("no logship_k8s_cache_pods"))
    };
    let before = cached(&mut agent);
    api.apply_pod(&quiet);
    wait_until("the late pod in the cache", Duration::from_secs(20), || {
        cached(&mut agent) > before
    });
    // A missing pod is looked up again at most once a second (POD_RETRY).
    std::thread::sleep(Duration::from_millis(1500));
    let after = write_lines(&pod_log(&setup, &quiet), "after", 0..20);
    kept_lines.extend(write_lines(&pod_log(&setup, &kept), "kept", 5..10));
    let expected = [early.clone(), kept_lines.clone()].concat();
    wait_for_delivery(es, &setup.index_pattern, expected.len() as u64, &mut agent);
    wait_until(
        "the late pod's file to show as excluded",
        Duration::from_secs(20),
        || {
            crate::ops::get(port, "/api/v1/files")
                .is_some_and(|(code, body)| code == 200 && body.contains("\"excluded\""))
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let docs = assert_lines(es, &setup, &expected, &mut agent);
    assert_absent(
        &docs,
        &after,
        "lines written after the pod was found excluded must not ship",
    );
    for line in &early {
        let doc = doc_of(&docs, line);
        assert!(doc.get("kubernetes").is_none(), "{doc}");
    }
}

/// `logship.io/format: json`: a message that is a JSON object is also
/// indexed under `json.*` (searchable), `message` keeps the line; a line
/// that is not JSON arrives unchanged and is counted. A pod without the
/// annotation gets no `json` field for the same lines.
#[test]
fn json_format_annotation_parses_messages_into_json() {
    let (es, setup) = scenario("k8s-json", options());
    let api = start_api_server(&setup, "5s");
    let port = enable_http(&setup);
    let mut parsed = pod_json(
        "shop",
        "api-6f7d8c9b5d-kkkkk",
        "c27f4c90-1313-43b4-9fe0-000000000013",
        NODE,
        "api",
    );
    parsed["metadata"]["annotations"]["logship.io/format"] = "json".into();
    let plain = pod_json(
        "shop",
        "api-6f7d8c9b5d-lllll",
        "c27f4c90-1414-43b4-9fe0-000000000014",
        NODE,
        "api",
    );
    api.apply_pod(&parsed);
    api.apply_pod(&plain);
    let json_line = |tag: &str, i: u64| {
        serde_json::json!({
            "msg": format!("{tag} line {i}"),
            "level": if i.is_multiple_of(3) { "warn" } else { "info" },
            "user": {"id": format!("u-{i}"), "roles": ["a", "b"]},
            "latency_ms": i * 10,
        })
        .to_string()
    };
    let mut written = Vec::new();
    let mut expected = Vec::new();
    for (tag, pod) in [("parsed", &parsed), ("plain", &plain)] {
        let mut bytes = Vec::new();
        for i in 0..12 {
            let text = if i % 4 == 3 {
                format!("{tag} line {i} is not json")
            } else {
                json_line(tag, i)
            };
            bytes.extend(cri_stdout(i, text.clone(), &mut expected));
            written.push((tag, i, text));
        }
        append(&pod_log(&setup, pod), &bytes);
    }
    let mut agent = setup.start();
    let docs = assert_lines(es, &setup, &expected, &mut agent);
    for (tag, i, text) in &written {
        let doc = &docs[text];
        let expected: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        if *tag == "parsed" && expected.is_object() {
            assert_eq!(doc["json"], expected, "{doc}");
        } else {
            assert!(doc.get("json").is_none(), "{tag} {i}: {doc}");
        }
        assert_eq!(
            doc["kubernetes"]["pod"]["name"],
            if *tag == "parsed" {
                parsed["metadata"]["name"].clone()
            } else {
                plain["metadata"]["name"].clone()
            }
        );
    }
    // Searchable by the parsed fields: each query finds exactly the lines
    // it should (by message).
    es.refresh(&setup.index_pattern);
    let found = |query: Value| -> BTreeSet<String> {
        let response = es.json(
            reqwest::Method::POST,
            &format!("{}/_search", setup.index_pattern),
            Some(&serde_json::json!({ "query": query, "size": 100 })),
        );
        let hits = response["hits"]["hits"].as_array().unwrap();
        let messages: Vec<String> = hits
            .iter()
            .map(|h| h["_source"]["message"].as_str().unwrap().to_string())
            .collect();
        let unique: BTreeSet<String> = messages.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            messages.len(),
            "a line found twice: {messages:?}"
        );
        unique
    };
    let parsed_where = |keep: fn(u64) -> bool| -> BTreeSet<String> {
        written
            .iter()
            .filter(|(tag, i, _)| *tag == "parsed" && i % 4 != 3 && keep(*i))
            .map(|(_, _, text)| text.clone())
            .collect()
    };
    let warn_lines = parsed_where(|i| i.is_multiple_of(3));
    assert!(!warn_lines.is_empty());
    assert_eq!(
        found(serde_json::json!({"match_phrase": {"json.level": "warn"}})),
        warn_lines
    );
    assert_eq!(
        found(serde_json::json!({"match_phrase": {"json.user.id": "u-5"}})),
        parsed_where(|i| i == 5)
    );
    let slow_lines = parsed_where(|i| i * 10 >= 50);
    assert!(!slow_lines.is_empty());
    assert_eq!(
        found(serde_json::json!({"range": {"json.latency_ms": {"gte": 50}}})),
        slow_lines
    );
    let not_json = written
        .iter()
        .filter(|(tag, _, text)| *tag == "parsed" && !text.starts_with('{'))
        .count();
    let m = crate::ops::scrape(port, &mut agent);
    assert_eq!(
        crate::ops::value(&m, "logship_json_parse_failures_total", &[]),
        Some(not_json as f64)
    );
}

/// Sidecar mode: the pod's fields come from the config and downward-API
/// labels and annotations files; no API server is involved. The
/// annotations ask for JSON messages parsed into `payload`.
#[test]
fn sidecar_mode_uses_downward_api() {
    let (es, setup) = scenario("k8s-sidecar", Options::default());
    let labels = setup.root().join("labels");
    std::fs::write(
        &labels,
        "app=\"demo\"\napp.kubernetes.io/name=\"demo \\\"one\\\"\"\n",
    )
    .unwrap();
    let annotations = setup.root().join("annotations");
    std::fs::write(
        &annotations,
        "logship.io/format=\"json\"\nlogship.io/json-target=\"payload\"\n",
    )
    .unwrap();
    let yaml = format!(
        "{}kubernetes:\n  mode: sidecar\n  pod:\n    name: demo-pod\n    namespace: demo-ns\n    uid: 0f6a8c1e-1b2c-4d5e-8f90-123456789abc\n    container: app\n    labels_file: {}\n    annotations_file: {}\n",
        setup.config_yaml(),
        labels.display(),
        annotations.display()
    );
    std::fs::write(setup.config_path(), yaml).unwrap();
    let path = setup.log("app.log");
    let mut expected = write_lines(&path, "side", 0..15);
    let json_message = r#"{"side":"json","n":15}"#;
    append(
        &path,
        &cri_stdout(15, json_message.to_string(), &mut expected),
    );
    let mut agent = setup.start();
    let docs = assert_lines(es, &setup, &expected, &mut agent);
    for line in &expected {
        let doc = doc_of(&docs, line);
        let k = &doc["kubernetes"];
        assert_eq!(k["pod"]["name"], "demo-pod", "{doc}");
        assert_eq!(
            k["pod"]["uid"], "0f6a8c1e-1b2c-4d5e-8f90-123456789abc",
            "{doc}"
        );
        assert_eq!(k["namespace"], "demo-ns", "{doc}");
        assert_eq!(k["container"]["name"], "app", "{doc}");
        assert_eq!(k["node"]["name"], NODE, "{doc}");
        assert_eq!(k["labels"]["app"], "demo", "{doc}");
        assert_eq!(
            k["labels"]["app_kubernetes_io/name"], "demo \"one\"",
            "{doc}"
        );
        assert_eq!(k["annotations"]["logship_io/format"], "json", "{doc}");
        if line.message == json_message {
            assert_eq!(doc["payload"], serde_json::json!({"side": "json", "n": 15}));
        } else {
            assert!(doc.get("payload").is_none(), "{doc}");
        }
    }
}
