//! Tracing setup: where the program's own log lines go and how they look.
//!
//! Everything is written to stderr (stdout is left to `check-config`'s
//! output), as human-readable text (coloured only on a terminal) or as one JSON object per line, per
//! `log.format`. The filter comes from `log.level` unless the `RUST_LOG`
//! environment variable is set and non-empty, in which case it wins (handy to
//! turn on `debug` for one run without editing the config). Installed once,
//! process-wide; this module does not rotate or ship the agent's own logs.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("RUST_LOG={value:?} is not a valid filter: {source}")]
    BadRustLog {
        value: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("log.level {value:?} is not a valid filter: {source}")]
    BadLevel {
        value: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// The filter to use: `RUST_LOG` if set and non-empty, else `log.level`.
pub fn filter(config: &LogConfig, rust_log: Option<&str>) -> Result<EnvFilter, LoggingError> {
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) => {
            EnvFilter::builder()
                .parse(value)
                .map_err(|source| LoggingError::BadRustLog {
                    value: value.to_owned(),
                    source,
                })
        }
        None => {
            EnvFilter::builder()
                .parse(&config.level)
                .map_err(|source| LoggingError::BadLevel {
                    value: config.level.clone(),
                    source,
                })
        }
    }
}

/// Installs the process-wide subscriber writing to stderr.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(config, rust_log.as_deref())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|_| LoggingError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(level: &str) -> LogConfig {
        LogConfig {
            format: LogFormat::Text,
            level: level.to_owned(),
        }
    }

    #[test]
    fn rust_log_overrides_the_configured_level() {
        let f = filter(&log("info"), Some("logship=trace")).unwrap();
        assert_eq!(f.to_string(), "logship=trace");
        let f = filter(&log("warn"), Some("  ")).unwrap();
        assert_eq!(f.to_string(), "warn");
        let f = filter(&log("warn"), None).unwrap();
        assert_eq!(f.to_string(), "warn");
    }

    #[test]
    fn bad_filters_are_reported_with_their_origin() {
        let err = filter(&log("info"), Some("logship=loud")).unwrap_err();
        assert!(
            err.to_string().starts_with("RUST_LOG=\"logship=loud\""),
            "{err}"
        );
        let err = filter(&log("x=loud"), None).unwrap_err();
        assert!(err.to_string().starts_with("log.level \"x=loud\""), "{err}");
    }
}
