//! Translation: Kubernetes and Istio objects -> the xDS resources ztunnel
//! consumes (`istio.workload.Address`, `istio.security.Authorization`).
//!
//! Pure and synchronous: a [`Snapshot`] holds the current objects, and the
//! functions here compute outputs from it with no I/O. [`translate`] computes
//! everything; the per-object functions let an incremental pusher recompute
//! only what one change touches.
//!
//! Dependencies (input change -> outputs to recompute):
//!
//! | Input | Outputs |
//! |---|---|
//! | Pod | its Workload ([`workloads::pod_workload`]); none of the Services (they are selector-based and carry no endpoints) |
//! | Namespace labels | Workloads of its pods (enrolment, waypoint), its Services (waypoint) |
//! | Node labels | Workloads of the pods on it (locality) |
//! | Service | that Service ([`services::kube_service`]), the Workloads of the pods its selector matches (`services` map), and its EndpointSlice workloads |
//! | ServiceEntry | its Services and endpoint Workloads ([`services::service_entry_services`], [`entries::service_entry_workloads`]), the Workloads it selects, the Services of ServiceEntries sharing a host with it in its namespace ([`services::all_services`] resolves the conflict), and the auto-allocated VIPs of younger entries whose preferred slot its hosts take ([`auto_allocate`]) |
//! | WorkloadEntry | its Workload ([`entries::workload_entry_workload`]) |
//! | any address claim (Pod, WorkloadEntry, ServiceEntry endpoint or VIP, EndpointSlice endpoint) | the Workloads of every other claimant of the same address, and the conditions of ServiceEntries whose VIPs cover it ([`ownership`]: a pod keeps its IP; a claim losing for every caller is dropped from the loser) |
//! | AuthorizationPolicy | that Authorization ([`authorization::convert_authorization_policy`]); with a selector, the Workloads in its namespace |
//! | PeerAuthentication | its converted Authorization ([`peer_authentication::convert_peer_authentication`]) and the converted ones of selector policies in the same namespace (or in every namespace, for the root namespace); Workloads in scope |
//! | EndpointSlice | its workloads, for Services without a selector ([`endpoint_slices::endpoint_slice_workloads`]) |
//!
//! [`dependents`] answers "which workloads does this change touch" for each
//! input kind, from the same snapshot.
//!
//! Service membership of pods comes from selectors, not EndpointSlices (the
//! pod has more information); EndpointSlices only contribute the hand-made
//! endpoints of selectorless Services.

pub mod authorization;
pub mod auto_allocate;
pub mod crd;
pub mod dependents;
pub mod endpoint_slices;
pub mod enrolment;
pub mod entries;
pub mod ownership;
pub mod peer_authentication;
pub mod services;
pub mod status;
pub mod waypoint;
pub mod workloads;

#[cfg(test)]
mod authorization_tests;
#[cfg(test)]
mod crd_tests;
#[cfg(test)]
mod enrolment_tests;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod ownership_tests;
#[cfg(test)]
mod peer_authentication_tests;
#[cfg(test)]
mod services_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod workloads_tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use mesh_proto::security::Authorization;
use mesh_proto::workload::{Address, address};

use self::crd::{AuthorizationPolicy, PeerAuthentication, ServiceEntry, WorkloadEntry};
use self::status::ObjectStatus;

/// Settings translation depends on (from MeshConfig and istiod's flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The cluster id, first element of workload uids (`Kubernetes` upstream).
    pub cluster_id: String,
    /// DNS suffix of Services (`cluster.local`).
    pub domain_suffix: String,
    pub trust_domain: String,
    /// Network of this cluster's pods (empty for a single network).
    pub network: String,
    /// Namespace whose namespace-wide policies apply mesh-wide.
    pub root_namespace: String,
    /// Honour the `istio.io/dry-run` annotation on AuthorizationPolicies
    /// (upstream `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY`); when off,
    /// a dry-run policy is not sent and gets a condition.
    pub dry_run_authorization: bool,
    /// Also send running pods that are not enrolled (no label, `none`, or a
    /// sidecar) as plaintext (`TunnelProtocol::NONE`) workloads, as upstream
    /// does so ztunnel can reach out-of-mesh endpoints of a Service. Off by
    /// default: only enrolled pods become workloads.
    pub include_unenrolled_pods: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_id: "Kubernetes".to_owned(),
            domain_suffix: "cluster.local".to_owned(),
            trust_domain: "cluster.local".to_owned(),
            network: String::new(),
            root_namespace: "istio-system".to_owned(),
            dry_run_authorization: false,
            include_unenrolled_pods: false,
        }
    }
}

