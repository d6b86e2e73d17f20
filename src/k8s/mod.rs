//! Kubernetes metadata: which pod a file belongs to, and that pod's fields.
//!
//! Owns the `kubernetes.*` and `container.*` parts of documents, and the
//! per-pod controls read from annotations. Three modes (`kubernetes.mode`):
//! - `daemonset`: [`cache::run_pod_watch`] keeps a node-local [`PodCache`]
//!   fed by ONE list+watch of this node's pods, and
//!   [`cache::run_namespace_watch`] a [`NamespaceCache`] fed by ONE
//!   list+watch of namespaces (for the namespace exclusion annotation and,
//!   with `namespace_labels: true`, `kubernetes.namespace_labels.*`). A
//!   follower parses its file's path into a [`PodRef`] and looks the pod up
//!   by uid, then its namespace by name, waiting up to `metadata_wait` in
//!   all for them to appear ([`Enricher`]). There is never an API request
//!   per pod, per file or per line.
//! - `sidecar`: the pod is this pod, described by the config (filled from the
//!   downward API via `${ENV}` and labels/annotations files); no API server
//!   at all. `logship.io/format` applies, exclusion does not.
//! - `off` (host mode): no Kubernetes fields.
//!
//! Metadata are serialised per file ([`PodInfo::fragment`]) and spliced
//! into every document of that file by the encoder; when the file's pod or
//! namespace changes in the cache, the follower asks [`Enricher::refresh`]
//! for new ones (labels, annotations, `format`, `drop` follow the pod). A
//! file waits for its pod up to `metadata_wait`, or `metadata_sync_wait`
//! while the watch is not in sync ([`MetadataCache::wait_synced`]). The
//! `exclude*` and `multiline` annotations are read once, when a file is
//! first followed. The annotations:
//! - `logship.io/exclude: "true"` on the pod, or on its namespace, and
//!   `logship.io/exclude-containers: a,b` on the pod naming the file's
//!   container (daemonset mode): the file is not read at all
//!   ([`excluded`]); a pod found only after `metadata_wait` and excluded
//!   then stops its file being read further ([`Enricher::retry`]). The pod's own `logship.io/exclude` (any value) beats
//!   its namespace's: a pod annotated `"false"` in an excluded namespace is
//!   shipped.
//! - `logship.io/format: json` (default `plain`): a message that is a JSON
//!   object is also parsed into the field named by `logship.io/json-target`
//!   (default `json`), see [`FileMetadata::json_target`] and the encoder.
//! - `logship.io/drop: REGEX` (pod, and sidecar mode): lines whose message
//!   matches are dropped before any processor ([`FileMetadata::drop_regex`],
//!   applied by `processors::FileProcessor`). Follows the pod (daemonset
//!   mode): a change applies to the lines read after the cache saw it.
//!
//! A namespace not known by the time the pod is (within `metadata_wait`)
//! counts as having no labels and no exclusion annotation. Does not read
//! files or parse messages itself.

pub mod cache;
pub mod metadata;
pub mod pod_ref;
pub mod sidecar;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::kubernetes::{KubernetesConfig, KubernetesMode};
use crate::encode::{Encoder, FileContext};
use crate::event::{FileIdentity, Generation};

pub use cache::{
    MetadataCache, NamespaceCache, NamespaceInfo, PodCache, run_namespace_watch, run_pod_watch,
};
pub use metadata::{ContainerInfo, PodInfo};
pub use pod_ref::PodRef;

/// What a follower asks for its file's metadata.
#[derive(Clone)]
pub enum Enricher {
    /// Host mode: nothing to add.
    Off,
    /// DaemonSet mode: look the file's pod (and its namespace) up in the caches.
    Cache {
        cache: Arc<PodCache>,
        namespaces: Arc<NamespaceCache>,
        wait: Duration,
        /// How long to wait while a cache is not in sync (`metadata_sync_wait`).
        sync_wait: Duration,
        dedot: bool,
        /// Add `kubernetes.namespace_labels.*`.
        namespace_labels: bool,
    },
    /// Sidecar mode: the same metadata for every file (already serialised).
    Static(Arc<FileMetadata>),
}

