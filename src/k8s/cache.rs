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
//!
//! A cache is *in sync* once its first list is done, until the watch fails
//! (an error: the server is down, denies the request, or answers 410) and
//! again after the next list or event that the watch delivers; a re-list in
//! progress is not in sync either. [`MetadataCache::wait_synced`] waits
//! longer while the cache is not in sync: a pod created while the watch was
//! down is not missing, only not yet seen. A natural end of a watch (its
//! `timeoutSeconds`) is no error: the watcher re-watches from the last
//! resourceVersion without a list.
//!
//! An event that leaves an object's kept part unchanged (most pod updates
//! are status changes) keeps the same `Arc`, so a follower can tell a real
//! change of its pod's fields with [`Arc::ptr_eq`] after
//! [`MetadataCache::changes`] moved.

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
pub trait Cached: Sized + PartialEq + Send + Sync + 'static {
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

/// How long a watch that failed must go without another error to count as
/// back in sync although no event came: more than the longest reconnect
/// delay (8 s, up to twice that with jitter) plus a connect.
pub const QUIET_AFTER_ERROR: Duration = Duration::from_secs(20);

/// Whether a cache's watch is in sync (see the module doc).
struct SyncState {
    /// The first list completed.
    listed: bool,
    /// A re-list is in progress (between `Init` and `InitDone`).
    relisting: bool,
    /// The last error since the last event, if any.
    failed_at: Option<Instant>,
    /// When it last came (back) in sync.
    synced_at: Instant,
}

