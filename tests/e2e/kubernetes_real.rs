//! Kubernetes metadata against a REAL API server (kube-apiserver v1.35 and
//! etcd, `tests/support/kube_apiserver.rs`), with RBAC on and the agent
//! authenticated as the ServiceAccount that `deploy/kubernetes/` binds to
//! its ClusterRole: what the fake (`kubernetes.rs`) cannot prove — the
//! manifests' rules suffice, paging and resourceVersion semantics, watches
//! ending after `timeoutSeconds`, 410 Gone after a compaction, a server
//! restart, bookmarks, HTTP/2 and TLS with a bearer token. Every line is
//! matched (unique number per line) and must carry its own pod's metadata.
//! Request counts come from the server's own `apiserver_request_total`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::expect::Line;
use crate::kubernetes::{
    assert_absent, assert_lines, doc_of, enable_http, enable_kubernetes, options, pod_log,
    wait_until, write_lines,
};
use crate::scenario;
use crate::support::agent_http;
use crate::support::kube_apiserver::KubeApiServer;
use crate::support::logship::{Agent, Setup, append};

const NODE: &str = "real-node";
const OTHER_NODE: &str = "other-node";

/// A server with `deploy/kubernetes/`'s RBAC, and the agent's kubeconfig
/// (its ServiceAccount's token) written into `setup`'s config with
/// `k8s_extra` keys added to the `kubernetes:` section.
fn real_api_server(setup: &Setup, server_args: &[&str], k8s_extra: &str) -> KubeApiServer {
    let server = KubeApiServer::start(server_args);
    let token = server.install_rbac(None);
    let kubeconfig = setup.root().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, &token);
    enable_kubernetes(setup, &kubeconfig, "5s");
    append(
        &setup.config_path(),
        format!("  node_name: {NODE}\n{k8s_extra}").as_bytes(),
    );
    server
}

/// A pod and the lines written to its log file.
struct PodLog {
    pod: Value,
    path: PathBuf,
    lines: Vec<Line>,
    next: u64,
}

impl PodLog {
    fn new(setup: &Setup, pod: Value) -> PodLog {
        let path = pod_log(setup, &pod);
        // The kubelet's other name for it, the one the DaemonSet's config
        // follows: containers/<pod>_<namespace>_<container>-<id>.log.
        let m = &pod["metadata"];
        let link = setup.logs().join("containers").join(format!(
            "{}_{}_{}-{}.log",
            m["name"].as_str().expect("name"),
            m["namespace"].as_str().expect("namespace"),
            pod["spec"]["containers"][0]["name"]
                .as_str()
                .expect("container"),
            m["uid"].as_str().expect("uid").replace('-', "")
        ));
        std::fs::create_dir_all(link.parent().expect("dir")).expect("mkdir containers");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        PodLog {
            pod,
            path,
            lines: Vec::new(),
            next: 0,
        }
    }

    fn name(&self) -> &str {
        self.pod["metadata"]["name"].as_str().expect("pod name")
    }

    /// Writes `n` more lines tagged `tag`; returns them.
    fn write(&mut self, tag: &str, n: u64) -> Vec<Line> {
        let tag = format!("{}-{tag}", self.name());
        let lines = write_lines(&self.path, &tag, self.next..self.next + n);
        self.next += n;
        self.lines.extend(lines.iter().cloned());
        lines
    }
}

/// The document carries its own pod's identity and labels (dedotted), and
/// the namespace's labels.
fn assert_real_pod(doc: &Value, pod: &Value, namespace_labels: &Value) {
    let k = &doc["kubernetes"];
    let m = &pod["metadata"];
    assert_eq!(k["namespace"], m["namespace"], "{doc}");
    assert_eq!(k["pod"]["name"], m["name"], "{doc}");
    assert_eq!(k["pod"]["uid"], m["uid"], "{doc}");
    assert_eq!(k["node"]["name"], pod["spec"]["nodeName"], "{doc}");
    assert_eq!(
        k["container"]["name"], pod["spec"]["containers"][0]["name"],
        "{doc}"
    );
    let labels = m["labels"].as_object().cloned().unwrap_or_default();
    let got = k["labels"].as_object().cloned().unwrap_or_default();
    assert_eq!(got.len(), labels.len(), "labels: {doc}");
    for (key, value) in &labels {
        assert_eq!(&got[&key.replace('.', "_")], value, "label {key}: {doc}");
    }
    for (key, value) in namespace_labels.as_object().expect("labels") {
        assert_eq!(
            &k["namespace_labels"][key.replace('.', "_")],
            value,
            "namespace label {key}: {doc}"
        );
    }
}

