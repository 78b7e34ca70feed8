//! Handing pods to their node's ztunnel.
//!
//! [`Enroller`] is the seam for the CNI node agent (`mesh-cni agent`,
//! being built separately): once it runs per node, the supervisor starts it
//! in each node namespace and [`DirectEnroller`] is replaced by an
//! implementation that does nothing (the agent watches the pods itself).
//! Until then [`DirectEnroller`] does what the agent will: installs the
//! capture rules in the pod's namespace (`mesh_cni::Backend::apply`) and
//! sends ZDS `Add` with the namespace's fd over the node's ZDS socket. The
//! ZDS connections stay open for the supervisor's lifetime.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mesh_cni::zds::{WorkloadInfo, ZdsClient};
use mesh_cni::{Backend, CaptureConfig};
use mesh_netns::Netns;

use super::error::Error;

/// A pod to enrol.
#[derive(Debug, Clone)]
pub(crate) struct PodEnrolment {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) service_account: String,
    pub(crate) node: String,
    pub(crate) netns: String,
    pub(crate) annotations: BTreeMap<String, String>,
}

impl PodEnrolment {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Puts pods in the mesh (capture + hand-off to the node's ztunnel).
pub(crate) trait Enroller {
    async fn enroll(&mut self, pod: &PodEnrolment) -> Result<(), Error>;

    /// The node's ztunnel restarted: its pods are enrolled again next.
    fn node_restarted(&mut self, _node: &str) {}
}

/// Rules + ZDS from ambientctl itself (what the node agent will do).
#[derive(Debug)]
pub(crate) struct DirectEnroller {
    backend: Backend,
    /// Node -> its ZDS socket.
    sockets: BTreeMap<String, PathBuf>,
    clients: BTreeMap<String, ZdsClient>,
}

impl DirectEnroller {
    pub(crate) fn new(backend: Backend, sockets: BTreeMap<String, PathBuf>) -> Self {
        Self { backend, sockets, clients: BTreeMap::new() }
    }
}

impl Enroller for DirectEnroller {
    fn node_restarted(&mut self, node: &str) {
        // The old connection went with the old process.
        self.clients.remove(node);
    }

    async fn enroll(&mut self, pod: &PodEnrolment) -> Result<(), Error> {
        let fail = |message: String| Error::Enroll { pod: pod.key(), message };
        let netns = Netns::named(&pod.netns).map_err(|e| fail(e.to_string()))?;
        let capture = CaptureConfig::default().for_pod(&pod.annotations);
        self.backend.apply(&netns, &capture).map_err(|e| fail(format!("capture rules: {e}")))?;
        if !self.clients.contains_key(&pod.node) {
            let socket = self
                .sockets
                .get(&pod.node)
                .ok_or_else(|| fail(format!("no ztunnel on node {}", pod.node)))?;
            let client = ZdsClient::connect(socket)
                .await
                .map_err(|e| fail(format!("ZDS {}: {e}", socket.display())))?;
            self.clients.insert(pod.node.clone(), client);
        }
        let client = self.clients.get_mut(&pod.node).ok_or_else(|| fail("no ZDS client".into()))?;
        let info = WorkloadInfo {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
        };
        let result = client.add(&pod.key(), info, netns.file()).await;
        if result.is_err() {
            // A broken client refuses further requests: reconnect next time.
            self.clients.remove(&pod.node);
        }
        result.map_err(|e| fail(format!("ZDS add: {e}")))
    }
}
