//! Simulated nodes and pods as network namespaces.
//!
//! ```text
//!   fabric netns:  br0 ── f<i> ···veth··· eth0 (172.31.0.<10+i>/24)  node <i> netns
//!                                        p<j> ···veth··· eth0 (10.244.<i>.<j+2>/32)  pod netns
//! ```
//! Pods get a /32 and a default route through a link-local gateway address
//! held by the node end of each pod veth, nodes route each other's pod
//! CIDRs (10.244.<i>.0/24) over the fabric bridge. The fabric has no link to
//! the host, so nothing reaches a real network.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::netns::{Netns, NetnsError, require_root};

/// A link-local next hop every pod uses as its default gateway.
const POD_GATEWAY: &str = "169.254.1.1";

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("running `ip`: {0} (is iproute2 installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("unknown node {0:?} for a pod")]
    UnknownNode(String),
    #[error("too many {0} (at most 200)")]
    TooMany(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub node: String,
    pub namespace: String,
    pub name: String,
}

/// A pod's namespace and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHandle {
    pub node: String,
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    /// `ip netns` name of the pod's namespace.
    pub netns_name: String,
}

impl PodHandle {
    pub fn netns(&self) -> Result<Netns, NetnsError> {
        Netns::named(&self.netns_name)
    }

    /// A command that runs inside the pod's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns_name, program]);
        cmd
    }
}

/// A node's namespace and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHandle {
    pub name: String,
    pub ip: Ipv4Addr,
    pub netns_name: String,
}

/// Everything created for one topology; removed on drop.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    nodes: Vec<NodeHandle>,
    pods: Vec<PodHandle>,
    created: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), TopologyError> {
    let out = Command::new("ip").args(args).output().map_err(TopologyError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TopologyError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Creates `eth0` in `netns`, paired with `peer` in `peer_netns`.
fn add_eth0(netns: &str, peer: &str, peer_netns: &str) -> Result<(), TopologyError> {
    ip(&[
        "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns",
        peer_netns,
    ])
}

fn sysctl(netns: &str, key: &str) -> Result<(), TopologyError> {
    ip(&["netns", "exec", netns, "sysctl", "-qw", &format!("{key}=1")])
}

impl Topology {
    /// Builds the namespaces, links, addresses and routes. `prefix` makes
    /// names unique per run (keep it short: it is part of every netns name).
    pub fn build(
        prefix: &str,
        nodes: &[NodeSpec],
        pods: &[PodSpec],
    ) -> Result<Self, TopologyError> {
        require_root()?;
        if nodes.len() > 200 {
            return Err(TopologyError::TooMany("nodes"));
        }
        let mut topology = Self {
            prefix: prefix.to_owned(),
            nodes: Vec::new(),
            pods: Vec::new(),
            created: Vec::new(),
        };
        // On any error the partial topology is dropped, which removes it.
        topology.create(nodes, pods)?;
        Ok(topology)
    }

    fn add_netns(&mut self, name: String) -> Result<String, TopologyError> {
        ip(&["netns", "add", &name])?;
        self.created.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    fn create(&mut self, nodes: &[NodeSpec], pods: &[PodSpec]) -> Result<(), TopologyError> {
        let fabric = self.add_netns(format!("{}-fabric", self.prefix))?;
        ip(&["-n", &fabric, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &fabric, "link", "set", "br0", "up"])?;

        for (i, node) in nodes.iter().enumerate() {
            let index = u8::try_from(i).map_err(|_| TopologyError::TooMany("nodes"))?;
            let netns = self.add_netns(format!("{}-node-{}", self.prefix, node.name))?;
            let node_ip = Ipv4Addr::new(172, 31, 0, 10 + index);
            let fabric_end = format!("f{i}");
            add_eth0(&netns, &fabric_end, &fabric)?;
            ip(&["-n", &fabric, "link", "set", &fabric_end, "master", "br0", "up"])?;
            ip(&["-n", &netns, "addr", "add", &format!("{node_ip}/24"), "dev", "eth0"])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            sysctl(&netns, "net.ipv4.ip_forward")?;
            self.nodes.push(NodeHandle { name: node.name.clone(), ip: node_ip, netns_name: netns });
        }
        // Each node reaches the other nodes' pod CIDRs through them.
        for (i, node) in self.nodes.clone().iter().enumerate() {
            for (k, other) in self.nodes.iter().enumerate() {
                if i != k {
                    let cidr = format!("10.244.{k}.0/24");
                    ip(&[
                        "-n",
                        &node.netns_name,
                        "route",
                        "add",
                        &cidr,
                        "via",
                        &other.ip.to_string(),
                    ])?;
                }
            }
        }
        for pod in pods {
            self.add_pod(pod)?;
        }
        Ok(())
    }

    /// Adds a pod on an existing node (also after `build`; local mode adds
    /// pods that appear while it runs). Addresses are never reused.
    pub fn add_pod(&mut self, spec: &PodSpec) -> Result<(), TopologyError> {
        let (node_index, node) = self
            .nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.name == spec.node)
            .map(|(i, n)| (i, n.clone()))
            .ok_or_else(|| TopologyError::UnknownNode(spec.node.clone()))?;
        let on_node = self.pods.iter().filter(|p| p.node == spec.node).count();
        let host =
            u8::try_from(on_node + 2).map_err(|_| TopologyError::TooMany("pods on a node"))?;
        let node_octet = u8::try_from(node_index).map_err(|_| TopologyError::TooMany("nodes"))?;
        let pod_ip = Ipv4Addr::new(10, 244, node_octet, host);
        let netns =
            self.add_netns(format!("{}-pod-{}-{}", self.prefix, spec.namespace, spec.name))?;
        let node_end = format!("p{host}");
        add_eth0(&netns, &node_end, &node.netns_name)?;
        ip(&["-n", &netns, "addr", "add", &format!("{pod_ip}/32"), "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"])?;
        ip(&["-n", &netns, "route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"])?;
        // The node end answers for the pods' gateway address.
        ip(&[
            "-n",
            &node.netns_name,
            "addr",
            "add",
            &format!("{POD_GATEWAY}/32"),
            "dev",
            &node_end,
        ])?;
        ip(&["-n", &node.netns_name, "link", "set", &node_end, "up"])?;
        ip(&["-n", &node.netns_name, "route", "add", &format!("{pod_ip}/32"), "dev", &node_end])?;
        self.pods.push(PodHandle {
            node: spec.node.clone(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            ip: pod_ip,
            netns_name: netns,
        });
        Ok(())
    }

    pub fn pods(&self) -> &[PodHandle] {
        &self.pods
    }

    pub fn nodes(&self) -> &[NodeHandle] {
        &self.nodes
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodHandle> {
        self.pods.iter().find(|p| p.namespace == namespace && p.name == name)
    }

    pub fn node(&self, name: &str) -> Option<&NodeHandle> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Namespaces whose names start with `prefix-`: leftovers of a run that
    /// crashed before it could clean up.
    pub fn leftovers(prefix: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir("/var/run/netns") else { return Vec::new() };
        let wanted = format!("{prefix}-");
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(&wanted))
            .collect()
    }

    /// Removes every namespace named `prefix-*` (veths go with them).
    pub fn remove_leftovers(prefix: &str) -> Result<usize, TopologyError> {
        let names = Self::leftovers(prefix);
        for name in &names {
            ip(&["netns", "del", name])?;
        }
        Ok(names.len())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Pods first, then nodes, then the fabric: the reverse of creation.
        for name in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", name]) {
                tracing::warn!(netns = %name, error = %e, "could not remove network namespace");
            }
        }
    }
}
