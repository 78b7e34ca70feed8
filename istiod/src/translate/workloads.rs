//! Workloads: one per enrolled pod (here), per WorkloadEntry and per
//! ServiceEntry endpoint (see [`super::entries`]).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use mesh_proto::workload::{
    Locality, PortList, TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};

use super::enrolment::{Enrolment, enrolment, pod_ips};
use super::{Config, Snapshot, authorization, entries, ip_bytes, label, peer_authentication};
use super::{selector_matches, services, waypoint};

pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
pub const NETWORK_LABEL: &str = "topology.istio.io/network";

/// Every workload of the snapshot: enrolled pods, WorkloadEntries,
/// ServiceEntry endpoints, then hand-made EndpointSlice endpoints, with
/// address ownership settled ([`super::ownership`]; its conditions are
/// dropped here, [`super::translate`] keeps them).
pub fn all_workloads(cfg: &Config, snap: &Snapshot) -> Vec<Workload> {
    super::ownership::settled_workloads(cfg, snap, &mut Vec::new())
}

/// The workload of one pod, or `None` when the pod is not enrolled (see
/// [`Config::include_unenrolled_pods`] for sending the others too).
///
/// Reads: the pod, its Namespace (enrolment, waypoint), its Node
/// (locality), the Services and ServiceEntries selecting it, and the
/// selector-scoped AuthorizationPolicies and PeerAuthentications in scope.
pub fn pod_workload(cfg: &Config, snap: &Snapshot, pod: &Pod) -> Option<Workload> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() || namespace.is_empty() {
        return None;
    }
    let tunnel = match enrolment(snap.namespaces.get(namespace), pod) {
        Enrolment::Enrolled => TunnelProtocol::Hbone,
        Enrolment::NotRequested | Enrolment::OptedOut | Enrolment::Sidecar
            if cfg.include_unenrolled_pods =>
        {
            TunnelProtocol::None
        }
        _ => return None,
    };
    let labels = pod.metadata.labels.as_ref();
    let (workload_name, workload_type) = workload_name_and_type(name, pod);
    let (canonical_name, canonical_revision) = canonical_names(labels, &workload_name);
    let spec = pod.spec.as_ref();
    let node = spec.and_then(|s| s.node_name.clone()).unwrap_or_default();
    let service_account = spec
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    Some(Workload {
        uid: format!("{}//Pod/{namespace}/{name}", cfg.cluster_id),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        addresses: pod_ips(pod).into_iter().map(ip_bytes).collect(),
        network: label(labels, NETWORK_LABEL)
            .or_else(|| label(snap.namespace_labels(namespace), NETWORK_LABEL))
            .unwrap_or(&cfg.network)
            .to_owned(),
        tunnel_protocol: tunnel as i32,
        trust_domain: cfg.trust_domain.clone(),
        service_account,
        waypoint: waypoint::waypoint_for(cfg, namespace, labels, snap.namespace_labels(namespace)),
        locality: node_locality(snap, &node),
        node,
        canonical_name,
        canonical_revision,
        workload_type: workload_type as i32,
        workload_name,
        services: pod_services(cfg, snap, pod),
        authorization_policies: policies_for(cfg, snap, namespace, labels),
        status: if pod_ready(pod) { WorkloadStatus::Healthy } else { WorkloadStatus::Unhealthy }
            as i32,
        cluster_id: cfg.cluster_id.clone(),
        ..Default::default()
    })
}

/// `services` map of a pod: Services and ServiceEntries selecting it.
fn pod_services(cfg: &Config, snap: &Snapshot, pod: &Pod) -> HashMap<String, PortList> {
    let mut out = services::kube_services_for_pod(cfg, snap, pod);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    out.extend(entries::selected_by_service_entries(snap, namespace, pod.metadata.labels.as_ref()));
    out
}

/// Names of the selector-scoped policies applying to a workload with
/// `labels` in `namespace`: AuthorizationPolicies with a matching selector
/// (in the namespace or the root namespace) that translate, and the
/// effective converted PeerAuthentication.
pub(crate) fn policies_for(
    cfg: &Config,
    snap: &Snapshot,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<String> {
    let mut out: Vec<String> = snap
        .authorization_policies
        .values()
        .filter(|p| p.namespace() == namespace || p.namespace() == cfg.root_namespace)
        .filter(|p| {
            p.spec.selector.as_ref().is_some_and(|s| selector_matches(&s.match_labels, labels))
        })
        .filter(|p| authorization::applies_to_selected_workloads(cfg, p))
        .map(|p| format!("{}/{}", p.namespace(), p.name()))
        .collect();
    out.extend(peer_authentication::effective_policy_for(cfg, snap, namespace, labels));
    out.sort();
    out.dedup();
    out
}

/// `(canonical name, canonical revision)` from the usual labels.
pub(crate) fn canonical_names(
    labels: Option<&BTreeMap<String, String>>,
    workload_name: &str,
) -> (String, String) {
    let first = |keys: &[&str]| keys.iter().find_map(|k| label(labels, k)).map(str::to_owned);
    let name = first(&[CANONICAL_NAME_LABEL, "app.kubernetes.io/name", "app"])
        .unwrap_or_else(|| workload_name.to_owned());
    let revision = first(&[CANONICAL_REVISION_LABEL, "app.kubernetes.io/version", "version"])
        .unwrap_or_else(|| "latest".to_owned());
    (name, revision)
}

/// The owning workload, from the controller owner reference: a ReplicaSet
/// named `<deployment>-<hash>` is a Deployment, a Job named
/// `<cronjob>-<8..11 digits>` a CronJob; other owners keep their name with
/// type POD; no owner means the pod itself.
pub fn workload_name_and_type(pod_name: &str, pod: &Pod) -> (String, WorkloadType) {
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let owner: Option<&OwnerReference> =
        owners.iter().find(|o| o.controller == Some(true)).or_else(|| owners.first());
    let Some(owner) = owner else { return (pod_name.to_owned(), WorkloadType::Pod) };
    match owner.kind.as_str() {
        "ReplicaSet" => match strip_suffix(&owner.name, |s| {
            (7..=10).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }) {
            Some(deployment) => (deployment.to_owned(), WorkloadType::Deployment),
            None => (owner.name.clone(), WorkloadType::Pod),
        },
        "Job" => match strip_suffix(&owner.name, |s| {
            (8..=11).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        }) {
            Some(cron) => (cron.to_owned(), WorkloadType::Cronjob),
            None => (owner.name.clone(), WorkloadType::Job),
        },
        _ => (owner.name.clone(), WorkloadType::Pod),
    }
}

/// `name` without its last `-<suffix>` when `suffix` passes `ok`.
fn strip_suffix(name: &str, ok: impl Fn(&str) -> bool) -> Option<&str> {
    let (head, tail) = name.rsplit_once('-')?;
    (!head.is_empty() && ok(tail)).then_some(head)
}

fn pod_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Locality from the node's topology labels; `None` without any.
pub(crate) fn node_locality(snap: &Snapshot, node: &str) -> Option<Locality> {
    let labels = snap.nodes.get(node)?.metadata.labels.as_ref();
    let get = |k| label(labels, k).unwrap_or_default().to_owned();
    let locality =
        Locality { region: get(REGION_LABEL), zone: get(ZONE_LABEL), subzone: get(SUBZONE_LABEL) };
    (locality != Locality::default()).then_some(locality)
}
