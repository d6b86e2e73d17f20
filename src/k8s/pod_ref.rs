//! Which pod and container a log file belongs to, from its path alone.
//!
//! The kubelet writes container logs to
//! `/var/log/pods/<namespace>_<pod name>_<pod uid>/<container>/<restart>.log`
//! (the target of the `/var/log/containers/*.log` symlinks, which discovery
//! resolves, so the 255-byte-truncated symlink names never matter). Namespace
//! and pod names are DNS labels/subdomains and uids are UUIDs, so none of
//! them contains `_`: the directory name splits unambiguously. Rotated files
//! (`0.log.20261126-010203`) belong to the same container.

use std::path::Path;

/// A pod log file's pod and container, as named by its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub pod_name: String,
    pub uid: String,
    pub container: String,
}

impl PodRef {
    /// Parses the last three components of `path`; `None` for any file that
    /// is not laid out like a pod log.
    pub fn from_path(path: &Path) -> Option<PodRef> {
        let mut parts = path.iter().rev();
        let file = parts.next()?.to_str()?;
        let container = parts.next()?.to_str()?;
        let pod_dir = parts.next()?.to_str()?;
        // `<restart>.log` or a rotated `<restart>.log.<suffix>`.
        let (restart, _) = file.split_once(".log")?;
        if restart.is_empty() || !restart.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut fields = pod_dir.splitn(3, '_');
        let namespace = fields.next()?;
        let pod_name = fields.next()?;
        let uid = fields.next()?;
        if [namespace, pod_name, uid, container]
            .iter()
            .any(|s| s.is_empty() || s.contains('_'))
        {
            return None;
        }
        Some(PodRef {
            namespace: namespace.to_owned(),
            pod_name: pod_name.to_owned(),
            uid: uid.to_owned(),
            container: container.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_layout() {
        let r = PodRef::from_path(Path::new(
            "/var/log/pods/kube-system_coredns-5d78c9869d-abcde_0f6a8c1e-1b2c-4d5e-8f90-123456789abc/coredns/3.log",
        ))
        .unwrap();
        assert_eq!(r.namespace, "kube-system");
        assert_eq!(r.pod_name, "coredns-5d78c9869d-abcde");
        assert_eq!(r.uid, "0f6a8c1e-1b2c-4d5e-8f90-123456789abc");
        assert_eq!(r.container, "coredns");
    }

    #[test]
    fn rotated_file_and_any_prefix() {
        let r = PodRef::from_path(Path::new(
            "/tmp/x/var/log/pods/ns_p_u/c/0.log.20261126-010203",
        ))
        .unwrap();
        assert_eq!((r.namespace.as_str(), r.uid.as_str()), ("ns", "u"));
    }

    #[test]
    fn not_pod_logs() {
        for p in [
            "/var/log/syslog",
            "/var/log/pods/ns_pod/c/0.log",
            "/var/log/pods/ns_pod_uid/c/app.log",
            "/var/log/pods/ns_pod_uid_x/c/0.log",
            "0.log",
        ] {
            assert_eq!(PodRef::from_path(Path::new(p)), None, "{p}");
        }
    }
}