impl SyncState {
    fn synced_since(&self, now: Instant) -> Option<Instant> {
        if !self.listed || self.relisting {
            return None;
        }
        match self.failed_at {
            None => Some(self.synced_at),
            Some(failed) if now.saturating_duration_since(failed) >= QUIET_AFTER_ERROR => {
                Some(failed + QUIET_AFTER_ERROR)
            }
            Some(_) => None,
        }
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
    /// Whether the watch is in sync (see the module doc).
    sync: std::sync::Mutex<SyncState>,
    /// Bumped when an object's kept part changes (not on every event).
    changes: AtomicU64,
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
            sync: std::sync::Mutex::new(SyncState {
                listed: false,
                relisting: false,
                failed_at: None,
                synced_at: Instant::now(),
            }),
            changes: AtomicU64::new(0),
        }
    }

    fn sync_state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the watch is in sync: listed, not re-listing, and no error
    /// since its last event (or none for [`QUIET_AFTER_ERROR`]).
    pub fn is_synced(&self) -> bool {
        self.synced_since().is_some()
    }

    /// The watch failed: not in sync until its next list or event, or until
    /// it has been quiet for [`QUIET_AFTER_ERROR`] (kube-runtime re-watches
    /// from the last resourceVersion without a word when it can).
    pub fn watch_failed(&self) {
        self.sync_state().failed_at = Some(Instant::now());
        self.version.send_modify(|v| *v += 1);
    }

    /// Moves whenever an object's kept part changed (an added, changed or
    /// deleted-and-expired object), not on events that change nothing kept.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Since when the watch is in sync; `None` while it is not.
    pub fn synced_since(&self) -> Option<Instant> {
        self.sync_state().synced_since(Instant::now())
    }

    fn mark_synced(&self, now: Instant) {
        let mut sync = self.sync_state();
        if sync.synced_since(now).is_none() || sync.failed_at.is_some() {
            sync.synced_at = sync
                .failed_at
                .map(|t| t + QUIET_AFTER_ERROR)
                .filter(|quiet| *quiet <= now)
                .unwrap_or(now);
        }
        sync.listed = true;
        sync.relisting = false;
        sync.failed_at = None;
    }

    /// Waits for the object from `start`: up to `wait` while the cache is
    /// in sync, up to `sync_wait` while it is not; and once it came back in
    /// sync, `wait` more from then (the events missed while the watch was
    /// down arrive one by one after the first).
    pub async fn wait_synced(
        &self,
        key: &str,
        start: Instant,
        wait: Duration,
        sync_wait: Duration,
    ) -> Option<Arc<T>> {
        let mut changes = self.version.subscribe();
        loop {
            changes.borrow_and_update();
            if let Some(value) = self.get(key) {
                return Some(value);
            }
            let now = Instant::now();
            let (give_up, wake) = {
                let sync = self.sync_state();
                match sync.synced_since(now) {
                    Some(at) => {
                        let t = (start + wait).max(at + wait);
                        (t, t)
                    }
                    None => {
                        let t = start + sync_wait.max(wait);
                        let resync = sync.failed_at.map(|f| f + QUIET_AFTER_ERROR);
                        (t, resync.map_or(t, |r| r.min(t)))
                    }
                }
            };
            if now >= give_up {
                return None;
            }
            let until = wake.max(now);
            // A change, or the deadline: look again (the sync state may
            // have changed which deadline applies).
            if let Ok(Err(_)) = tokio::time::timeout_at(until, changes.changed()).await {
                return None;
            }
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
        let mut changed = false;
        {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            match event {
                Event::Init => {
                    self.lists.fetch_add(1, Ordering::Relaxed);
                    self.sync_state().relisting = true;
                    entries.relisted = Some(HashSet::new());
                }
                Event::InitApply(object) => {
                    if let Some(value) = T::from_object(&object) {
                        if let Some(seen) = entries.relisted.as_mut() {
                            seen.insert(value.key().to_owned());
                        }
                        changed |= upsert(&mut entries, value, None);
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
                    self.mark_synced(now);
                }
                Event::Apply(object) => {
                    if let Some(value) = T::from_object(&object) {
                        changed |= upsert(&mut entries, value, None);
                    }
                    // An event after a failure: the watch is back.
                    if entries.relisted.is_none() && self.lists.load(Ordering::Relaxed) > 0 {
                        self.mark_synced(now);
                    }
                }
                Event::Delete(object) => {
                    if let Some(value) = T::from_object(&object) {
                        changed |= upsert(&mut entries, value, Some(now));
                    }
                    if entries.relisted.is_none() && self.lists.load(Ordering::Relaxed) > 0 {
                        // An event after a failure: the watch is back.
                        self.mark_synced(now);
                    }
                }
            }
            changed |= purge(&mut entries, now, self.delete_grace);
        }
        if changed {
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Drops objects deleted longer than `delete_grace` ago.
    pub fn purge_expired(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if purge(&mut entries, Instant::now(), self.delete_grace) {
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Stores `value`; `true` if its kept part changed (an equal value keeps
/// its `Arc`, only the deletion time is updated: a deleted pod keeps the
/// time it was first seen deleted).
fn upsert<T: Cached + PartialEq>(
    entries: &mut Entries<T>,
    value: T,
    deleted_at: Option<Instant>,
) -> bool {
    if let Some(entry) = entries.by_key.get_mut(value.key())
        && *entry.value == value
    {
        entry.deleted_at = match (entry.deleted_at, deleted_at) {
            (Some(first), Some(_)) => Some(first),
            (_, new) => new,
        };
        return false;
    }
    entries.by_key.insert(
        value.key().to_owned(),
        Entry {
            value: Arc::new(value),
            deleted_at,
        },
    );
    true
}

/// Drops objects deleted longer than `grace` ago; `true` if any was.
fn purge<T>(entries: &mut Entries<T>, now: Instant, grace: Duration) -> bool {
    let before = entries.by_key.len();
    entries.by_key.retain(|_, e| {
        e.deleted_at
            .is_none_or(|at| now.duration_since(at) <= grace)
    });
    entries.by_key.len() != before
}

/// Feeds `cache` from one watch on the pods of `node_name` until `shutdown`.
/// Errors (API server down, 410 Gone, dropped streams) are logged and
/// retried by the watcher with backoff; this never returns early.
pub async fn run_pod_watch(
    client: Client,
    node_name: String,
    cache: Arc<PodCache>,
    watch_timeout: Duration,
    shutdown: CancellationToken,
) {
    let config = watcher::Config::default()
        .fields(&format!("spec.nodeName={node_name}"))
        .timeout(timeout_secs(watch_timeout));
    run_watch(Api::all(client), config, cache, "pod", &node_name, shutdown).await
}

/// Feeds `cache` from one watch on all namespaces until `shutdown` (like
/// [`run_pod_watch`]).
pub async fn run_namespace_watch(
    client: Client,
    node_name: String,
    cache: Arc<NamespaceCache>,
    watch_timeout: Duration,
    shutdown: CancellationToken,
) {
    let config = watcher::Config::default().timeout(timeout_secs(watch_timeout));
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

/// Delays between attempts while the watch fails: 0.5 s doubling to 8 s,
/// jittered, back to 0.5 s after 30 s without a failure. kube-runtime's
/// default goes to 30 s and resets only after 120 s, so a watch that failed
/// a minute before an API server restart came back up to 30 s after the
/// server (while new pods' files waited); a node agent needs its metadata
/// sooner, and the jitter spreads a fleet's reconnects.
fn reconnect_backoff() -> impl kube::runtime::utils::Backoff {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(8))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(exponential),
        Duration::from_secs(30),
    )
}

/// The API server's message when it denied a list or watch (403).
fn forbidden(error: &watcher::Error) -> Option<String> {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s,
        watcher::Error::WatchError(s) => s,
        _ => return None,
    };
    (status.code == 403).then(|| status.message.clone())
}

/// A watch request's `timeoutSeconds` (the config allows 1 s to 1 h).
fn timeout_secs(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1)
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
        .backoff(reconnect_backoff())
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
                    cache.watch_failed();
                    if let Some(denied) = forbidden(&e) {
                        // Each time: a missing RBAC rule is a deployment
                        // error that must be seen, not a transient one.
                        tracing::error!(node = %node_name, error = %denied, "the API server denies the {kind} watch (HTTP 403): the ClusterRole bound to logship's ServiceAccount must allow get, list and watch on pods and namespaces (deploy/kubernetes/clusterrole.yaml); files ship without Kubernetes metadata after metadata_sync_wait; retrying with backoff");
                    } else if healthy {
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

    fn labelled(uid: &str, labels: serde_json::Value, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "labels": labels},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn only_a_change_of_what_is_kept_moves_changes() {
        let cache = PodCache::new(Duration::from_secs(60));
        cache.apply(Event::Apply(labelled("a", json!({"app": "x"}), "Pending")));
        let first = cache.get("a").unwrap();
        let before = cache.changes();
        // A status update: nothing kept changed, same Arc.
        cache.apply(Event::Apply(labelled("a", json!({"app": "x"}), "Running")));
        assert_eq!(cache.changes(), before);
        assert!(Arc::ptr_eq(&first, &cache.get("a").unwrap()));
        // A label: a new value.
        cache.apply(Event::Apply(labelled(
            "a",
            json!({"app": "x", "tier": "web"}),
            "Running",
        )));
        assert_ne!(cache.changes(), before);
        let second = cache.get("a").unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.labels.get("tier").map(String::as_str), Some("web"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unsynced_cache_is_waited_for_longer() {
        let cache = Arc::new(PodCache::new(Duration::from_secs(10)));
        let (wait, sync_wait) = (Duration::from_secs(5), Duration::from_secs(60));
        let start = Instant::now();
        // Never listed: waits sync_wait.
        assert!(
            cache
                .wait_synced("x", start, wait, sync_wait)
                .await
                .is_none()
        );
        assert_eq!(start.elapsed(), sync_wait);
        for e in [Event::Init, Event::InitDone] {
            cache.apply(e);
        }
        assert!(cache.is_synced());
        tokio::time::advance(Duration::from_secs(10)).await;
        // In sync (for a while): wait.
        let t = Instant::now();
        assert!(cache.wait_synced("x", t, wait, sync_wait).await.is_none());
        assert_eq!(t.elapsed(), wait);
        // The watch fails: a pod created meanwhile arrives after 20 s, later
        // than metadata_wait, and is still found.
        cache.watch_failed();
        assert!(!cache.is_synced());
        let c = cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            c.apply(Event::Apply(pod("first")));
            // The rest of what was missed comes after the first event.
            tokio::time::sleep(Duration::from_secs(2)).await;
            c.apply(Event::Apply(pod("second")));
        });
        let t = Instant::now();
        let first = cache.wait_synced("first", t, wait, sync_wait);
        let second = cache.wait_synced("second", t, wait, sync_wait);
        let (first, second) = tokio::join!(first, second);
        assert!(first.is_some() && second.is_some());
        assert_eq!(t.elapsed(), Duration::from_secs(22));
        assert!(
            cache.is_synced(),
            "an event after the failure: back in sync"
        );
        // Back in sync while a file waits past metadata_wait: it waits
        // `wait` more from then, no longer.
        cache.watch_failed();
        let c = cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            c.apply(Event::Init);
            c.apply(Event::InitApply(pod("first")));
            c.apply(Event::InitDone);
        });
        let t = Instant::now();
        assert!(
            cache
                .wait_synced("never", t, wait, sync_wait)
                .await
                .is_none()
        );
        assert_eq!(t.elapsed(), Duration::from_secs(15));
        // A failure, then nothing: the watcher re-watched without a word
        // (a quiet node). In sync again QUIET_AFTER_ERROR after the error.
        cache.watch_failed();
        let t = Instant::now();
        assert!(
            cache
                .wait_synced("never", t, wait, sync_wait)
                .await
                .is_none()
        );
        assert_eq!(t.elapsed(), QUIET_AFTER_ERROR + wait);
        assert!(cache.is_synced());
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
