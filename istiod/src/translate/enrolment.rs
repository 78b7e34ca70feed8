//! Which pods ztunnel captures.
//!
//! `istio.io/dataplane-mode=ambient` on the Namespace or the Pod enrols; the
//! pod label wins, and `none` opts out. A pod with a sidecar keeps it and is
//! left alone; pods without an IP, on the host network, or finished are
//! skipped.

use k8s_openapi::api::core::v1::{Namespace, Pod};

use super::label;

pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
pub const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
pub const SIDECAR_CONTAINER: &str = "istio-proxy";

/// The enrolment decision for one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolment {
    Enrolled,
    /// Neither the pod nor its namespace asks for ambient.
    NotRequested,
    /// The pod (or, without a pod label, its namespace) says `none`.
    OptedOut,
    /// The pod runs a sidecar, which takes precedence.
    Sidecar,
    HostNetwork,
    /// No IP assigned yet.
    NoIp,
    /// `Succeeded` or `Failed`.
    Finished,
}

/// Decides whether `pod` (in `ns`, if known) is captured by ztunnel.
pub fn enrolment(ns: Option<&Namespace>, pod: &Pod) -> Enrolment {
    let pod_mode = label(pod.metadata.labels.as_ref(), DATAPLANE_MODE_LABEL);
    let ns_mode = ns.and_then(|n| label(n.metadata.labels.as_ref(), DATAPLANE_MODE_LABEL));
    match pod_mode.or(ns_mode) {
        Some("ambient") => {}
        Some("none") => return Enrolment::OptedOut,
        _ => return Enrolment::NotRequested,
    }
    if has_sidecar(pod) {
        return Enrolment::Sidecar;
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Enrolment::HostNetwork;
    }
    let status = pod.status.as_ref();
    if matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
        return Enrolment::Finished;
    }
    if pod_ips(pod).is_empty() {
        return Enrolment::NoIp;
    }
    Enrolment::Enrolled
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
