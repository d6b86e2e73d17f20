//! The node-local metadata caches and the watches that feed them.
//!
//! [`run_pod_watch`] runs a single `kube_runtime::watcher` on pods with
//! `fieldSelector=spec.nodeName=<node>`; [`run_namespace_watch`] runs one on
//! namespaces (daemonset mode: for the `logship.io/exclude` namespace
//! annotation and, with `namespace_labels: true`, the namespace labels).
//! Each is one list, then one watch, per (re)connect; the watcher re-lists
//! by itself after a 410 Gone or a dropped stream, with the crate's default
//! exponential backoff. `managedFields` are stripped and every event is
//! applied to a [`MetadataCache`] — a reflector store keyed by what a log
//! path names (pod uid; namespace name), holding only the part of each
//! object that documents need ([`PodInfo`], [`NamespaceInfo`]). It differs
//! from `kube_runtime::reflector::Store` in one way: a deleted object (a
//! `DELETED` event, or one missing from a re-list) stays readable for
//! `delete_grace`, so the last lines of a deleted pod's files still get
//! metadata.
//!
//! Readers never call the API server: [`MetadataCache::get`] is a map
//! lookup, [`MetadataCache::wait_for`] waits (bounded) for an object to
//! appear.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metadata::PodInfo;

/// How often expired deleted objects are dropped even when no event arrives.
const PURGE_INTERVAL: Duration = Duration::from_secs(5);

/// What a cache keeps of one API object.
pub trait Cached: Sized + Send + Sync + 'static {
    /// The API object watched.
    type Object: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static;
    /// What is kept of `object`; `None` for an object without key.
    fn from_object(object: &Self::Object) -> Option<Self>;
    /// The cache key (pod uid, namespace name).
    fn key(&self) -> &str;
}

impl Cached for PodInfo {
    type Object = Pod;
    fn from_object(pod: &Pod) -> Option<Self> {
        PodInfo::from_pod(pod)
    }
    fn key(&self) -> &str {
        &self.uid
    }
}

/// What logship keeps of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The namespace's `logship.io/exclude` annotation, if it has one.
    pub exclude: Option<String>,
}

impl Cached for NamespaceInfo {
    type Object = Namespace;
    fn from_object(ns: &Namespace) -> Option<Self> {
        let meta = &ns.metadata;
        Some(NamespaceInfo {
            name: meta.name.clone()?,
            labels: meta.labels.clone().unwrap_or_default(),
            exclude: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(super::EXCLUDE_ANNOTATION).cloned()),
        })
    }
    fn key(&self) -> &str {
        &self.name
    }
}

struct Entry<T> {
    value: Arc<T>,
    deleted_at: Option<Instant>,
}

struct Entries<T> {
    by_key: HashMap<String, Entry<T>>,
    /// Keys seen since the last `Init` (a re-list in progress).
    relisted: Option<HashSet<String>>,
}

/// Objects by key (see module doc).
pub struct MetadataCache<T> {
    entries: RwLock<Entries<T>>,
    delete_grace: Duration,
    /// Bumped on every change, for [`MetadataCache::wait_for`].
    version: watch::Sender<u64>,
    /// `Init` events seen: the first list, then one per re-list after an
    /// error, a dropped stream or a 410 Gone.
    lists: AtomicU64,
}

/// This node's pods by uid.
pub type PodCache = MetadataCache<PodInfo>;
/// The cluster's namespaces by name.
pub type NamespaceCache = MetadataCache<NamespaceInfo>;

impl<T: Cached> MetadataCache<T> {
    pub fn new(delete_grace: Duration) -> Self {
        MetadataCache {
            entries: RwLock::new(Entries {
                by_key: HashMap::new(),
                relisted: None,
            }),
            delete_grace,
            version: watch::Sender::new(0),
            lists: AtomicU64::new(0),
        }
    }

