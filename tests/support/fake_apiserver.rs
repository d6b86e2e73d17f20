//! A fake Kubernetes API server that speaks the real list/watch protocol for
//! pods and namespaces over HTTP/1.1, for tests of the metadata caches.
//!
//! `GET /api/v1/pods` (and `/api/v1/namespaces/<ns>/pods`) answers a `PodList`
//! whose `metadata.resourceVersion` is the current version, `GET
//! /api/v1/namespaces` a `NamespaceList`; with `watch=true` either answers a
//! chunked stream of `{"type":…,"object":…}\n` events of its kind: first
//! every stored event newer than the `resourceVersion` asked for, then live
//! ones (`ADDED`/`MODIFIED`/`DELETED`), with a `BOOKMARK` at the start when
//! `allowWatchBookmarks=true`. A watch from a version older than the last
//! [`FakeApiServer::expire_watches`] gets an `ERROR` event with a 410
//! `Expired` Status, as does every open watch when it is called. The
//! `fieldSelector` `spec.nodeName=<node>` is honoured for pod lists and
//! watches. A pod's namespace is created (as the real API server requires
//! it to exist) when the pod is applied, unless the test applied it first.
//! Lists and watches are counted per resource ([`FakeApiServer::counts`]).
//!
//! The server runs on its own runtime thread so synchronous tests can use it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Lists and watches of one resource received so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reflector {
    pub lists: u32,
    pub watches: u32,
}

/// Requests received so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pods: Reflector,
    pub namespaces: Reflector,
    /// Any other request (there should be none).
    pub other: u32,
}

