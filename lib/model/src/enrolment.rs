//! Which pods ztunnel captures: the one rule istiod (when it builds
//! workloads) and the CNI node agent (when it installs capture) share.
//!
//! `istio.io/dataplane-mode=ambient` on the Namespace or the Pod enrols; the
//! pod label wins, and `none` opts out. A pod with a sidecar keeps it and is
//! left alone; pods without an IP, on the host network, or finished are
//! skipped.

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

/// What the rule looks at, read from a Kubernetes pod or the agent's view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodFacts<'a> {
    /// The pod's `istio.io/dataplane-mode` label.
    pub pod_mode: Option<&'a str>,
    /// Its namespace's, if the namespace is known.
    pub namespace_mode: Option<&'a str>,
    /// Annotated `sidecar.istio.io/status` or has an `istio-proxy` container.
    pub sidecar: bool,
    pub host_network: bool,
    /// Phase `Succeeded` or `Failed`.
    pub finished: bool,
    pub has_ip: bool,
}

/// Decides whether a pod is captured by ztunnel.
pub fn decide(facts: &PodFacts<'_>) -> Enrolment {
    match facts.pod_mode.or(facts.namespace_mode) {
        Some("ambient") => {}
        Some("none") => return Enrolment::OptedOut,
        _ => return Enrolment::NotRequested,
    }
    if facts.sidecar {
        Enrolment::Sidecar
    } else if facts.host_network {
        Enrolment::HostNetwork
    } else if facts.finished {
        Enrolment::Finished
    } else if !facts.has_ip {
        Enrolment::NoIp
    } else {
        Enrolment::Enrolled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_label_wins_and_none_opts_out() {
        let running = PodFacts { has_ip: true, ..PodFacts::default() };
        let cases = [
            (None, Some("ambient"), Enrolment::Enrolled),
            (None, None, Enrolment::NotRequested),
            (Some("ambient"), None, Enrolment::Enrolled),
            (Some("none"), Some("ambient"), Enrolment::OptedOut),
            (None, Some("none"), Enrolment::OptedOut),
            (Some("ambient"), Some("none"), Enrolment::Enrolled),
            (Some("sidecar"), Some("ambient"), Enrolment::NotRequested),
        ];
        for (pod_mode, namespace_mode, want) in cases {
            let facts = PodFacts { pod_mode, namespace_mode, ..running };
            assert_eq!(decide(&facts), want, "{facts:?}");
        }
    }

    #[test]
    fn exclusions_apply_in_order() {
        let ambient = PodFacts { pod_mode: Some("ambient"), has_ip: true, ..PodFacts::default() };
        let cases = [
            (PodFacts { sidecar: true, host_network: true, ..ambient }, Enrolment::Sidecar),
            (PodFacts { host_network: true, finished: true, ..ambient }, Enrolment::HostNetwork),
            (PodFacts { finished: true, has_ip: false, ..ambient }, Enrolment::Finished),
            (PodFacts { has_ip: false, ..ambient }, Enrolment::NoIp),
        ];
        for (facts, want) in cases {
            assert_eq!(decide(&facts), want, "{facts:?}");
        }
    }
}
