//! `template: install`: logship's composable index template, put at start-up
//! before the first document is sent.
//!
//! The template matches every index the `index` setting can produce (its
//! pattern: directives and `{field}` placeholders become `*`), or the data
//! stream's name (then with `data_stream: {}`, which makes the server create
//! a data stream on the first `create`). Mappings: `message` is `text`;
//! `@timestamp` is `date_nanos` (so a line stamped before 1970 is rejected by
//! the server and dead-lettered); every metadata field logship writes is
//! `keyword`; other strings default to `keyword` (`ignore_above: 1024`).
//! Kubernetes labels, annotations and namespace labels: with `dedot: true`
//! (default) their keys have no dots and map as keywords; with `dedot: false`
//! those objects get a single flat field type, so `app: x` and
//! `app.kubernetes.io/name: y` cannot collide as value and object.
//!
//! The flat type is not the same everywhere, so the template's [`Flavour`] is
//! chosen per host from what `GET /` says (see [`super::version`]):
//!
//! | server                        | labels, annotations, namespace labels with `dedot: false` |
//! |-------------------------------|------------------------------------------------|
//! | Elasticsearch 7.10+, 8, 9     | `flattened` (`ignore_above: 1024`), searchable |
//! | OpenSearch 2.7+               | `flat_object` (takes no `ignore_above`), searchable |
//! | OpenSearch 1.x, 2.0 – 2.6     | `object` with `enabled: false`: kept in `_source`, not searchable |
//! | no version readable           | as Elasticsearch                               |
//!
//! Everything else (composable `_index_template`, `data_stream: {}`,
//! `date_nanos`, `dynamic_templates`, `_meta`, `priority`) is the same on all
//! of them; tests/compat.rs checks the template against Elasticsearch 8 and 9
//! and OpenSearch 2 (`scripts/elasticsearch.sh matrix`).
//!
//! Promises: installation is retried (capped backoff, no limit) until a host
//! accepts it; meanwhile no batch is sent, so no index is auto-created with
//! dynamic mappings. Does not: delete or version older templates (the put
//! overwrites logship's own, by name), or use `subobjects: false` (OpenSearch
//! has no such setting).

use std::time::Duration;

use serde_json::{Value, json};

use super::version::{self, ServerVersion, Unknown};
use crate::config::ElasticsearchConfig;
use crate::encode::FieldTemplate;

/// Above Elasticsearch's built-in `logs` template (priority 100).
pub const PRIORITY: u64 = 200;

/// The mapping dialect of a server (see the module doc's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Elasticsearch: `flattened`.
    Elasticsearch,
    /// OpenSearch 2.7+: `flat_object`.
    OpenSearch,
    /// OpenSearch before 2.7: no flat field type.
    OpenSearchWithoutFlatObject,
}

impl Flavour {
    /// The dialect of `server`; anything that is not OpenSearch is taken
    /// for Elasticsearch.
    pub fn of(server: &ServerVersion) -> Flavour {
        if server.distribution != "opensearch" {
            return Flavour::Elasticsearch;
        }
        let mut parts = server.number.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next().flatten().unwrap_or(0);
        let minor = parts.next().flatten().unwrap_or(0);
        if (major, minor) >= (2, 7) {
            Flavour::OpenSearch
        } else {
            Flavour::OpenSearchWithoutFlatObject
        }
    }
}

/// What to put, and where: the template's name and what its body depends
/// on besides the server's [`Flavour`].
#[derive(Debug, Clone)]
pub struct IndexTemplatePut {
    pub name: String,
    /// The `index_patterns` entry.
    pub pattern: String,
    pub data_stream: bool,
    pub dedot: bool,
}

impl IndexTemplatePut {
    /// The body for a server of `flavour`.
    pub fn body(&self, flavour: Flavour) -> Value {
        body(&self.pattern, self.data_stream, self.dedot, flavour)
    }
}

