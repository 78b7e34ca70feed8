//! Services: Kubernetes Services with a ClusterIP, and ServiceEntries (one
//! Service per host).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Pod, Service as KubeService, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_proto::workload::{
    AppProtocol, IpFamilies, LoadBalancing, NetworkAddress, Port, PortList, Service,
    load_balancing, service::Visibility,
};

use super::auto_allocate;
use super::crd::ServiceEntry;
use super::status::{Condition, ObjectStatus, REASON_INVALID, REASON_UNSUPPORTED_VALUE};
use super::{Config, Snapshot, ip_bytes, label, selector_matches, waypoint};

pub const TRAFFIC_DISTRIBUTION_ANNOTATION: &str = "networking.istio.io/traffic-distribution";

/// Every Service of the snapshot; problems go to `statuses`. A hostname is
/// one resource per namespace: a Kubernetes Service keeps its hostname, and
/// among ServiceEntries the oldest (then by name) wins; the others get a
/// condition. ServiceEntry hosts without addresses get auto-allocated VIPs
/// here, where every entry is in view ([`auto_allocate`]).
pub fn all_services(
    cfg: &Config,
    snap: &Snapshot,
    statuses: &mut Vec<ObjectStatus>,
) -> Vec<Service> {
    let mut out: Vec<Service> =
        snap.services.values().filter_map(|s| kube_service(cfg, snap, s)).collect();
    let mut taken: std::collections::HashSet<(String, String)> =
        out.iter().map(|s| (s.namespace.clone(), s.hostname.clone())).collect();
    let mut entries: Vec<&ServiceEntry> = snap.service_entries.values().collect();
    entries.sort_by(|a, b| {
        let created = |se: &ServiceEntry| se.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a).cmp(&created(b)).then_with(|| a.name().cmp(b.name()))
    });
    // Hosts that get an auto-allocated VIP, oldest entry first.
    let mut to_allocate = Vec::new();
    for se in entries {
        let (services, status) = service_entry_services(cfg, snap, se);
        let mut status = status;
        let eligible = auto_allocate::entry_eligible(se);
        for svc in services {
            if taken.insert((svc.namespace.clone(), svc.hostname.clone())) {
                if eligible && auto_allocate::host_eligible(&svc.hostname) {
                    to_allocate.push((svc.namespace.clone(), svc.hostname.clone()));
                }
                out.push(svc);
            } else {
                let msg =
                    format!("host {} is already defined in this namespace; ignored", svc.hostname);
                status
                    .get_or_insert_with(|| {
                        ObjectStatus::new("ServiceEntry", se.namespace(), se.name(), Vec::new())
                    })
                    .conditions
                    .push(Condition::accepted_with_warning(REASON_INVALID, msg));
            }
        }
        statuses.extend(status);
    }
    let allocated = auto_allocate::allocate(&to_allocate);
    for svc in &mut out {
        let key = (svc.namespace.clone(), svc.hostname.clone());
        if let Some(vip) = allocated.get(&key) {
            svc.addresses = [IpAddr::V4(vip.v4), IpAddr::V6(vip.v6)]
                .into_iter()
                .map(|ip| NetworkAddress {
                    network: cfg.network.clone(),
                    address: ip_bytes(ip),
                    length: None,
                })
                .collect();
        }
    }
    out
}

/// `<name>.<namespace>.svc.<domain>`.
pub fn service_hostname(cfg: &Config, namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.svc.{}", cfg.domain_suffix)
}

/// The cluster IPs of a Service: empty for a headless one, `None` when it
/// gets no Service resource (ExternalName, ClusterIP not yet allocated).
fn cluster_ips(svc: &KubeService) -> Option<Vec<IpAddr>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    // `clusterIPs` (dual stack) when set; its first entry is `clusterIP`.
    let listed: Vec<&String> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    // Headless: a Service without a VIP, whose name resolves to its
    // endpoints (ztunnel's DNS proxy answers with the workloads' IPs).
    if listed.first().is_some_and(|ip| ip.as_str() == "None") {
        return Some(Vec::new());
    }
    let ips: Vec<IpAddr> = listed.into_iter().filter_map(|ip| ip.parse().ok()).collect();
    (!ips.is_empty()).then_some(ips)
}

