//! The sink against production-like endpoints: TLS and credentials checked by
//! Debian's nginx in front of the real Elasticsearch (`support::nginx`), and
//! the start-up version check.
//!
//! Each misconfiguration (a CA that did not sign the server's certificate, a
//! wrong password, an expired server certificate) must show a clear error in
//! logship's log while nothing is lost: once the config is fixed and the
//! agent restarted, every line written meanwhile is indexed exactly once.

use crate::expect::{Line, assert_exactly_once, cri_stdout};
use crate::scenario;
use crate::support::elasticsearch::Elasticsearch;
use crate::support::logship::{Agent, Options, Setup, timestamp};
use crate::support::nginx::{self, API_KEY, Nginx, PASSWORD, Pki, USERNAME};
use std::path::Path;
use std::time::{Duration, Instant};

fn write_lines(setup: &Setup, name: &str, seqs: std::ops::Range<u64>, expected: &mut Vec<Line>) {
    let mut bytes = Vec::new();
    for seq in seqs {
        bytes.extend(cri_stdout(seq, format!("{name} seq={seq:06}"), expected));
    }
    crate::support::logship::append(&setup.log("a.log"), &bytes);
}

/// Points the agent at `host` with `extra` sink keys (4-space indented YAML).
fn configure(setup: &Setup, host: &str, extra: &str) {
    let yaml = setup.config_yaml().replace(
        &format!("hosts: [\"{}\"]", setup.es_url),
        &format!("hosts: [\"{host}\"]"),
    );
    assert!(yaml.contains(host));
    std::fs::write(setup.config_path(), format!("{yaml}{extra}")).expect("write config");
}

