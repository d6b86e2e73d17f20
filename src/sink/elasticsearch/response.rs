//! Parsing of `_bulk` responses and of our own action lines.
//!
//! Only what the sink needs is parsed: the `errors` flag and, per item, its
//! `status` and optional `error` (`type`, `reason`, `caused_by`). Unknown
//! fields are ignored, so the full response and the one shrunk by
//! `filter_path` parse the same. Each item is an object with one key, the
//! action (`create`, `index`, ...), holding the result.
//!
//! A body that is not a bulk response — HTML from a proxy, truncated JSON, a
//! 200 without `items`, an item without `status`, or a different number of
//! items than were sent — is a [`NotBulkResponse`], never a success: the
//! caller retries the whole request.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

/// Why a response body is not a usable bulk response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotBulkResponse {
    #[error("not a bulk response: {0}")]
    Malformed(String),
    #[error("bulk response has no `items`")]
    NoItems,
    #[error("bulk response has {got} items, {sent} were sent")]
    ItemCount { sent: usize, got: usize },
    #[error("bulk response item {index} has no `status`")]
    NoStatus { index: usize },
}

/// The error Elasticsearch attached to a failed item (or a failed request).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ItemError {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub caused_by: Option<serde_json::Value>,
}

impl ItemError {
    pub fn kind_or_unknown(&self) -> &str {
        self.kind.as_deref().unwrap_or("unknown")
    }
}

/// One item of a bulk response.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkItem {
    pub status: u16,
    pub error: Option<ItemError>,
}

/// What the sink does with one item, decided by its status alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkItemOutcome {
    /// 2xx: indexed.
    Delivered,
    /// 409: a document with our `_id` already exists (a replay): delivered.
    Duplicate,
    /// 429 or 5xx: send this item again after a backoff.
    Retry,
    /// Any other status: the document is rejected; dead-letter it.
    Reject,
}

impl BulkItem {
    pub fn outcome(&self) -> BulkItemOutcome {
        match self.status {
            200..=299 => BulkItemOutcome::Delivered,
            409 => BulkItemOutcome::Duplicate,
            429 | 500..=599 => BulkItemOutcome::Retry,
            _ => BulkItemOutcome::Reject,
        }
    }
}

#[derive(Deserialize)]
struct RawBulkResponse {
    items: Option<Vec<SingleKey<RawItem>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawItem {
    status: Option<u16>,
    error: Option<ItemError>,
}

/// Parses a 2xx `_bulk` response body that should describe `sent` items.
pub fn parse_bulk_response(body: &[u8], sent: usize) -> Result<Vec<BulkItem>, NotBulkResponse> {
    let raw: RawBulkResponse =
        serde_json::from_slice(body).map_err(|e| NotBulkResponse::Malformed(e.to_string()))?;
    let items = raw.items.ok_or(NotBulkResponse::NoItems)?;
    if items.len() != sent {
        return Err(NotBulkResponse::ItemCount {
            sent,
            got: items.len(),
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, SingleKey(item))| match item.status {
            Some(status) => Ok(BulkItem {
                status,
                error: item.error,
            }),
            None => Err(NotBulkResponse::NoStatus { index }),
        })
        .collect()
}

#[derive(Deserialize)]
struct RawErrorResponse {
    error: Option<RawRequestError>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRequestError {
    Object(ItemError),
    Text(String),
}

/// Best-effort `error.type` and `error.reason` of a whole-request error body
/// (`{"error":{"root_cause":[…],"type":"…","reason":"…"},"status":503}`),
/// for logs. `None` when the body is not such a JSON object (an HTML page).
pub fn parse_request_error(body: &[u8]) -> Option<ItemError> {
    let raw: RawErrorResponse = serde_json::from_slice(body).ok()?;
    match raw.error? {
        RawRequestError::Object(e) => Some(e),
        RawRequestError::Text(reason) => Some(ItemError {
            kind: None,
            reason: Some(reason),
            caused_by: None,
        }),
    }
}

/// The `_index` and `_id` of one of our action lines
/// (`{"create":{"_index":"logs-2026.11.26","_id":"…"}}`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ActionMeta {
    #[serde(rename = "_index")]
    pub index: Option<String>,
    #[serde(rename = "_id")]
    pub id: Option<String>,
}

/// Parses an action line; a line that does not parse gives empty metadata
/// (it is only used to label dead letters).
pub fn parse_action_line(line: &[u8]) -> ActionMeta {
    serde_json::from_slice::<SingleKey<ActionMeta>>(line)
        .map(|SingleKey(meta)| meta)
        .unwrap_or_default()
}

/// An object with one key whose value is a `T`; the key is ignored (it is the
/// bulk action). Further keys, if any, are skipped.
struct SingleKey<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for SingleKey<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SingleKeyVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for SingleKeyVisitor<T> {
            type Value = SingleKey<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with one key (the bulk action)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let Some((IgnoredAny, value)) = map.next_entry::<IgnoredAny, T>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(SingleKey(value))
            }
        }

