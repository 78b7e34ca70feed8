//! Handing pods to their node's ztunnel through the CNI node agent.
//!
//! Each simulated node gets its own `mesh_cni::agent::Agent`, run inside
//! the supervisor and fed by a local pod source: the supervisor reports
//! every pod of the node (labels, annotations, namespace file, address)
//! and every namespace's labels, and the agent decides what is in the mesh
//! (`istio.io/dataplane-mode` on the pod, else its namespace; `none` opts
//! out; `ambient.istio.io/dns-capture=false` keeps DNS out), installs the
//! capture rules, hands the pod to ztunnel over ZDS and waits for its Ack.
//! Relabelling a pod or namespace enrols or releases it while running, and
//! a restarted ztunnel gets a fresh snapshot from the agent.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_cni::Backend;
use mesh_cni::agent::{Agent, AgentConfig, Labels, LocalPods, LocalPodsHandle, PodInfo, PodState};

use super::error::Error;

/// A pod as the supervisor reports it to its node's agent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PodEnrolment {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) service_account: String,
    pub(crate) node: String,
    pub(crate) netns: String,
    pub(crate) ip: IpAddr,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) containers: Vec<String>,
}

impl PodEnrolment {
    /// The pod's ZDS uid (local pods have no API server uid).
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn info(&self) -> PodInfo {
        PodInfo {
            uid: self.key(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            containers: self.containers.clone(),
            ips: vec![self.ip],
            netns: Some(PathBuf::from("/var/run/netns").join(&self.netns)),
            host_network: false,
            finished: false,
        }
    }
}

/// One node's agent and what it was last told.
struct NodeAgent {
    agent: Agent,
    pods: LocalPodsHandle,
    told_pods: BTreeMap<String, PodEnrolment>,
    told_namespaces: BTreeMap<String, Labels>,
    synced: bool,
}

/// The agents of every node.
pub(crate) struct Enroller {
    nodes: BTreeMap<String, NodeAgent>,
}

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroller").field("nodes", &self.nodes.keys().collect::<Vec<_>>()).finish()
    }
}

fn agent_error(node: &str, message: impl std::fmt::Display) -> Error {
    Error::Enroll { pod: format!("(node {node})"), message: message.to_string() }
}

impl Enroller {
    /// Starts one agent per node, talking to that node's ztunnel at its ZDS
    /// socket.
    pub(crate) async fn start(
        backend: Backend,
        sockets: BTreeMap<String, PathBuf>,
    ) -> Result<Self, Error> {
        let mut nodes = BTreeMap::new();
        for (node, socket) in sockets {
            let (source, pods) = LocalPods::new();
            let mut config = AgentConfig::new(socket);
            config.backend = backend;
            let agent = Agent::start(config, source).await.map_err(|e| agent_error(&node, e))?;
            nodes.insert(
                node,
                NodeAgent {
                    agent,
                    pods,
                    told_pods: BTreeMap::new(),
                    told_namespaces: BTreeMap::new(),
                    synced: false,
                },
            );
        }
        Ok(Self { nodes })
    }

    /// Reports the current pods and namespace labels to every node's agent
    /// (only what changed since the last call).
    pub(crate) async fn sync(
        &mut self,
        pods: &[PodEnrolment],
        namespaces: &BTreeMap<String, Labels>,
    ) -> Result<(), Error> {
        for (node, state) in &mut self.nodes {
            for (name, labels) in namespaces {
                if state.told_namespaces.get(name) != Some(labels) {
                    state
                        .pods
                        .set_namespace(name, labels.clone())
                        .await
                        .map_err(|e| agent_error(node, e))?;
                    state.told_namespaces.insert(name.clone(), labels.clone());
                }
            }
            let mine: BTreeMap<String, &PodEnrolment> =
                pods.iter().filter(|p| &p.node == node).map(|p| (p.key(), p)).collect();
            for (key, pod) in &mine {
                if state.told_pods.get(key) != Some(*pod) {
                    state.pods.upsert_pod(pod.info()).await.map_err(|e| agent_error(node, e))?;
                    state.told_pods.insert(key.clone(), (*pod).clone());
                }
            }
            let gone: Vec<String> =
                state.told_pods.keys().filter(|k| !mine.contains_key(*k)).cloned().collect();
            for key in gone {
                state.pods.remove_pod(&key).await.map_err(|e| agent_error(node, e))?;
                state.told_pods.remove(&key);
            }
            if !state.synced {
                state.pods.synced().await.map_err(|e| agent_error(node, e))?;
                state.synced = true;
            }
        }
        Ok(())
    }

    /// Waits until the agent of `pod`'s node reports it enrolled.
    pub(crate) async fn wait_enrolled(
        &self,
        pod: &PodEnrolment,
        timeout: Duration,
    ) -> Result<(), Error> {
        let state = self.nodes.get(&pod.node).ok_or_else(|| Error::Enroll {
            pod: pod.key(),
            message: format!("no agent on node {}", pod.node),
        })?;
        state
            .agent
            .wait_for(&pod.key(), PodState::Enrolled, timeout)
            .await
            .map_err(|e| Error::Enroll { pod: pod.key(), message: e.to_string() })
    }

    /// Whether the pod is in the mesh now.
    pub(crate) fn enrolled(&self, node: &str, key: &str) -> bool {
        self.nodes.get(node).and_then(|n| n.agent.state(key)) == Some(PodState::Enrolled)
    }
}
