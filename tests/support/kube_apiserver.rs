//! A real Kubernetes API server (kube-apiserver and etcd, built from Go
//! modules by `scripts/kube-apiserver.sh fetch`) for the tests.
//!
//! [`KubeApiServer::start`] runs `scripts/kube-apiserver.sh start DIR` with a
//! fresh temporary DIR: etcd and kube-apiserver on loopback, RBAC
//! authorization, an admin token. A watchdog shell stops both when this
//! process ends, however it ends (it waits on a pipe from us), so a
//! panicking or killed test leaves nothing running.
//!
//! [`KubeApiServer::install_rbac`] applies the ServiceAccount, ClusterRole
//! and ClusterRoleBinding from `deploy/kubernetes/` with `kubectl` (the
//! files users apply) and returns a token for that ServiceAccount, so the
//! agent runs with exactly the rights the manifests give it.
//!
//! Missing binaries are an error that names the command to run, never a
//! skipped test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::elasticsearch::repo_root;

/// A running API server and an admin client for it.
pub struct KubeApiServer {
    dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The admin (`system:masters`) token.
    pub admin_token: String,
    /// The serving certificate (self-signed), usable as the CA.
    pub ca: PathBuf,
    /// etcd's client URL (for `etcdctl compact`).
    pub etcd_url: String,
    extra_args: String,
    client: reqwest::blocking::Client,
    watchdog: Option<Child>,
}

fn script() -> PathBuf {
    repo_root().join("scripts/kube-apiserver.sh")
}

/// The directory holding the binaries; panics (naming the fix) when they
/// are not built.
pub fn bin_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("LOGSHIP_K8S_CACHE").unwrap_or_else(|_| "/var/cache/logship-k8s".into()),
    )
    .join("bin");
    let has = |prefix: &str| {
        std::fs::read_dir(&dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    };
    assert!(
        has("kube-apiserver-") && has("etcd-") && has("etcdctl-"),
        "kube-apiserver, etcd or etcdctl not built in {}: run `scripts/kube-apiserver.sh fetch` \
         (scripts/test.sh does) — the Kubernetes tests need a real API server",
        dir.display()
    );
    dir
}

