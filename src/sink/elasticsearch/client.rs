//! The HTTP client every request to Elasticsearch goes through: TLS trust,
//! client certificate, credentials and custom headers, all from the config.
//!
//! Owns: reading the CA bundle, client certificate and key, the password and
//! the API key from their files at start-up (a missing or malformed file is a
//! [`SinkError`] naming the file, never its content).
//!
//! Promises: TLS is rustls (no OpenSSL). `https://` hosts are verified
//! against `tls.ca_file` only, when given; otherwise against the system's
//! trust store — `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the
//! distribution's bundle and directory (`/etc/ssl/certs` on Debian), read
//! with `rustls-native-certs` — and, when that store cannot be read or holds
//! no certificate (a distroless image), against Mozilla's roots built into
//! the binary (webpki-roots), with a warning. The store is read once per
//! client and only when some host is `https://`, no `tls.ca_file` is given
//! and `tls.verify` is on, so plain-`http` setups pay nothing for it; the
//! number of roots loaded is logged at debug level. `tls.verify: false` is
//! honoured only when written and logged as a warning at start. Secrets
//! travel as `Authorization` headers marked sensitive (hidden from `Debug`
//! output) and are never logged.
//!
//! Does not: re-read the secret files while running (a rotated password needs
//! a restart), or choose hosts (`hosts`).

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use super::SinkError;
use crate::config::{AuthConfig, ElasticsearchConfig, TlsConfig};

