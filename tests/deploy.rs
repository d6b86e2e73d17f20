//! The deployment files work as shipped: the kustomize base renders, every
//! rendered object is a valid Kubernetes object (deserialises into the
//! `k8s-openapi` type of its kind, unknown fields rejected), the DaemonSet
//! has what the agent needs, the ConfigMap's config and the sidecar example's
//! config pass `logship check-config`, and systemd accepts the unit.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde_json::Value;

const LOGSHIP_BIN: &str = env!("CARGO_BIN_EXE_logship");
/// The port the ConfigMap's `http.listen` uses; probes and Service must match.
const HTTP_PORT: u16 = 2020;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Deserialises into `T`, failing on fields `T` does not know (a typo in a
/// manifest would otherwise be silently dropped by the API server's client).
fn strict<T: DeserializeOwned + serde::Serialize>(object: &Value) -> T {
    let typed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("not a valid {}: {e}\n{object:#}", object["kind"]));
    let back = serde_json::to_value(&typed).expect("serialise");
    assert_same(object, &back, "");
    typed
}

/// Every field of `written` survives the round trip through the typed object.
fn assert_same(written: &Value, typed: &Value, at: &str) {
    match (written, typed) {
        (Value::Object(w), Value::Object(t)) => {
            for (k, v) in w {
                let path = format!("{at}.{k}");
                let Some(tv) = t.get(k) else {
                    panic!("unknown field {path}");
                };
                assert_same(v, tv, &path);
            }
        }
        (Value::Array(w), Value::Array(t)) => {
            assert_eq!(w.len(), t.len(), "{at}");
            for (i, (a, b)) in w.iter().zip(t).enumerate() {
                assert_same(a, b, &format!("{at}[{i}]"));
            }
        }
        // Quantities and int-or-strings may change representation.
        _ => {}
    }
}

fn rendered() -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo().join("deploy/kubernetes"))
        .output()
        .expect("kubectl must be installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&String::from_utf8(out.stdout).expect("utf-8"))
}

