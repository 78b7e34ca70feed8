//! Builders for the state and policy tests.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_model::{
    Action, Address, AppProtocol, Authorization, Identity, NetworkMode, NetworkPrefix, Port, Rule,
    Scope, Service, TunnelProtocol, Visibility, Workload, WorkloadStatus, WorkloadType,
};

use super::ProxyState;

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A healthy pod `uid` in namespace `ns` with service account `sa`.
pub(crate) fn workload(uid: &str, addr: &str) -> Workload {
    Workload {
        uid: uid.to_owned(),
        name: uid.to_owned(),
        namespace: "ns".to_owned(),
        addresses: vec![ip(addr)],
        hostname: None,
        network: String::new(),
        tunnel_protocol: TunnelProtocol::Hbone,
        identity: Identity::new("cluster.local", "ns", "sa").unwrap(),
        waypoint: None,
        network_gateway: None,
        node: String::new(),
        canonical_name: String::new(),
        canonical_revision: String::new(),
        workload_type: WorkloadType::Pod,
        workload_name: String::new(),
        native_tunnel: false,
        application_tunnel: None,
        services: BTreeMap::new(),
        authorization_policies: vec![],
        status: WorkloadStatus::Healthy,
        cluster_id: String::new(),
        locality: None,
        network_mode: NetworkMode::Standard,
        capacity: 1,
    }
}

pub(crate) fn port(service_port: u16, target_port: Option<u16>) -> Port {
    Port { service_port, target_port, app_protocol: AppProtocol::Unknown }
}

/// A workload backing service `svc` (in `ns`) on `service_port`.
pub(crate) fn endpoint_of(
    uid: &str,
    addr: &str,
    svc: &str,
    service_port: u16,
    target: Option<u16>,
) -> Workload {
    let mut w = workload(uid, addr);
    w.services.insert(service(svc, &[]).key(), vec![port(service_port, target)]);
    w
}

/// Service `name` in `ns` with the given VIPs or CIDRs, serving port 80.
pub(crate) fn service(name: &str, vips: &[&str]) -> Service {
    Service {
        name: name.to_owned(),
        namespace: "ns".to_owned(),
        hostname: format!("{name}.ns.svc.cluster.local"),
        addresses: vips
            .iter()
            .map(|v| NetworkPrefix {
                network: String::new(),
                prefix: v.parse().unwrap_or_else(|_| ip(v).into()),
            })
            .collect(),
        ports: vec![port(80, None)],
        subject_alt_names: vec![],
        waypoint: None,
        load_balancing: None,
        ip_families: mesh_model::IpFamilies::Automatic,
        canonical: true,
        ingress_use_waypoint: false,
        weighted_waypoints: vec![],
        visibility: Visibility::Public,
    }
}

pub(crate) fn policy(
    namespace: &str,
    name: &str,
    scope: Scope,
    action: Action,
    rules: Vec<Rule>,
) -> Authorization {
    Authorization {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        scope,
        action,
        rules,
        dry_run: false,
    }
}

pub(crate) fn insert_workload(s: &mut ProxyState, w: Workload) {
    let uid = w.uid.clone();
    s.insert_address(&uid, Address::Workload(Box::new(w))).unwrap();
}

pub(crate) fn insert_service(s: &mut ProxyState, svc: Service) {
    let key = svc.key().to_string();
    s.insert_address(&key, Address::Service(Box::new(svc))).unwrap();
}