    /// The object with this key, if it is known and not deleted longer than
    /// `delete_grace` ago.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.by_key.get(key)?;
        match entry.deleted_at {
            Some(at) if at.elapsed() > self.delete_grace => None,
            _ => Some(entry.value.clone()),
        }
    }

    /// Waits until `deadline` for the object to be in the cache.
    pub async fn wait_until(&self, key: &str, deadline: Instant) -> Option<Arc<T>> {
        let mut changes = self.version.subscribe();
        loop {
            changes.borrow_and_update();
            if let Some(value) = self.get(key) {
                return Some(value);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// Waits up to `timeout` for the object to be in the cache.
    pub async fn wait_for(&self, key: &str, timeout: Duration) -> Option<Arc<T>> {
        self.wait_until(key, Instant::now() + timeout).await
    }

    /// Number of objects held (deleted ones within their grace included).
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_key
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Times the watch re-listed after its first list (restarts after an
    /// error, a dropped stream or a 410 Gone).
    pub fn watch_restarts(&self) -> u64 {
        self.lists.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// Applies one watcher event (reflector semantics plus the delete grace).
    pub fn apply(&self, event: Event<T::Object>) {
        let now = Instant::now();
        {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            match event {
                Event::Init => {
                    self.lists.fetch_add(1, Ordering::Relaxed);
                    entries.relisted = Some(HashSet::new());
                }
                Event::InitApply(object) => {
                    if let Some(value) = T::from_object(&object) {
                        if let Some(seen) = entries.relisted.as_mut() {
                            seen.insert(value.key().to_owned());
                        }
                        upsert(&mut entries, value, None);
                    }
                }
                Event::InitDone => {
                    // Objects gone while we were not watching were deleted.
                    if let Some(seen) = entries.relisted.take() {
                        for (key, entry) in entries.by_key.iter_mut() {
                            if !seen.contains(key) && entry.deleted_at.is_none() {
                                entry.deleted_at = Some(now);
                            }
                        }
                    }
                }
                Event::Apply(object) => {
                    if let Some(value) = T::from_object(&object) {
                        upsert(&mut entries, value, None);
                    }
                }
                Event::Delete(object) => {
                    if let Some(value) = T::from_object(&object) {
                        upsert(&mut entries, value, Some(now));
                    }
                }
            }
            purge(&mut entries, now, self.delete_grace);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Drops objects deleted longer than `delete_grace` ago.
    pub fn purge_expired(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        purge(&mut entries, Instant::now(), self.delete_grace);
    }
}

fn upsert<T: Cached>(entries: &mut Entries<T>, value: T, deleted_at: Option<Instant>) {
    entries.by_key.insert(
        value.key().to_owned(),
        Entry {
            value: Arc::new(value),
            deleted_at,
        },
    );
}

fn purge<T>(entries: &mut Entries<T>, now: Instant, grace: Duration) {
    entries.by_key.retain(|_, e| {
        e.deleted_at
            .is_none_or(|at| now.duration_since(at) <= grace)
    });
}

/// Feeds `cache` from one watch on the pods of `node_name` until `shutdown`.
/// Errors (API server down, 410 Gone, dropped streams) are logged and
/// retried by the watcher with backoff; this never returns early.
pub async fn run_pod_watch(
    client: Client,
    node_name: String,
    cache: Arc<PodCache>,
    shutdown: CancellationToken,
) {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    run_watch(Api::all(client), config, cache, "pod", &node_name, shutdown).await
}

/// Feeds `cache` from one watch on all namespaces until `shutdown` (like
/// [`run_pod_watch`]).
pub async fn run_namespace_watch(
    client: Client,
    node_name: String,
    cache: Arc<NamespaceCache>,
    shutdown: CancellationToken,
) {
    let config = watcher::Config::default();
    run_watch(
        Api::all(client),
        config,
        cache,
        "namespace",
        &node_name,
        shutdown,
    )
    .await
}

async fn run_watch<T: Cached>(
    api: Api<T::Object>,
    config: watcher::Config,
    cache: Arc<MetadataCache<T>>,
    kind: &'static str,
    node_name: &str,
    shutdown: CancellationToken,
) {
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .modify(|object| {
            object.managed_fields_mut().clear();
        });
    let mut stream = std::pin::pin!(stream);
    let mut purge_tick = tokio::time::interval(PURGE_INTERVAL);
    let mut healthy = true;
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(event)) => {
                    if !healthy {
                        tracing::info!(node = %node_name, "{kind} watch recovered");
                        healthy = true;
                    }
                    if matches!(event, Event::InitDone) {
                        tracing::info!(node = %node_name, objects = cache.len(), "{kind} list synced");
                    }
                    cache.apply(event);
                }
                Some(Err(e)) => {
                    // The watcher backs off and re-lists by itself.
                    if healthy {
                        tracing::warn!(node = %node_name, error = %e, "{kind} watch failed; retrying with backoff");
                    } else {
                        tracing::debug!(node = %node_name, error = %e, "{kind} watch still failing");
                    }
                    healthy = false;
                }
                None => {
                    tracing::error!("{kind} watch stream ended");
                    return;
                }
            },
            _ = purge_tick.tick() => cache.purge_expired(),
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": uid, "namespace": "ns", "uid": uid}}))
            .unwrap()
    }

    #[test]
    fn namespaces_keep_labels_and_the_exclusion_annotation() {
        let cache = NamespaceCache::new(Duration::from_secs(60));
        let ns: Namespace = serde_json::from_value(json!({"metadata": {
            "name": "quiet", "uid": "n-1",
            "labels": {"team": "a"},
            "annotations": {"logship.io/exclude": "true", "other": "x"},
            "managedFields": [{"manager": "kubectl"}]
        }}))
        .unwrap();
        cache.apply(Event::Apply(ns));
        let info = cache.get("quiet").unwrap();
        assert_eq!(info.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(info.exclude.as_deref(), Some("true"));
        assert!(cache.get("n-1").is_none(), "keyed by name");
    }

    #[tokio::test(start_paused = true)]
    async fn deleted_pods_stay_for_the_grace() {
        let cache = PodCache::new(Duration::from_secs(60));
        cache.apply(Event::Apply(pod("a")));
        cache.apply(Event::Delete(pod("a")));
        assert!(cache.get("a").is_some());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(cache.get("a").is_none());
        cache.purge_expired();
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn relist_marks_vanished_pods_deleted() {
        let cache = PodCache::new(Duration::from_secs(10));
        for e in [
            Event::Init,
            Event::InitApply(pod("a")),
            Event::InitApply(pod("b")),
            Event::InitDone,
        ] {
            cache.apply(e);
        }
        assert_eq!(cache.watch_restarts(), 0, "the first list is no restart");
        assert_eq!(cache.len(), 2);
        for e in [Event::Init, Event::InitApply(pod("b")), Event::InitDone] {
            cache.apply(e);
        }
        assert_eq!(cache.watch_restarts(), 1);
        assert!(cache.get("a").is_some(), "within grace");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_sees_a_late_pod_and_gives_up_in_time() {
        let cache = Arc::new(PodCache::new(Duration::from_secs(10)));
        let c = cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            c.apply(Event::Apply(pod("late")));
        });
        let start = Instant::now();
        assert!(
            cache
                .wait_for("late", Duration::from_secs(5))
                .await
                .is_some()
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(
            cache
                .wait_for("never", Duration::from_secs(5))
                .await
                .is_none()
        );
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }
}
