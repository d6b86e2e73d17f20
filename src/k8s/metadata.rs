//! What logship keeps of a pod, and the document fields it becomes.
//!
//! [`PodInfo`] is built once per pod event from the API object (everything
//! else of the Pod is dropped at once). [`PodInfo::fragment`] serialises, once
//! per followed file, the `container.*` and `kubernetes.*` members of the
//! document (DESIGN.md "Document shape") as a run of `,"key":value` members
//! that the encoder splices into every document of that file:
//!
//! ```text
//! ,"container":{"id":"…","image":{"name":"…"},"runtime":"containerd"}
//! ,"kubernetes":{"namespace":"…","pod":{"name":"…","uid":"…","ip":"…"},
//!   "container":{"name":"…"},"node":{"name":"…"},"labels":{…},"annotations":{…},
//!   "namespace_labels":{…},
//!   "owner":{"kind":"ReplicaSet","name":"web-7d4b9c8f6"},"deployment":{"name":"web"}}
//! ```
//!
//! Members whose value is unknown (no IP yet, no owner, container not yet
//! started, namespace labels not asked for) are left out. With `dedot`,
//! every `.` in a label (pod or namespace) or annotation key becomes `_`, so `app` and `app.kubernetes.io/name` never collide as
//! object and value in Elasticsearch's mapping.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};

/// One container of a pod, from its spec and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    pub image: Option<String>,
    /// Without the `<runtime>://` prefix.
    pub id: Option<String>,
    pub runtime: Option<String>,
}

/// The part of a pod that ends up on its documents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node_name: Option<String>,
    pub ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub owner: Option<(String, String)>,
    pub deployment: Option<String>,
    pub containers: Vec<ContainerInfo>,
}

impl PodInfo {
    /// `None` for a pod without uid (never sent by a real API server).
    pub fn from_pod(pod: &Pod) -> Option<PodInfo> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone()?;
        let labels = meta.labels.clone().unwrap_or_default();
        let owner = meta.owner_references.as_ref().and_then(|refs| {
            refs.iter()
                .find(|r| r.controller == Some(true))
                .or_else(|| refs.first())
                .map(|r| (r.kind.clone(), r.name.clone()))
        });
        let deployment = match &owner {
            Some((kind, name)) if kind == "ReplicaSet" => {
                deployment_of_replicaset(name, labels.get("pod-template-hash").map(String::as_str))
            }
            _ => None,
        };
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let statuses = status.into_iter().flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .chain(s.ephemeral_container_statuses.iter().flatten())
        });
        let mut containers: Vec<ContainerInfo> = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .map(|c| (c.name.clone(), c.image.clone()))
            })
            .map(|(name, image)| ContainerInfo {
                name,
                image,
                ..Default::default()
            })
            .collect();
        for cs in statuses {
            let (runtime, id) = match cs
                .container_id
                .as_deref()
                .and_then(|id| id.split_once("://"))
            {
                Some((rt, id)) => (Some(rt.to_owned()), Some(id.to_owned())),
                None => (None, cs.container_id.clone()),
            };
            let info = match containers.iter_mut().find(|c| c.name == cs.name) {
                Some(c) => c,
                None => {
                    containers.push(ContainerInfo {
                        name: cs.name.clone(),
                        ..Default::default()
                    });
                    containers.last_mut()?
                }
            };
            info.id = id;
            info.runtime = runtime;
            if info.image.is_none() && !cs.image.is_empty() {
                info.image = Some(cs.image.clone());
            }
        }
        Some(PodInfo {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid,
            node_name: spec.and_then(|s| s.node_name.clone()),
            ip: status.and_then(|s| s.pod_ip.clone()),
            labels,
            annotations: meta.annotations.clone().unwrap_or_default(),
            owner,
            deployment,
            containers,
        })
    }

    /// The `,"container":{…},"kubernetes":{…}` members for documents of
    /// `container` (see module doc), with `kubernetes.namespace_labels` when
    /// `namespace_labels` is given and not empty.
    pub fn fragment(
        &self,
        container: &str,
        dedot: bool,
        namespace_labels: Option<&BTreeMap<String, String>>,
    ) -> Vec<u8> {
        let c = self.containers.iter().find(|c| c.name == container);
        let mut doc = Map::new();
        let mut cont = Map::new();
        if let Some(c) = c {
            if let Some(id) = &c.id {
                cont.insert("id".into(), json!(id));
            }
            if let Some(image) = &c.image {
                cont.insert("image".into(), json!({ "name": image }));
            }
            if let Some(rt) = &c.runtime {
                cont.insert("runtime".into(), json!(rt));
            }
        }
        if !cont.is_empty() {
            doc.insert("container".into(), Value::Object(cont));
        }
        let mut k = Map::new();
        k.insert("namespace".into(), json!(self.namespace));
        let mut pod = Map::new();
        pod.insert("name".into(), json!(self.name));
        pod.insert("uid".into(), json!(self.uid));
        if let Some(ip) = &self.ip {
            pod.insert("ip".into(), json!(ip));
        }
        k.insert("pod".into(), Value::Object(pod));
        k.insert("container".into(), json!({ "name": container }));
        if let Some(node) = &self.node_name {
            k.insert("node".into(), json!({ "name": node }));
        }
        if !self.labels.is_empty() {
            k.insert("labels".into(), key_map(&self.labels, dedot));
        }
        if !self.annotations.is_empty() {
            k.insert("annotations".into(), key_map(&self.annotations, dedot));
        }
        if let Some(labels) = namespace_labels.filter(|l| !l.is_empty()) {
            k.insert("namespace_labels".into(), key_map(labels, dedot));
        }
        if let Some((kind, name)) = &self.owner {
            k.insert("owner".into(), json!({ "kind": kind, "name": name }));
        }
        if let Some(d) = &self.deployment {
            k.insert("deployment".into(), json!({ "name": d }));
        }
        doc.insert("kubernetes".into(), Value::Object(k));
        members(&doc)
    }
}