/// One Kubernetes Service (headless ones without addresses), or `None`
/// for ExternalName Services and ClusterIPs not yet allocated.
///
/// Reads: the Service and its Namespace (waypoint).
/// A Service port's number if it is a valid TCP port (1-65535). The same
/// check guards the Service resource and the per-workload port lists, so a
/// workload never names a port its Service does not have.
fn valid_service_port(port: &ServicePort) -> Option<u32> {
    u32::try_from(port.port).ok().filter(|p| (1..=65535).contains(p))
}

pub fn kube_service(cfg: &Config, snap: &Snapshot, svc: &KubeService) -> Option<Service> {
    let ips = cluster_ips(svc)?;
    let spec = svc.spec.as_ref()?;
    let namespace = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() || namespace.is_empty() {
        return None;
    }
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                service_port: valid_service_port(p)?,
                target_port: match &p.target_port {
                    Some(IntOrString::Int(t)) => {
                        u32::try_from(*t).ok().filter(|t| *t <= 65535).unwrap_or(0)
                    }
                    Some(IntOrString::String(_)) => 0,
                    None => u32::try_from(p.port).unwrap_or(0),
                },
                app_protocol: app_protocol(p.app_protocol.as_deref(), p.name.as_deref()) as i32,
            })
        })
        .collect();
    let distribution = traffic_distribution(
        svc.metadata.annotations.as_ref(),
        spec.traffic_distribution.as_deref(),
        snap.namespaces.get(namespace).and_then(|n| n.metadata.annotations.as_ref()),
    );
    let mut load_balancing = if spec.internal_traffic_policy.as_deref() == Some("Local") {
        // Only endpoints on the caller's node.
        Some(LoadBalancing {
            routing_preference: vec![load_balancing::Scope::Node as i32],
            mode: load_balancing::Mode::Strict as i32,
            ..Default::default()
        })
    } else {
        distribution.and_then(load_balancing_for)
    };
    if spec.publish_not_ready_addresses == Some(true) {
        load_balancing.get_or_insert_with(LoadBalancing::default).health_policy =
            load_balancing::HealthPolicy::AllowAll as i32;
    }
    let families = spec.ip_families.as_deref().unwrap_or_default();
    let ip_families = match families {
        [_, _] => IpFamilies::Dual,
        [f] if f == "IPv6" => IpFamilies::Ipv6Only,
        [_] => IpFamilies::Ipv4Only,
        _ => IpFamilies::Automatic,
    };
    Some(Service {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        hostname: service_hostname(cfg, namespace, name),
        addresses: ips
            .into_iter()
            .map(|ip| NetworkAddress {
                network: cfg.network.clone(),
                address: ip_bytes(ip),
                length: None,
            })
            .collect(),
        ports,
        waypoint: waypoint::waypoint_for(
            cfg,
            namespace,
            svc.metadata.labels.as_ref(),
            snap.namespace_labels(namespace),
        ),
        load_balancing,
        ip_families: ip_families as i32,
        // A Kubernetes Service is canonical for its hostname.
        canonical: true,
        ..Default::default()
    })
}

/// The traffic distribution of a Service: its
/// `networking.istio.io/traffic-distribution` annotation, else
/// `spec.trafficDistribution`, else the namespace's annotation.
pub fn traffic_distribution<'a>(
    annotations: Option<&'a std::collections::BTreeMap<String, String>>,
    spec: Option<&'a str>,
    namespace_annotations: Option<&'a std::collections::BTreeMap<String, String>>,
) -> Option<&'a str> {
    let annotated = |a: Option<&'a std::collections::BTreeMap<String, String>>| {
        a.and_then(|a| a.get(TRAFFIC_DISTRIBUTION_ANNOTATION)).map(String::as_str)
    };
    annotated(annotations).or(spec).or_else(|| annotated(namespace_annotations))
}