/// A client for `cfg`, with `timeout` on every request.
pub fn build(cfg: &ElasticsearchConfig, timeout: Duration) -> Result<reqwest::Client, SinkError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("logship/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .default_headers(headers(cfg)?);
    if let Some(tls) = &cfg.tls {
        builder = apply_tls(builder, tls)?;
    }
    let verifies_with_public_roots = cfg
        .tls
        .as_ref()
        .is_none_or(|tls| tls.verify && tls.ca_file.is_none());
    let any_https = cfg.hosts.iter().any(|h| {
        h.get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    });
    if verifies_with_public_roots
        && any_https
        && let Some(roots) = system_roots()
    {
        builder = builder.tls_built_in_root_certs(false);
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder
        .build()
        .map_err(|e| SinkError::Client(error_chain(&e)))
}

fn apply_tls(
    mut builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> Result<reqwest::ClientBuilder, SinkError> {
    if !tls.verify {
        tracing::warn!(
            "sink.elasticsearch.tls.verify is false: server certificates are NOT checked; \
             anyone on the path can read and alter what is shipped"
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(ca_file) = &tls.ca_file {
        let pem = read(ca_file)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SinkError::Tls {
            path: ca_file.clone(),
            reason: format!("not a PEM certificate bundle: {}", error_chain(&e)),
        })?;
        if certs.is_empty() {
            return Err(SinkError::Tls {
                path: ca_file.clone(),
                reason: "no PEM certificate found".into(),
            });
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) {
        let mut pem = read(cert_file)?;
        pem.push(b'\n');
        pem.extend_from_slice(&read(key_file)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| SinkError::Tls {
            path: cert_file.clone(),
            reason: format!(
                "client certificate with key {}: {}",
                key_file.display(),
                error_chain(&e)
            ),
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

/// The system's trusted CA certificates, or `None` (with a warning) when
/// none can be read, to keep the built-in roots.
fn system_roots() -> Option<Vec<reqwest::Certificate>> {
    let started = std::time::Instant::now();
    let found = rustls_native_certs::load_native_certs();
    let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
    // A certificate rustls cannot take as a trust anchor would fail the
    // whole client build: skip it, as rustls' own `add_parsable_certificates`.
    let roots: Vec<reqwest::Certificate> = found
        .certs
        .iter()
        .filter(|der| webpki::anchor_from_trusted_cert(der).is_ok())
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
        .collect();
    let skipped = found.certs.len() - roots.len();
    if roots.is_empty() {
        tracing::warn!(
            errors = %errors.join("; "),
            "no trusted CA certificate could be read from the system store \
             (SSL_CERT_FILE, SSL_CERT_DIR or /etc/ssl/certs); https hosts are \
             verified against Mozilla's roots built into logship"
        );
        return None;
    }
    if !errors.is_empty() {
        tracing::warn!(
            errors = %errors.join("; "),
            loaded = roots.len(),
            "parts of the system's trusted CA store could not be read; using the rest"
        );
    }
    tracing::debug!(
        roots = roots.len(),
        skipped,
        took = ?started.elapsed(),
        "https hosts are verified against the system's trusted CA certificates"
    );
    Some(roots)
}

fn headers(cfg: &ElasticsearchConfig) -> Result<HeaderMap, SinkError> {
    let mut map = HeaderMap::new();
    for (name, value) in &cfg.headers {
        // Validated at config load; checked again rather than unwrapped.
        let bad = || SinkError::Client(format!("invalid header {name:?}"));
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value).map_err(|_| bad())?;
        map.insert(name, value);
    }
    let authorization = match &cfg.auth {
        None => None,
        Some(AuthConfig::Basic {
            username,
            password_file,
        }) => {
            let password = secret(password_file)?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            Some((format!("Basic {token}"), password_file))
        }
        Some(AuthConfig::ApiKeyFile(file)) => {
            let key = secret(file)?;
            // `id:api_key` as shown by some tools; Elasticsearch wants it encoded.
            let encoded = if key.contains(':') {
                base64::engine::general_purpose::STANDARD.encode(&key)
            } else {
                key
            };
            Some((format!("ApiKey {encoded}"), file))
        }
    };
    if let Some((value, file)) = authorization {
        let mut value = HeaderValue::from_str(&value).map_err(|_| SinkError::Secret {
            path: file.clone(),
            reason: "contains characters not allowed in an HTTP header".into(),
        })?;
        value.set_sensitive(true);
        map.insert(AUTHORIZATION, value);
    }
    Ok(map)
}

fn read(path: &Path) -> Result<Vec<u8>, SinkError> {
    std::fs::read(path).map_err(|e| SinkError::Tls {
        path: path.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })
}

/// The first line of a secret file, without its line ending; must be non-empty.
fn secret(path: &Path) -> Result<String, SinkError> {
    let bad = |reason: String| SinkError::Secret {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(bad("empty".into()));
    }
    Ok(line.to_string())
}

/// An error and its sources, `: `-joined (reqwest's top message is vague).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(auth: Option<AuthConfig>) -> ElasticsearchConfig {
        let yaml = "sources: [{name: a, include: [/x/*.log]}]\n\
                    sink: {elasticsearch: {hosts: [http://127.0.0.1:9200], headers: {X-Tenant: t1}}}\n";
        let mut cfg = crate::config::load_str(Path::new("t.yaml"), yaml, |_| None)
            .unwrap()
            .sink;
        cfg.auth = auth;
        cfg
    }

    #[test]
    fn basic_auth_and_headers_are_sent_hidden_from_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let map = headers(&cfg_with(Some(AuthConfig::Basic {
            username: "elastic".into(),
            password_file: file,
        })))
        .unwrap();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("elastic:s3cret")
        );
        assert_eq!(map[AUTHORIZATION], expected.as_str());
        assert!(map[AUTHORIZATION].is_sensitive());
        assert!(!format!("{map:?}").contains(&expected[6..]));
        assert_eq!(map["x-tenant"], "t1");
    }

    #[test]
    fn api_key_is_sent_encoded_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "id1:k3y").unwrap();
        let map = headers(&cfg_with(Some(AuthConfig::ApiKeyFile(file.clone())))).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode("id1:k3y");
        assert_eq!(map[AUTHORIZATION], format!("ApiKey {encoded}").as_str());
        std::fs::write(&file, format!("{encoded}\n")).unwrap();
        let map = headers(&cfg_with(Some(AuthConfig::ApiKeyFile(file)))).unwrap();
        assert_eq!(map[AUTHORIZATION], format!("ApiKey {encoded}").as_str());
    }

    #[test]
    fn missing_or_empty_secret_names_the_file_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty");
        std::fs::write(&file, "\n").unwrap();
        for path in [file, dir.path().join("absent")] {
            let err = headers(&cfg_with(Some(AuthConfig::ApiKeyFile(path.clone()))))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let mut cfg = cfg_with(None);
        cfg.tls = Some(TlsConfig {
            ca_file: Some(file.clone()),
            cert_file: None,
            key_file: None,
            verify: true,
        });
        let err = build(&cfg, Duration::from_secs(1)).unwrap_err().to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