/// Waits until the agent's log contains `needle` (case-insensitive).
fn wait_for_log(agent: &mut Agent, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        agent.assert_running();
        let log = agent.stderr_tail(200);
        if log.to_lowercase().contains(&needle.to_lowercase()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "logship's log never said {needle:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn secret_file(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).expect("write secret");
    path.display().to_string()
}

/// A CRI scenario behind nginx (TLS with a CA made now, basic auth), with
/// the right password in a file.
struct TlsScenario {
    es: &'static Elasticsearch,
    setup: Setup,
    pki: Pki,
    proxy: Nginx,
    password: String,
}

fn tls_scenario(name: &str) -> TlsScenario {
    if !nginx::available() {
        panic!(
            "/usr/sbin/nginx is missing: scripts/test.sh installs it (apt-get install nginx-light)"
        );
    }
    let (es, setup) = scenario(
        name,
        Options {
            format: "cri",
            ..Options::default()
        },
    );
    let pki = Pki::new();
    let proxy = Nginx::start(&pki, es.url());
    let password = secret_file(setup.root(), "password", PASSWORD);
    TlsScenario {
        es,
        setup,
        pki,
        proxy,
        password,
    }
}

#[test]
fn tls_and_auth_through_nginx_fail_clearly_and_lose_nothing() {
    let TlsScenario {
        es,
        setup,
        pki,
        proxy,
        password,
    } = tls_scenario("tls");
    let wrong_password = secret_file(setup.root(), "wrong-password", "not the password");
    let api_key = secret_file(setup.root(), "api-key", API_KEY);
    let ca = pki.ca().display().to_string();
    let mut expected = Vec::new();
    let basic = |password_file: &str, ca_file: &str| {
        format!(
            "    tls: {{ca_file: \"{ca_file}\"}}\n    auth: {{basic: {{username: {USERNAME}, password_file: \"{password_file}\"}}}}\n"
        )
    };

    // Each misconfiguration: a clear error, nothing indexed, nothing lost.
    let wrong = [
        (
            "wrong CA",
            proxy.basic_url.clone(),
            basic(&password, &pki.wrong_ca().display().to_string()),
            "UnknownIssuer",
        ),
        (
            "wrong password",
            proxy.basic_url.clone(),
            basic(&wrong_password, &ca),
            "401 Unauthorized",
        ),
        (
            "expired certificate",
            proxy.expired_url.clone(),
            basic(&password, &ca),
            "Expired",
        ),
    ];
    for (i, (what, url, extra, error)) in wrong.iter().enumerate() {
        configure(&setup, url, extra);
        let i = i as u64;
        write_lines(&setup, "tls", i * 100..(i + 1) * 100, &mut expected);
        let mut agent = setup.start();
        wait_for_log(&mut agent, error);
        assert_eq!(
            es.count(&setup.index_pattern),
            0,
            "{what}: data got through"
        );
        let log = agent.stderr_tail(400);
        assert!(!log.contains(PASSWORD), "{what}: the password was logged");
        assert!(
            !log.contains("not the password"),
            "{what}: a password was logged"
        );
        // The harshest stop: nothing may have been checkpointed past what ES holds.
        agent.kill_9();
        eprintln!("{what}: logship said {error:?}");
    }

    // Fixed: basic auth with the right CA and password ships everything.
    configure(&setup, &proxy.basic_url, &basic(&password, &ca));
    write_lines(&setup, "tls", 300..400, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
    let status = agent.sigterm(Duration::from_secs(30));
    assert!(status.success(), "{status}");

    // The API-key endpoint with a custom header, from where basic auth stopped.
    configure(
        &setup,
        &proxy.api_key_url,
        &format!(
            "    tls: {{ca_file: \"{ca}\"}}\n    auth: {{api_key_file: \"{api_key}\"}}\n    headers: {{X-Logship-Test: \"1\"}}\n"
        ),
    );
    write_lines(&setup, "tls", 400..500, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
    assert!(
        !agent.stderr_tail(400).contains(API_KEY),
        "the API key was logged"
    );
    agent.sigterm(Duration::from_secs(30));

    // `verify: false` accepts even the expired certificate, with a warning.
    configure(
        &setup,
        &proxy.expired_url,
        &format!(
            "    tls: {{verify: false}}\n    auth: {{basic: {{username: {USERNAME}, password_file: \"{password}\"}}}}\n"
        ),
    );
    write_lines(&setup, "tls", 500..600, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
    assert!(
        agent.stderr_tail(400).contains("NOT checked"),
        "no warning for verify: false:\n{}",
        agent.stderr_tail(40)
    );
    agent.sigterm(Duration::from_secs(30));

    // A client certificate: refused without one (403, nothing lost), then
    // everything ships with it.
    configure(
        &setup,
        &proxy.client_cert_url,
        &format!("    tls: {{ca_file: \"{ca}\"}}\n"),
    );
    write_lines(&setup, "tls", 600..650, &mut expected);
    let mut agent = setup.start();
    wait_for_log(&mut agent, "403 Forbidden");
    agent.kill_9();
    configure(
        &setup,
        &proxy.client_cert_url,
        &format!(
            "    tls: {{ca_file: \"{ca}\", cert_file: \"{}\", key_file: \"{}\"}}\n",
            pki.path("client.pem").display(),
            pki.path("client.key").display()
        ),
    );
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
    drop(proxy);
}

#[test]
fn version_check_reports_the_server_or_warns_and_still_ships() {
    let (es, setup) = scenario(
        "version",
        Options {
            format: "cri",
            ..Options::default()
        },
    );
    let mut expected = Vec::new();
    write_lines(&setup, "version", 0..10, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);
    let log = agent.stderr_tail(200);
    assert!(
        log.contains("connected to elasticsearch"),
        "no version logged:\n{log}"
    );
    agent.sigterm(Duration::from_secs(30));

    // Nothing listens: a warning, and the agent keeps running (buffering).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    configure(&setup, &format!("http://127.0.0.1:{port}"), "");
    let mut agent = setup.start();
    wait_for_log(&mut agent, "cannot reach the host to read its version");
    std::thread::sleep(Duration::from_millis(500));
    agent.assert_running();
}

/// The config with `index:` replaced by `keys` (4-space indented YAML).
fn configure_index(setup: &Setup, keys: &str) {
    let line = format!("    index: \"{}\"\n", setup.index_template);
    let yaml = setup.config_yaml();
    assert!(yaml.contains(&line), "{yaml}");
    std::fs::write(setup.config_path(), yaml.replace(&line, keys)).expect("write config");
}

/// A document carrying Kubernetes `labels`, as the metadata stage writes it.
fn labelled(index: &str, labels: serde_json::Value) -> String {
    let action = serde_json::json!({"create": {"_index": index}});
    let doc = serde_json::json!({
        "@timestamp": timestamp(1), "message": "labelled",
        "kubernetes": {"namespace": "default", "labels": labels},
    });
    format!("{action}\n{doc}\n")
}

fn hits(
    es: &crate::support::elasticsearch::Elasticsearch,
    index: &str,
    field: &str,
    value: &str,
) -> u64 {
    es.refresh(index);
    let query = serde_json::json!({"query": {"term": {field: value}}});
    let response = es.json(
        reqwest::Method::POST,
        &format!("{index}/_count"),
        Some(&query),
    );
    response["count"].as_u64().expect("count")
}

#[test]
fn data_stream_with_installed_template_takes_dedotted_labels() {
    let (es, setup) = scenario(
        "datastream",
        Options {
            format: "cri",
            ..Options::default()
        },
    );
    let stream = "logs-e2e_ds-t1";
    configure_index(
        &setup,
        "    data_stream: {dataset: e2e_ds, namespace: t1}\n    template: install\n",
    );
    let mut expected = Vec::new();
    write_lines(&setup, "datastream", 0..200, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, stream, &expected, &mut agent);
    // A data stream: its documents live in a `.ds-<stream>-…` backing index.
    // (The `_data_stream` API is in a module the test distribution lacks.)
    let mapping = es.json(reqwest::Method::GET, &format!("{stream}/_mapping"), None);
    let (backing, index) = mapping
        .as_object()
        .and_then(|m| m.iter().next())
        .expect("backing index");
    assert!(backing.starts_with(&format!(".ds-{stream}-")), "{mapping}");
    assert_eq!(
        index["mappings"]["properties"]["message"]["type"], "text",
        "{mapping}"
    );
    assert_eq!(
        index["mappings"]["properties"]["host"]["properties"]["name"]["type"], "keyword",
        "{mapping}"
    );

    // Dedotted keys (the default) sit side by side.
    let body = labelled(
        stream,
        serde_json::json!({"app": "x", "app_kubernetes_io/name": "y"}),
    );
    let response = es.bulk(&body);
    assert_eq!(response["errors"], false, "{response}");
    assert_eq!(hits(es, stream, "kubernetes.labels.app", "x"), 1);
    assert_eq!(
        hits(es, stream, "kubernetes.labels.app_kubernetes_io/name", "y"),
        1
    );

    // Replaying the whole file (checkpoints gone) yields only 409s.
    agent.sigterm(Duration::from_secs(30));
    std::fs::remove_dir_all(setup.data_dir()).expect("rm data dir");
    std::fs::create_dir(setup.data_dir()).expect("mkdir data dir");
    let mut agent = setup.start();
    std::thread::sleep(Duration::from_secs(3));
    agent.assert_running();
    es.refresh(stream);
    assert_eq!(es.count(stream), expected.len() as u64 + 1);
}

#[test]
fn dotted_labels_do_not_collide_without_dedot() {
    let (es, setup) = scenario(
        "dotted",
        Options {
            format: "cri",
            ..Options::default()
        },
    );
    let line = format!("    index: \"{}\"\n", setup.index_template);
    configure_index(
        &setup,
        &format!("{line}    template: install\n    dedot: false\n"),
    );
    let mut expected = Vec::new();
    write_lines(&setup, "dotted", 0..20, &mut expected);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);

    let labels = serde_json::json!({"app": "x", "app.kubernetes.io/name": "y"});
    // Covered by logship's template (`e2e-dotted-*.*.*`): both labels index.
    let covered = "e2e-dotted-2026.01.01";
    let response = es.bulk(&labelled(covered, labels.clone()));
    assert_eq!(response["errors"], false, "{response}");
    assert_eq!(hits(es, covered, "kubernetes.labels.app", "x"), 1);
    assert_eq!(
        hits(es, covered, "kubernetes.labels.app.kubernetes.io/name", "y"),
        1
    );
    // Control: dynamic mappings alone reject the same document.
    let response = es.bulk(&labelled("e2e-dotted-control", labels));
    assert_eq!(response["errors"], true, "{response}");
}

fn run_replay(setup: &Setup, file: &Path) -> (i32, String) {
    let out = std::process::Command::new(crate::support::logship::LOGSHIP_BIN)
        .args(["replay", "--dead-letter"])
        .arg(file)
        .arg("--config")
        .arg(setup.config_path())
        .output()
        .expect("run logship replay");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn dead_letters_replay_into_the_index_once() {
    let (es, setup) = scenario(
        "replay",
        Options {
            format: "cri",
            ..Options::default()
        },
    );
    let index = "e2e-replay-docs";
    configure_index(&setup, &format!("    index: \"{index}\"\n"));
    // Writes to the index are blocked: every item is rejected (403) and
    // dead-lettered.
    es.json(reqwest::Method::PUT, index, None);
    es.json(
        reqwest::Method::PUT,
        &format!("{index}/_settings"),
        Some(&serde_json::json!({"index.blocks.write": true})),
    );
    let mut expected = Vec::new();
    write_lines(&setup, "replay", 0..50, &mut expected);
    let mut agent = setup.start();
    let dead_letters = setup.data_dir().join("dead-letter.ndjson");
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        agent.assert_running();
        let n = std::fs::read_to_string(&dead_letters)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= expected.len() || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(records, expected.len(), "{}", agent.stderr_tail(30));
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&dead_letters)
            .expect("dead letters")
            .lines()
            .next()
            .expect("a record"),
    )
    .expect("JSON record");
    assert_eq!(first["status"], 403, "{first}");
    assert_eq!(first["error"]["type"], "cluster_block_exception", "{first}");
    assert_eq!(es.count(index), 0);
    agent.sigterm(Duration::from_secs(30));

    // While still blocked, a replay delivers nothing and keeps everything.
    let (code, out) = run_replay(&setup, &dead_letters);
    assert_eq!(code, 1, "{out}");
    let remaining = setup.data_dir().join("dead-letter.ndjson.remaining");
    let kept = std::fs::read_to_string(&remaining).expect("remaining file");
    assert_eq!(kept.lines().count(), expected.len(), "{out}");

    // Fixed: the replay ships every line once.
    es.json(
        reqwest::Method::PUT,
        &format!("{index}/_settings"),
        Some(&serde_json::json!({"index.blocks.write": false})),
    );
    let (code, out) = run_replay(&setup, &dead_letters);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{} delivered", expected.len())),
        "{out}"
    );
    assert!(!remaining.exists());
    let mut agent = setup.start();
    assert_exactly_once(es, index, &expected, &mut agent);

    // Replaying again: only 409s, no new documents.
    let (code, out) = run_replay(&setup, &dead_letters);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("0 delivered, {} already indexed", expected.len())),
        "{out}"
    );
    assert_eq!(es.count(index), expected.len() as u64);
}