/// `{…}` of a JSON object without its braces, as `,"k":v,…` members.
pub(crate) fn members(object: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in object {
        out.push(b',');
        // Serialising strings and `Value`s into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, value);
    }
    out
}

fn key_map(map: &BTreeMap<String, String>, dedot: bool) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| {
                let key = if dedot {
                    k.replace('.', "_")
                } else {
                    k.clone()
                };
                (key, Value::String(v.clone()))
            })
            .collect(),
    )
}

/// `web-7d4b9c8f6` → `web`: strips the pod-template hash a Deployment adds
/// to its ReplicaSets' names (the pod's `pod-template-hash` label when there
/// is one, else a trailing `-<hash>` of the kube alphabet).
pub fn deployment_of_replicaset(replicaset: &str, template_hash: Option<&str>) -> Option<String> {
    if let Some(hash) = template_hash {
        return replicaset
            .strip_suffix(hash)
            .and_then(|s| s.strip_suffix('-'))
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
    }
    let (name, suffix) = replicaset.rsplit_once('-')?;
    // Kubernetes' SafeEncodeString alphabet: no vowels, no 0/1/3.
    let hash_like = (5..=10).contains(&suffix.len())
        && suffix
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b));
    (hash_like && !name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-7d4b9c8f6-x2x9k", "namespace": "shop", "uid": "u-1",
                "labels": {"app": "web", "app.kubernetes.io/name": "web", "pod-template-hash": "7d4b9c8f6"},
                "annotations": {"logship.io/note": "hi"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d4b9c8f6", "uid": "rs-1", "controller": true}]
            },
            "spec": {"nodeName": "node-1", "containers": [
                {"name": "app", "image": "nginx:1.27"}, {"name": "side", "image": "busybox"}]},
            "status": {"podIP": "10.0.0.7", "containerStatuses": [
                {"name": "app", "image": "docker.io/library/nginx:1.27", "imageID": "x",
                 "containerID": "containerd://abc123", "ready": true, "restartCount": 0}]}
        }))
        .unwrap()
    }

    #[test]
    fn fragment_has_the_design_fields() {
        let info = PodInfo::from_pod(&pod()).unwrap();
        let frag = info.fragment("app", true, None);
        let doc: Value =
            serde_json::from_slice(&[b"{\"x\":1".as_slice(), &frag, b"}"].concat()).unwrap();
        assert_eq!(doc["container"]["id"], "abc123");
        assert_eq!(doc["container"]["runtime"], "containerd");
        assert_eq!(doc["container"]["image"]["name"], "nginx:1.27");
        let k = &doc["kubernetes"];
        assert_eq!(k["namespace"], "shop");
        assert_eq!(k["pod"]["name"], "web-7d4b9c8f6-x2x9k");
        assert_eq!(k["pod"]["uid"], "u-1");
        assert_eq!(k["pod"]["ip"], "10.0.0.7");
        assert_eq!(k["container"]["name"], "app");
        assert_eq!(k["node"]["name"], "node-1");
        assert_eq!(k["labels"]["app"], "web");
        assert_eq!(k["labels"]["app_kubernetes_io/name"], "web");
        assert_eq!(k["annotations"]["logship_io/note"], "hi");
        assert_eq!(k["owner"]["kind"], "ReplicaSet");
        assert_eq!(k["deployment"]["name"], "web");
    }

    #[test]
    fn namespace_labels_only_when_given() {
        let info = PodInfo::from_pod(&pod()).unwrap();
        let labels: BTreeMap<String, String> = [
            ("team".to_owned(), "payments".to_owned()),
            ("kubernetes.io/metadata.name".to_owned(), "shop".to_owned()),
        ]
        .into();
        let parse = |frag: Vec<u8>| -> Value {
            serde_json::from_slice(&[b"{\"x\":1".as_slice(), &frag, b"}"].concat()).unwrap()
        };
        let doc = parse(info.fragment("app", true, Some(&labels)));
        assert_eq!(
            doc["kubernetes"]["namespace_labels"],
            json!({"team": "payments", "kubernetes_io/metadata_name": "shop"})
        );
        let doc = parse(info.fragment("app", false, Some(&labels)));
        assert_eq!(
            doc["kubernetes"]["namespace_labels"]["kubernetes.io/metadata.name"],
            "shop"
        );
        for none in [None, Some(&BTreeMap::new())] {
            let doc = parse(info.fragment("app", true, none));
            assert!(doc["kubernetes"].get("namespace_labels").is_none(), "{doc}");
        }
    }

    #[test]
    fn container_not_started_and_no_dedot() {
        let info = PodInfo::from_pod(&pod()).unwrap();
        let frag = info.fragment("side", false, None);
        let doc: Value =
            serde_json::from_slice(&[b"{\"x\":1".as_slice(), &frag, b"}"].concat()).unwrap();
        assert_eq!(doc["container"]["image"]["name"], "busybox");
        assert!(doc["container"].get("id").is_none());
        assert_eq!(doc["kubernetes"]["labels"]["app.kubernetes.io/name"], "web");
    }

    #[test]
    fn deployment_names() {
        assert_eq!(
            deployment_of_replicaset("web-7d4b9c8f6", Some("7d4b9c8f6")).as_deref(),
            Some("web")
        );
        assert_eq!(
            deployment_of_replicaset("my-api-5c6b7f8d9b", None).as_deref(),
            Some("my-api")
        );
        assert_eq!(deployment_of_replicaset("standalone-rs", None), None);
        assert_eq!(deployment_of_replicaset("web-abc", Some("zzz")), None);
    }
}
