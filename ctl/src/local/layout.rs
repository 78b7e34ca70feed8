//! Where things live under the state directory.
//!
//! ```text
//! STATE/lock                    flock'ed by `up`, then by its supervisor while it lives
//! STATE/state.json              what was created (written before creating it)
//! STATE/status.json             the supervisor's view: nodes, pods, readiness, errors
//! STATE/config/                 the generated config istiod reads (user files + pod status)
//! STATE/istiod/                 istiod's local state: CA root, root-cert.pem, node-tokens/
//! STATE/nodes/<node>/ztunnel.sock  each node's ZDS socket
//! STATE/logs/{supervisor,istiod,ztunnel-<node>}.log
//! STATE/logs/<ns>/<pod>/<container>.log
//! ```

use std::path::{Path, PathBuf};

/// The istiod (fabric) address every node reaches over the bridge.
pub(crate) const ISTIOD_IP: &str = "172.31.0.1";
/// The hostname istiod's serving certificate carries.
pub(crate) const ISTIOD_HOST: &str = "istiod.istio-system.svc";
/// The nameserver written into pods' resolv.conf (captured by ztunnel's DNS proxy).
pub(crate) const DNS_IP: &str = "10.96.0.10";

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Self {
        // Children run with other working directories: keep paths absolute.
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
        Self { root }
    }

    pub(crate) fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub(crate) fn record(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub(crate) fn status(&self) -> PathBuf {
        self.root.join("status.json")
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.root.join("config")
    }

    pub(crate) fn istiod_state(&self) -> PathBuf {
        self.root.join("istiod")
    }

    pub(crate) fn root_cert(&self) -> PathBuf {
        self.istiod_state().join("root-cert.pem")
    }

    pub(crate) fn node_token(&self, node: &str) -> PathBuf {
        self.istiod_state().join("node-tokens").join(node)
    }

    pub(crate) fn zds_socket(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node).join("ztunnel.sock")
    }

    pub(crate) fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub(crate) fn component_log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    pub(crate) fn container_log(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.logs().join(namespace).join(pod).join(format!("{container}.log"))
    }
}

/// Namespace names the topology gives (see `mesh_netns::Topology`).
pub(crate) fn fabric_netns(prefix: &str) -> String {
    format!("{prefix}-fabric")
}

/// `/etc/netns/<netns>`: files `ip netns exec` bind-mounts over `/etc`.
pub(crate) fn etc_netns(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}