fn scrape_value(port: u16, agent: &mut Agent, name: &str) -> f64 {
    let scrape = agent_http::scrape(port, agent);
    agent_http::value(&scrape, name, &[]).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Pods created before and after the agent starts, in several namespaces,
/// on this node and another: every line once, each with its own pod's
/// metadata and its namespace's labels; an excluded namespace's lines never
/// shipped; a label added to a followed pod reaches the lines written after
/// it (not those before); a deleted pod's lines still enriched within
/// `delete_grace`. One list per resource, and the RBAC of
/// `deploy/kubernetes/` was enough. Files followed as the DaemonSet does,
/// through `containers/*.log` symlinks.
#[test]
fn real_api_server_enriches_every_line_with_its_own_pod() {
    // As the DaemonSet follows them: through the symlinks in containers/.
    let (es, setup) = scenario(
        "k8s-real-enrich",
        crate::support::logship::Options {
            include: "containers/*.log",
            ..options()
        },
    );
    let server = real_api_server(&setup, &[], "  namespace_labels: true\n");
    let port = enable_http(&setup);
    let ns_labels = |team: &str| json!({"team": team});
    server.create_namespace("shop", ns_labels("a"), json!({}));
    server.create_namespace("ops", ns_labels("b"), json!({}));
    server.create_namespace(
        "quiet",
        ns_labels("c"),
        json!({"logship.io/exclude": "true"}),
    );
    let pod = |ns: &str, name: &str, node: &str| {
        server.create_pod(
            ns,
            name,
            node,
            "app",
            json!({"app": name, "app.kubernetes.io/part-of": ns}),
            json!({"example.com/owner": "team"}),
        )
    };
    // Before the agent starts.
    let mut web0 = PodLog::new(&setup, pod("shop", "web-0", NODE));
    let mut job0 = PodLog::new(&setup, pod("ops", "job-0", NODE));
    let mut noise = PodLog::new(&setup, pod("quiet", "noise-0", NODE));
    // The pod's own annotation beats its namespace's.
    let mut rebel = PodLog::new(
        &setup,
        server.create_pod(
            "quiet",
            "rebel-0",
            NODE,
            "app",
            json!({"app": "rebel"}),
            json!({"logship.io/exclude": "false"}),
        ),
    );
    rebel.write("before", 20);
    pod("shop", "far-0", OTHER_NODE);
    web0.write("before", 40);
    job0.write("before", 40);
    noise.write("before", 20);

    let mut agent = setup.start();
    // After it started.
    let mut web1 = PodLog::new(&setup, pod("shop", "web-1", NODE));
    let mut job1 = PodLog::new(&setup, pod("ops", "job-1", NODE));
    pod("ops", "far-1", OTHER_NODE);
    web1.write("after-start", 40);
    job1.write("after-start", 40);
    noise.write("after-start", 20);
    let shipped = |logs: &[&PodLog]| -> Vec<Line> {
        logs.iter().flat_map(|l| l.lines.iter().cloned()).collect()
    };
    assert_lines(
        es,
        &setup,
        &shipped(&[&web0, &job0, &web1, &job1, &rebel]),
        &mut agent,
    );

    // A label added to web-0 while its file is followed.
    let before_label = web0.lines.clone();
    let patched = server.label_pod("shop", "web-0", json!({"release": "canary"}));
    // Marker lines until one arrives carrying the label (the watch event
    // took effect); every line written after that must carry it too.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let marker = web0.write("marker", 1);
        std::thread::sleep(Duration::from_millis(300));
        let labelled = es.search_all(&setup.index_pattern).iter().any(|d| {
            d["message"] == marker[0].message.as_str()
                && d["kubernetes"]["labels"]["release"] == "canary"
        });
        if labelled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line carried the new label within 60 s:\n{}",
            agent.stderr_tail(30)
        );
    }
    let after_label = web0.write("after-label", 30);
    // job-0 deleted: its last lines are still enriched within delete_grace.
    server.delete_pod("ops", "job-0");
    std::thread::sleep(Duration::from_secs(1));
    job0.write("after-delete", 30);

    let docs = assert_lines(
        es,
        &setup,
        &shipped(&[&web0, &job0, &web1, &job1, &rebel]),
        &mut agent,
    );
    for line in &before_label {
        assert_real_pod(doc_of(&docs, line), &web0.pod, &ns_labels("a"));
    }
    // (The markers between carry either; each is matched once above.)
    for line in &after_label {
        assert_real_pod(doc_of(&docs, line), &patched, &ns_labels("a"));
        assert_eq!(
            doc_of(&docs, line)["kubernetes"]["labels"]["release"],
            "canary"
        );
    }
    for (log, team) in [(&job0, "b"), (&web1, "a"), (&job1, "b"), (&rebel, "c")] {
        for line in &log.lines {
            assert_real_pod(doc_of(&docs, line), &log.pod, &ns_labels(team));
        }
    }
    assert_absent(&docs, &noise.lines, "namespace quiet is excluded");
    assert_eq!(
        scrape_value(port, &mut agent, "logship_k8s_files_excluded_total"),
        1.0
    );
    assert!(
        scrape_value(port, &mut agent, "logship_k8s_metadata_updates_total") >= 1.0,
        "the label change was not applied"
    );
    assert_eq!(
        scrape_value(port, &mut agent, "logship_k8s_files_without_metadata_total"),
        0.0
    );
    // One list of pods (this node's) and one of namespaces, ever.
    assert_eq!(server.request_count("LIST", "pods"), 1);
    assert_eq!(server.request_count("LIST", "namespaces"), 1);
    assert_eq!(
        scrape_value(port, &mut agent, "logship_k8s_watch_restarts_total"),
        0.0
    );
}