/// Locality failover, as upstream today: `PreferClose` (the deprecated
/// name of `PreferSameZone`) and `PreferSameZone` prefer network, region,
/// zone; `PreferSameNode` adds subzone and node. Other values: none.
pub fn load_balancing_for(distribution: &str) -> Option<LoadBalancing> {
    use load_balancing::Scope;
    let mut scopes = vec![Scope::Network, Scope::Region, Scope::Zone];
    match distribution {
        "PreferClose" | "PreferSameZone" => {}
        "PreferSameNode" => scopes.extend([Scope::Subzone, Scope::Node]),
        _ => return None,
    }
    Some(LoadBalancing {
        routing_preference: scopes.into_iter().map(|s| s as i32).collect(),
        mode: load_balancing::Mode::Failover as i32,
        ..Default::default()
    })
}

/// From `appProtocol`, else the port name's prefix (`http-web`, `grpc`).
pub fn app_protocol(app_protocol: Option<&str>, port_name: Option<&str>) -> AppProtocol {
    let from = |p: &str| match p.to_ascii_lowercase().as_str() {
        "http" | "http1" | "kubernetes.io/http" => Some(AppProtocol::Http11),
        "http2" | "kubernetes.io/h2c" => Some(AppProtocol::Http2),
        "grpc" | "grpc-web" => Some(AppProtocol::Grpc),
        "tcp" | "mongo" | "mysql" | "redis" => Some(AppProtocol::Tcp),
        "tls" | "https" => Some(AppProtocol::Tls),
        _ => None,
    };
    if let Some(p) = app_protocol.and_then(from) {
        return p;
    }
    let prefix = port_name.map(|n| n.split_once('-').map_or(n, |(head, _)| head));
    prefix.and_then(from).unwrap_or(AppProtocol::Unknown)
}

/// The pod port a Service port targets: numeric as is, named looked up in
/// the pod's container ports, absent means the service port. `None` when a
/// named port is not found.
pub fn resolve_target_port(pod: &Pod, port: &ServicePort) -> Option<u32> {
    match &port.target_port {
        None => u32::try_from(port.port).ok(),
        Some(IntOrString::Int(p)) => u32::try_from(*p).ok(),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u32::try_from(p.container_port).ok()),
    }
    .filter(|p| *p > 0 && *p <= 65535)
}

/// The `services` map entries from Kubernetes Services whose selector
/// matches the pod, with target ports resolved for this pod.
pub fn kube_services_for_pod(
    cfg: &Config,
    snap: &Snapshot,
    pod: &Pod,
) -> HashMap<String, PortList> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let labels = pod.metadata.labels.as_ref();
    let mut out = HashMap::new();
    for svc in snap.services.values() {
        if svc.metadata.namespace.as_deref() != Some(namespace) || cluster_ips(svc).is_none() {
            continue;
        }
        let Some(spec) = svc.spec.as_ref() else { continue };
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else { continue };
        if !selector_matches(selector, labels) {
            continue;
        }
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(Port {
                    service_port: valid_service_port(p)?,
                    target_port: resolve_target_port(pod, p)?,
                    app_protocol: 0,
                })
            })
            .collect();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        out.insert(
            format!("{namespace}/{}", service_hostname(cfg, namespace, name)),
            PortList { ports },
        );
    }
    out
}

