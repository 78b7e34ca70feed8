//! Workloads from EndpointSlices of Services without a selector: endpoints
//! added by hand (no pod behind them), as upstream's EndpointSlice
//! workloads. Pod-backed endpoints are covered by the pods' own workloads.

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_proto::workload::{
    Port, PortList, TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};

use super::services::service_hostname;
use super::{Config, ObjectKey, Snapshot, ip_bytes};

/// `kubernetes.io/service-name`: the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One workload per address of each endpoint without a pod `targetRef`, uid
/// `<cluster>/discovery.k8s.io/EndpointSlice/<ns>/<slice>/<address>`, for
/// slices whose Service exists, has a ClusterIP and no selector. Service
/// ports are matched to slice ports by name.
///
/// Reads: the slice and its Service.
pub fn endpoint_slice_workloads(
    cfg: &Config,
    snap: &Snapshot,
    slice: &EndpointSlice,
) -> Vec<Workload> {
    let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
    let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
    let Some(service_name) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL))
    else {
        return Vec::new();
    };
    let Some(svc) = snap.services.get(&ObjectKey::new(namespace, service_name)) else {
        return Vec::new();
    };
    let Some(spec) = svc.spec.as_ref() else { return Vec::new() };
    let has_selector = spec.selector.as_ref().is_some_and(|s| !s.is_empty());
    let headless = spec.cluster_ip.as_deref().is_none_or(|ip| ip.is_empty() || ip == "None");
    if has_selector || headless || namespace.is_empty() || slice_name.is_empty() {
        return Vec::new();
    }
    let slice_ports: HashMap<&str, u32> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u32::try_from(p.port?).ok().filter(|p| *p > 0 && *p <= 65535)?;
            Some((p.name.as_deref().unwrap_or_default(), port))
        })
        .collect();
    let ports: Vec<Port> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            let service_port = u32::try_from(sp.port).ok().filter(|p| *p > 0 && *p <= 65535)?;
            let by_name = slice_ports.get(sp.name.as_deref().unwrap_or_default()).copied();
            let numeric = match &sp.target_port {
                Some(IntOrString::Int(t)) => u32::try_from(*t).ok(),
                _ => None,
            };
            let target_port = by_name.or(numeric)?;
            Some(Port { service_port, target_port, app_protocol: 0 })
        })
        .collect();
    let service_key = format!("{namespace}/{}", service_hostname(cfg, namespace, service_name));
    let mut seen = std::collections::HashSet::new();
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.target_ref.as_ref().is_none_or(|r| r.kind.as_deref() != Some("Pod")))
        .flat_map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            e.addresses.iter().filter_map(move |a| a.parse::<IpAddr>().ok().map(|ip| (ip, ready)))
        })
        // An address listed twice is one workload (its uid must be unique).
        .filter(|(ip, _)| seen.insert(*ip))
        .map(|(ip, ready)| Workload {
            uid: format!(
                "{}/discovery.k8s.io/EndpointSlice/{namespace}/{slice_name}/{ip}",
                cfg.cluster_id
            ),
            name: slice_name.to_owned(),
            namespace: namespace.to_owned(),
            addresses: vec![ip_bytes(ip)],
            network: cfg.network.clone(),
            tunnel_protocol: TunnelProtocol::None as i32,
            trust_domain: cfg.trust_domain.clone(),
            service_account: "default".to_owned(),
            canonical_name: service_name.clone(),
            canonical_revision: "latest".to_owned(),
            workload_type: WorkloadType::Pod as i32,
            workload_name: slice_name.to_owned(),
            services: [(service_key.clone(), PortList { ports: ports.clone() })].into(),
            status: if ready { WorkloadStatus::Healthy } else { WorkloadStatus::Unhealthy } as i32,
            cluster_id: cfg.cluster_id.clone(),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::fixtures::{cfg, snapshot};

    #[test]
    fn manual_endpoints_of_selectorless_services() {
        let mut snap = snapshot(
            "apiVersion: v1
kind: Service
metadata: {name: legacy-db, namespace: default}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: sql, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: selected, namespace: default}
spec:
  clusterIP: 10.96.0.51
  selector: {app: x}
  ports: [{name: sql, port: 5432}]
",
        );
        let slices: Vec<EndpointSlice> = serde_json::from_value(serde_json::json!([
            {
                "metadata": {"name": "legacy-db-abc", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "legacy-db"}},
                "addressType": "IPv4",
                "ports": [{"name": "sql", "port": 15432}],
                "endpoints": [
                    {"addresses": ["192.168.1.10"], "conditions": {"ready": false}},
                    {"addresses": ["10.244.0.9"], "targetRef": {"kind": "Pod", "name": "p"}},
                    {"addresses": ["not-an-ip"]},
                    {"addresses": ["192.168.1.10"]}
                ]
            },
            {
                "metadata": {"name": "selected-abc", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "selected"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["192.168.1.11"]}]
            }
        ]))
        .unwrap();
        for s in slices {
            let key = ObjectKey::new("default", s.metadata.name.as_deref().unwrap());
            snap.endpoint_slices.insert(key, s);
        }
        let all: Vec<Workload> = snap
            .endpoint_slices
            .values()
            .flat_map(|s| endpoint_slice_workloads(&cfg(), &snap, s))
            .collect();
        assert_eq!(all.len(), 1, "{all:?}");
        let w = &all[0];
        assert_eq!(
            w.uid,
            "Kubernetes/discovery.k8s.io/EndpointSlice/default/legacy-db-abc/192.168.1.10"
        );
        assert_eq!(w.status, WorkloadStatus::Unhealthy as i32);
        assert_eq!(w.tunnel_protocol, TunnelProtocol::None as i32);
        let ports = &w.services["default/legacy-db.default.svc.cluster.local"].ports;
        assert_eq!((ports[0].service_port, ports[0].target_port), (5432, 15432));
        assert!(mesh_model::Workload::try_from(w.clone()).is_ok());
    }
}