        deserializer.deserialize_map(SingleKeyVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response in Elasticsearch's full format (no `filter_path`).
    const FULL: &str = r#"{"took":3,"errors":true,"items":[
        {"create":{"_index":"logs","_id":"a","_version":1,"result":"created","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}},
        {"create":{"_index":"logs","_id":"b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"}}},
        {"create":{"_index":"logs","_id":"c","status":400,"error":{"type":"document_parsing_exception","reason":"[1:44] failed to parse field [message]","caused_by":{"type":"illegal_argument_exception","reason":"bad"}}}},
        {"create":{"_index":"logs","_id":"d","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[d]: version conflict, document already exists (current version [1])","index_uuid":"x","shard":"0","index":"logs"}}},
        {"create":{"_index":"logs","_id":"e","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}
    ]}"#;

    #[test]
    fn full_response_items_in_order_with_outcomes() {
        let items = parse_bulk_response(FULL.as_bytes(), 5).unwrap();
        let outcomes: Vec<_> = items.iter().map(BulkItem::outcome).collect();
        assert_eq!(
            outcomes,
            [
                BulkItemOutcome::Delivered,
                BulkItemOutcome::Retry,
                BulkItemOutcome::Reject,
                BulkItemOutcome::Duplicate,
                BulkItemOutcome::Retry,
            ]
        );
        assert_eq!(items[0].error, None);
        let rejected = items[2].error.as_ref().unwrap();
        assert_eq!(rejected.kind.as_deref(), Some("document_parsing_exception"));
        assert_eq!(
            rejected.reason.as_deref(),
            Some("[1:44] failed to parse field [message]")
        );
        assert_eq!(
            rejected.caused_by,
            Some(serde_json::json!({"type":"illegal_argument_exception","reason":"bad"}))
        );
    }

    #[test]
    fn filter_path_response_parses() {
        let body =
            br#"{"errors":false,"items":[{"create":{"status":201}},{"index":{"status":200}}]}"#;
        let items = parse_bulk_response(body, 2).unwrap();
        assert_eq!(
            items.iter().map(|i| i.status).collect::<Vec<_>>(),
            [201, 200]
        );
    }

    #[test]
    fn wrong_item_count_is_not_success() {
        let body = br#"{"errors":false,"items":[{"create":{"status":201}}]}"#;
        assert_eq!(
            parse_bulk_response(body, 2),
            Err(NotBulkResponse::ItemCount { sent: 2, got: 1 })
        );
    }

    #[test]
    fn bodies_that_are_not_bulk_responses_are_rejected() {
        let truncated = &FULL.as_bytes()[..FULL.len() / 2];
        assert!(matches!(
            parse_bulk_response(truncated, 5),
            Err(NotBulkResponse::Malformed(_))
        ));
        let html = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
        assert!(matches!(
            parse_bulk_response(html, 1),
            Err(NotBulkResponse::Malformed(_))
        ));
        assert_eq!(
            parse_bulk_response(br#"{"took":1,"errors":false}"#, 1),
            Err(NotBulkResponse::NoItems)
        );
        assert_eq!(
            parse_bulk_response(br#"{"items":[{"create":{"_id":"a"}}]}"#, 1),
            Err(NotBulkResponse::NoStatus { index: 0 })
        );
        assert!(matches!(
            parse_bulk_response(br#"{"items":[{}]}"#, 1),
            Err(NotBulkResponse::Malformed(_))
        ));
        assert!(parse_bulk_response(b"", 1).is_err());
    }

    #[test]
    fn request_error_body_gives_type_and_reason() {
        let body = br#"{"error":{"root_cause":[{"type":"cluster_block_exception","reason":"blocked"}],"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/1/state not recovered]"},"status":503}"#;
        let e = parse_request_error(body).unwrap();
        assert_eq!(e.kind_or_unknown(), "cluster_block_exception");
        assert!(e.reason.unwrap().contains("state not recovered"));
        assert_eq!(
            parse_request_error(br#"{"error":"Incorrect HTTP method","status":405}"#)
                .and_then(|e| e.reason),
            Some("Incorrect HTTP method".to_string())
        );
        assert_eq!(parse_request_error(b"<html>502</html>"), None);
    }

    #[test]
    fn action_line_gives_index_and_id() {
        let meta = parse_action_line(br#"{"create":{"_index":"logs-2026.11.26","_id":"abc"}}"#);
        assert_eq!(meta.index.as_deref(), Some("logs-2026.11.26"));
        assert_eq!(meta.id.as_deref(), Some("abc"));
        assert_eq!(parse_action_line(b"garbage"), ActionMeta::default());
    }
}