/// One node of a two-node test cluster, run by `scripts/elasticsearch.sh
/// start`; stopped when dropped.
struct ClusterNode {
    dir: std::path::PathBuf,
    env: Vec<(&'static str, String)>,
    url: String,
}

impl ClusterNode {
    fn script() -> std::path::PathBuf {
        crate::support::elasticsearch::repo_root().join("scripts/elasticsearch.sh")
    }

    fn start(&mut self) {
        let out = std::process::Command::new(Self::script())
            .arg("start")
            .arg(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run elasticsearch.sh start");
        assert!(
            out.status.success(),
            "node {} did not start",
            self.dir.display()
        );
        self.url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }

    fn stop(&self) {
        let _ = std::process::Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
fn two_node_cluster_with_a_node_stopped_mid_stream_gets_every_line_once() {
    let root = tempfile::Builder::new()
        .prefix("logship-cluster-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let (t1, t2) = (free_port(), free_port());
    let seeds = format!("127.0.0.1:{t1}");
    let node = |name: &'static str, roles: &str, transport: u16| ClusterNode {
        dir: root.join(name),
        env: vec![
            ("LOGSHIP_ES_SEED_HOSTS", seeds.clone()),
            ("LOGSHIP_ES_NODE_NAME", name.to_string()),
            ("LOGSHIP_ES_ROLES", roles.to_string()),
            ("LOGSHIP_ES_CLUSTER", "logship-pair".to_string()),
            ("LOGSHIP_ES_HTTP_PORT", free_port().to_string()),
            ("LOGSHIP_ES_TRANSPORT_PORT", transport.to_string()),
            ("LOGSHIP_ES_HEAP", "384m".to_string()),
        ],
        url: String::new(),
    };
    // node-1 is the only master, so stopping node-2 keeps the cluster up.
    let mut node1 = node("node-1", "master, data, ingest", t1);
    let mut node2 = node("node-2", "data, ingest", t2);
    node1.start();
    node2.start();
    let es = crate::support::elasticsearch::connect(&node1.url);
    let health = es.json(
        reqwest::Method::GET,
        "_cluster/health?wait_for_nodes=2&timeout=60s",
        None,
    );
    assert_eq!(health["number_of_nodes"], 2, "{health}");
    // Two shards with a replica each: whichever node stops, the other holds
    // a copy of every shard.
    es.json(
        reqwest::Method::PUT,
        "_index_template/e2e-cluster",
        Some(&serde_json::json!({
            "index_patterns": ["e2e-cluster-*"], "priority": 300,
            "template": {"settings": {"number_of_shards": 2, "number_of_replicas": 1}}
        })),
    );

    let setup = Setup::new(
        "cluster",
        &node1.url,
        Options {
            format: "cri",
            ..Options::default()
        },
    );
    configure(&setup, &format!("{}\", \"{}", node1.url, node2.url), "");
    let mut expected = Vec::new();
    let mut agent = setup.start();
    let mut seq = 0;
    let mut write_for = |d: Duration, expected: &mut Vec<Line>| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            write_lines(&setup, "cluster", seq..seq + 50, expected);
            seq += 50;
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    write_for(Duration::from_secs(4), &mut expected);
    node2.stop();
    write_for(Duration::from_secs(6), &mut expected);
    node2.start();
    write_for(Duration::from_secs(4), &mut expected);
    assert_exactly_once(&es, &setup.index_pattern, &expected, &mut agent);
    // Whether a request met node-2 while it was down depends on timing on a
    // loaded machine; the marking itself is asserted in tests/sink_faults.rs.
    let marked = agent.stderr_tail(2000).contains("host marked down");
    eprintln!("cluster: node-2 marked down by logship: {marked}");
    eprintln!(
        "cluster: {} lines, node-2 stopped and restarted mid-stream",
        expected.len()
    );
    agent.sigterm(Duration::from_secs(30));
    drop(node2);
    drop(node1);
}

/// Runs `logship replay` of `file` with only `env` among the TLS trust
/// variables; stops it once its output contains `stop_at` (if given).
/// Returns its exit code (`None` if stopped) and its output.
fn replay_with_trust(
    setup: &Setup,
    file: &Path,
    env: &[(&str, &Path)],
    stop_at: Option<&str>,
) -> (Option<i32>, String) {
    let out_path = setup.root().join("replay-output.txt");
    let out = std::fs::File::create(&out_path).expect("create replay output");
    let mut command = std::process::Command::new(crate::support::logship::LOGSHIP_BIN);
    command
        .args(["replay", "--dead-letter"])
        .arg(file)
        .arg("--config")
        .arg(setup.config_path())
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("RUST_LOG", "logship=debug")
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("run logship replay");
    let deadline = Instant::now() + Duration::from_secs(50);
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(status) = child.try_wait().expect("wait replay") {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            return (status.code(), text);
        }
        if stop_at.is_some_and(|needle| text.contains(needle)) {
            let _ = child.kill();
            let _ = child.wait();
            return (None, text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("replay neither finished nor said {stop_at:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn https_without_a_ca_file_trusts_the_system_store() {
    let TlsScenario {
        es,
        setup,
        pki,
        proxy,
        password,
    } = tls_scenario("sysroots");
    // No `tls:` key at all: https with the system's roots.
    configure(
        &setup,
        &proxy.basic_url,
        &format!("    auth: {{basic: {{username: {USERNAME}, password_file: \"{password}\"}}}}\n"),
    );
    let index = "e2e-sysroots-docs";
    let records: Vec<String> = (0..3)
        .map(|i| {
            serde_json::json!({
                "time": timestamp(i), "index": index, "id": format!("sysroots-{i}"),
                "status": 400, "error": {"type": "test", "reason": "test"},
                "document": {"@timestamp": timestamp(i), "message": format!("sysroots {i}")},
            })
            .to_string()
        })
        .collect();
    let file = setup.root().join("dead-letter.ndjson");
    std::fs::write(&file, records.join("\n") + "\n").expect("write dead letters");

    // A system store without the test CA: refused.
    let wrong = pki.wrong_ca();
    let (code, out) = replay_with_trust(
        &setup,
        &file,
        &[("SSL_CERT_FILE", &wrong)],
        Some("UnknownIssuer"),
    );
    assert_eq!(code, None, "{out}");
    assert!(out.contains("roots=1"), "system store not used:\n{out}");
    // An unreadable store: a warning, then Mozilla's built-in roots (which
    // do not hold the test CA either).
    let absent = setup.root().join("absent.pem");
    let (code, out) = replay_with_trust(
        &setup,
        &file,
        &[("SSL_CERT_FILE", &absent)],
        Some("UnknownIssuer"),
    );
    assert_eq!(code, None, "{out}");
    assert!(
        out.contains("no trusted CA certificate could be read"),
        "no fallback warning:\n{out}"
    );
    assert_eq!(es.count(index), 0);

    // The test CA installed in the system store (a file): shipped.
    let ca = pki.ca();
    let (code, out) = replay_with_trust(&setup, &file, &[("SSL_CERT_FILE", &ca)], None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 delivered"), "{out}");
    assert_eq!(es.count(index), 3);

    // ... or a directory, as `update-ca-certificates` leaves /etc/ssl/certs.
    let dir = setup.root().join("certs");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::copy(pki.ca(), dir.join("logship-test-ca.pem")).expect("copy CA");
    let (code, out) = replay_with_trust(&setup, &file, &[("SSL_CERT_DIR", &dir)], None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 delivered, 3 already indexed"), "{out}");
    drop(proxy);
}

#[test]
fn nginx_body_limit_413_splits_and_dead_letters_only_the_oversized_lines() {
    let TlsScenario {
        es,
        setup,
        pki,
        proxy,
        password,
    } = tls_scenario("bodylimit");
    let ca = pki.ca().display().to_string();
    configure(
        &setup,
        &proxy.small_body_url,
        &format!(
            "    tls: {{ca_file: \"{ca}\"}}\n    auth: {{basic: {{username: {USERNAME}, password_file: \"{password}\"}}}}\n"
        ),
    );
    // Uncompressed, so what nginx measures is what the lines weigh.
    let yaml = std::fs::read_to_string(setup.config_path()).expect("read config");
    std::fs::write(
        setup.config_path(),
        yaml.replace("compression: {gzip: 1}", "compression: {gzip: 0}"),
    )
    .expect("write config");
    let mut expected = Vec::new();
    let mut oversized = Vec::new();
    let mut bytes = Vec::new();
    for seq in 0..400u64 {
        if seq % 100 == 50 {
            // Alone in a request, still over nginx's limit.
            let message = format!(
                "bodylimit huge seq={seq:06} {}",
                "z".repeat(nginx::SMALL_BODY_BYTES)
            );
            bytes.extend(cri_stdout(seq, message.clone(), &mut Vec::new()));
            oversized.push(message);
        } else {
            bytes.extend(cri_stdout(
                seq,
                format!("bodylimit seq={seq:06} {}", "a".repeat(200)),
                &mut expected,
            ));
        }
    }
    crate::support::logship::append(&setup.log("a.log"), &bytes);
    let mut agent = setup.start();
    assert_exactly_once(es, &setup.index_pattern, &expected, &mut agent);

    let dead_letters = setup.data_dir().join("dead-letter.ndjson");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&dead_letters)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON record"))
        .collect();
    let mut messages: Vec<String> = records
        .iter()
        .map(|r| r["document"]["message"].as_str().unwrap_or("").to_string())
        .collect();
    messages.sort();
    oversized.sort();
    assert!(
        messages == oversized,
        "dead-lettered {} records, expected the {} oversized lines",
        messages.len(),
        oversized.len()
    );
    assert!(records.iter().all(|r| r["status"] == 413), "{records:?}");
    agent.sigterm(Duration::from_secs(30));
    drop(proxy);
}
