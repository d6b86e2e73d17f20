//! Kubernetes metadata: which pod a file belongs to, and that pod's fields.
//!
//! Owns the `kubernetes.*` and `container.*` parts of documents. Three modes
//! (`kubernetes.mode`):
//! - `daemonset`: [`cache::run_pod_watch`] keeps a node-local [`PodCache`]
//!   fed by ONE list+watch of this node's pods; a follower parses its file's
//!   path into a [`PodRef`] and looks the pod up by uid, waiting up to
//!   `metadata_wait` for a pod that is not there yet ([`Enricher`]). There is
//!   never an API request per pod, per file or per line.
//! - `sidecar`: the pod is this pod, described by the config (filled from the
//!   downward API via `${ENV}` and a labels file); no API server at all.
//! - `off` (host mode): no Kubernetes fields.
//!
//! Metadata is serialised once per file ([`PodInfo::fragment`]) and spliced
//! into every document of that file by the encoder. A pod annotated
//! `logship.io/exclude: "true"`, or `logship.io/exclude-containers: a,b`
//! naming the file's container, has its files not read at all ([`excluded`];
//! decided when a file is first followed, daemonset mode only). Does not read
//! files, exclude by namespace annotation, or parse JSON messages
//! (`logship.io/format` is not implemented).

pub mod cache;
pub mod metadata;
pub mod pod_ref;
pub mod sidecar;

use std::sync::Arc;
use std::time::Duration;

use crate::config::kubernetes::{KubernetesConfig, KubernetesMode};

pub use cache::{PodCache, run_pod_watch};
pub use metadata::{ContainerInfo, PodInfo};
pub use pod_ref::PodRef;

/// What a follower asks for its file's metadata.
#[derive(Clone)]
pub enum Enricher {
    /// Host mode: nothing to add.
    Off,
    /// DaemonSet mode: look the file's pod up in the cache.
    Cache {
        cache: Arc<PodCache>,
        wait: Duration,
        dedot: bool,
    },
    /// Sidecar mode: the same members for every file (already serialised).
    Static(Arc<[u8]>),
}

/// The outcome of resolving one file's metadata.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Members to splice into the file's documents (may be empty).
    Fragment(Vec<u8>),
    /// A pod log whose pod is not (yet) in the cache.
    Missing(PodRef),
    /// The pod's annotations exclude this file's logs (see [`excluded`]).
    Excluded(PodRef),
}

/// Pod annotation: `"true"` drops all of the pod's logs.
pub const EXCLUDE_ANNOTATION: &str = "logship.io/exclude";
/// Pod annotation: comma-separated container names whose logs are dropped.
pub const EXCLUDE_CONTAINERS_ANNOTATION: &str = "logship.io/exclude-containers";

/// Whether `pod`'s annotations exclude the logs of `container`.
pub fn excluded(pod: &PodInfo, container: &str) -> bool {
    let annotation = |key: &str| pod.annotations.get(key).map(|v| v.trim());
    annotation(EXCLUDE_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || annotation(EXCLUDE_CONTAINERS_ANNOTATION)
            .is_some_and(|list| list.split(',').any(|c| c.trim() == container))
}

impl Enricher {
    /// The pod cache (daemonset mode), for `/metrics`.
    pub fn pod_cache(&self) -> Option<Arc<PodCache>> {
        match self {
            Enricher::Cache { cache, .. } => Some(cache.clone()),
            Enricher::Off | Enricher::Static(_) => None,
        }
    }

    /// Metadata for the file at `path`, waiting at most `wait` (daemonset
    /// mode) for its pod to appear.
    pub async fn resolve(&self, path: &std::path::Path) -> Resolved {
        match self {
            Enricher::Off => Resolved::Fragment(Vec::new()),
            Enricher::Static(f) => Resolved::Fragment(f.to_vec()),
            Enricher::Cache { cache, wait, dedot } => {
                let Some(pod_ref) = PodRef::from_path(path) else {
                    return Resolved::Fragment(Vec::new());
                };
                match cache.wait_for(&pod_ref.uid, *wait).await {
                    Some(pod) if excluded(&pod, &pod_ref.container) => Resolved::Excluded(pod_ref),
                    Some(pod) => Resolved::Fragment(pod.fragment(&pod_ref.container, *dedot)),
                    None => Resolved::Missing(pod_ref),
                }
            }
        }
    }

    /// Like [`Enricher::resolve`] for a pod that was missing, without waiting.
    pub fn retry(&self, pod_ref: &PodRef) -> Option<Vec<u8>> {
        match self {
            Enricher::Cache { cache, dedot, .. } => cache
                .get(&pod_ref.uid)
                .map(|pod| pod.fragment(&pod_ref.container, *dedot)),
            _ => None,
        }
    }
}

/// The metadata client could not be set up (daemonset mode) or the
/// downward-API files not read (sidecar mode).
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("kubernetes.kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes client configuration (not in a cluster, no KUBECONFIG): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    DownwardApi(#[from] sidecar::DownwardApiError),
}

/// Builds the enricher for `config`; in daemonset mode also spawns the one
/// pod watch (which runs until `shutdown`). Does not contact the API server:
/// an unreachable server is retried in the background.
pub async fn start(
    config: &KubernetesConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(Enricher, Option<tokio::task::JoinHandle<()>>), K8sError> {
    match config.mode {
        KubernetesMode::Off => Ok((Enricher::Off, None)),
        KubernetesMode::Sidecar => {
            let fragment = sidecar::sidecar_fragment(config)?.unwrap_or_default();
            Ok((Enricher::Static(fragment.into()), None))
        }
        KubernetesMode::Daemonset => {
            let client_config = match &config.kubeconfig {
                Some(path) => {
                    let kubeconfig =
                        kube::config::Kubeconfig::read_from(path).map_err(|source| {
                            K8sError::Kubeconfig {
                                path: path.display().to_string(),
                                source,
                            }
                        })?;
                    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                        .await
                        .map_err(|source| K8sError::Kubeconfig {
                            path: path.display().to_string(),
                            source,
                        })?
                }
                None => kube::Config::infer().await?,
            };
            let client = kube::Client::try_from(client_config)?;
            let cache = Arc::new(PodCache::new(config.delete_grace));
            tracing::info!(node = %config.node_name, "watching this node's pods for metadata");
            let task = tokio::spawn(run_pod_watch(
                client,
                config.node_name.clone(),
                cache.clone(),
                shutdown,
            ));
            Ok((
                Enricher::Cache {
                    cache,
                    wait: config.metadata_wait,
                    dedot: config.dedot,
                },
                Some(task),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn exclusion_annotations() {
        assert!(!excluded(&pod(&[]), "app"));
        assert!(excluded(&pod(&[(EXCLUDE_ANNOTATION, "true")]), "app"));
        assert!(!excluded(&pod(&[(EXCLUDE_ANNOTATION, "false")]), "app"));
        let p = pod(&[(EXCLUDE_CONTAINERS_ANNOTATION, "istio-proxy, app2")]);
        assert!(excluded(&p, "istio-proxy"));
        assert!(excluded(&p, "app2"));
        assert!(!excluded(&p, "app"));
    }
}