/// What a file's documents get from its pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileMetadata {
    /// Members to splice into every document (may be empty; see
    /// [`PodInfo::fragment`]).
    pub fragment: Vec<u8>,
    /// `logship.io/format: json`: messages that are JSON objects are also
    /// parsed into this top-level field (`logship.io/json-target`, default
    /// [`DEFAULT_JSON_TARGET`]).
    pub json_target: Option<String>,
    /// The pod's `logship.io/drop` annotation: lines whose message matches
    /// this regex are dropped (see `processors`). Compiled per file; an
    /// invalid one is logged and ignored.
    pub drop_regex: Option<String>,
    /// `logship.io/multiline`: the pod's multiline rule (over the source's).
    pub multiline: Option<MultilineAnnotation>,
    /// The cached objects these metadata were made from (daemonset mode),
    /// to tell when the pod or its namespace changed ([`Enricher::refresh`]).
    pub origin: Option<Origin>,
}

/// The cache entries a file's metadata were made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub pod_ref: PodRef,
    pub pod: Arc<PodInfo>,
    pub namespace: Option<Arc<NamespaceInfo>>,
}

/// What a pod's `logship.io/multiline` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultilineAnnotation {
    /// `none`: every line is an event, whatever the source says.
    Off,
    Rule(crate::decode::multiline::Builtin),
}

/// Pod annotation: a built-in multiline rule (`java`, `python`, `go`,
/// `ruby`) or `none`.
pub const MULTILINE_ANNOTATION: &str = "logship.io/multiline";

/// The pod's `logship.io/multiline`; a value that names no rule is logged
/// (by the caller) and ignored.
pub fn multiline_annotation(pod: &PodInfo) -> Result<Option<MultilineAnnotation>, String> {
    let Some(value) = pod.annotations.get(MULTILINE_ANNOTATION).map(|v| v.trim()) else {
        return Ok(None);
    };
    if value.eq_ignore_ascii_case("none") || value.eq_ignore_ascii_case("off") {
        return Ok(Some(MultilineAnnotation::Off));
    }
    crate::decode::multiline::Builtin::parse(value)
        .map(|b| Some(MultilineAnnotation::Rule(b)))
        .ok_or_else(|| {
            format!(
                "{MULTILINE_ANNOTATION}: {value:?} is not one of {} or none; using the source's rule",
                crate::decode::multiline::Builtin::NAMES.join(", ")
            )
        })
}

impl FileMetadata {
    /// Whether documents made with `other` would carry the same fields and
    /// go through the same processing (the cache objects may differ).
    pub fn carries_same(&self, other: &FileMetadata) -> bool {
        self.fragment == other.fragment
            && self.json_target == other.json_target
            && self.drop_regex == other.drop_regex
    }

    /// The encoder's per-file context for these metadata.
    pub fn file_context(
        &self,
        encoder: &Encoder,
        path: &Path,
        identity: FileIdentity,
        generation: Generation,
    ) -> FileContext {
        let ctx = encoder.file_context_with(path, identity, generation, &self.fragment);
        match &self.json_target {
            Some(target) => ctx.with_json_messages(target),
            None => ctx,
        }
    }
}

/// The outcome of resolving one file's metadata.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// What to add to the file's documents (may be nothing).
    Metadata(FileMetadata),
    /// A pod log whose pod is not (yet) in the cache.
    Missing(PodRef),
    /// The pod's or its namespace's annotations exclude this file's logs
    /// (see [`excluded`]).
    Excluded(PodRef),
}

/// Pod or namespace annotation: `"true"` drops all of the pod's logs.
pub const EXCLUDE_ANNOTATION: &str = "logship.io/exclude";
/// Pod annotation: comma-separated container names whose logs are dropped.
pub const EXCLUDE_CONTAINERS_ANNOTATION: &str = "logship.io/exclude-containers";
/// Pod annotation: `plain` (default) or `json`.
pub const FORMAT_ANNOTATION: &str = "logship.io/format";
/// Pod annotation: the field JSON messages are parsed into.
pub const JSON_TARGET_ANNOTATION: &str = "logship.io/json-target";
/// Where JSON messages go without `logship.io/json-target`.
pub const DEFAULT_JSON_TARGET: &str = "json";
/// Top-level fields logship writes itself: a JSON target may not be one of
/// them (nor start with one of them and a `.`), so documents never have a
/// key twice.
pub const RESERVED_FIELDS: &[&str] = &[
    "@timestamp",
    "message",
    "stream",
    "log",
    "host",
    "container",
    "kubernetes",
    "agent",
];

