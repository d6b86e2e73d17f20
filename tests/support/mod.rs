//! Shared helpers for integration tests: a real Elasticsearch or OpenSearch
//! ([`elasticsearch`]), the real agent binary with log-file writers
//! ([`logship`]) and its HTTP endpoints ([`agent_http`]), a real Kubernetes
//! API server ([`kube_apiserver`]). Each test binary
//! includes this with `#[path = "../support/mod.rs"] mod support;` (or
//! `#[path = "support/mod.rs"]` from `tests/`) and uses what it needs.
#![allow(dead_code)]

pub mod agent_http;
pub mod elasticsearch;
pub mod fake_apiserver;
pub mod kube_apiserver;
pub mod logship;
pub mod nginx;
