//! Log files laid out the way the kubelet does on a node, which is where the
//! DaemonSet runs: `pods/<namespace>_<pod>_<uid>/<container>/0.log`, and
//! `containers/<pod>_<namespace>_<container>-<container id>.log`, a
//! symlink to it, which the agent's glob matches (`containers/*.log`).

use std::path::{Path, PathBuf};

/// One container's log file.
#[derive(Clone, Debug)]
pub struct PodLog {
    /// `…/pods/<ns>_<pod>_<uid>/<container>/0.log`, the file written to.
    pub path: PathBuf,
    /// The same relative to the logs dir, for messages.
    pub name: String,
}

/// The glob the agent follows under `logs`.
pub fn include(logs: &Path) -> String {
    format!("{}/containers/*.log", logs.display())
}

/// Creates `count` empty container log files and their symlinks under `logs`,
/// with names drawn from `seed`.
pub fn create(logs: &Path, count: usize, seed: u64) -> Vec<PodLog> {
    const NAMESPACES: [&str; 8] = [
        "default",
        "kube-system",
        "payments",
        "checkout",
        "search",
        "monitoring",
        "ingress-nginx",
        "batch",
    ];
    const APPS: [&str; 10] = [
        "api", "web", "worker", "cart", "auth", "indexer", "gateway", "cron", "db-proxy", "mailer",
    ];
    const CONTAINERS: [&str; 5] = ["app", "sidecar", "istio-proxy", "init", "exporter"];
    let mut rng = fastrand::Rng::with_seed(seed);
    let containers = logs.join("containers");
    std::fs::create_dir_all(&containers)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", containers.display()));
    (0..count)
        .map(|i| {
            let ns = NAMESPACES[rng.usize(..NAMESPACES.len())];
            let pod = format!(
                "{}-{i}-{}-{}",
                APPS[rng.usize(..APPS.len())],
                hex(&mut rng, 10),
                hex(&mut rng, 5)
            );
            let uid = format!(
                "{}-{}-{}-{}-{}",
                hex(&mut rng, 8),
                hex(&mut rng, 4),
                hex(&mut rng, 4),
                hex(&mut rng, 4),
                hex(&mut rng, 12)
            );
            let container = CONTAINERS[rng.usize(..CONTAINERS.len())];
            let name = format!("pods/{ns}_{pod}_{uid}/{container}/0.log");
            let path = logs.join(&name);
            let dir = path.parent().expect("a pod log has a parent");
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            std::fs::File::create(&path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
            let link = containers.join(format!("{pod}_{ns}_{container}-{}.log", hex(&mut rng, 64)));
            std::os::unix::fs::symlink(&path, &link)
                .unwrap_or_else(|e| panic!("cannot link {}: {e}", link.display()));
            PodLog { path, name }
        })
        .collect()
}

fn hex(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.usize(..16)]))
        .collect()
}