/// With a short watch timeout and the watch cache off (so a compaction
/// reaches the watch as 410 Gone): watches that end by themselves are
/// re-opened without a list; a compaction costs exactly one re-list; the
/// API server stopped and restarted mid-stream: lines keep flowing, and the
/// lines of pods created right after the restart all carry their metadata
/// (`metadata_wait` is short here, but files wait while the watch is not in
/// sync).
#[test]
fn real_api_server_watch_timeouts_compaction_and_restart() {
    let (es, setup) = scenario("k8s-real-watch", options());
    let server = real_api_server(
        &setup,
        &["--watch-cache=false"],
        "  watch_timeout: 2s\n  metadata_sync_wait: 60s\n",
    );
    // metadata_wait 1s: without the in-sync wait, pods created right after a
    // restart would ship bare.
    let config = std::fs::read_to_string(setup.config_path()).expect("config");
    std::fs::write(
        setup.config_path(),
        config.replace("metadata_wait: 5s", "metadata_wait: 1s"),
    )
    .expect("config");
    let port = enable_http(&setup);
    server.create_namespace("shop", json!({}), json!({}));
    let create = |name: &str, node: &str| {
        server.create_pod("shop", name, node, "app", json!({"app": name}), json!({}))
    };
    let mut a = PodLog::new(&setup, create("a", NODE));
    a.write("start", 30);
    let mut agent = setup.start();
    assert_lines(es, &setup, &a.lines, &mut agent);

    // Natural watch ends: several watches, still one list.
    wait_until("3 pod watches", Duration::from_secs(60), || {
        server.request_count("WATCH", "pods") >= 3
    });
    assert_eq!(
        server.request_count("LIST", "pods"),
        1,
        "re-listed on a watch timeout"
    );

    // Compaction: the next watch from the old resourceVersion gets 410.
    for i in 0..3 {
        create(&format!("far-{i}"), OTHER_NODE);
    }
    server.compact_etcd();
    wait_until("the re-list after 410", Duration::from_secs(60), || {
        server.request_count("LIST", "pods") >= 2
    });
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        server.request_count("LIST", "pods"),
        2,
        "one re-list per 410"
    );
    let mut b = PodLog::new(&setup, create("b", NODE));
    b.write("after-compaction", 30);
    a.write("after-compaction", 30);

    // The server down mid-stream: lines keep flowing (with the cached metadata).
    server.stop_apiserver();
    a.write("server-down", 30);
    b.write("server-down", 30);
    assert_lines(
        es,
        &setup,
        &[a.lines.clone(), b.lines.clone()].concat(),
        &mut agent,
    );
    server.start_apiserver();
    // Five pods created right after the restart.
    let mut fresh: Vec<PodLog> = (0..5)
        .map(|i| PodLog::new(&setup, create(&format!("fresh-{i}"), NODE)))
        .collect();
    for log in &mut fresh {
        log.write("after-restart", 20);
    }
    a.write("after-restart", 20);
    let mut all = [a.lines.clone(), b.lines.clone()].concat();
    for log in &fresh {
        all.extend(log.lines.iter().cloned());
    }
    let docs = assert_lines(es, &setup, &all, &mut agent);
    assert_eq!(
        scrape_value(port, &mut agent, "logship_k8s_files_without_metadata_total"),
        0.0,
        "{}",
        agent.stderr_tail(60)
    );
    for log in [&a, &b].into_iter().chain(fresh.iter()) {
        for line in &log.lines {
            assert_real_pod(doc_of(&docs, line), &log.pod, &json!({}));
        }
    }
}

