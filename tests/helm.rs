//! The Helm chart (`deploy/helm/logship`) works as shipped: `helm lint`
//! accepts it with its default values and with every values file in its
//! `ci/` folder; with the defaults it renders the kustomize base's objects
//! (`deploy/kubernetes`) but for the differences its README lists, the
//! logship config included; non-default values land where they must (env
//! from the Secret, the disk buffer's volume, the extra source in the parsed
//! config, the ServiceMonitor on the Service's port, the PrometheusRule with
//! `deploy/prometheus/alerts.yaml`'s rules); and a real kube-apiserver
//! (`scripts/kube-apiserver.sh start`) accepts every rendering in a
//! server-side dry run, admission and schema validation included.
//!
//! helm, kube-apiserver and etcd come from `scripts/kube-apiserver.sh fetch`
//! (built once from the Go module proxy, cached outside the repository).
//! Without them these tests fail; they never skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};

const LOGSHIP_BIN: &str = env!("CARGO_BIN_EXE_logship");

/// The label keys Helm's convention adds to every object; the kustomize base
/// has only `app.kubernetes.io/name`.
const HELM_ONLY_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
];
/// The selector label the chart adds (two releases never select each
/// other's pods).
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// The pod annotation that rolls the DaemonSet when the config changes.
const CONFIG_CHECKSUM: &str = "checksum/config";
/// The values file with every optional part on.
const ALL_ON_VALUES: &str = "ci/all-on-values.yaml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/logship")
}

fn script() -> PathBuf {
    repo().join("scripts/kube-apiserver.sh")
}

/// The directory `scripts/kube-apiserver.sh fetch` prints (it builds what
/// is missing there first), once per test binary.
fn k8s_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(script())
            .arg("fetch")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
        assert!(
            out.status.success(),
            "`scripts/kube-apiserver.sh fetch` failed ({}): helm, kube-apiserver and etcd \
             are needed by these tests; run it by hand to see why\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            dir.is_dir(),
            "`scripts/kube-apiserver.sh fetch` printed {dir:?}, not a directory"
        );
        dir
    })
}

/// The helm the script builds: `helm-$LOGSHIP_HELM_VERSION`, or the
/// script's default version.
fn helm() -> PathBuf {
    let version = std::env::var("LOGSHIP_HELM_VERSION").unwrap_or_else(|_| {
        let text = std::fs::read_to_string(script()).expect("read scripts/kube-apiserver.sh");
        let prefix = "HELM_VERSION=\"${LOGSHIP_HELM_VERSION:-";
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .expect("scripts/kube-apiserver.sh sets HELM_VERSION=\"${LOGSHIP_HELM_VERSION:-…}\"");
        line.trim_end_matches("}\"").to_string()
    });
    let helm = k8s_bin_dir().join(format!("helm-{version}"));
    assert!(
        helm.is_file(),
        "{} is missing: run `scripts/kube-apiserver.sh fetch`",
        helm.display()
    );
    helm
}

