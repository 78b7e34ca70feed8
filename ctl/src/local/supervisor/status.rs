//! The supervisor's view of the mesh, written to `status.json`.

use std::net::{Ipv4Addr, SocketAddr};

use super::mesh::Mesh;
use super::probe::{ISTIOD_MONITORING_PORT, ZTUNNEL_READY_PORT, istiod_addr, istiod_file_errors};
use crate::local::http;
use crate::local::layout;
use crate::local::process::Supervised;
use crate::local::record::{ContainerStatus, NodeStatus, PodStatus, ServiceStatus};

impl Mesh {
    /// Refreshes `self.status`; `probe` also asks istiod and the ztunnels.
    pub(super) fn refresh_status(&mut self, probe: bool) {
        let s = &mut self.status;
        s.istiod.pid = self.istiod.pid().and_then(|p| i32::try_from(p).ok());
        if probe {
            let fabric = layout::fabric_netns(&self.prefix);
            s.istiod.ready = matches!(
                http::get(&fabric, istiod_addr(ISTIOD_MONITORING_PORT), "/ready"),
                Ok((200, _))
            );
            if let Ok(errors) = istiod_file_errors(&self.layout, &fabric, &self.config_dir) {
                self.istiod_errors = errors;
            }
        }
        let mut nodes = Vec::new();
        for node in self.topology.nodes() {
            let ztunnel = self.ztunnels.get(&node.name);
            let previous = s.nodes.iter().find(|n| n.name == node.name).map(|n| n.ready);
            let ready = if probe {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_READY_PORT));
                matches!(http::get(&node.netns_name, addr, "/healthz/ready"), Ok((200, _)))
            } else {
                previous.unwrap_or(true)
            };
            nodes.push(NodeStatus {
                name: node.name.clone(),
                netns: node.netns_name.clone(),
                ip: node.ip.to_string(),
                ztunnel_pid: ztunnel.and_then(Supervised::pid).and_then(|p| i32::try_from(p).ok()),
                ready: ready && ztunnel.is_some_and(Supervised::running),
                metrics: format!("http://{}:15020/metrics (in netns {})", node.ip, node.netns_name),
                log: self.layout.component_log(&format!("ztunnel-{}", node.name)),
            });
        }
        s.nodes = nodes;
        s.pods = self
            .topology
            .pods()
            .iter()
            .map(|p| {
                let key = format!("{}/{}", p.namespace, p.name);
                let def = self.manifests.pod(&p.namespace, &p.name);
                PodStatus {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    node: p.node.clone(),
                    ip: p.ip.to_string(),
                    netns: p.netns_name.clone(),
                    service_account: def.map(|d| d.service_account.clone()).unwrap_or_default(),
                    enrolled: self.enroller.enrolled(&p.node, &key),
                    ready: self
                        .containers
                        .iter()
                        .filter(|c| c.pod == key)
                        .all(|c| c.process.running()),
                    containers: self
                        .containers
                        .iter()
                        .filter(|c| c.pod == key)
                        .map(|c| ContainerStatus {
                            name: c
                                .process
                                .launch
                                .what
                                .rsplit('/')
                                .next()
                                .unwrap_or_default()
                                .to_owned(),
                            pid: c.process.pid().and_then(|p| i32::try_from(p).ok()),
                            running: c.process.running(),
                            restarts: c.process.restarts,
                            last_exit: c.process.last_exit.clone(),
                            log: c.process.launch.log.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        s.services = self
            .manifests
            .services
            .iter()
            .map(|svc| ServiceStatus {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                cluster_ip: svc
                    .cluster_ip
                    .clone()
                    .or_else(|| {
                        self.service_ips.get(&svc.namespace, &svc.name).map(|ip| ip.to_string())
                    })
                    .unwrap_or_default(),
            })
            .collect();
        s.config_errors = self.source_errors.iter().chain(&self.istiod_errors).cloned().collect();
    }
}