/// The template for `cfg`; `None` unless `template: install`.
pub fn for_config(cfg: &ElasticsearchConfig) -> Option<IndexTemplatePut> {
    if cfg.template != crate::config::TemplateMode::Install {
        return None;
    }
    let pattern = match FieldTemplate::parse(&cfg.index) {
        Ok(t) => t.pattern(),
        // Validated at config load; the literal name is the safe fallback.
        Err(_) => cfg.index.clone(),
    };
    let name: String = format!("logship-{pattern}")
        .chars()
        .map(|c| if c == '*' { '_' } else { c })
        .collect();
    Some(IndexTemplatePut {
        name,
        pattern,
        data_stream: cfg.data_stream.is_some(),
        dedot: cfg.dedot,
    })
}

fn keyword() -> Value {
    json!({"type": "keyword", "ignore_above": 1024})
}

fn object(fields: &[(&str, Value)]) -> Value {
    let props: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    json!({ "properties": props })
}

/// The index template body.
pub fn body(pattern: &str, data_stream: bool, dedot: bool, flavour: Flavour) -> Value {
    let kv = |keys: &[&str]| -> Value {
        object(
            &keys
                .iter()
                .map(|k| (*k, keyword()))
                .collect::<Vec<(&str, Value)>>(),
        )
    };
    let metadata_map = match (dedot, flavour) {
        (true, _) => json!({"type": "object"}),
        (false, Flavour::Elasticsearch) => json!({"type": "flattened", "ignore_above": 1024}),
        (false, Flavour::OpenSearch) => json!({"type": "flat_object"}),
        (false, Flavour::OpenSearchWithoutFlatObject) => {
            json!({"type": "object", "enabled": false})
        }
    };
    let properties = json!({
        "@timestamp": {"type": "date_nanos"},
        "message": {"type": "text"},
        "stream": keyword(),
        "log": object(&[
            ("file", kv(&["path"])),
            ("offset", json!({"type": "long"})),
            ("flags", keyword()),
        ]),
        "host": kv(&["name"]),
        "agent": kv(&["type", "version"]),
        "container": object(&[
            ("id", keyword()),
            ("runtime", keyword()),
            ("image", kv(&["name"])),
        ]),
        "kubernetes": object(&[
            ("namespace", keyword()),
            ("pod", kv(&["name", "uid"])),
            ("container", kv(&["name"])),
            ("node", kv(&["name"])),
            ("deployment", kv(&["name"])),
            ("labels", metadata_map.clone()),
            ("annotations", metadata_map.clone()),
            ("namespace_labels", metadata_map),
        ]),
    });
    let mut body = json!({
        "index_patterns": [pattern],
        "priority": PRIORITY,
        "_meta": {"managed_by": "logship", "version": env!("CARGO_PKG_VERSION")},
        "template": {
            "mappings": {
                "dynamic_templates": [
                    {"strings_as_keyword": {
                        "match_mapping_type": "string",
                        "mapping": keyword(),
                    }},
                ],
                "properties": properties,
            }
        }
    });
    if data_stream {
        body["data_stream"] = json!({});
    }
    body
}