/// The Services of a ServiceEntry, one per host. Addresses that do not
/// parse are dropped with a condition; a ServiceEntry without addresses
/// gets no VIP here: [`all_services`] allocates them, as that needs every
/// entry in view.
///
/// Reads: the ServiceEntry and its Namespace (waypoint).
pub fn service_entry_services(
    cfg: &Config,
    snap: &Snapshot,
    se: &ServiceEntry,
) -> (Vec<Service>, Option<ObjectStatus>) {
    let namespace = se.namespace();
    let mut conditions = Vec::new();
    let mut addresses = Vec::new();
    for a in &se.spec.addresses {
        match parse_address(a) {
            Some(net) => addresses.push(NetworkAddress {
                network: cfg.network.clone(),
                address: ip_bytes(net.addr()),
                length: (net.prefix_len() != net.max_prefix_len())
                    .then_some(u32::from(net.prefix_len())),
            }),
            None => conditions.push(Condition::accepted_with_warning(
                REASON_INVALID,
                format!("address {a:?} is not an IP or CIDR; ignored"),
            )),
        }
    }
    let ports: Vec<Port> = se
        .spec
        .ports
        .iter()
        .filter(|p| p.number > 0 && p.number <= 65535)
        .map(|p| Port {
            service_port: p.number,
            target_port: match p.target_port {
                0 => p.number,
                t if t <= 65535 => t,
                _ => 0,
            },
            app_protocol: app_protocol(Some(&p.protocol), Some(&p.name)) as i32,
        })
        .collect();
    let load_balancing = if se.spec.resolution.is_empty() || se.spec.resolution == "NONE" {
        // Traffic goes to the address the client asked for.
        Some(LoadBalancing {
            mode: load_balancing::Mode::Passthrough as i32,
            health_policy: load_balancing::HealthPolicy::AllowAll as i32,
            ..Default::default()
        })
    } else {
        traffic_distribution(
            se.metadata.annotations.as_ref(),
            None,
            snap.namespaces.get(namespace).and_then(|n| n.metadata.annotations.as_ref()),
        )
        .and_then(load_balancing_for)
    };
    let wp = waypoint::waypoint_for(
        cfg,
        namespace,
        se.metadata.labels.as_ref(),
        snap.namespace_labels(namespace),
    );
    let (export, export_condition) = export_of(se);
    conditions.extend(export_condition);
    let visibility = match export {
        Export::Public => Visibility::Public,
        Export::Namespace => Visibility::Namespace,
        // Exported nowhere: no Service at all (its endpoints stay workloads).
        Export::Nowhere => Visibility::Namespace,
    };
    let services = se
        .spec
        .hosts
        .iter()
        .filter(|_| export != Export::Nowhere)
        .filter(|h| !h.is_empty() && !namespace.is_empty() && !se.name().is_empty())
        .map(|host| Service {
            name: se.name().to_owned(),
            namespace: namespace.to_owned(),
            hostname: host.clone(),
            addresses: addresses.clone(),
            ports: ports.clone(),
            subject_alt_names: se.spec.subject_alt_names.clone(),
            waypoint: wp.clone(),
            load_balancing: load_balancing.clone(),
            visibility: visibility as i32,
            ..Default::default()
        })
        .collect();
    if se.spec.hosts.iter().all(String::is_empty) {
        conditions.push(Condition::rejected(REASON_INVALID, "no hosts; nothing is configured"));
    }
    let status = (!conditions.is_empty())
        .then(|| ObjectStatus::new("ServiceEntry", namespace, se.name(), conditions));
    (services, status)
}

/// Where a ServiceEntry is exported (`exportTo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Export {
    /// Empty or `*`: every namespace.
    Public,
    /// `.` or its own namespace: only there.
    Namespace,
    /// `~`: no namespace.
    Nowhere,
}

/// The export of a ServiceEntry as ztunnel can enforce it: the Service's
/// `visibility` is PUBLIC or NAMESPACE (as upstream sends `exportTo: ["."]`),
/// so a list naming other namespaces is narrowed to the entry's own
/// namespace (the restrictive reading), with a condition.
fn export_of(se: &ServiceEntry) -> (Export, Option<Condition>) {
    let own = se.namespace();
    let to = &se.spec.export_to;
    if to.is_empty() || to.iter().any(|t| t == "*") {
        return (Export::Public, None);
    }
    if to.iter().any(|t| t == "~") {
        return (Export::Nowhere, None);
    }
    let others: Vec<&str> =
        to.iter().map(String::as_str).filter(|t| *t != "." && *t != own).collect();
    if others.is_empty() {
        return (Export::Namespace, None);
    }
    let msg = format!(
        "exportTo names other namespaces ({}), which ztunnel cannot tell apart; the entry is visible only in its own namespace",
        others.join(", ")
    );
    (Export::Namespace, Some(Condition::accepted_with_warning(REASON_UNSUPPORTED_VALUE, msg)))
}

/// An IP (`10.0.0.1`) or a CIDR (`10.0.0.0/8`), host bits cleared.
pub(crate) fn parse_address(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        s.parse::<IpNet>().ok().map(|n| n.trunc())
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

/// The namespace label helper, re-exported for the entries module.
pub(crate) fn namespace_label<'a>(snap: &'a Snapshot, ns: &str, key: &str) -> Option<&'a str> {
    label(snap.namespace_labels(ns), key)
}