impl Counts {
    /// `lists` lists and `watches` watches of pods and of namespaces, nothing else.
    pub fn each(lists: u32, watches: u32) -> Counts {
        let r = Reflector { lists, watches };
        Counts {
            pods: r,
            namespaces: r,
            other: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pod,
    Namespace,
}

struct Watcher {
    kind: Kind,
    node: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Oldest version a watch may start from.
    compacted: u64,
    pods: BTreeMap<String, Value>,
    namespaces: BTreeMap<String, Value>,
    history: Vec<(u64, Kind, &'static str, Value)>,
    watchers: Vec<Watcher>,
    counts: Counts,
    /// Every request's path and query, in order.
    requests: Vec<String>,
}

/// The running fake; stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeApiServer {
    /// Serves on a free loopback port.
    pub fn start() -> FakeApiServer {
        Self::start_on("127.0.0.1:0".parse().expect("addr"))
    }

    /// Serves on `addr` (e.g. a port reserved earlier).
    pub fn start_on(addr: SocketAddr) -> FakeApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("bind fake API server");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State {
            rv: 1000,
            compacted: 1000,
            ..State::default()
        }));
        let server_state = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = server_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApiServer {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn counts(&self) -> Counts {
        self.state().counts
    }

    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// Adds (or replaces) a pod: an `ADDED` (or `MODIFIED`) event; first
    /// creates its namespace if there is none (see [`namespace_json`]).
    pub fn apply_pod(&self, pod: &Value) {
        let uid = pod["metadata"]["uid"].as_str().expect("pod uid").to_owned();
        let namespace = pod["metadata"]["namespace"]
            .as_str()
            .expect("pod namespace");
        let mut s = self.state();
        if !s.namespaces.contains_key(namespace) {
            s.apply(
                Kind::Namespace,
                namespace.to_owned(),
                namespace_json(namespace, json!({}), json!({})),
            );
        }
        s.apply(Kind::Pod, uid, pod.clone());
    }

    /// Adds (or replaces) a namespace: an `ADDED` (or `MODIFIED`) event.
    pub fn apply_namespace(&self, namespace: &Value) {
        let name = namespace["metadata"]["name"]
            .as_str()
            .expect("namespace name");
        self.state()
            .apply(Kind::Namespace, name.to_owned(), namespace.clone());
    }

    /// Deletes a pod: a `DELETED` event.
    pub fn delete_pod(&self, uid: &str) {
        let mut s = self.state();
        let Some(pod) = s.pods.remove(uid) else {
            return;
        };
        let pod = s.bump(pod);
        s.publish(Kind::Pod, "DELETED", pod);
    }

    /// Every open watch gets an `ERROR` 410 and ends; watches from older
    /// versions than now are refused the same way.
    pub fn expire_watches(&self) {
        let mut s = self.state();
        s.compacted = s.rv;
        let line = event_line("ERROR", expired_status());
        for w in s.watchers.drain(..) {
            let _ = w.tx.send(line.clone());
        }
    }

    /// A kubeconfig for this server (plain HTTP, no auth) written to `path`.
    pub fn write_kubeconfig(&self, path: &Path) {
        write_kubeconfig(path, &self.url());
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A kubeconfig pointing at `server` (plain HTTP, no auth).
pub fn write_kubeconfig(path: &Path, server: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         users:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n\
         current-context: fake\n"
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

/// A Pod as the API server returns it (from `kubectl get pod -o json` of a
/// Deployment's pod), on `node`.
pub fn pod_json(namespace: &str, name: &str, uid: &str, node: &str, container: &str) -> Value {
    let rs = name.rsplit_once('-').map(|(rs, _)| rs).unwrap_or(name);
    let hash = rs.rsplit_once('-').map(|(_, h)| h).unwrap_or("");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-26T01:00:00Z",
            "generateName": format!("{rs}-"),
            "labels": {"app": "web", "app.kubernetes.io/name": "web", "pod-template-hash": hash},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-26T00:59:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                "uid": "3f7c5b2e-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "v1", "time": "2026-11-26T01:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": container, "image": "nginx:1.27",
                "imagePullPolicy": "IfNotPresent", "resources": {},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
            "serviceAccountName": "default", "terminationGracePeriodSeconds": 30
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.1.0.4",
            "podIP": "10.244.1.17",
            "podIPs": [{"ip": "10.244.1.17"}],
            "startTime": "2026-11-26T01:00:00Z",
            "qosClass": "BestEffort",
            "containerStatuses": [{"name": container, "ready": true, "restartCount": 0, "started": true,
                "image": "docker.io/library/nginx:1.27",
                "imageID": "docker.io/library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "containerID": format!("containerd://{}", "c0ffee".repeat(10) + "abcd"),
                "state": {"running": {"startedAt": "2026-11-26T01:00:01Z"}}, "lastState": {}}]
        }
    })
}

/// A Namespace as the API server returns it, with `labels` and
/// `annotations` (objects) added to the ones Kubernetes sets itself.
pub fn namespace_json(name: &str, labels: Value, annotations: Value) -> Value {
    let mut all_labels = json!({"kubernetes.io/metadata.name": name});
    for (k, v) in labels.as_object().expect("labels object") {
        all_labels[k] = v.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": format!("5e0b1c2d-0000-4000-8000-{:0>12}", name.len()),
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-26T00:00:00Z",
            "labels": all_labels,
            "annotations": annotations,
            "managedFields": [{"manager": "kubectl-create", "operation": "Update",
                "apiVersion": "v1", "time": "2026-11-26T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

impl State {
    fn bump(&mut self, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        object
    }

    fn apply(&mut self, kind: Kind, key: String, object: Value) {
        let store = match kind {
            Kind::Pod => &self.pods,
            Kind::Namespace => &self.namespaces,
        };
        let event = if store.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let object = self.bump(object);
        match kind {
            Kind::Pod => self.pods.insert(key, object.clone()),
            Kind::Namespace => self.namespaces.insert(key, object.clone()),
        };
        self.publish(kind, event, object);
    }

    fn publish(&mut self, kind: Kind, event: &'static str, object: Value) {
        self.history.push((self.rv, kind, event, object.clone()));
        let node = object["spec"]["nodeName"].as_str().map(str::to_owned);
        let line = event_line(event, object);
        self.watchers.retain(|w| {
            if w.kind != kind || (w.node.is_some() && w.node != node) {
                return !w.tx.is_closed();
            }
            w.tx.send(line.clone()).is_ok()
        });
    }
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    v.push(b'\n');
    Bytes::from(v)
}

fn expired_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 1 (2)", "reason": "Expired", "code": 410})
}

/// A response body fed by a channel: one chunk per event.
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<ChannelBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let params = query_params(req.uri().query().unwrap_or(""));
    let (tx, rx) = mpsc::unbounded_channel();
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.requests.push(req.uri().to_string());
    let namespace = path
        .strip_prefix("/api/v1/namespaces/")
        .and_then(|rest| rest.strip_suffix("/pods"))
        .map(str::to_owned);
    let kind = if path == "/api/v1/namespaces" {
        Kind::Namespace
    } else {
        Kind::Pod
    };
    if path != "/api/v1/pods" && path != "/api/v1/namespaces" && namespace.is_none() {
        s.counts.other += 1;
        let _ = tx.send(Bytes::from_static(b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"reason\":\"NotFound\",\"code\":404}"));
        drop(tx);
        let mut resp = Response::new(ChannelBody(rx));
        *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    let node = params
        .get("fieldSelector")
        .and_then(|f| f.split(',').find_map(|t| t.strip_prefix("spec.nodeName=")))
        .map(str::to_owned);
    let matches = |object_kind: Kind, object: &Value| {
        object_kind == kind
            && (kind == Kind::Namespace
                || node
                    .as_deref()
                    .is_none_or(|n| object["spec"]["nodeName"] == n)
                    && namespace
                        .as_deref()
                        .is_none_or(|ns| object["metadata"]["namespace"] == ns))
    };
    let (counts, kind_name) = match kind {
        Kind::Pod => (&mut s.counts.pods, "Pod"),
        Kind::Namespace => (&mut s.counts.namespaces, "Namespace"),
    };
    let watch = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    if watch {
        counts.watches += 1;
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(s.rv);
        if from < s.compacted {
            let _ = tx.send(event_line("ERROR", expired_status()));
            drop(tx);
        } else {
            if params.get("allowWatchBookmarks").map(String::as_str) == Some("true") {
                let _ = tx.send(event_line(
                    "BOOKMARK",
                    json!({"kind": kind_name, "apiVersion": "v1",
                        "metadata": {"resourceVersion": s.rv.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"}}}),
                ));
            }
            for (rv, object_kind, event, object) in &s.history {
                if *rv > from && matches(*object_kind, object) {
                    let _ = tx.send(event_line(event, object.clone()));
                }
            }
            s.watchers.push(Watcher { kind, node, tx });
        }
    } else {
        counts.lists += 1;
        let store = match kind {
            Kind::Pod => &s.pods,
            Kind::Namespace => &s.namespaces,
        };
        let items: Vec<Value> = store
            .values()
            .filter(|o| matches(kind, o))
            .cloned()
            .collect();
        let list = json!({"kind": format!("{kind_name}List"), "apiVersion": "v1",
            "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
        let _ = tx.send(Bytes::from(serde_json::to_vec(&list).expect("json")));
        drop(tx);
    }
    let mut resp = Response::new(ChannelBody(rx));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
