//! End-to-end tests: the real `logship` binary follows real files and ships
//! to a real Elasticsearch (started once for this binary, see
//! `tests/support/elasticsearch.rs`). After each scenario the index must hold
//! exactly the lines written: none missing, none twice, with the right
//! `message`, `stream` and `@timestamp`.

#[path = "../support/mod.rs"]
mod support;

mod audit;
mod buffer;
mod expect;
mod files;
mod formats;
mod harness;
mod journald;
mod kubernetes;
mod kubernetes_real;
mod multiline;
mod ops;
mod processors;
mod restarts;
mod sink;

use support::elasticsearch::{self, Elasticsearch};
use support::logship::{Options, Setup};

/// The shared node and a fresh world for test `name` whose index is empty.
pub fn scenario(name: &str, options: Options) -> (&'static Elasticsearch, Setup) {
    let es = elasticsearch::shared();
    let setup = Setup::new(name, es.url(), options);
    // Only matters with LOGSHIP_ES_URL (a node that outlives a run).
    let _ = es.request(
        reqwest::Method::DELETE,
        &format!("{}?allow_no_indices=true", setup.index_pattern),
        "application/json",
        None,
    );
    (es, setup)
}