/// The pod's `logship.io/drop` regex, if it has a non-empty one.
pub fn drop_regex(pod: &PodInfo) -> Option<String> {
    pod.annotations
        .get(crate::processors::DROP_ANNOTATION)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Whether the logs of `container` of `pod` (in `namespace`, if known) are
/// excluded: the pod's `logship.io/exclude` if it has one, else its
/// namespace's, is `"true"`; or the pod's `logship.io/exclude-containers`
/// names the container.
pub fn excluded(pod: &PodInfo, namespace: Option<&NamespaceInfo>, container: &str) -> bool {
    let annotation = |key: &str| pod.annotations.get(key).map(|v| v.trim());
    let exclude = annotation(EXCLUDE_ANNOTATION).or_else(|| {
        namespace
            .and_then(|ns| ns.exclude.as_deref())
            .map(str::trim)
    });
    exclude.is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || annotation(EXCLUDE_CONTAINERS_ANNOTATION)
            .is_some_and(|list| list.split(',').any(|c| c.trim() == container))
}

/// Why a pod's `logship.io/format` / `logship.io/json-target` was ignored.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatAnnotationError {
    #[error("logship.io/format: {0:?} is not plain or json; shipping messages as plain text")]
    UnknownFormat(String),
    #[error(
        "logship.io/json-target: {0:?} is empty, has an empty dotted segment or names a field logship writes itself ({reserved}); using {DEFAULT_JSON_TARGET:?}",
        reserved = RESERVED_FIELDS.join(", ")
    )]
    BadTarget(String),
}

/// The JSON target a pod's annotations ask for: `Ok(None)` for plain
/// messages. A bad annotation is an `Err` carrying the setting to use
/// instead (plain, or the default target).
pub fn json_target(
    pod: &PodInfo,
) -> Result<Option<String>, (FormatAnnotationError, Option<String>)> {
    let format = pod.annotations.get(FORMAT_ANNOTATION).map(|v| v.trim());
    match format {
        None => return Ok(None),
        Some(f) if f.eq_ignore_ascii_case("plain") || f.is_empty() => return Ok(None),
        Some(f) if f.eq_ignore_ascii_case("json") => {}
        Some(f) => return Err((FormatAnnotationError::UnknownFormat(f.to_owned()), None)),
    }
    let Some(target) = pod
        .annotations
        .get(JSON_TARGET_ANNOTATION)
        .map(|t| t.trim())
    else {
        return Ok(Some(DEFAULT_JSON_TARGET.to_owned()));
    };
    let first = target.split('.').next().unwrap_or_default();
    if target.split('.').any(str::is_empty) || RESERVED_FIELDS.contains(&first) {
        return Err((
            FormatAnnotationError::BadTarget(target.to_owned()),
            Some(DEFAULT_JSON_TARGET.to_owned()),
        ));
    }
    Ok(Some(target.to_owned()))
}

impl Enricher {
    /// The namespace cache (daemonset mode), for `/metrics`.
    pub fn namespace_cache(&self) -> Option<Arc<NamespaceCache>> {
        match self {
            Enricher::Cache { namespaces, .. } => Some(namespaces.clone()),
            Enricher::Off | Enricher::Static(_) => None,
        }
    }

    /// The pod cache (daemonset mode), for `/metrics`.
    pub fn pod_cache(&self) -> Option<Arc<PodCache>> {
        match self {
            Enricher::Cache { cache, .. } => Some(cache.clone()),
            Enricher::Off | Enricher::Static(_) => None,
        }
    }

