//! Workloads from WorkloadEntries and ServiceEntry endpoints, and the
//! `services` map entries ServiceEntries' `workloadSelector` contributes.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use mesh_proto::workload::{Locality, Port, PortList, TunnelProtocol, Workload, WorkloadType};

use super::crd::{ServiceEntry, ServiceEntryPort, WorkloadEntry, WorkloadEntrySpec};
use super::enrolment::DATAPLANE_MODE_LABEL;

/// `networking.istio.io/tunnel: http` marks an entry that speaks HBONE.
pub const TUNNEL_LABEL: &str = "networking.istio.io/tunnel";
use super::services::namespace_label;
use super::workloads::{canonical_names, policies_for};
use super::{Config, Snapshot, ip_bytes, label, selector_matches, waypoint};

/// The workload of a WorkloadEntry, uid
/// `<cluster>/networking.istio.io/WorkloadEntry/<ns>/<name>`. Its labels are
/// the spec's labels over the metadata's. It speaks HBONE when labelled
/// `networking.istio.io/tunnel: http`, or when it (or its namespace) has
/// `istio.io/dataplane-mode=ambient`.
///
/// Reads: the WorkloadEntry, its Namespace, the ServiceEntries selecting
/// it, and the policies in scope.
/// `None` without a name or namespace.
pub fn workload_entry_workload(
    cfg: &Config,
    snap: &Snapshot,
    we: &WorkloadEntry,
) -> Option<Workload> {
    if we.name().is_empty() || we.namespace().is_empty() {
        return None;
    }
    let mut labels = we.metadata.labels.clone().unwrap_or_default();
    labels.extend(we.spec.labels.clone());
    let uid = format!(
        "{}/networking.istio.io/WorkloadEntry/{}/{}",
        cfg.cluster_id,
        we.namespace(),
        we.name()
    );
    let mut w = entry_workload(cfg, snap, uid, we.namespace(), we.name(), &we.spec, &labels);
    // Ports: the SE port's name looked up in the entry's port map, else the
    // SE's targetPort or number.
    for se in selecting_service_entries(snap, we.namespace(), Some(&labels)) {
        for host in se.spec.hosts.iter().filter(|h| !h.is_empty()) {
            let ports = se.spec.ports.iter().filter_map(|p| entry_port(&we.spec, p)).collect();
            w.services.insert(format!("{}/{host}", se.namespace()), PortList { ports });
        }
    }
    Some(w)
}

/// The workloads of a ServiceEntry's inline `endpoints`, uid
/// `<cluster>/networking.istio.io/ServiceEntry/<ns>/<name>/<address>`; a
/// repeated address keeps its first endpoint (the uid must be unique).
pub fn service_entry_workloads(cfg: &Config, snap: &Snapshot, se: &ServiceEntry) -> Vec<Workload> {
    if se.name().is_empty() || se.namespace().is_empty() {
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::new();
    se.spec
        .endpoints
        .iter()
        .filter(|e| !e.address.is_empty() && seen.insert(e.address.as_str()))
        .map(|e| {
            let uid = format!(
                "{}/networking.istio.io/ServiceEntry/{}/{}/{}",
                cfg.cluster_id,
                se.namespace(),
                se.name(),
                e.address
            );
            let mut w = entry_workload(cfg, snap, uid, se.namespace(), se.name(), e, &e.labels);
            for host in se.spec.hosts.iter().filter(|h| !h.is_empty()) {
                let ports = se.spec.ports.iter().filter_map(|p| entry_port(e, p)).collect();
                w.services.insert(format!("{}/{host}", se.namespace()), PortList { ports });
            }
            w
        })
        .collect()
}

fn entry_port(entry: &WorkloadEntrySpec, p: &ServiceEntryPort) -> Option<Port> {
    let target = entry
        .ports
        .get(&p.name)
        .copied()
        .filter(|t| *t > 0)
        .unwrap_or(if p.target_port > 0 { p.target_port } else { p.number });
    (p.number > 0 && p.number <= 65535 && target <= 65535).then_some(Port {
        service_port: p.number,
        target_port: target,
        app_protocol: 0,
    })
}

fn entry_workload(
    cfg: &Config,
    snap: &Snapshot,
    uid: String,
    namespace: &str,
    name: &str,
    spec: &WorkloadEntrySpec,
    labels: &BTreeMap<String, String>,
) -> Workload {
    let (addresses, hostname) = match spec.address.parse::<IpAddr>() {
        Ok(ip) => (vec![ip_bytes(ip)], String::new()),
        Err(_) => (Vec::new(), spec.address.clone()),
    };
    let mode = label(Some(labels), DATAPLANE_MODE_LABEL)
        .or_else(|| namespace_label(snap, namespace, DATAPLANE_MODE_LABEL));
    let hbone = mode == Some("ambient") || label(Some(labels), TUNNEL_LABEL) == Some("http");
    let tunnel = if hbone { TunnelProtocol::Hbone } else { TunnelProtocol::None };
    let (canonical_name, canonical_revision) = canonical_names(Some(labels), name);
    let mut locality = spec.locality.splitn(3, '/').map(str::to_owned);
    let locality = Locality {
        region: locality.next().unwrap_or_default(),
        zone: locality.next().unwrap_or_default(),
        subzone: locality.next().unwrap_or_default(),
    };
    Workload {
        uid,
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        addresses,
        hostname,
        network: if spec.network.is_empty() { cfg.network.clone() } else { spec.network.clone() },
        tunnel_protocol: tunnel as i32,
        trust_domain: cfg.trust_domain.clone(),
        service_account: if spec.service_account.is_empty() {
            "default".to_owned()
        } else {
            spec.service_account.clone()
        },
        waypoint: waypoint::waypoint_for(
            cfg,
            namespace,
            Some(labels),
            snap.namespace_labels(namespace),
        ),
        canonical_name,
        canonical_revision,
        workload_type: WorkloadType::Pod as i32,
        workload_name: name.to_owned(),
        authorization_policies: policies_for(cfg, snap, namespace, Some(labels)),
        cluster_id: cfg.cluster_id.clone(),
        locality: (locality != Locality::default()).then_some(locality),
        capacity: (spec.weight > 0).then_some(spec.weight),
        ..Default::default()
    }
}

fn selecting_service_entries<'a>(
    snap: &'a Snapshot,
    namespace: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
) -> impl Iterator<Item = &'a ServiceEntry> + 'a {
    snap.service_entries.values().filter(move |se| {
        se.namespace() == namespace
            && se
                .spec
                .workload_selector
                .as_ref()
                .is_some_and(|s| !s.labels.is_empty() && selector_matches(&s.labels, labels))
    })
}

/// `services` entries (`ns/host` -> ports) from the ServiceEntries in
/// `namespace` whose `workloadSelector` matches `labels`; the target port is
/// the SE port's `targetPort`, else its number.
pub(crate) fn selected_by_service_entries(
    snap: &Snapshot,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> HashMap<String, PortList> {
    let none = WorkloadEntrySpec::default();
    let mut out = HashMap::new();
    for se in selecting_service_entries(snap, namespace, labels) {
        let ports: Vec<Port> = se.spec.ports.iter().filter_map(|p| entry_port(&none, p)).collect();
        for host in se.spec.hosts.iter().filter(|h| !h.is_empty()) {
            out.insert(format!("{}/{host}", se.namespace()), PortList { ports: ports.clone() });
        }
    }
    out
}
