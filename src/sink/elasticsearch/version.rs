//! Start-up version check: which server answers at each host, logged once.
//!
//! Asks `GET /` for `version.number` (and `version.distribution`, which
//! OpenSearch sets). Some builds have no handler for `GET /`: the root
//! endpoint lives in Elasticsearch's `rest-root` module, which the
//! integration-test distribution does not ship, so it answers 405 (`allowed:
//! [DELETE]`). Then `GET /_nodes/_local?filter_path=nodes.*.version` is asked
//! instead (needs the `monitor` cluster privilege); its answer does not name
//! the distribution, and is taken for Elasticsearch (OpenSearch, including
//! its integration-test distribution, always serves `GET /`).
//!
//! Promises: never fatal. An unreachable host or an unreadable answer is a
//! warning; an unsupported version is an error in the log; shipping starts
//! either way (the bulk path retries until the cluster answers).
//!
//! Does not: gate the bulk path on the version: `_bulk` with `create`,
//! `filter_path` and per-item outcomes read the same on Elasticsearch 7.10+,
//! 8 and 9 and OpenSearch 1+. The one thing that depends on the answer is
//! the index template's field types ([`super::template::Flavour`]), which
//! [`probe`] feeds. Tested against real servers: Elasticsearch 8.19 and 9.5
//! and OpenSearch 2.19 (tests/compat.rs).

use reqwest::Url;
use serde_json::Value;

/// What answered at a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    /// `elasticsearch` or `opensearch`.
    pub distribution: String,
    pub number: String,
}

impl ServerVersion {
    /// Whether logship supports this server (Elasticsearch 7.10+ or 8/9,
    /// OpenSearch 1+).
    pub fn supported(&self) -> bool {
        let mut parts = self.number.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next().flatten();
        let minor = parts.next().flatten().unwrap_or(0);
        match (self.distribution.as_str(), major) {
            ("opensearch", Some(m)) => m >= 1,
            (_, Some(m)) => m >= 8 || (m == 7 && minor >= 10),
            _ => false,
        }
    }
}

/// Reads `version` from a `GET /` body.
pub fn parse_root(body: &[u8]) -> Option<ServerVersion> {
    let v: Value = serde_json::from_slice(body).ok()?;
    from_version_object(&v["version"])
}

/// Reads the first node's version from a `GET /_nodes/_local` body.
pub fn parse_nodes(body: &[u8]) -> Option<ServerVersion> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let node = v["nodes"].as_object()?.values().next()?;
    let number = node["version"].as_str()?.to_string();
    Some(ServerVersion {
        distribution: "elasticsearch".into(),
        number,
    })
}

fn from_version_object(v: &Value) -> Option<ServerVersion> {
    let number = v["number"].as_str()?.to_string();
    let distribution = v["distribution"]
        .as_str()
        .unwrap_or("elasticsearch")
        .to_string();
    Some(ServerVersion {
        distribution,
        number,
    })
}

/// Why the version is not known.
#[derive(Debug)]
pub enum Unknown {
    Unreachable(String),
    Unreadable { status: u16, body: String },
}

/// Asks `base` (a host URL without `_bulk`) what it runs.
pub async fn probe(client: &reqwest::Client, base: &Url) -> Result<ServerVersion, Unknown> {
    let (status, body) = get(client, base, "").await?;
    if status == 200
        && let Some(v) = parse_root(&body)
    {
        return Ok(v);
    }
    if status == 405 || status == 404 || status == 200 {
        let (status2, body2) =
            get(client, base, "_nodes/_local?filter_path=nodes.*.version").await?;
        if status2 == 200
            && let Some(v) = parse_nodes(&body2)
        {
            return Ok(v);
        }
        return Err(Unknown::Unreadable {
            status: status2,
            body: snippet(&body2),
        });
    }
    Err(Unknown::Unreadable {
        status,
        body: snippet(&body),
    })
}

async fn get(client: &reqwest::Client, base: &Url, path: &str) -> Result<(u16, Vec<u8>), Unknown> {
    let mut url = base.clone();
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let base_path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{base_path}/{p}"));
    url.set_query((!q.is_empty()).then_some(q));
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| Unknown::Unreachable(super::client::error_chain(&e)))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| Unknown::Unreachable(super::client::error_chain(&e)))?;
    Ok((status, body.to_vec()))
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// Probes every host once and logs what answered. Never fails.
pub async fn check_all(client: reqwest::Client, hosts: Vec<(Url, String)>) {
    for (base, shown) in hosts {
        match probe(&client, &base).await {
            Ok(v) if v.supported() => tracing::info!(
                host = %shown, distribution = %v.distribution, version = %v.number,
                "connected to {} {}", v.distribution, v.number
            ),
            Ok(v) => tracing::error!(
                host = %shown, distribution = %v.distribution, version = %v.number,
                "{} {} is not supported (Elasticsearch 7.10+ or OpenSearch 1+); shipping anyway",
                v.distribution, v.number
            ),
            Err(Unknown::Unreachable(error)) => tracing::warn!(
                host = %shown, %error,
                "cannot reach the host to read its version; buffering and retrying"
            ),
            Err(Unknown::Unreadable { status, body }) => tracing::warn!(
                host = %shown, status, %body,
                "the host did not say which version it runs; shipping anyway"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_elasticsearch_and_opensearch_roots_and_nodes() {
        let es = parse_root(br#"{"name":"n","version":{"number":"8.19.8","build_flavor":"default"},"tagline":"You Know, for Search"}"#).unwrap();
        assert_eq!(es.number, "8.19.8");
        assert_eq!(es.distribution, "elasticsearch");
        assert!(es.supported());
        let os =
            parse_root(br#"{"version":{"distribution":"opensearch","number":"2.19.1"}}"#).unwrap();
        assert_eq!(os.distribution, "opensearch");
        assert!(os.supported());
        let nodes = parse_nodes(br#"{"nodes":{"abc":{"version":"9.2.0"}}}"#).unwrap();
        assert_eq!(nodes.number, "9.2.0");
        assert!(nodes.supported());
        for old in ["6.8.23", "7.9.3", "garbage"] {
            let v = ServerVersion {
                distribution: "elasticsearch".into(),
                number: old.into(),
            };
            assert!(!v.supported(), "{old}");
        }
        assert!(parse_root(b"<html>502</html>").is_none());
        assert!(parse_root(br#"{"version":{}}"#).is_none());
    }
}