    /// Metadata for the file at `path`, waiting at most `wait` (daemonset
    /// mode) for its pod and namespace to appear.
    pub async fn resolve(&self, path: &Path) -> Resolved {
        match self {
            Enricher::Off => Resolved::Metadata(FileMetadata::default()),
            Enricher::Static(m) => Resolved::Metadata(FileMetadata::clone(m)),
            Enricher::Cache {
                cache,
                namespaces,
                wait,
                sync_wait,
                ..
            } => {
                let Some(pod_ref) = PodRef::from_path(path) else {
                    return Resolved::Metadata(FileMetadata::default());
                };
                let start = tokio::time::Instant::now();
                let Some(pod) = cache
                    .wait_synced(&pod_ref.uid, start, *wait, *sync_wait)
                    .await
                else {
                    if !cache.is_synced() {
                        tracing::warn!(path = %path.display(), waited = ?sync_wait, "the pod watch has not been in sync for metadata_sync_wait");
                    }
                    return Resolved::Missing(pod_ref);
                };
                // The namespace: `metadata_wait` (from the start, or from
                // when the pod came if that was later), never the longer
                // unsynced wait: a namespace watch that cannot list must not
                // hold every file (its labels come later by `refresh`).
                let found = tokio::time::Instant::now();
                let namespace = namespaces
                    .wait_until(&pod.namespace, (start + *wait).max(found + *wait))
                    .await;
                if namespace.is_none() {
                    tracing::warn!(path = %path.display(), namespace = %pod.namespace, "namespace not in the metadata cache; its labels and exclusion annotation are not applied to this file");
                }
                if excluded(&pod, namespace.as_deref(), &pod_ref.container) {
                    return Resolved::Excluded(pod_ref);
                }
                Resolved::Metadata(self.metadata(path, pod, namespace, pod_ref))
            }
        }
    }

    /// A number that moves whenever a cached pod or namespace changed
    /// (daemonset mode; always 0 otherwise): a follower calls
    /// [`Enricher::refresh`] only when it moved.
    pub fn changes(&self) -> u64 {
        match self {
            Enricher::Cache {
                cache, namespaces, ..
            } => cache.changes().wrapping_add(namespaces.changes()),
            Enricher::Off | Enricher::Static(_) => 0,
        }
    }

    /// New metadata for a file whose pod or namespace changed since
    /// `current` was made (labels, annotations, the pod's IP...); `None`
    /// when nothing they were made from changed, or the pod is gone from
    /// the cache (the file keeps what it has). The file's controls
    /// (`logship.io/exclude*` and `logship.io/multiline`) are not looked at
    /// again; the caller keeps `current`'s multiline rule.
    pub fn refresh(&self, path: &Path, current: &FileMetadata) -> Option<FileMetadata> {
        let Enricher::Cache {
            cache, namespaces, ..
        } = self
        else {
            return None;
        };
        let origin = current.origin.as_ref()?;
        let pod = cache.get(&origin.pod_ref.uid)?;
        let namespace = namespaces.get(&pod.namespace);
        let same_namespace = match (&namespace, &origin.namespace) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if Arc::ptr_eq(&pod, &origin.pod) && same_namespace {
            return None;
        }
        let mut fresh = self.metadata(path, pod, namespace, origin.pod_ref.clone());
        fresh.multiline = current.multiline;
        Some(fresh)
    }

    /// Like [`Enricher::resolve`] for a pod that was missing, without
    /// waiting: `None` while it is still missing, else its metadata or
    /// [`Resolved::Excluded`] (the caller stops reading; lines already
    /// shipped stay shipped).
    pub fn retry(&self, path: &Path, pod_ref: &PodRef) -> Option<Resolved> {
        match self {
            Enricher::Cache {
                cache, namespaces, ..
            } => {
                let pod = cache.get(&pod_ref.uid)?;
                let namespace = namespaces.get(&pod.namespace);
                if excluded(&pod, namespace.as_deref(), &pod_ref.container) {
                    return Some(Resolved::Excluded(pod_ref.clone()));
                }
                Some(Resolved::Metadata(self.metadata(
                    path,
                    pod,
                    namespace,
                    pod_ref.clone(),
                )))
            }
            _ => None,
        }
    }

