//! Sidecar mode: this pod's metadata from the config and the downward API.
//!
//! The pod's name, namespace and uid come from the config (usually
//! `${POD_NAME}` etc., set from `fieldRef`s); labels and annotations from
//! downward-API volume files, whose format is one `key="value"` per line with
//! the value quoted Go-style (`\"`, `\\`, `\n`, `\t`, `\xNN`…). The files are
//! read once at start; no API server is involved. Of the pod's annotations,
//! `logship.io/format` and `logship.io/json-target` apply (as in daemonset
//! mode); the exclusion ones do not (a sidecar is there to ship).

use std::collections::BTreeMap;
use std::path::Path;

use super::FileMetadata;
use super::metadata::{ContainerInfo, PodInfo};
use crate::config::kubernetes::KubernetesConfig;

/// A downward-API file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading downward API file {path}: {source}")]
pub struct DownwardApiError {
    pub path: String,
    pub source: std::io::Error,
}

/// What every document gets (see `metadata::PodInfo::fragment` and
/// `k8s::json_target`). `Ok(None)` unless the mode is sidecar.
pub fn sidecar_metadata(
    config: &KubernetesConfig,
) -> Result<Option<FileMetadata>, DownwardApiError> {
    let Some(pod) = &config.pod else {
        return Ok(None);
    };
    let read =
        |p: &Option<std::path::PathBuf>| -> Result<BTreeMap<String, String>, DownwardApiError> {
            match p {
                None => Ok(BTreeMap::new()),
                Some(p) => read_downward_file(p),
            }
        };
    let container = pod.container.clone().unwrap_or_default();
    let info = PodInfo {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone().unwrap_or_default(),
        node_name: Some(config.node_name.clone()),
        labels: read(&pod.labels_file)?,
        annotations: read(&pod.annotations_file)?,
        containers: vec![ContainerInfo {
            name: container.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let json_target = super::json_target(&info).unwrap_or_else(|(error, instead)| {
        tracing::warn!(%error, "bad pod annotation");
        instead
    });
    let multiline = super::multiline_annotation(&info).unwrap_or_else(|error| {
        tracing::warn!(%error, "bad pod annotation");
        None
    });
    Ok(Some(FileMetadata {
        fragment: info.fragment(&container, config.dedot, None),
        json_target,
        drop_regex: super::drop_regex(&info),
        multiline,
        // Read once at start: a label changed later reaches the files
        // when logship restarts (the downward-API files do change).
        origin: None,
    }))
}

fn read_downward_file(path: &Path) -> Result<BTreeMap<String, String>, DownwardApiError> {
    let text = std::fs::read_to_string(path).map_err(|source| DownwardApiError {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse_downward(&text))
}

/// Parses `key="value"` lines; lines that do not parse are skipped.
pub fn parse_downward(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            Some((key.trim().to_owned(), unquote(value)))
        })
        .collect()
}

fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_api_format() {
        let m = parse_downward("app=\"web\"\napp.kubernetes.io/name=\"a \\\"b\\\"\"\nbroken\n");
        assert_eq!(m.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            m.get("app.kubernetes.io/name").map(String::as_str),
            Some("a \"b\"")
        );
        assert_eq!(m.len(), 2);
    }
}
