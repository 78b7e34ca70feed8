//! Which pods ztunnel captures: istiod's reading of a Kubernetes pod for
//! the rule shared with the CNI agent, [`mesh_model::enrolment`]
//! (`istio.io/dataplane-mode=ambient` on the Namespace or the Pod enrols;
//! the pod label wins, and `none` opts out; sidecar pods, host-network
//! pods, finished pods and pods without an IP are skipped).

use k8s_openapi::api::core::v1::{Namespace, Pod};

use super::label;

pub use mesh_model::enrolment::{
    DATAPLANE_MODE_LABEL, Enrolment, SIDECAR_CONTAINER, SIDECAR_STATUS_ANNOTATION,
};

/// Decides whether `pod` (in `ns`, if known) is captured by ztunnel
/// (the shared rule, [`mesh_model::enrolment::decide`]).
pub fn enrolment(ns: Option<&Namespace>, pod: &Pod) -> Enrolment {
    let spec = pod.spec.as_ref();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    mesh_model::enrolment::decide(&mesh_model::PodFacts {
        pod_mode: label(pod.metadata.labels.as_ref(), DATAPLANE_MODE_LABEL),
        namespace_mode: ns.and_then(|n| label(n.metadata.labels.as_ref(), DATAPLANE_MODE_LABEL)),
        sidecar: has_sidecar(pod),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        finished: matches!(phase, Some("Succeeded" | "Failed")),
        has_ip: !pod_ips(pod).is_empty(),
    })
}

fn has_sidecar(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SIDECAR_STATUS_ANNOTATION));
    let container = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == SIDECAR_CONTAINER)
    });
    annotated || container
}

/// The pod's IPs (`status.podIPs`, else `status.podIP`) that parse.
pub fn pod_ips(pod: &Pod) -> Vec<std::net::IpAddr> {
    let Some(status) = pod.status.as_ref() else { return Vec::new() };
    let listed: Vec<_> =
        status.pod_ips.iter().flatten().filter_map(|p| p.ip.parse().ok()).collect();
    if !listed.is_empty() {
        return listed;
    }
    status.pod_ip.iter().filter_map(|ip| ip.parse().ok()).collect()
}
