//! Elasticsearch hosts: validated `_bulk` URLs, chosen round-robin.
//!
//! Every request (first attempt or retry) takes the next host in turn, so a
//! request that failed to connect is retried on the next host, and load is
//! spread evenly while all are up. Credentials in a host URL
//! (`https://user:pass@es:9200`) are sent as basic auth by the HTTP client and
//! never appear in [`Host::display`], which is what logs show.

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::Url;

use super::SinkError;

/// Query string of every bulk request: shrinks the response to what the
/// response walk reads.
pub const BULK_QUERY: &str = "filter_path=errors,items.*.status,items.*.error";

#[derive(Debug)]
pub struct Host {
    pub bulk_url: Url,
    /// The base URL without credentials, for logs.
    pub display: String,
}

#[derive(Debug)]
pub struct Hosts {
    hosts: Vec<Host>,
    next: AtomicUsize,
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
        })
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
    pub fn pick(&self) -> &Host {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.hosts.len();
        &self.hosts[i]
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
