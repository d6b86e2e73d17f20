#![no_main]
//! Arbitrary bytes as a `_bulk` response body: the reader never panics, and
//! an item counts as delivered (2xx) or duplicate (409) only when the body
//! really says so — checked against an independent reading through
//! `serde_json::Value`. The first byte picks how many items were "sent".

use std::fmt;

use libfuzzer_sys::fuzz_target;
use logship::sink::elasticsearch::response::{BulkItemOutcome, parse_bulk_response};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;

/// What an item's action object says about its status (other fields are
/// skipped unvalidated, as a tolerant reader should).
#[derive(Deserialize, Debug)]
struct Probe {
    #[serde(default)]
    status: Option<Value>,
}

/// An object's entries in document order, duplicates kept.
struct Entries(Vec<(String, Probe)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                // Like the sink, read the first entry (the action) and skip
                // whatever follows it unparsed.
                let mut out = Vec::new();
                if let Some(entry) = map.next_entry::<serde::de::IgnoredAny, Probe>()? {
                    out.push((String::new(), entry.1));
                }
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct Top {
    items: Vec<Entries>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, body)) = data.split_first() else {
        return;
    };
    let sent = usize::from(n % 16);
    let Ok(items) = parse_bulk_response(body, sent) else {
        return;
    };
    assert_eq!(items.len(), sent);
    for (i, item) in items.iter().enumerate() {
        if !matches!(
            item.outcome(),
            BulkItemOutcome::Delivered | BulkItemOutcome::Duplicate
        ) {
            continue;
        }
        // Independently: the body is JSON, `items[i]`'s first entry holds
        // this very status.
        let top: Top = serde_json::from_slice(body).expect("accepted body is a bulk response");
        let Entries(entries) = &top.items[i];
        let said = entries
            .first()
            .and_then(|(_, v)| v.status.as_ref())
            .and_then(Value::as_u64);
        assert_eq!(
            said,
            Some(u64::from(item.status)),
            "item {i} counted {:?} but the body says {entries:?}",
            item.outcome()
        );
    }
});
