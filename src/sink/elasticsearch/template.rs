//! `template: install`: logship's composable index template, put at start-up
//! before the first document is sent.
//!
//! The template matches every index the `index` setting can produce (its
//! pattern: directives and `{field}` placeholders become `*`), or the data
//! stream's name (then with `data_stream: {}`, which makes Elasticsearch
//! create a data stream on the first `create`). Mappings: `message` is
//! `text`; `@timestamp` is `date_nanos`; every metadata field logship writes
//! is `keyword`; other strings default to `keyword` (`ignore_above: 1024`).
//! Kubernetes labels, annotations and namespace labels: with `dedot: true`
//! (default) their keys have no dots and map as keywords; with `dedot: false`
//! those objects are `flattened`, so `app: x` and `app.kubernetes.io/name: y`
//! cannot collide as value and object.
//!
//! Promises: installation is retried (capped backoff, no limit) until a host
//! accepts it; meanwhile no batch is sent, so no index is auto-created with
//! dynamic mappings. Does not: delete or version older templates (the put
//! overwrites logship's own, by name).

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::ElasticsearchConfig;
use crate::encode::FieldTemplate;

/// Above Elasticsearch's built-in `logs` template (priority 100).
pub const PRIORITY: u64 = 200;

/// What to put, and where.
#[derive(Debug, Clone)]
pub struct IndexTemplatePut {
    pub name: String,
    pub body: Value,
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
        body: body(&pattern, cfg.data_stream.is_some(), cfg.dedot),
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
pub fn body(pattern: &str, data_stream: bool, dedot: bool) -> Value {
    let kv = |keys: &[&str]| -> Value {
        object(
            &keys
                .iter()
                .map(|k| (*k, keyword()))
                .collect::<Vec<(&str, Value)>>(),
        )
    };
    let metadata_map = if dedot {
        json!({"type": "object"})
    } else {
        json!({"type": "flattened", "ignore_above": 1024})
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
/// exponential backoff until one accepts it.
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
                .body(put.body.to_string())
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(host = %shown, template = %put.name, "index template installed");
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

    #[test]
    fn labels_are_flattened_only_without_dedot_and_data_streams_are_marked() {
        let dotted = body("logs-*", false, false);
        assert_eq!(
            dotted["template"]["mappings"]["properties"]["kubernetes"]["properties"]["labels"]["type"],
            "flattened"
        );
        assert!(dotted.get("data_stream").is_none());
        let ds = body("logs-a-b", true, true);
        assert_eq!(
            ds["template"]["mappings"]["properties"]["kubernetes"]["properties"]["labels"]["type"],
            "object"
        );
        assert_eq!(ds["data_stream"], json!({}));
        assert_eq!(
            ds["template"]["mappings"]["properties"]["message"]["type"],
            "text"
        );
    }
}