/// The ClusterRole without `watch`: logship says exactly what is wrong (the
/// denied verb and the role to fix), keeps shipping every line, and the
/// pods it listed still enrich them. The manifests of `deploy/kubernetes/`
/// and the sidecar example pass the real server's validation and admission
/// (`kubectl apply --dry-run=server`).
#[test]
fn real_api_server_rbac_denial_and_manifest_validation() {
    let (es, setup) = scenario("k8s-real-rbac", options());
    let server = KubeApiServer::start(&[]);
    let repo = crate::support::elasticsearch::repo_root();
    let role = std::fs::read_to_string(repo.join("deploy/kubernetes/clusterrole.yaml"))
        .expect("clusterrole.yaml");
    assert!(role.contains("\"watch\""), "{role}");
    let without_watch = role.replace(", \"watch\"", "");
    assert_ne!(without_watch, role);
    let token = server.install_rbac(Some(&without_watch));
    let kubeconfig = setup.root().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, &token);
    enable_kubernetes(&setup, &kubeconfig, "1s");
    append(
        &setup.config_path(),
        format!("  node_name: {NODE}\n  metadata_sync_wait: 3s\n").as_bytes(),
    );
    server.create_namespace("shop", json!({}), json!({}));
    let mut a = PodLog::new(
        &setup,
        server.create_pod("shop", "a", NODE, "app", json!({"app": "a"}), json!({})),
    );
    a.write("denied", 30);
    let mut agent = setup.start();
    let docs = assert_lines(es, &setup, &a.lines, &mut agent);
    for line in &a.lines {
        assert_real_pod(doc_of(&docs, line), &a.pod, &json!({}));
    }
    wait_until("the RBAC error", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(setup.stderr_path()).unwrap_or_default();
        log.contains("denies the pod watch (HTTP 403)")
            && log.contains("cannot watch resource \\\"pods\\\"")
            && log.contains("deploy/kubernetes/clusterrole.yaml")
    });

    // The manifests, validated for real (the namespace exists: install_rbac).
    let dry_run = |args: &[&str]| {
        let mut all = vec!["apply", "--dry-run=server"];
        all.extend_from_slice(args);
        server.kubectl_ok(&all)
    };
    let out = dry_run(&["-k", &repo.join("deploy/kubernetes").to_string_lossy()]);
    for object in [
        "daemonset.apps/logship",
        "configmap/logship",
        "clusterrole.rbac.authorization.k8s.io/logship",
    ] {
        assert!(out.contains(object), "{object} not applied: {out}");
    }
    let sidecar = repo.join("deploy/kubernetes/examples/sidecar/pod.yaml");
    let out = dry_run(&["-n", "shop", "-f", &sidecar.to_string_lossy()]);
    assert!(out.contains("(server dry run)"), "{out}");
}

/// 200 pods on this node and 2,000 on others: the agent lists and watches
/// only its node's pods (one list, its cache holds exactly 200), so neither
/// its requests nor its memory grow with the cluster.
#[test]
fn real_api_server_pods_elsewhere_cost_nothing() {
    let (_es, setup) = scenario("k8s-real-scale", options());
    let server = real_api_server(&setup, &[], "");
    let port = enable_http(&setup);
    for ns in ["n0", "n1", "n2", "n3"] {
        server.create_namespace(ns, json!({}), json!({}));
    }
    let create_many = |node: &str, count: usize| {
        std::thread::scope(|scope| {
            for t in 0..4 {
                let server = &server;
                scope.spawn(move || {
                    for i in (t..count).step_by(4) {
                        server.create_pod(
                            &format!("n{t}"),
                            &format!("{node}-{i}"),
                            node,
                            "app",
                            json!({"app": "x", "i": i.to_string()}),
                            json!({}),
                        );
                    }
                });
            }
        });
    };
    create_many(NODE, 200);
    let mut agent = setup.start();
    wait_until("200 pods cached", Duration::from_secs(60), || {
        scrape_value(port, &mut agent, "logship_k8s_cache_pods") == 200.0
    });
    let rss = |agent: &Agent| rss_kib(agent.pid());
    let before = rss(&agent);
    create_many(OTHER_NODE, 2000);
    std::thread::sleep(Duration::from_secs(3));
    let after = rss(&agent);
    eprintln!(
        "agent RSS with 200 pods on its node: {before} KiB; after 2,000 more elsewhere: {after} KiB"
    );
    assert_eq!(
        scrape_value(port, &mut agent, "logship_k8s_cache_pods"),
        200.0
    );
    // Nothing of them reaches the agent (the field selector): its memory
    // stays where it was. 2 MiB is less than 2,000 cached pods would take
    // (over 1 KiB each), and more than allocator noise.
    assert!(
        after < before + 2048,
        "RSS grew from {before} to {after} KiB with pods on other nodes"
    );
    assert_eq!(server.request_count("LIST", "pods"), 1);
    assert_eq!(
        scrape_value(port, &mut agent, "logship_k8s_watch_restarts_total"),
        0.0
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
