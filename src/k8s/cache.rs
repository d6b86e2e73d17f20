//! The node-local pod cache and the one watch that feeds it.
//!
//! [`run_pod_watch`] runs a single `kube_runtime::watcher` on pods with
//! `fieldSelector=spec.nodeName=<node>` (one list, then one watch, per
//! (re)connect; the watcher re-lists by itself after a 410 Gone or a dropped
//! stream, with the crate's default exponential backoff), strips
//! `managedFields`, and applies every event to a [`PodCache`] — a reflector
//! store keyed by pod uid, which is what a log path names. It differs from
//! `kube_runtime::reflector::Store` in one way: a deleted pod (a `DELETED`
//! event, or a pod missing from a re-list) stays readable for
//! `delete_grace`, so the last lines of its files still get metadata.
//!
//! Readers never call the API server: [`PodCache::get`] is a map lookup,
//! [`PodCache::wait_for`] waits (bounded) for a pod to appear.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metadata::PodInfo;

/// How often expired deleted pods are dropped even when no event arrives.
const PURGE_INTERVAL: Duration = Duration::from_secs(5);

struct Entry {
    pod: Arc<PodInfo>,
    deleted_at: Option<Instant>,
}

#[derive(Default)]
struct Pods {
    by_uid: HashMap<String, Entry>,
    /// Uids seen since the last `Init` (a re-list in progress).
    relisted: Option<HashSet<String>>,
}

/// Pods of this node by uid (see module doc).
pub struct PodCache {
    pods: RwLock<Pods>,
    delete_grace: Duration,
    /// Bumped on every change, for [`PodCache::wait_for`].
    version: watch::Sender<u64>,
    /// `Init` events seen: the first list, then one per re-list after an
    /// error, a dropped stream or a 410 Gone.
    lists: AtomicU64,
}

impl PodCache {
    pub fn new(delete_grace: Duration) -> Self {
        PodCache {
            pods: RwLock::new(Pods::default()),
            delete_grace,
            version: watch::Sender::new(0),
            lists: AtomicU64::new(0),
        }
    }

    /// The pod with this uid, if it is known and not deleted longer than
    /// `delete_grace` ago.
    pub fn get(&self, uid: &str) -> Option<Arc<PodInfo>> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        let entry = pods.by_uid.get(uid)?;
        match entry.deleted_at {
            Some(at) if at.elapsed() > self.delete_grace => None,
            _ => Some(entry.pod.clone()),
        }
    }

    /// Waits up to `timeout` for the pod to be in the cache.
    pub async fn wait_for(&self, uid: &str, timeout: Duration) -> Option<Arc<PodInfo>> {
        let deadline = Instant::now() + timeout;
        let mut changes = self.version.subscribe();
        loop {
            changes.borrow_and_update();
            if let Some(pod) = self.get(uid) {
                return Some(pod);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// Number of pods held (deleted ones within their grace included).
    pub fn len(&self) -> usize {
        self.pods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_uid
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
    pub fn apply(&self, event: Event<Pod>) {
        let now = Instant::now();
        {
            let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
            match event {
                Event::Init => {
                    self.lists.fetch_add(1, Ordering::Relaxed);
                    pods.relisted = Some(HashSet::new());
                }
                Event::InitApply(pod) => {
                    if let Some(info) = PodInfo::from_pod(&pod) {
                        if let Some(seen) = pods.relisted.as_mut() {
                            seen.insert(info.uid.clone());
                        }
                        upsert(&mut pods, info, None);
                    }
                }
                Event::InitDone => {
                    // Pods gone while we were not watching were deleted.
                    if let Some(seen) = pods.relisted.take() {
                        for (uid, entry) in pods.by_uid.iter_mut() {
                            if !seen.contains(uid) && entry.deleted_at.is_none() {
                                entry.deleted_at = Some(now);
                            }
                        }
                    }
                }
                Event::Apply(pod) => {
                    if let Some(info) = PodInfo::from_pod(&pod) {
                        upsert(&mut pods, info, None);
                    }
                }
                Event::Delete(pod) => {
                    if let Some(info) = PodInfo::from_pod(&pod) {
                        upsert(&mut pods, info, Some(now));
                    }
                }
            }
            purge(&mut pods, now, self.delete_grace);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Drops pods deleted longer than `delete_grace` ago.
    pub fn purge_expired(&self) {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        purge(&mut pods, Instant::now(), self.delete_grace);
    }
}

fn upsert(pods: &mut Pods, info: PodInfo, deleted_at: Option<Instant>) {
    pods.by_uid.insert(
        info.uid.clone(),
        Entry {
            pod: Arc::new(info),
            deleted_at,
        },
    );
}

fn purge(pods: &mut Pods, now: Instant, grace: Duration) {
    pods.by_uid.retain(|_, e| {
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
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .modify(|pod| {
            pod.managed_fields_mut().clear();
        });
    let mut stream = std::pin::pin!(stream);
    let mut purge_tick = tokio::time::interval(PURGE_INTERVAL);
    let mut healthy = true;
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(event)) => {
                    if !healthy {
                        tracing::info!(node = %node_name, "pod watch recovered");
                        healthy = true;
                    }
                    if matches!(event, Event::InitDone) {
                        tracing::info!(node = %node_name, pods = cache.len(), "pod list synced");
                    }
                    cache.apply(event);
                }
                Some(Err(e)) => {
                    // The watcher backs off and re-lists by itself.
                    if healthy {
                        tracing::warn!(node = %node_name, error = %e, "pod watch failed; retrying with backoff");
                    } else {
                        tracing::debug!(node = %node_name, error = %e, "pod watch still failing");
                    }
                    healthy = false;
                }
                None => {
                    tracing::error!("pod watch stream ended");
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
