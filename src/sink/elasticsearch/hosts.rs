//! Elasticsearch hosts: validated `_bulk` URLs, chosen round-robin among
//! the healthy ones.
//!
//! Every request (first attempt or retry) takes the next healthy host in
//! turn, so load is spread evenly while all are up. A host whose request
//! failed without an HTTP answer (refused, reset, timed out) or answered 502,
//! 503 or 504 is marked down for a backoff (1 s doubling per consecutive
//! failure, capped at [`MAX_DOWN`], jittered); once it elapses the host gets
//! the next request as a probe, and a success marks it up (so does an
//! answered `HEAD /` probe after cut connections, see `delivery`). When every host
//! is down, the one due back first is tried: requests keep failing and
//! backing off in the delivery loop, batches stay queued, and backpressure
//! reaches the tailers — nothing is dropped. Credentials in a host URL
//! (`https://user:pass@es:9200`) are sent as basic auth by the HTTP client and
//! never appear in [`Host::display`], which is what logs show.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Url;

use super::SinkError;

/// Query string of every bulk request: shrinks the response to what the
/// response walk reads.
pub const BULK_QUERY: &str = "filter_path=errors,items.*.status,items.*.error";

/// Longest time a failing host is left alone before it is probed again.
pub const MAX_DOWN: Duration = Duration::from_secs(30);
const FIRST_DOWN: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Host {
    pub bulk_url: Url,
    /// The base URL without credentials, for logs.
    pub display: String,
    /// Consecutive failures (0 = up).
    failures: AtomicU32,
    /// Milliseconds since `Hosts::epoch` until which the host is down.
    down_until_ms: AtomicU64,
}

#[derive(Debug)]
pub struct Hosts {
    hosts: Vec<Host>,
    next: AtomicUsize,
    epoch: Instant,
}

impl Hosts {
    pub fn new(hosts: &[String]) -> Result<Self, SinkError> {
        if hosts.is_empty() {
            return Err(SinkError::InvalidHost {
                host: String::new(),
                reason: "no hosts configured".into(),
            });
        }
        let hosts = hosts
            .iter()
            .map(|h| parse_host(h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Hosts {
            hosts,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records the outcome of a request to host `i`: `healthy` false marks it
    /// down (longer each consecutive time), true marks it up.
    pub fn report(&self, i: usize, healthy: bool) {
        let Some(host) = self.hosts.get(i) else {
            return;
        };
        if healthy {
            if host.failures.swap(0, Ordering::Relaxed) > 0 {
                host.down_until_ms.store(0, Ordering::Relaxed);
                tracing::info!(host = %host.display, "host is back up");
            }
            return;
        }
        let failures = host.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let down = FIRST_DOWN
            .saturating_mul(1 << (failures - 1).min(16))
            .min(MAX_DOWN)
            .mul_f64(0.75 + fastrand::f64() * 0.5);
        host.down_until_ms
            .store(self.now_ms() + down.as_millis() as u64, Ordering::Relaxed);
        if failures == 1 && self.hosts.len() > 1 {
            tracing::warn!(host = %host.display, down_for = ?down, "host marked down; using the others");
        }
    }

    /// Whether host `i` is currently marked down.
    #[cfg(test)]
    pub fn is_down(&self, i: usize) -> bool {
        self.hosts
            .get(i)
            .is_some_and(|h| h.down_until_ms.load(Ordering::Relaxed) > self.now_ms())
    }

    /// The index of the host for the next request: the next healthy one in
    /// turn, or, when all are down, the one due back first.
    pub fn pick_index(&self) -> usize {
        let n = self.hosts.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut soonest = (u64::MAX, start % n);
        for k in 0..n {
            let i = (start + k) % n;
            let until = self.hosts[i].down_until_ms.load(Ordering::Relaxed);
            if until <= now {
                return i;
            }
            if until < soonest.0 {
                soonest = (until, i);
            }
        }
        soonest.1
    }

    pub fn get(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Each host's base URL (with credentials, for requests) and display form.
    pub fn bases(&self) -> Vec<(Url, String)> {
        self.hosts
            .iter()
            .map(|h| {
                let mut base = h.bulk_url.clone();
                let path = base.path().trim_end_matches("/_bulk").to_string();
                base.set_path(&path);
                base.set_query(None);
                (base, h.display.clone())
            })
            .collect()
    }

    /// The host for the next request.
    #[cfg(test)]
    pub fn pick(&self) -> &Host {
        self.get(self.pick_index())
    }
}

fn parse_host(host: &str) -> Result<Host, SinkError> {
    let invalid = |reason: String| SinkError::InvalidHost {
        host: host.to_string(),
        reason,
    };
    let mut url = Url::parse(host).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host name".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query string or fragment is not allowed".into()));
    }
    let base_path = url.path().trim_end_matches('/').to_string();

    let mut display = url.clone();
    // Cannot fail for http(s) URLs with a host.
    let _ = display.set_username("");
    let _ = display.set_password(None);
    let display = display.as_str().trim_end_matches('/').to_string();

    url.set_path(&format!("{base_path}/_bulk"));
    url.set_query(Some(BULK_QUERY));
    Ok(Host {
        bulk_url: url,
        display,
        failures: AtomicU32::new(0),
        down_until_ms: AtomicU64::new(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_urls_keep_a_path_prefix_and_hide_credentials() {
        let hosts = Hosts::new(&[
            "http://127.0.0.1:9200".into(),
            "https://user:secret@es.example:443/proxy/es/".into(),
        ])
        .unwrap();
        let a = hosts.pick();
        assert_eq!(
            a.bulk_url.as_str(),
            format!("http://127.0.0.1:9200/_bulk?{BULK_QUERY}")
        );
        let b = hosts.pick();
        assert_eq!(b.bulk_url.path(), "/proxy/es/_bulk");
        assert_eq!(b.bulk_url.username(), "user");
        assert_eq!(b.display, "https://es.example/proxy/es");
        assert!(!b.display.contains("secret"));
        // Round-robin wraps.
        assert_eq!(hosts.pick().display, "http://127.0.0.1:9200");
    }

    #[test]
    fn down_hosts_are_skipped_until_due_and_probed_when_all_are_down() {
        let hosts = Hosts::new(&["http://a:1".into(), "http://b:1".into()]).unwrap();
        hosts.report(0, false);
        assert!(hosts.is_down(0));
        for _ in 0..6 {
            assert_eq!(hosts.pick_index(), 1);
        }
        hosts.report(1, false);
        hosts.report(1, false);
        // Both down: the one due back first (a, down once) is probed.
        for _ in 0..4 {
            assert_eq!(hosts.pick_index(), 0);
        }
        hosts.report(0, true);
        assert!(!hosts.is_down(0));
        assert_eq!(hosts.pick_index(), 0);
        assert_eq!(hosts.pick_index(), 0);
    }

    #[test]
    fn invalid_hosts_are_named() {
        for bad in [
            "127.0.0.1:9200",
            "ftp://es",
            "http://es:9200/?x=1",
            "not a url",
        ] {
            match Hosts::new(&[bad.to_string()]) {
                Err(SinkError::InvalidHost { host, .. }) => assert_eq!(host, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(Hosts::new(&[]).is_err());
    }
}