fn check_config(config: &str, dir: &Path) -> std::process::Output {
    let path = dir.join("logship.yaml");
    std::fs::write(&path, config).expect("write config");
    Command::new(LOGSHIP_BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("NODE_NAME", "node-1")
        .env("POD_NAME", "app-with-logship")
        .env("POD_NAMESPACE", "default")
        .env("POD_UID", "0f6a8c1e-1b2c-4d5e-8f90-123456789abc")
        .env_remove("ELASTICSEARCH_URL")
        .output()
        .expect("run logship")
}

#[test]
fn kustomize_base_renders_valid_objects() {
    let objects = rendered();
    let mut kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Namespace",
            "Service",
            "ServiceAccount"
        ]
    );
    let tmp = tempfile::tempdir().unwrap();
    for object in &objects {
        match object["kind"].as_str().unwrap() {
            "Namespace" => drop(strict::<Namespace>(object)),
            "ServiceAccount" => drop(strict::<ServiceAccount>(object)),
            "ClusterRoleBinding" => {
                let b = strict::<ClusterRoleBinding>(object);
                let subject = &b.subjects.unwrap()[0];
                assert_eq!(
                    (subject.kind.as_str(), subject.namespace.as_deref()),
                    ("ServiceAccount", Some("logship"))
                );
            }
            "ClusterRole" => {
                // Read-only, pods and namespaces only.
                for rule in strict::<ClusterRole>(object).rules.unwrap() {
                    for r in rule.resources.unwrap() {
                        assert!(["pods", "namespaces"].contains(&r.as_str()), "{r}");
                    }
                    for v in rule.verbs {
                        assert!(["get", "list", "watch"].contains(&v.as_str()), "{v}");
                    }
                }
            }
            "ConfigMap" => {
                let cm = strict::<ConfigMap>(object);
                let config = &cm.data.unwrap()["logship.yaml"];
                let out = check_config(config, tmp.path());
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let effective = String::from_utf8_lossy(&out.stdout);
                assert!(
                    effective.contains("node-1"),
                    "NODE_NAME is used: {effective}"
                );
                assert!(effective.contains("daemonset"), "{effective}");
                assert!(effective.contains(&format!(":{HTTP_PORT}")), "{effective}");
            }
            "DaemonSet" => check_daemonset(&strict::<DaemonSet>(object)),
            "Service" => {
                let svc = strict::<Service>(object);
                let port = svc.metadata.annotations.unwrap()["prometheus.io/port"].clone();
                assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port.to_string(), port);
                assert_eq!(port, HTTP_PORT.to_string());
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

fn check_daemonset(ds: &DaemonSet) {
    let spec = ds.spec.template.spec.as_ref().unwrap();
    let container = &spec.containers[0];
    let node_env = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .unwrap();
    let field = &node_env
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap()
        .field_path;
    assert_eq!(field, "spec.nodeName");
    // The drain deadline (shutdown_timeout 25 s) fits in the grace period.
    assert!(spec.termination_grace_period_seconds.unwrap() > 25);
    assert!(
        spec.tolerations
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists"))
    );
    assert_eq!(spec.service_account_name.as_deref(), Some("logship"));
    let pod_sec = spec.security_context.as_ref().unwrap();
    assert_eq!(pod_sec.run_as_non_root, Some(true));
    assert_ne!(pod_sec.run_as_user, Some(0));
    let sec = container.security_context.as_ref().unwrap();
    assert_eq!(sec.read_only_root_filesystem, Some(true));
    assert_eq!(sec.allow_privilege_escalation, Some(false));
    let port = container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .unwrap();
    assert_eq!(port.container_port, i32::from(HTTP_PORT));
    for (probe, path) in [
        (&container.liveness_probe, "/healthz"),
        (&container.readiness_probe, "/readyz"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
    }
    let res = container.resources.as_ref().unwrap();
    assert!(res.requests.is_some() && res.limits.is_some());
    let mounts = container.volume_mounts.as_ref().unwrap();
    let varlog = mounts.iter().find(|m| m.mount_path == "/var/log").unwrap();
    assert_eq!(varlog.read_only, Some(true));
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/var/lib/logship" && m.read_only != Some(true))
    );
    let volumes = spec.volumes.as_ref().unwrap();
    for (name, path) in [("varlog", "/var/log"), ("data", "/var/lib/logship")] {
        let v = volumes.iter().find(|v| v.name == name).unwrap();
        assert_eq!(v.host_path.as_ref().unwrap().path, path);
    }
}

#[test]
fn sidecar_example_is_valid_and_its_config_checks() {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/examples/sidecar/pod.yaml"))
        .unwrap();
    let objects = yaml_documents(&text);
    assert_eq!(objects.len(), 2);
    let tmp = tempfile::tempdir().unwrap();
    let cm = strict::<ConfigMap>(&objects[0]);
    let out = check_config(&cm.data.unwrap()["logship.yaml"], tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("app-with-logship"));
    let pod = strict::<Pod>(&objects[1]);
    let spec = pod.spec.unwrap();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["app", "logship"]);
    // The app and logship share the log volume.
    for c in &spec.containers {
        assert!(
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == "logs"),
            "{}",
            c.name
        );
    }
}

#[test]
fn host_config_checks() {
    let config = std::fs::read_to_string(repo().join("deploy/host/logship.yaml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = check_config(&config, tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_verifies() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not available; skipping");
        return;
    };
    assert!(probe.status.success());
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/logship.service")).unwrap();
    assert!(
        unit.contains("ProtectSystem=strict") && unit.contains("ReadWritePaths=/var/lib/logship")
    );
    // Verify the unit as written, with the binary path pointing at the one
    // built here (verify checks that ExecStart is executable).
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("logship.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/logship", LOGSHIP_BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("logship.service:"),
        "{stderr}"
    );
}
