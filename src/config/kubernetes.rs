//! The `kubernetes:` section: raw model, validated form, validation.
//!
//! ```yaml
//! kubernetes:
//!   mode: daemonset          # off (default; host mode) | daemonset | sidecar
//!   node_name: ${NODE_NAME}  # daemonset: whose pods to watch; default: top-level node_name
//!   metadata_wait: 5s        # how long a new file waits for its pod to be known
//!   metadata_sync_wait: 2m   # ... while the watch is down or re-listing (at least metadata_wait)
//!   watch_timeout: 290s      # server-side timeout of each watch request (then re-watched, not re-listed)
//!   delete_grace: 60s        # how long a deleted pod's metadata is kept
//!   dedot: true              # `.` → `_` in label and annotation keys
//!   kubeconfig: /path        # optional; default: in-cluster, then $KUBECONFIG / ~/.kube/config
//!   namespace_labels: false  # daemonset: add kubernetes.namespace_labels.* (namespaces are watched anyway)
//!   pod:                     # sidecar mode only: this pod, from the downward API
//!     name: ${POD_NAME}
//!     namespace: ${POD_NAMESPACE}
//!     uid: ${POD_UID}
//!     container: app         # the container whose logs this sidecar ships
//!     labels_file: /etc/podinfo/labels            # optional, downward API volume
//!     annotations_file: /etc/podinfo/annotations  # optional
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::humantime_serde_compat;
use super::size::deserialize_duration;
use super::validate::Invalid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubernetesMode {
    /// Host mode: no Kubernetes metadata.
    #[default]
    #[serde(alias = "host")]
    Off,
    Daemonset,
    Sidecar,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    #[serde(default)]
    pub mode: KubernetesMode,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(
        default = "default_metadata_wait",
        deserialize_with = "deserialize_duration"
    )]
    pub metadata_wait: Duration,
    #[serde(
        default = "default_metadata_sync_wait",
        deserialize_with = "deserialize_duration"
    )]
    pub metadata_sync_wait: Duration,
    #[serde(
        default = "default_watch_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub watch_timeout: Duration,
    #[serde(
        default = "default_delete_grace",
        deserialize_with = "deserialize_duration"
    )]
    pub delete_grace: Duration,
    #[serde(default = "default_dedot")]
    pub dedot: bool,
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub namespace_labels: bool,
    #[serde(default)]
    pub pod: Option<SidecarPod>,
}

impl Default for RawKubernetes {
    fn default() -> Self {
        RawKubernetes {
            mode: KubernetesMode::Off,
            node_name: None,
            metadata_wait: default_metadata_wait(),
            metadata_sync_wait: default_metadata_sync_wait(),
            watch_timeout: default_watch_timeout(),
            delete_grace: default_delete_grace(),
            dedot: default_dedot(),
            kubeconfig: None,
            namespace_labels: false,
            pod: None,
        }
    }
}

/// This pod, in sidecar mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarPod {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations_file: Option<PathBuf>,
}

/// The validated `kubernetes:` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubernetesConfig {
    pub mode: KubernetesMode,
    /// Node whose pods are watched (daemonset) or named (sidecar).
    pub node_name: String,
    #[serde(with = "humantime_serde_compat")]
    pub metadata_wait: Duration,
    /// How long a new file waits for its pod while the pod watch is not in
    /// sync (failing, or re-listing); at least `metadata_wait`.
    #[serde(with = "humantime_serde_compat")]
    pub metadata_sync_wait: Duration,
    /// `timeoutSeconds` of each watch request.
    #[serde(with = "humantime_serde_compat")]
    pub watch_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub delete_grace: Duration,
    pub dedot: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    pub namespace_labels: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<SidecarPod>,
}

impl KubernetesConfig {
    /// Host mode (no Kubernetes metadata) with every other key at its default.
    pub fn off(node_name: &str) -> Self {
        KubernetesConfig {
            mode: KubernetesMode::Off,
            node_name: node_name.to_owned(),
            metadata_wait: default_metadata_wait(),
            metadata_sync_wait: default_metadata_sync_wait(),
            watch_timeout: default_watch_timeout(),
            delete_grace: default_delete_grace(),
            dedot: default_dedot(),
            kubeconfig: None,
            namespace_labels: false,
            pod: None,
        }
    }
}

pub fn default_metadata_wait() -> Duration {
    Duration::from_secs(5)
}
pub fn default_metadata_sync_wait() -> Duration {
    Duration::from_secs(120)
}
/// kube-runtime's own default (the API server's is 30-60 min, randomised).
pub fn default_watch_timeout() -> Duration {
    Duration::from_secs(290)
}
pub fn default_delete_grace() -> Duration {
    Duration::from_secs(60)
}
pub fn default_dedot() -> bool {
    true
}

fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        key: format!("kubernetes.{key}"),
        message: message.into(),
    }
}

