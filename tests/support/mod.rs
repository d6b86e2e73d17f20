//! Shared helpers for integration tests: a real Elasticsearch
//! ([`elasticsearch`]) and the real agent binary with log-file writers
//! ([`logship`]). Each test binary includes this with
//! `#[path = "../support/mod.rs"] mod support;` and uses what it needs.
#![allow(dead_code)]

pub mod agent_http;
pub mod elasticsearch;
pub mod fake_apiserver;
pub mod logship;
pub mod nginx;