/// Runs `command`, panics with its stderr unless it succeeds; returns stdout.
fn run(command: &mut Command) -> String {
    let out = output(command);
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `helm template RELEASE deploy/helm/logship -n NAMESPACE -f VALUES...`.
fn helm_template_text(release: &str, namespace: &str, values: &[&str]) -> String {
    let mut command = Command::new(helm());
    command
        .args(["template", release])
        .arg(chart())
        .args(["--namespace", namespace]);
    for file in values {
        command.arg("--values").arg(chart().join(file));
    }
    run(&mut command)
}

fn helm_template(release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    yaml_documents(&helm_template_text(release, namespace, values))
}

fn kustomize() -> Vec<Value> {
    let text = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes")));
    yaml_documents(&text)
}

fn key(object: &Value) -> (String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (text(&object["kind"]), text(&object["metadata"]["name"]))
}

fn by_key(objects: Vec<Value>) -> BTreeMap<(String, String), Value> {
    let mut map = BTreeMap::new();
    for object in objects {
        let k = key(&object);
        assert!(map.insert(k.clone(), object).is_none(), "{k:?} twice");
    }
    map
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// The logship config of a rendered ConfigMap, parsed.
fn config_of(configmap: &Value) -> Value {
    let text = configmap["data"]["logship.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("no data.logship.yaml in {configmap:#}"));
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("logship.yaml: {e}\n{text}"))
}

/// `logship check-config` on `configmap`'s config, with the environment
/// the DaemonSet gives it (`env`), but ELASTICSEARCH_URL unset: the config's
/// own default must do.
fn check_config(configmap: &Value, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("logship.yaml");
    std::fs::write(&path, configmap["data"]["logship.yaml"].as_str().unwrap()).unwrap();
    let out = output(
        Command::new(LOGSHIP_BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .env_remove("ELASTICSEARCH_URL")
            .envs(env.iter().copied()),
    );
    assert!(
        out.status.success(),
        "logship check-config refuses the chart's config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where `a` and `b` first differ, as a path (`.spec.template...`).
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let null = Value::Null;
                first_difference(
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    &format!("{at}.{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

fn remove_keys(map: &mut Value, keys: &[&str]) {
    if let Some(object) = map.as_object_mut() {
        for k in keys {
            object.remove(*k);
        }
    }
}

/// Undoes, on a chart-rendered object, exactly the differences from the
/// kustomize base that deploy/helm/logship/README.md lists; parses the
/// config of either side's ConfigMap.
fn normalise(mut object: Value, from_helm: bool) -> Value {
    if object["kind"] == "ConfigMap" {
        let config = config_of(&object);
        object["data"]["logship.yaml"] = config;
    }
    if !from_helm {
        return object;
    }
    remove_keys(&mut object["metadata"]["labels"], &HELM_ONLY_LABELS);
    match object["kind"].as_str() {
        Some("DaemonSet") => {
            remove_keys(
                &mut object["spec"]["selector"]["matchLabels"],
                &[INSTANCE_LABEL],
            );
            let pod_meta = &mut object["spec"]["template"]["metadata"];
            remove_keys(&mut pod_meta["labels"], &[INSTANCE_LABEL]);
            remove_keys(&mut pod_meta["annotations"], &[CONFIG_CHECKSUM]);
            if pod_meta["annotations"] == json!({}) {
                remove_keys(pod_meta, &["annotations"]);
            }
        }
        Some("Service") => remove_keys(&mut object["spec"]["selector"], &[INSTANCE_LABEL]),
        _ => {}
    }
    object
}

#[test]
fn lint_accepts_the_defaults_and_every_ci_values_file() {
    let lint = |values: Option<&Path>| {
        let mut command = Command::new(helm());
        command.args(["lint", "--strict"]).arg(chart());
        if let Some(file) = values {
            command.arg("--values").arg(file);
        }
        run(&mut command);
    };
    lint(None);
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .expect("deploy/helm/logship/ci")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with(ALL_ON_VALUES)),
        "{ALL_ON_VALUES} is linted: {files:?}"
    );
    for file in &files {
        lint(Some(file));
    }
}

#[test]
fn values_outside_the_schema_are_refused_naming_the_key() {
    for (set, key) in [
        ("buffer.type=tape", "/buffer/type"),
        ("elasticsearch.auth.type=token", "/elasticsearch/auth/type"),
        ("elasticsearch.hosts[0]=es:9200", "/elasticsearch/hosts/0"),
    ] {
        let out = output(
            Command::new(helm())
                .args(["template", "logship"])
                .arg(chart())
                .args(["--set", set]),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(key),
            "--set {set} must be refused naming {key}: {}\n{stderr}",
            out.status
        );
    }
}

#[test]
fn defaults_render_the_kustomize_base() {
    let mut base = by_key(kustomize());
    let namespace = base
        .remove(&("Namespace".to_string(), "logship".to_string()))
        .expect("the kustomize base has the Namespace logship");
    let namespace = namespace["metadata"]["name"].as_str().unwrap().to_string();
    let chart = by_key(helm_template("logship", &namespace, &[]));

    let base_keys: Vec<_> = base.keys().collect();
    let chart_keys: Vec<_> = chart.keys().collect();
    assert_eq!(
        chart_keys, base_keys,
        "the chart's objects (left) are the kustomize base's but its Namespace (right)"
    );
    for (k, kustomized) in base {
        let helm_rendered = chart[&k].clone();
        let (ours, theirs) = (normalise(helm_rendered, true), normalise(kustomized, false));
        if let Some(difference) = first_difference(&ours, &theirs, "") {
            panic!(
                "{k:?} differs from the kustomize base (chart vs base) beyond the documented \
                 differences at {difference}\nchart: {ours:#}\nbase: {theirs:#}"
            );
        }
    }

    // The documented differences are really there (and nothing else moved).
    let ds = &chart[&("DaemonSet".to_string(), "logship".to_string())];
    assert!(ds["metadata"]["labels"]["helm.sh/chart"].is_string());
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"][INSTANCE_LABEL],
        "logship"
    );
    assert!(ds["spec"]["template"]["metadata"]["annotations"][CONFIG_CHECKSUM].is_string());

    let configmap = &chart[&("ConfigMap".to_string(), "logship".to_string())];
    let effective = check_config(configmap, &[("NODE_NAME", "node-1")]);
    assert!(
        effective.contains("node-1"),
        "NODE_NAME is used: {effective}"
    );
}

#[test]
fn chart_app_version_is_logships() {
    let chart_yaml = read_yaml(&chart().join("Chart.yaml"));
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"));
    let objects = helm_template("logship", "logship", &[]);
    let container = &one(&objects, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap();
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "{image}"
    );
}

/// The container named `logship` of the DaemonSet.
fn agent_container(ds: &Value) -> &Value {
    ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "logship")
        .expect("a container named logship")
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no {name:?} in {list:#}"))
}

/// The volume mounted at `dir` in `container` (the mount, the volume).
fn volume_at<'a>(pod: &'a Value, container: &'a Value, dir: &str) -> (&'a Value, &'a Value) {
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir}: {:#}", container["volumeMounts"]));
    let volume = named(&pod["volumes"], mount["name"].as_str().unwrap());
    (mount, volume)
}

fn parent(path: &Value) -> String {
    let path = Path::new(
        path.as_str()
            .unwrap_or_else(|| panic!("not a path: {path}")),
    );
    path.parent().unwrap().display().to_string()
}

/// Where the file the config names at `file` comes from, as
/// `{"secret"|"configMap": NAME, "key": KEY}`: the volume mounted (read-only)
/// at its directory, and that volume's item whose path is its file name.
fn file_source(pod: &Value, container: &Value, file: &Value) -> Value {
    let (mount, volume) = volume_at(pod, container, &parent(file));
    assert_eq!(mount["readOnly"], true, "{mount}");
    let file_name = Path::new(file.as_str().unwrap()).file_name().unwrap();
    let (kind, source) = if volume["secret"].is_object() {
        ("secret", &volume["secret"]["secretName"])
    } else {
        ("configMap", &volume["configMap"]["name"])
    };
    let items = volume[kind]["items"].as_array().unwrap();
    let item = items
        .iter()
        .find(|i| i["path"].as_str().map(Path::new) == Some(Path::new(file_name)))
        .unwrap_or_else(|| panic!("no item of {volume} is the config's {file}"));
    json!({kind: source, "key": item["key"]})
}

#[test]
fn non_default_values_land_where_they_must() {
    let values = read_yaml(&chart().join(ALL_ON_VALUES));
    let (release, namespace) = ("ship", "observability");
    let objects = helm_template(release, namespace, &[ALL_ON_VALUES]);
    for object in &objects {
        if object["kind"] != "ClusterRole" && object["kind"] != "ClusterRoleBinding" {
            assert_eq!(
                object["metadata"]["namespace"],
                namespace,
                "{:?}",
                key(object)
            );
        }
    }
    let configmap = one(&objects, "ConfigMap");
    let config = config_of(configmap);
    let ds = one(&objects, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let container = agent_container(ds);
    let env = &container["env"];
    let es = &values["elasticsearch"];
    let sink = &config["sink"]["elasticsearch"];

    // Hosts: all of them, the first through ELASTICSEARCH_URL.
    let hosts = es["hosts"].as_array().unwrap();
    assert_eq!(sink["hosts"].as_array().unwrap().len(), hosts.len());
    assert_eq!(
        sink["hosts"][0],
        format!("${{ELASTICSEARCH_URL:-{}}}", hosts[0].as_str().unwrap())
    );
    assert_eq!(named(env, "ELASTICSEARCH_URL")["value"], hosts[0]);
    assert_eq!(sink["index"], es["index"]);

    // Credentials: the username from the Secret as an env var the config
    // interpolates, the password a file from the same Secret.
    let auth = &es["auth"];
    let username = &named(env, "ELASTICSEARCH_USERNAME")["valueFrom"]["secretKeyRef"];
    assert_eq!(
        username,
        &json!({"name": auth["existingSecret"], "key": auth["usernameKey"]})
    );
    let basic = &sink["auth"]["basic"];
    assert_eq!(basic["username"], "${ELASTICSEARCH_USERNAME}");
    assert_eq!(
        file_source(pod, container, &basic["password_file"]),
        json!({"secret": auth["existingSecret"], "key": auth["passwordKey"]})
    );

    // The CA from the ConfigMap, at the config's tls.ca_file.
    let ca = &es["tls"]["ca"];
    assert_eq!(
        file_source(pod, container, &sink["tls"]["ca_file"]),
        json!({"configMap": ca["configMapName"], "key": ca["key"]})
    );

    // The disk buffer: in the config, on a host directory of its own under
    // data_dir (the init container hands it to the agent's user), the data
    // directory itself on hostDataDir.
    let buffer = &values["buffer"];
    assert_eq!(config["buffer"]["type"], "disk");
    assert_eq!(config["buffer"]["max_bytes"], buffer["maxBytes"]);
    let data_dir = config["data_dir"].as_str().unwrap();
    let buffer_dir = format!("{data_dir}/buffer");
    let (mount, volume) = volume_at(pod, container, &buffer_dir);
    assert_ne!(mount["readOnly"], true);
    assert_eq!(volume["hostPath"]["path"], buffer["hostPath"]);
    let (mount, volume) = volume_at(pod, container, data_dir);
    assert_ne!(mount["readOnly"], true);
    assert_eq!(volume["hostPath"]["path"], values["hostDataDir"]);
    let init = named(&pod["initContainers"], "data-dir-owner");
    let chowned = &init["command"];
    for dir in [data_dir, buffer_dir.as_str()] {
        assert!(
            chowned.as_array().unwrap().iter().any(|a| a == dir),
            "{chowned}"
        );
        volume_at(pod, init, dir);
    }

    // The extra source, appended to the built-in ones as written.
    let sources = config["sources"].as_array().unwrap();
    let extra = values["extraSources"].as_array().unwrap();
    assert_eq!(&sources[sources.len() - extra.len()..], extra.as_slice());
    assert!(sources.len() > extra.len(), "the built-in sources stay");

    // Scheduling and pod values.
    for (field, value) in [
        ("tolerations", "tolerations"),
        ("nodeSelector", "nodeSelector"),
        ("priorityClassName", "priorityClassName"),
    ] {
        assert_eq!(pod[field], values[value], "{field}");
    }
    for (k, v) in values["podAnnotations"].as_object().unwrap() {
        assert_eq!(&ds["spec"]["template"]["metadata"]["annotations"][k], v);
    }
    let extra_env = &values["extraEnv"][0];
    assert_eq!(named(env, extra_env["name"].as_str().unwrap()), extra_env);
    assert_eq!(
        container["image"],
        format!(
            "{}:{}",
            values["image"]["repository"].as_str().unwrap(),
            values["image"]["tag"].as_str().unwrap()
        )
    );

    // One port, everywhere: http.listen, the container, the Service, the
    // ServiceMonitor's endpoint (by the Service port's name).
    let port = &values["httpPort"];
    assert!(
        config["http"]["listen"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{port}"))
    );
    assert_eq!(named(&container["ports"], "http")["containerPort"], *port);
    let service = one(&objects, "Service");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"], *port);
    assert_eq!(service_port["targetPort"], "http");
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/port"],
        port.to_string()
    );
    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service_port["name"]
    );
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service"
        );
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([namespace])
    );
    for (kind, object) in [
        ("ServiceMonitor", monitor),
        ("PrometheusRule", one(&objects, "PrometheusRule")),
    ] {
        let wanted = &values[if kind == "ServiceMonitor" {
            "serviceMonitor"
        } else {
            "prometheusRule"
        }]["labels"];
        for (k, v) in wanted.as_object().unwrap() {
            assert_eq!(&object["metadata"]["labels"][k], v, "{kind} label {k}");
        }
    }

    // The alert rules are deploy/prometheus/alerts.yaml's.
    let alerts = read_yaml(&repo().join("deploy/prometheus/alerts.yaml"));
    assert_eq!(
        one(&objects, "PrometheusRule")["spec"],
        alerts,
        "the PrometheusRule's spec is deploy/prometheus/alerts.yaml (copy it to deploy/helm/logship/files/)"
    );

    // RBAC for this release's ServiceAccount, in this namespace.
    let binding = one(&objects, "ClusterRoleBinding");
    let account = one(&objects, "ServiceAccount");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": namespace})
    );
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(
        binding["roleRef"]["name"],
        one(&objects, "ClusterRole")["metadata"]["name"]
    );

    let effective = check_config(
        configmap,
        &[
            ("NODE_NAME", "node-1"),
            ("ELASTICSEARCH_USERNAME", "shipper"),
        ],
    );
    assert!(effective.contains("shipper"), "{effective}");
}

#[test]
fn api_key_values_mount_the_key_and_use_an_existing_account() {
    let file = "ci/api-key-values.yaml";
    let values = read_yaml(&chart().join(file));
    let objects = helm_template("logship", "logship", &[file]);
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for absent in ["ClusterRole", "ClusterRoleBinding", "ServiceAccount"] {
        assert!(!kinds.contains(&absent), "{absent} rendered: {kinds:?}");
    }
    let config = config_of(one(&objects, "ConfigMap"));
    let sink = &config["sink"]["elasticsearch"];
    assert!(sink["auth"]["basic"].is_null(), "{sink:#}");
    let ds = one(&objects, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let container = agent_container(ds);
    assert_eq!(pod["serviceAccountName"], values["serviceAccount"]["name"]);
    // Keys the values file leaves out are values.yaml's.
    let defaults = read_yaml(&chart().join("values.yaml"));
    let (auth, default_auth) = (
        &values["elasticsearch"]["auth"],
        &defaults["elasticsearch"]["auth"],
    );
    assert!(auth["apiKeyKey"].is_null() && default_auth["apiKeyKey"].is_string());
    assert_eq!(
        file_source(pod, container, &sink["auth"]["api_key_file"]),
        json!({"secret": auth["existingSecret"], "key": default_auth["apiKeyKey"]})
    );
    assert_eq!(
        file_source(pod, container, &sink["tls"]["ca_file"]),
        json!({"secret": values["elasticsearch"]["tls"]["ca"]["secretName"],
               "key": defaults["elasticsearch"]["tls"]["ca"]["key"]})
    );
    let env = container["env"].as_array().unwrap();
    assert!(!env.iter().any(|e| e["name"] == "ELASTICSEARCH_USERNAME"));
}

/// A kube-apiserver + etcd from `scripts/kube-apiserver.sh start DIR`,
/// stopped (`stop DIR`) when dropped, on a panic too.
struct ApiServer {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl ApiServer {
    fn start() -> ApiServer {
        k8s_bin_dir(); // fetched, or a failure naming the fetch
        let dir = tempfile::Builder::new()
            .prefix("logship-kube-")
            .tempdir()
            .expect("temp dir");
        let out = output(Command::new(script()).arg("start").arg(dir.path()));
        // From here on Drop stops whatever did start.
        let server = ApiServer {
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
        };
        assert!(
            out.status.success(),
            "`scripts/kube-apiserver.sh start` failed (run `scripts/kube-apiserver.sh fetch` \
             if binaries are missing):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env_text = std::fs::read_to_string(server.dir.path().join("env")).expect("DIR/env");
        let env: BTreeMap<&str, &str> =
            env_text.lines().filter_map(|l| l.split_once('=')).collect();
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": env["KUBE_URL"], "certificate-authority": env["KUBE_CA"]}}],
            "users": [{"name": "admin", "user": {"token": env["KUBE_TOKEN"]}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        });
        std::fs::write(&server.kubeconfig, kubeconfig.to_string()).unwrap();
        server
    }

    fn kubectl(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// `kubectl apply -f -` of `manifests` (`--dry-run=server` when `dry_run`).
    fn apply(&self, manifests: &str, dry_run: bool) -> String {
        let file = self.dir.path().join("manifests.yaml");
        std::fs::write(&file, manifests).unwrap();
        let mut command = self.kubectl();
        command.args(["apply", "-f"]).arg(&file);
        if dry_run {
            command.arg("--dry-run=server");
        }
        run(&mut command)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Just enough of the Prometheus Operator's CRDs for the API server to
/// accept a ServiceMonitor and a PrometheusRule (a bare kube-apiserver has
/// neither): the group, version, kind and scope are real, the schema is
/// not checked (`x-kubernetes-preserve-unknown-fields`).
fn minimal_monitoring_crds() -> String {
    [
        ("servicemonitors", "ServiceMonitor", "servicemonitor"),
        ("prometheusrules", "PrometheusRule", "prometheusrule"),
    ]
    .iter()
    .map(|(plural, kind, singular)| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"plural": plural, "singular": singular, "kind": kind,
                          "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}],
            },
        })
    })
    .map(|crd| serde_yaml_ng::to_string(&crd).expect("CRD as YAML"))
    .collect::<Vec<_>>()
    .join("---\n")
}

#[test]
fn rendered_output_passes_a_server_side_dry_run() {
    let server = ApiServer::start();
    let renderings = [
        ("logship", "logship", ""),
        ("ship", "observability", ALL_ON_VALUES),
        ("keyed", "logship", "ci/api-key-values.yaml"),
    ];
    // The namespaces exist for real (the chart creates none).
    for (_, namespace, _) in &renderings {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        server.apply(&ns.to_string(), false);
    }
    server.apply(&minimal_monitoring_crds(), false);
    run(server.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ]));

    for (release, namespace, values) in renderings {
        let files: Vec<&str> = [values].into_iter().filter(|v| !v.is_empty()).collect();
        let manifests = helm_template_text(release, namespace, &files);
        let rendered = yaml_documents(&manifests);
        let applied = server.apply(&manifests, true);
        for object in &rendered {
            let (kind, name) = key(object);
            // `daemonset.apps/logship created (server dry run)`
            let kind = kind.to_lowercase();
            let accepted = applied.lines().any(|l| {
                l.strip_suffix(" created (server dry run)")
                    .and_then(|r| r.split_once('/'))
                    .is_some_and(|(resource, n)| {
                        n == name && resource.split('.').next() == Some(kind.as_str())
                    })
            });
            assert!(
                accepted,
                "{release} ({values:?}): {kind}/{name} not created in the dry run:\n{applied}"
            );
        }
    }
}