/// Namespace and name of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self { namespace: namespace.to_owned(), name: name.to_owned() }
    }
}

/// The current objects translation reads. Maps are ordered so that outputs
/// are deterministic.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// By name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// By name.
    pub nodes: BTreeMap<String, Node>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    pub authorization_policies: BTreeMap<ObjectKey, AuthorizationPolicy>,
    pub peer_authentications: BTreeMap<ObjectKey, PeerAuthentication>,
    pub service_entries: BTreeMap<ObjectKey, ServiceEntry>,
    pub workload_entries: BTreeMap<ObjectKey, WorkloadEntry>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

impl Snapshot {
    pub fn add_namespace(&mut self, ns: Namespace) {
        self.namespaces.insert(ns.metadata.name.clone().unwrap_or_default(), ns);
    }
    pub fn add_node(&mut self, node: Node) {
        self.nodes.insert(node.metadata.name.clone().unwrap_or_default(), node);
    }
    pub fn add_pod(&mut self, pod: Pod) {
        self.pods.insert(key_of(&pod.metadata), pod);
    }
    pub fn add_service(&mut self, svc: Service) {
        self.services.insert(key_of(&svc.metadata), svc);
    }
    pub fn add_authorization_policy(&mut self, p: AuthorizationPolicy) {
        self.authorization_policies.insert(key_of(&p.metadata), p);
    }
    pub fn add_peer_authentication(&mut self, p: PeerAuthentication) {
        self.peer_authentications.insert(key_of(&p.metadata), p);
    }
    pub fn add_service_entry(&mut self, se: ServiceEntry) {
        self.service_entries.insert(key_of(&se.metadata), se);
    }
    pub fn add_endpoint_slice(&mut self, slice: EndpointSlice) {
        self.endpoint_slices.insert(key_of(&slice.metadata), slice);
    }
    pub fn add_workload_entry(&mut self, we: WorkloadEntry) {
        self.workload_entries.insert(key_of(&we.metadata), we);
    }

    pub(crate) fn namespace_labels(&self, ns: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(ns).and_then(|n| n.metadata.labels.as_ref())
    }
}

/// Everything translation produces from one snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// Workloads then Services, each ready to send as an `Address` resource.
    pub addresses: Vec<Address>,
    pub authorizations: Vec<Authorization>,
    pub statuses: Vec<ObjectStatus>,
}

/// The xDS resource name of an Address: a Workload's uid, a Service's
/// `<namespace>/<hostname>`; empty for an Address without a type.
pub fn address_name(address: &Address) -> String {
    match &address.r#type {
        Some(address::Type::Workload(w)) => w.uid.clone(),
        Some(address::Type::Service(s)) => format!("{}/{}", s.namespace, s.hostname),
        None => String::new(),
    }
}

/// The xDS resource name of an Authorization, `<namespace>/<name>`.
pub fn authorization_name(authorization: &Authorization) -> String {
    format!("{}/{}", authorization.namespace, authorization.name)
}

/// Translates the whole snapshot.
pub fn translate(cfg: &Config, snap: &Snapshot) -> Output {
    let mut out = Output::default();
    for w in ownership::settled_workloads(cfg, snap, &mut out.statuses) {
        out.addresses.push(Address { r#type: Some(address::Type::Workload(w)) });
    }
    for s in services::all_services(cfg, snap, &mut out.statuses) {
        out.addresses.push(Address { r#type: Some(address::Type::Service(s)) });
    }
    for policy in snap.authorization_policies.values() {
        let (authz, status) = authorization::convert_authorization_policy(cfg, policy);
        out.authorizations.extend(authz);
        out.statuses.extend(status);
    }
    for pa in snap.peer_authentications.values() {
        let (authz, status) = peer_authentication::convert_peer_authentication(cfg, snap, pa);
        out.authorizations.extend(authz);
        out.statuses.extend(status);
    }
    out
}

/// Whether every `selector` label is present with the same value.
pub(crate) fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// A label's value, if set.
pub(crate) fn label<'a>(
    labels: Option<&'a BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    labels.and_then(|l| l.get(key)).map(String::as_str)
}

/// An IP address as the 4 or 16 bytes the protos carry.
pub(crate) fn ip_bytes(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
