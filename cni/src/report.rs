//! What the CNI plugin tells the node agent, and the answer: one JSON
//! object per line on a unix stream socket, one request per connection.
//!
//! The plugin holds the container runtime (and so the pod's start) until
//! the answer arrives: `enrolled` once ztunnel acked the pod, `not_mesh`
//! when the pod is not captured, `failed` otherwise.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the agent listens by default.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/mesh/cni.sock";
/// Longest request or reply line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// One pod sandbox, as the runtime described it to the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    pub namespace: String,
    pub name: String,
    /// `K8S_POD_UID`, when the runtime passes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The sandbox (infra) container id.
    pub container_id: String,
    /// `CNI_NETNS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// The IPs the earlier plugins assigned (`prevResult.ips`).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// A plugin's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum PluginRequest {
    Add(SandboxReport),
    Del(SandboxReport),
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PluginReply {
    /// Rules installed and ztunnel acked: the pod may start.
    Enrolled,
    /// The pod is not captured: it may start.
    NotMesh,
    /// Taken note of (DEL).
    Done,
    /// The pod must not start (yet).
    Failed { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_tagged_json() -> Result<(), serde_json::Error> {
        let report = SandboxReport {
            namespace: "ns".into(),
            name: "p".into(),
            uid: None,
            container_id: "c1".into(),
            netns: Some("/var/run/netns/x".into()),
            ips: vec![IpAddr::from([10, 0, 0, 1])],
        };
        let text = serde_json::to_string(&PluginRequest::Add(report.clone()))?;
        assert_eq!(
            text,
            r#"{"command":"add","namespace":"ns","name":"p","container_id":"c1","netns":"/var/run/netns/x","ips":["10.0.0.1"]}"#
        );
        assert_eq!(serde_json::from_str::<PluginRequest>(&text)?, PluginRequest::Add(report));
        let failed = PluginReply::Failed { message: "x".into() };
        assert_eq!(serde_json::to_string(&failed)?, r#"{"result":"failed","message":"x"}"#);
        assert_eq!(serde_json::to_string(&PluginReply::NotMesh)?, r#"{"result":"not_mesh"}"#);
        Ok(())
    }
}