/// The etcdctl binary.
pub fn etcdctl() -> PathBuf {
    let dir = bin_dir();
    std::fs::read_dir(&dir)
        .expect("read bin dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("etcdctl-"))
        })
        .unwrap_or_else(|| panic!("no etcdctl in {}", dir.display()))
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver; `extra_args` go to kube-apiserver
    /// (e.g. `--watch-cache=false`).
    pub fn start(extra_args: &[&str]) -> KubeApiServer {
        bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("logship-k8s-")
            .tempdir()
            .expect("temp dir");
        let extra_args = extra_args.join(" ");
        let mut server = KubeApiServer {
            dir,
            url: String::new(),
            admin_token: String::new(),
            ca: PathBuf::new(),
            etcd_url: String::new(),
            extra_args,
            client: reqwest::blocking::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(Duration::from_secs(60))
                .build()
                .expect("reqwest client"),
            watchdog: None,
        };
        server.run_start();
        // Stops the servers when this process ends (the pipe closes).
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg("read _ignored; \"$0\" stop \"$1\" >/dev/null 2>&1")
            .arg(script())
            .arg(server.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watchdog");
        server.watchdog = Some(watchdog);
        server
    }

    fn run_start(&mut self) {
        let out = Command::new(script())
            .arg("start")
            .arg(self.dir.path())
            .env("LOGSHIP_KUBE_APISERVER_ARGS", &self.extra_args)
            .output()
            .expect("run scripts/kube-apiserver.sh");
        assert!(
            out.status.success(),
            "scripts/kube-apiserver.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(self.dir.path().join("env")).expect("DIR/env");
        for line in env.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "KUBE_URL" => self.url = value.to_string(),
                "KUBE_TOKEN" => self.admin_token = value.to_string(),
                "KUBE_CA" => self.ca = value.into(),
                "ETCD_URL" => self.etcd_url = value.to_string(),
                _ => {}
            }
        }
        self.wait_ready();
    }

    /// Waits until `/readyz` and the RBAC bootstrap roles are there (an
    /// agent started earlier gets 403s for a few seconds).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self
                .try_request(reqwest::Method::GET, "/readyz", None)
                .is_ok_and(|(s, _)| s == 200)
                && self
                    .try_request(
                        reqwest::Method::GET,
                        "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:discovery",
                        None,
                    )
                    .is_ok_and(|(s, _)| s == 200);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver at {} not ready in 60 s; log: {}",
                self.url,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the API server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("logs/kube-apiserver.log"))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops kube-apiserver only (etcd keeps the state); [`Self::restart`]
    /// brings it back on the same port.
    pub fn stop_apiserver(&self) {
        let pid_file = self.dir.path().join("kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file).expect("kube-apiserver.pid");
        let pid = pid.trim();
        let _ = Command::new("kill").args(["-TERM", pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts kube-apiserver again on the same port, with the same state
    /// (etcd), certificates and tokens; waits until it is ready.
    pub fn start_apiserver(&self) {
        let port = self
            .url
            .rsplit(':')
            .next()
            .expect("port in the URL")
            .to_string();
        let cmdline = std::fs::read_to_string(self.dir.path().join("kube-apiserver.cmdline"))
            .expect("kube-apiserver.cmdline (written by the script)");
        let args: Vec<String> = cmdline.lines().map(str::to_owned).collect();
        assert!(args.iter().any(|a| a == &port), "{args:?}");
        // Detached like the script does it (reparented to init, so no
        // zombie is left to this process when it is stopped).
        let log = self.dir.path().join("logs/kube-apiserver.log");
        let out = Command::new("sh")
            .arg("-c")
            .arg("log=\"$1\"; shift; setsid \"$@\" >>\"$log\" 2>&1 </dev/null & echo $!")
            .arg("sh")
            .arg(&log)
            .args(&args)
            .output()
            .expect("restart kube-apiserver");
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(pid.parse::<u32>().is_ok(), "no pid: {out:?}");
        std::fs::write(self.dir.path().join("kube-apiserver.pid"), pid).expect("pid file");
        self.wait_ready();
    }

    fn try_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let text = resp.text()?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// An admin request; panics unless it answers 2xx.
    pub fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self
            .try_request(method.clone(), path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        value
    }

    /// Creates a namespace (with labels and annotations) and its `default`
    /// ServiceAccount (no controller-manager runs to make it).
    pub fn create_namespace(&self, name: &str, labels: Value, annotations: Value) {
        self.request(
            reqwest::Method::POST,
            "/api/v1/namespaces",
            Some(
                &json!({"metadata": {"name": name, "labels": labels, "annotations": annotations}}),
            ),
        );
        self.request(
            reqwest::Method::POST,
            &format!("/api/v1/namespaces/{name}/serviceaccounts"),
            Some(&json!({"metadata": {"name": "default"}})),
        );
    }

    /// Creates a pod on `node` with one container `container`; returns the
    /// pod as stored (with its uid).
    pub fn create_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        container: &str,
        labels: Value,
        annotations: Value,
    ) -> Value {
        self.request(
            reqwest::Method::POST,
            &format!("/api/v1/namespaces/{namespace}/pods"),
            Some(&json!({
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": {
                    "nodeName": node,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": container, "image": "registry.example/app:1.0"}]
                }
            })),
        )
    }

    /// Merge-patches a pod's labels.
    pub fn label_pod(&self, namespace: &str, name: &str, labels: Value) -> Value {
        let resp = self
            .client
            .patch(format!(
                "{}/api/v1/namespaces/{namespace}/pods/{name}",
                self.url
            ))
            .bearer_auth(&self.admin_token)
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"metadata": {"labels": labels}}).to_string())
            .send()
            .expect("patch pod");
        let status = resp.status();
        let body: Value =
            serde_json::from_str(&resp.text().expect("patch response")).expect("patch JSON");
        assert!(status.is_success(), "patch pod {name}: {status} {body}");
        body
    }

    /// Deletes a pod at once (no kubelet: `gracePeriodSeconds=0`), which
    /// watchers see as a DELETED event.
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.request(
            reqwest::Method::DELETE,
            &format!("/api/v1/namespaces/{namespace}/pods/{name}"),
            Some(&json!({"gracePeriodSeconds": 0})),
        );
    }

    /// `kubectl` against this server as admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--server")
            .arg(&self.url)
            .arg("--token")
            .arg(&self.admin_token)
            .arg("--insecure-skip-tls-verify");
        cmd
    }

    /// Runs `kubectl ARGS` (admin); panics with its output unless it succeeds.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl().args(args).output().expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies the Namespace, ServiceAccount, ClusterRole and
    /// ClusterRoleBinding of `deploy/kubernetes/` (the ClusterRole as
    /// `role_yaml` if given: a test's modified copy) and returns a token of
    /// that ServiceAccount.
    pub fn install_rbac(&self, role_yaml: Option<&str>) -> String {
        let deploy = repo_root().join("deploy/kubernetes");
        for file in ["namespace.yaml", "serviceaccount.yaml"] {
            let path = deploy.join(file);
            self.kubectl_ok(&["apply", "-n", "logship", "-f", &path.to_string_lossy()]);
        }
        let role = match role_yaml {
            Some(yaml) => {
                let path = self.dir.path().join("clusterrole.yaml");
                std::fs::write(&path, yaml).expect("write role");
                path
            }
            None => deploy.join("clusterrole.yaml"),
        };
        self.kubectl_ok(&["apply", "-f", &role.to_string_lossy()]);
        self.kubectl_ok(&[
            "apply",
            "-f",
            &deploy.join("clusterrolebinding.yaml").to_string_lossy(),
        ]);
        let token = self.request(
            reqwest::Method::POST,
            "/api/v1/namespaces/logship/serviceaccounts/logship/token",
            Some(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 7200}}),
            ),
        );
        token["status"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {token}"))
            .to_string()
    }

    /// A kubeconfig for the agent: this server, its certificate as the CA,
    /// `token`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: logship\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: logship\n\
             current-context: test\n",
            self.url,
            self.ca.display()
        );
        let mut f = std::fs::File::create(path).expect("kubeconfig");
        f.write_all(text.as_bytes()).expect("write kubeconfig");
    }

    /// `apiserver_request_total` summed over codes for `verb` (`LIST`,
    /// `WATCH`, ...) and `resource` (`pods`, `namespaces`), from the
    /// server's own `/metrics` (reset when the server restarts).
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        let (status, body) = self
            .try_request(reqwest::Method::GET, "/metrics", None)
            .expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        let text = body.as_str().unwrap_or_default();
        let verb_label = format!("verb=\"{verb}\"");
        let resource_label = format!("resource=\"{resource}\"");
        text.lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
            .filter(|l| l.contains(&verb_label) && l.contains(&resource_label))
            .filter(|l| l.contains("subresource=\"\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Compacts etcd's history up to its current revision: a watch resumed
    /// from an older resourceVersion (with the watch cache off) gets 410 Gone.
    pub fn compact_etcd(&self) {
        let status = Command::new(etcdctl())
            .args([
                "--endpoints",
                &self.etcd_url,
                "endpoint",
                "status",
                "-w",
                "json",
            ])
            .output()
            .expect("etcdctl endpoint status");
        let parsed: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| {
            panic!(
                "etcdctl status: {e}: {}",
                String::from_utf8_lossy(&status.stdout)
            )
        });
        let revision = parsed[0]["Status"]["header"]["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("no revision in {parsed}"));
        let out = Command::new(etcdctl())
            .args([
                "--endpoints",
                &self.etcd_url,
                "compact",
                &revision.to_string(),
            ])
            .output()
            .expect("etcdctl compact");
        assert!(
            out.status.success(),
            "etcdctl compact {revision}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}