pub(super) fn validate(raw: RawKubernetes, node_name: &str) -> Result<KubernetesConfig, Invalid> {
    if raw.namespace_labels && raw.mode != KubernetesMode::Daemonset {
        return Err(invalid(
            "namespace_labels",
            "only used in daemonset mode (namespace labels come from the API server)",
        ));
    }
    let node_name = match raw.node_name {
        Some(n) if n.trim().is_empty() => {
            return Err(invalid(
                "node_name",
                "must not be empty (leave it out to use the top-level node_name)",
            ));
        }
        Some(n) => n,
        None => node_name.to_owned(),
    };
    match raw.mode {
        KubernetesMode::Sidecar => {
            let Some(pod) = &raw.pod else {
                return Err(invalid(
                    "pod",
                    "sidecar mode needs pod: {name, namespace} (e.g. from the downward API)",
                ));
            };
            if pod.name.trim().is_empty() {
                return Err(invalid("pod.name", "must not be empty"));
            }
            if pod.namespace.trim().is_empty() {
                return Err(invalid("pod.namespace", "must not be empty"));
            }
        }
        _ if raw.pod.is_some() => {
            return Err(invalid("pod", "only used in sidecar mode"));
        }
        _ => {}
    }
    if raw.kubeconfig.is_some() && raw.mode != KubernetesMode::Daemonset {
        return Err(invalid("kubeconfig", "only used in daemonset mode"));
    }
    if raw.metadata_sync_wait < raw.metadata_wait {
        return Err(invalid(
            "metadata_sync_wait",
            format!(
                "must be at least metadata_wait ({}): it is how long a file waits for its pod while the watch is not in sync",
                humantime::format_duration(raw.metadata_wait)
            ),
        ));
    }
    if raw.watch_timeout < Duration::from_secs(1) || raw.watch_timeout > Duration::from_secs(3600) {
        return Err(invalid(
            "watch_timeout",
            "must be between 1s and 1h (whole seconds are sent to the API server)",
        ));
    }
    Ok(KubernetesConfig {
        mode: raw.mode,
        node_name,
        metadata_wait: raw.metadata_wait,
        metadata_sync_wait: raw.metadata_sync_wait,
        watch_timeout: raw.watch_timeout,
        delete_grace: raw.delete_grace,
        dedot: raw.dedot,
        kubeconfig: raw.kubeconfig,
        namespace_labels: raw.namespace_labels,
        pod: raw.pod,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "node_name: n1\nsources: [{name: s, include: [\"/x/*.log\"]}]\nsink: {elasticsearch: {hosts: [\"http://127.0.0.1:9200\"]}}\n";

    fn load(section: &str) -> Result<crate::config::Config, String> {
        crate::config::load_str(Path::new("t.yaml"), &format!("{BASE}{section}"), |_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_section_is_host_mode_with_defaults() {
        let k = load("").unwrap().kubernetes;
        assert_eq!(k.mode, KubernetesMode::Off);
        assert_eq!(k.node_name, "n1");
        assert_eq!(k.metadata_wait, default_metadata_wait());
        assert_eq!(k.delete_grace, default_delete_grace());
        assert!(k.dedot);
    }

    #[test]
    fn daemonset_settings() {
        let k = load("kubernetes: {mode: daemonset, node_name: n2, metadata_wait: 2s, delete_grace: 5m, dedot: false, kubeconfig: /k}")
            .unwrap()
            .kubernetes;
        assert_eq!(k.mode, KubernetesMode::Daemonset);
        assert_eq!(k.node_name, "n2");
        assert_eq!(k.metadata_wait, Duration::from_secs(2));
        assert_eq!(k.metadata_sync_wait, default_metadata_sync_wait());
        assert_eq!(k.watch_timeout, default_watch_timeout());
        assert_eq!(k.delete_grace, Duration::from_secs(300));
        assert!(!k.dedot);
        assert_eq!(k.kubeconfig.as_deref(), Some(Path::new("/k")));
        assert!(!k.namespace_labels, "off by default");
        let k = load("kubernetes: {mode: daemonset, namespace_labels: true}")
            .unwrap()
            .kubernetes;
        assert!(k.namespace_labels);
    }

    #[test]
    fn unimplemented_and_inconsistent_keys_are_rejected_by_name() {
        for (section, key) in [
            (
                "kubernetes: {mode: sidecar, namespace_labels: true, pod: {name: a, namespace: b}}",
                "kubernetes.namespace_labels",
            ),
            (
                "kubernetes: {namespace_labels: true}",
                "kubernetes.namespace_labels",
            ),
            ("kubernetes: {mode: sidecar}", "kubernetes.pod"),
            (
                "kubernetes: {mode: daemonset, pod: {name: a, namespace: b}}",
                "kubernetes.pod",
            ),
            (
                "kubernetes: {mode: sidecar, pod: {name: '', namespace: b}}",
                "kubernetes.pod.name",
            ),
            ("kubernetes: {kubeconfig: /k}", "kubernetes.kubeconfig"),
            ("kubernetes: {mode: daemon}", "kubernetes.mode"),
            ("kubernetes: {mode: daemonset, format: json}", "format"),
            (
                "kubernetes: {mode: daemonset, metadata_wait: 10s, metadata_sync_wait: 5s}",
                "kubernetes.metadata_sync_wait",
            ),
            (
                "kubernetes: {mode: daemonset, watch_timeout: 500ms}",
                "kubernetes.watch_timeout",
            ),
            (
                "kubernetes: {mode: daemonset, watch_timeout: 2h}",
                "kubernetes.watch_timeout",
            ),
        ] {
            let err = load(section).unwrap_err();
            assert!(err.contains(key), "{section}: {err}");
        }
    }
}
