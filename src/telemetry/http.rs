//! The HTTP endpoint (`http.listen`): `/metrics`, `/healthz`, `/readyz`,
//! `/api/v1/files`, `/api/v1/journals`. hyper 1, HTTP/1.1, one task per connection; GET only.
//!
//! * `/metrics`: Prometheus/OpenMetrics text ([`super::metrics`]).
//! * `/healthz`: 200 `{"status":"ok"}` — the process runs and its runtime
//!   still runs a heartbeat task (503 `{"status":"stalled",…}` if it missed
//!   10 s of them).
//! * `/readyz`: 200 or 503 with `{"ready":bool,"reasons":[…]}`
//!   ([`super::status`]).
//! * `/api/v1/files`: 200 with a JSON array of the followed files.
//! * `/api/v1/journals`: 200 with a JSON array of the journald sources
//!   (`journald::JournalView`: read and acknowledged cursor, lag).
//!
//! Does not: authenticate, serve TLS, or block the pipeline: a scrape takes
//! short locks only to copy the list of followed files.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::Exporter;
use super::status::Status;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const JSON: &str = "application/json";

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on http.listen {addr}: {source}")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// A bound listener, serving once [`HttpServer::serve`] runs.
pub struct HttpServer {
    listener: TcpListener,
    status: Arc<Status>,
}

impl HttpServer {
    pub async fn bind(addr: &str, status: Arc<Status>) -> Result<Self, BindError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
            addr: addr.to_owned(),
            source,
        })?;
        Ok(HttpServer { listener, status })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `stop` is cancelled.
    pub async fn serve(self, stop: CancellationToken) {
        let exporter = Exporter::new(self.status.clone());
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "http accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let status = self.status.clone();
            let exporter = exporter.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = handle(&req, &status, &exporter);
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(error = %e, "http connection ended with an error");
                    },
                    _ = stop.cancelled() => {}
                }
            });
        }
    }
}

fn handle(req: &Request<Incoming>, status: &Status, exporter: &Exporter) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => match exporter.render() {
            Ok(text) => reply(StatusCode::OK, OPENMETRICS, text),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "encoding failed\n".into(),
            ),
        },
        "/healthz" => match status.health() {
            Ok(()) => reply(StatusCode::OK, JSON, "{\"status\":\"ok\"}\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                JSON,
                to_json(&serde_json::json!({"status": "stalled", "reason": why})),
            ),
        },
        "/readyz" => {
            let readiness = status.readiness();
            let code = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(code, JSON, to_json(&readiness))
        }
        "/api/v1/files" => reply(StatusCode::OK, JSON, to_json(&status.files())),
        "/api/v1/journals" => reply(StatusCode::OK, JSON, to_json(&status.journals.views())),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /healthz, /readyz, /api/v1/files, /api/v1/journals\n".into(),
        ),
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")) + "\n"
}

fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