/// Puts `put` on one of `bases` (trying each in turn), retrying with capped
/// exponential backoff until one accepts it. Each try first asks the host
/// what it runs, to pick the body's [`Flavour`].
pub async fn install(
    client: &reqwest::Client,
    bases: &[(reqwest::Url, String)],
    put: &IndexTemplatePut,
    initial_backoff: Duration,
    max_backoff: Duration,
) {
    let mut backoff = initial_backoff;
    let mut attempt: u64 = 0;
    loop {
        for (base, shown) in bases {
            let flavour = match version::probe(client, base).await {
                Ok(server) => Flavour::of(&server),
                Err(Unknown::Unreadable { .. }) => Flavour::Elasticsearch,
                Err(Unknown::Unreachable(error)) => {
                    if attempt.is_multiple_of(10) {
                        tracing::warn!(
                            host = %shown, template = %put.name, %error,
                            "cannot reach the host to install the index template; retrying"
                        );
                    }
                    continue;
                }
            };
            if flavour == Flavour::OpenSearchWithoutFlatObject && !put.dedot {
                tracing::warn!(
                    host = %shown, template = %put.name,
                    "this OpenSearch (before 2.7) has no flat_object: with dedot: false, labels and annotations are kept in _source but not searchable"
                );
            }
            let mut url = base.clone();
            let path = format!(
                "{}/_index_template/{}",
                url.path().trim_end_matches('/'),
                put.name
            );
            url.set_path(&path);
            let result = client
                .put(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(put.body(flavour).to_string())
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(
                        host = %shown, template = %put.name, flavour = ?flavour,
                        "index template installed"
                    );
                    return;
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let text: String = text.chars().take(500).collect();
                    tracing::error!(
                        host = %shown, template = %put.name, %status, body = %text,
                        "cannot install the index template; nothing is sent until it is (check privileges: manage_index_templates)"
                    );
                }
                Err(e) => {
                    if attempt.is_multiple_of(10) {
                        tracing::warn!(
                            host = %shown, template = %put.name,
                            error = %super::client::error_chain(&e),
                            "cannot reach the host to install the index template; retrying"
                        );
                    }
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(body: &Value) -> &Value {
        &body["template"]["mappings"]["properties"]["kubernetes"]["properties"]["labels"]
    }

    fn server(distribution: &str, number: &str) -> ServerVersion {
        ServerVersion {
            distribution: distribution.into(),
            number: number.into(),
        }
    }

    #[test]
    fn labels_are_flattened_only_without_dedot_and_data_streams_are_marked() {
        let dotted = body("logs-*", false, false, Flavour::Elasticsearch);
        assert_eq!(labels(&dotted)["type"], "flattened");
        assert!(dotted.get("data_stream").is_none());
        let ds = body("logs-a-b", true, true, Flavour::Elasticsearch);
        assert_eq!(labels(&ds)["type"], "object");
        assert_eq!(ds["data_stream"], json!({}));
        assert_eq!(
            ds["template"]["mappings"]["properties"]["message"]["type"],
            "text"
        );
    }

    #[test]
    fn the_flat_type_follows_the_server() {
        for (distribution, number, flavour, flat) in [
            (
                "elasticsearch",
                "8.19.8",
                Flavour::Elasticsearch,
                json!({"type": "flattened", "ignore_above": 1024}),
            ),
            (
                "elasticsearch",
                "9.5.4",
                Flavour::Elasticsearch,
                json!({"type": "flattened", "ignore_above": 1024}),
            ),
            (
                "opensearch",
                "2.19.6",
                Flavour::OpenSearch,
                json!({"type": "flat_object"}),
            ),
            (
                "opensearch",
                "2.7.0",
                Flavour::OpenSearch,
                json!({"type": "flat_object"}),
            ),
            (
                "opensearch",
                "3.1.0",
                Flavour::OpenSearch,
                json!({"type": "flat_object"}),
            ),
            (
                "opensearch",
                "2.6.0",
                Flavour::OpenSearchWithoutFlatObject,
                json!({"type": "object", "enabled": false}),
            ),
            (
                "opensearch",
                "1.3.20",
                Flavour::OpenSearchWithoutFlatObject,
                json!({"type": "object", "enabled": false}),
            ),
        ] {
            let got = Flavour::of(&server(distribution, number));
            assert_eq!(got, flavour, "{distribution} {number}");
            let put = IndexTemplatePut {
                name: "logship-logs-_".into(),
                pattern: "logs-*".into(),
                data_stream: false,
                dedot: false,
            };
            let b = put.body(got);
            assert_eq!(*labels(&b), flat, "{distribution} {number}");
            let annotations =
                &b["template"]["mappings"]["properties"]["kubernetes"]["properties"]["annotations"];
            assert_eq!(*annotations, flat, "{distribution} {number}");
            // With dedot the keys have no dots: a plain object everywhere.
            let dedotted = IndexTemplatePut { dedot: true, ..put }.body(got);
            assert_eq!(labels(&dedotted)["type"], "object");
        }
    }
}