    fn metadata(
        &self,
        path: &Path,
        pod: Arc<PodInfo>,
        namespace: Option<Arc<NamespaceInfo>>,
        pod_ref: PodRef,
    ) -> FileMetadata {
        let Enricher::Cache {
            dedot,
            namespace_labels,
            ..
        } = self
        else {
            return FileMetadata::default();
        };
        let labels = namespace
            .as_deref()
            .filter(|_| *namespace_labels)
            .map(|ns| &ns.labels);
        let json_target = json_target(&pod).unwrap_or_else(|(error, instead)| {
            tracing::warn!(path = %path.display(), namespace = %pod.namespace, pod = %pod.name, %error, "bad pod annotation");
            instead
        });
        let multiline = multiline_annotation(&pod).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), namespace = %pod.namespace, pod = %pod.name, %error, "bad pod annotation");
            None
        });
        FileMetadata {
            fragment: pod.fragment(&pod_ref.container, *dedot, labels),
            json_target,
            drop_regex: drop_regex(&pod),
            multiline,
            origin: Some(Origin {
                pod_ref,
                pod: pod.clone(),
                namespace: namespace.clone(),
            }),
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

/// Builds the enricher for `config`; in daemonset mode also spawns the pod
/// watch and the namespace watch (one task; it runs until `shutdown`). Does not contact the API server:
/// an unreachable server is retried in the background.
pub async fn start(
    config: &KubernetesConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(Enricher, Option<tokio::task::JoinHandle<()>>), K8sError> {
    match config.mode {
        KubernetesMode::Off => Ok((Enricher::Off, None)),
        KubernetesMode::Sidecar => {
            let metadata = sidecar::sidecar_metadata(config)?.unwrap_or_default();
            Ok((Enricher::Static(Arc::new(metadata)), None))
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
            let namespaces = Arc::new(NamespaceCache::new(config.delete_grace));
            tracing::info!(node = %config.node_name, "watching this node's pods and the namespaces for metadata");
            let pods = run_pod_watch(
                client.clone(),
                config.node_name.clone(),
                cache.clone(),
                config.watch_timeout,
                shutdown.clone(),
            );
            let namespace_watch = run_namespace_watch(
                client,
                config.node_name.clone(),
                namespaces.clone(),
                config.watch_timeout,
                shutdown,
            );
            let task = tokio::spawn(async move {
                tokio::join!(pods, namespace_watch);
            });
            Ok((
                Enricher::Cache {
                    cache,
                    namespaces,
                    wait: config.metadata_wait,
                    sync_wait: config.metadata_sync_wait,
                    dedot: config.dedot,
                    namespace_labels: config.namespace_labels,
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

    fn namespace(exclude: Option<&str>) -> NamespaceInfo {
        NamespaceInfo {
            name: "ns".into(),
            exclude: exclude.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn exclusion_annotations() {
        assert!(!excluded(&pod(&[]), None, "app"));
        assert!(excluded(&pod(&[(EXCLUDE_ANNOTATION, "true")]), None, "app"));
        assert!(excluded(
            &pod(&[(EXCLUDE_ANNOTATION, " True ")]),
            None,
            "app"
        ));
        assert!(!excluded(
            &pod(&[(EXCLUDE_ANNOTATION, "false")]),
            None,
            "app"
        ));
        let p = pod(&[(EXCLUDE_CONTAINERS_ANNOTATION, "istio-proxy, app2")]);
        assert!(excluded(&p, None, "istio-proxy"));
        assert!(excluded(&p, None, "app2"));
        assert!(!excluded(&p, None, "app"));
    }

    #[test]
    fn namespace_exclusion_and_the_pod_annotation_beating_it() {
        let excluding = namespace(Some("true"));
        assert!(excluded(&pod(&[]), Some(&excluding), "app"));
        assert!(!excluded(&pod(&[]), Some(&namespace(Some("false"))), "app"));
        assert!(!excluded(&pod(&[]), Some(&namespace(None)), "app"));
        // The pod's own annotation wins, either way.
        assert!(!excluded(
            &pod(&[(EXCLUDE_ANNOTATION, "false")]),
            Some(&excluding),
            "app"
        ));
        assert!(excluded(
            &pod(&[(EXCLUDE_ANNOTATION, "true")]),
            Some(&namespace(Some("false"))),
            "app"
        ));
        // exclude-containers still applies to a pod kept by its own annotation.
        let p = pod(&[
            (EXCLUDE_ANNOTATION, "false"),
            (EXCLUDE_CONTAINERS_ANNOTATION, "sidecar"),
        ]);
        assert!(excluded(&p, Some(&excluding), "sidecar"));
        assert!(!excluded(&p, Some(&excluding), "app"));
    }

    #[test]
    fn format_annotations() {
        assert_eq!(json_target(&pod(&[])), Ok(None));
        assert_eq!(json_target(&pod(&[(FORMAT_ANNOTATION, "plain")])), Ok(None));
        assert_eq!(
            json_target(&pod(&[(FORMAT_ANNOTATION, "json")])),
            Ok(Some(DEFAULT_JSON_TARGET.to_owned()))
        );
        assert_eq!(
            json_target(&pod(&[
                (FORMAT_ANNOTATION, "JSON"),
                (JSON_TARGET_ANNOTATION, "app.payload")
            ])),
            Ok(Some("app.payload".to_owned()))
        );
        // The target alone does nothing.
        assert_eq!(
            json_target(&pod(&[(JSON_TARGET_ANNOTATION, "x")])),
            Ok(None)
        );
        let (error, instead) = json_target(&pod(&[(FORMAT_ANNOTATION, "yaml")])).unwrap_err();
        assert_eq!(error, FormatAnnotationError::UnknownFormat("yaml".into()));
        assert_eq!(instead, None);
        for bad in ["", "message", "kubernetes.extra", "a..b", ".x", "log"] {
            let (error, instead) = json_target(&pod(&[
                (FORMAT_ANNOTATION, "json"),
                (JSON_TARGET_ANNOTATION, bad),
            ]))
            .unwrap_err();
            assert_eq!(error, FormatAnnotationError::BadTarget(bad.into()), "{bad}");
            assert_eq!(instead.as_deref(), Some(DEFAULT_JSON_TARGET), "{bad}");
        }
    }

    fn pod_object(
        namespace: &str,
        uid: &str,
        annotations: serde_json::Value,
    ) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({"metadata": {
            "name": "p", "namespace": namespace, "uid": uid, "annotations": annotations,
        }}))
        .unwrap()
    }

    fn namespace_object(
        name: &str,
        annotations: serde_json::Value,
    ) -> k8s_openapi::api::core::v1::Namespace {
        serde_json::from_value(serde_json::json!({"metadata": {
            "name": name, "labels": {"team": "a"}, "annotations": annotations,
        }}))
        .unwrap()
    }

    fn enricher(namespace_labels: bool) -> (Enricher, Arc<PodCache>, Arc<NamespaceCache>) {
        use kube::runtime::watcher::Event;
        let cache = Arc::new(PodCache::new(Duration::from_secs(60)));
        let namespaces = Arc::new(NamespaceCache::new(Duration::from_secs(60)));
        // Both listed (in sync): a missing object is waited for metadata_wait.
        cache.apply(Event::Init);
        cache.apply(Event::InitDone);
        namespaces.apply(Event::Init);
        namespaces.apply(Event::InitDone);
        let enricher = Enricher::Cache {
            cache: cache.clone(),
            namespaces: namespaces.clone(),
            wait: Duration::from_secs(5),
            sync_wait: Duration::from_secs(30),
            dedot: true,
            namespace_labels,
        };
        (enricher, cache, namespaces)
    }

    fn log_path(namespace: &str, uid: &str) -> std::path::PathBuf {
        format!("/var/log/pods/{namespace}_p_{uid}/app/0.log").into()
    }

    fn fields(resolved: Resolved) -> (serde_json::Value, Option<String>) {
        let Resolved::Metadata(m) = resolved else {
            panic!("not shipped: {resolved:?}");
        };
        let doc = [b"{\"x\":1".as_slice(), &m.fragment, b"}"].concat();
        (serde_json::from_slice(&doc).unwrap(), m.json_target)
    }

    #[tokio::test(start_paused = true)]
    async fn resolve_applies_the_namespace_and_the_format() {
        use kube::runtime::watcher::Event;
        use serde_json::json;
        let (with_labels, cache, namespaces) = enricher(true);
        namespaces.apply(Event::Apply(namespace_object("shop", json!({}))));
        namespaces.apply(Event::Apply(namespace_object(
            "quiet",
            json!({EXCLUDE_ANNOTATION: "true"}),
        )));
        cache.apply(Event::Apply(pod_object(
            "shop",
            "u1",
            json!({FORMAT_ANNOTATION: "json"}),
        )));
        cache.apply(Event::Apply(pod_object("quiet", "u2", json!({}))));
        cache.apply(Event::Apply(pod_object(
            "quiet",
            "u3",
            json!({EXCLUDE_ANNOTATION: "false"}),
        )));

        let (doc, target) = fields(with_labels.resolve(&log_path("shop", "u1")).await);
        assert_eq!(doc["kubernetes"]["namespace_labels"]["team"], "a");
        assert_eq!(target.as_deref(), Some(DEFAULT_JSON_TARGET));
        assert!(matches!(
            with_labels.resolve(&log_path("quiet", "u2")).await,
            Resolved::Excluded(_)
        ));
        let (_, target) = fields(with_labels.resolve(&log_path("quiet", "u3")).await);
        assert_eq!(target, None);

        // Without namespace_labels the namespace still excludes, but adds no labels.
        let (without, ..) = enricher(false);
        let Enricher::Cache {
            cache: c,
            namespaces: n,
            ..
        } = &without
        else {
            unreachable!()
        };
        n.apply(Event::Apply(namespace_object(
            "quiet",
            json!({EXCLUDE_ANNOTATION: "true"}),
        )));
        n.apply(Event::Apply(namespace_object("shop", json!({}))));
        c.apply(Event::Apply(pod_object("quiet", "u2", json!({}))));
        c.apply(Event::Apply(pod_object("shop", "u1", json!({}))));
        assert!(matches!(
            without.resolve(&log_path("quiet", "u2")).await,
            Resolved::Excluded(_)
        ));
        let (doc, _) = fields(without.resolve(&log_path("shop", "u1")).await);
        assert!(doc["kubernetes"].get("namespace_labels").is_none(), "{doc}");
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_follows_labels_and_namespace_labels_but_not_the_controls() {
        use kube::runtime::watcher::Event;
        use serde_json::json;
        let (enricher, cache, namespaces) = enricher(true);
        namespaces.apply(Event::Apply(namespace_object("shop", json!({}))));
        let pod = |labels: serde_json::Value, annotations: serde_json::Value| {
            serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({"metadata": {
                "name": "p", "namespace": "shop", "uid": "u1",
                "labels": labels, "annotations": annotations,
            }}))
            .unwrap()
        };
        cache.apply(Event::Apply(pod(
            json!({"app": "a"}),
            json!({MULTILINE_ANNOTATION: "java"}),
        )));
        let path = log_path("shop", "u1");
        let Resolved::Metadata(first) = enricher.resolve(&path).await else {
            panic!("not resolved")
        };
        assert_eq!(enricher.refresh(&path, &first), None, "nothing changed");
        let before = enricher.changes();
        cache.apply(Event::Apply(pod(
            json!({"app": "a", "tier": "web"}),
            json!({MULTILINE_ANNOTATION: "none", FORMAT_ANNOTATION: "json"}),
        )));
        assert_ne!(enricher.changes(), before);
        let fresh = enricher.refresh(&path, &first).expect("a label was added");
        let (doc, target) = fields(Resolved::Metadata(fresh.clone()));
        assert_eq!(doc["kubernetes"]["labels"]["tier"], "web");
        assert_eq!(
            target.as_deref(),
            Some(DEFAULT_JSON_TARGET),
            "format follows"
        );
        assert_eq!(
            fresh.multiline, first.multiline,
            "the multiline rule does not"
        );
        assert_eq!(enricher.refresh(&path, &fresh), None);
        // The namespace's labels too.
        let mut ns = namespace_object("shop", json!({}));
        ns.metadata.labels = Some([("team".to_owned(), "b".to_owned())].into());
        namespaces.apply(Event::Apply(ns));
        let again = enricher
            .refresh(&path, &fresh)
            .expect("namespace label changed");
        let (doc, _) = fields(Resolved::Metadata(again));
        assert_eq!(doc["kubernetes"]["namespace_labels"]["team"], "b");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_namespace_is_waited_for_within_metadata_wait() {
        use kube::runtime::watcher::Event;
        use serde_json::json;
        let (enricher, cache, namespaces) = enricher(true);
        cache.apply(Event::Apply(pod_object("late", "u1", json!({}))));
        cache.apply(Event::Apply(pod_object("never", "u2", json!({}))));
        let ns = namespaces.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            ns.apply(Event::Apply(namespace_object(
                "late",
                json!({EXCLUDE_ANNOTATION: "true"}),
            )));
        });
        let start = tokio::time::Instant::now();
        assert!(matches!(
            enricher.resolve(&log_path("late", "u1")).await,
            Resolved::Excluded(_)
        ));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // A namespace that never comes: shipped with the pod's fields after
        // metadata_wait, no namespace labels.
        let (doc, _) = fields(enricher.resolve(&log_path("never", "u2")).await);
        assert_eq!(start.elapsed(), Duration::from_secs(7));
        assert_eq!(doc["kubernetes"]["namespace"], "never");
        assert!(doc["kubernetes"].get("namespace_labels").is_none(), "{doc}");
    }

    /// The pod watch is in sync (and knows the pod); the namespace watch is
    /// not (its ClusterRole rule is missing: 403 forever, or it is
    /// re-listing). The namespace is waited for within metadata_wait only,
    /// never metadata_sync_wait.
    #[tokio::test(start_paused = true)]
    async fn an_unsynced_namespace_watch_holds_a_file_for_metadata_wait_only() {
        use kube::runtime::watcher::Event;
        use serde_json::json;
        let cache = Arc::new(PodCache::new(Duration::from_secs(60)));
        let namespaces = Arc::new(NamespaceCache::new(Duration::from_secs(60)));
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(pod_object("shop", "u1", json!({}))));
        cache.apply(Event::InitDone);
        // The namespace watch: denied, never listed.
        namespaces.watch_failed();
        let enricher = Enricher::Cache {
            cache,
            namespaces,
            wait: Duration::from_secs(5),
            sync_wait: Duration::from_secs(120),
            dedot: true,
            namespace_labels: true,
        };
        let start = tokio::time::Instant::now();
        let resolved = enricher.resolve(&log_path("shop", "u1")).await;
        assert!(matches!(resolved, Resolved::Metadata(_)));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(5),
            "a file whose pod is known waited {:?} for a namespace the namespace watch cannot see",
            start.elapsed()
        );
    }

    /// After a transient watch error the watcher re-watches from its last
    /// resourceVersion (no Init: kube-runtime re-lists only after a 410 or
    /// a failed list). On a quiet node no event follows: the cache is back
    /// in sync `QUIET_AFTER_ERROR` after the error, and a file whose pod is
    /// not in the cache then waits metadata_wait, not metadata_sync_wait.
    #[tokio::test(start_paused = true)]
    async fn after_a_transient_error_a_quiet_watch_comes_back_in_sync() {
        let (enricher, cache, _namespaces) = enricher(false);
        // One connection reset; the re-watch then succeeds (nothing to say).
        cache.watch_failed();
        assert!(!cache.is_synced());
        tokio::time::advance(cache::QUIET_AFTER_ERROR).await;
        assert!(cache.is_synced());
        let start = tokio::time::Instant::now();
        let resolved = enricher.resolve(&log_path("shop", "gone")).await;
        assert!(matches!(resolved, Resolved::Missing(_)));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    /// A namespace's label changes while `namespace_labels` is off: the
    /// new metadata carry the same fields, so a follower keeps its span
    /// (`carries_same`), only taking the new cache objects.
    #[tokio::test(start_paused = true)]
    async fn an_unused_namespace_change_changes_no_field() {
        use kube::runtime::watcher::Event;
        use serde_json::json;
        let (enricher, cache, namespaces) = enricher(false);
        namespaces.apply(Event::Apply(namespace_object("shop", json!({}))));
        cache.apply(Event::Apply(pod_object("shop", "u1", json!({}))));
        let path = log_path("shop", "u1");
        let Resolved::Metadata(first) = enricher.resolve(&path).await else {
            panic!("not resolved")
        };
        let mut ns = namespace_object("shop", json!({}));
        ns.metadata.labels = Some([("team".to_owned(), "b".to_owned())].into());
        namespaces.apply(Event::Apply(ns));
        let fresh = enricher
            .refresh(&path, &first)
            .expect("the namespace object changed");
        assert!(fresh.carries_same(&first), "namespace_labels is off");
        assert_ne!(fresh.origin, first.origin);
    }
}
