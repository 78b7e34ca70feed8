//! A pod as the node agent sees it, and its enrolment under the rule shared
//! with istiod ([`mesh_model::enrolment`]): `istio.io/dataplane-mode=ambient`
//! on the Namespace or the Pod enrols, the pod label wins, `none` opts out;
//! a pod with a sidecar keeps it; pods on the host network, without an IP
//! or finished are skipped. The tests mirror istiod's matrix case by case.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// Labels or annotations.
pub type Labels = BTreeMap<String, String>;

pub use mesh_model::enrolment::{
    DATAPLANE_MODE_LABEL, Enrolment, SIDECAR_CONTAINER, SIDECAR_STATUS_ANNOTATION,
};

/// `false` keeps the pod's DNS out of the DNS proxy.
pub const DNS_CAPTURE_ANNOTATION: &str = "ambient.istio.io/dns-capture";

/// Everything the agent needs to know about a pod on its node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.uid`; the ZDS uid.
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Empty means `default`.
    pub service_account: String,
    pub labels: Labels,
    pub annotations: Labels,
    /// Names of all containers and init containers.
    pub containers: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// The pod's network namespace, when the source knows it (local mode,
    /// or the CNI plugin's report).
    pub netns: Option<PathBuf>,
    pub host_network: bool,
    /// Phase `Succeeded` or `Failed`.
    pub finished: bool,
}

impl PodInfo {
    /// `namespace/name`, for logs and errors.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod's DNS goes to the DNS proxy (on unless annotated
    /// `ambient.istio.io/dns-capture: "false"`).
    pub fn dns_capture(&self) -> bool {
        self.annotations.get(DNS_CAPTURE_ANNOTATION).is_none_or(|v| v != "false")
    }

    fn has_sidecar(&self) -> bool {
        self.annotations.contains_key(SIDECAR_STATUS_ANNOTATION)
            || self.containers.iter().any(|c| c == SIDECAR_CONTAINER)
    }
}

/// Decides whether `pod` (in a namespace labelled `ns_labels`, if known) is
/// captured.
pub fn enrolment(ns_labels: Option<&Labels>, pod: &PodInfo) -> Enrolment {
    mesh_model::enrolment::decide(&mesh_model::PodFacts {
        pod_mode: pod.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str),
        namespace_mode: ns_labels.and_then(|l| l.get(DATAPLANE_MODE_LABEL)).map(String::as_str),
        sidecar: pod.has_sidecar(),
        host_network: pod.host_network,
        finished: pod.finished,
        has_ip: !pod.ips.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn running(pod_labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            uid: "u".into(),
            name: "p".into(),
            namespace: "ns".into(),
            labels: labels(pod_labels),
            containers: vec!["app".into()],
            ips: vec!["10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))],
            ..PodInfo::default()
        }
    }

    /// The same matrix as istiod's `enrolment_matrix`.
    #[test]
    fn enrolment_matrix_mirrors_istiod() {
        let amb = labels(&[(DATAPLANE_MODE_LABEL, "ambient")]);
        let plain = Labels::new();
        let off = labels(&[(DATAPLANE_MODE_LABEL, "none")]);
        let ambient = [(DATAPLANE_MODE_LABEL, "ambient")];
        let none = [(DATAPLANE_MODE_LABEL, "none")];
        let sidecar =
            PodInfo { containers: vec!["app".into(), SIDECAR_CONTAINER.into()], ..running(&[]) };
        let host = PodInfo { host_network: true, ..running(&[]) };
        let pending = PodInfo { ips: Vec::new(), ..running(&[]) };
        let done = PodInfo { finished: true, ..running(&[]) };
        let cases = [
            (&amb, running(&[]), Enrolment::Enrolled),
            (&plain, running(&[]), Enrolment::NotRequested),
            (&plain, running(&ambient), Enrolment::Enrolled),
            (&amb, running(&none), Enrolment::OptedOut),
            (&off, running(&[]), Enrolment::OptedOut),
            (&off, running(&ambient), Enrolment::Enrolled),
            (&amb, sidecar, Enrolment::Sidecar),
            (&amb, host, Enrolment::HostNetwork),
            (&amb, pending, Enrolment::NoIp),
            (&amb, done, Enrolment::Finished),
        ];
        for (ns, pod, want) in cases {
            assert_eq!(enrolment(Some(ns), &pod), want, "{ns:?} {pod:?}");
        }
    }

    #[test]
    fn sidecar_status_annotation_keeps_the_sidecar() {
        let amb = labels(&[(DATAPLANE_MODE_LABEL, "ambient")]);
        let pod =
            PodInfo { annotations: labels(&[(SIDECAR_STATUS_ANNOTATION, "{}")]), ..running(&[]) };
        assert_eq!(enrolment(Some(&amb), &pod), Enrolment::Sidecar);
    }

    #[test]
    fn unknown_namespace_falls_back_to_the_pod_label() {
        let pod = running(&[(DATAPLANE_MODE_LABEL, "ambient")]);
        assert_eq!(enrolment(None, &pod), Enrolment::Enrolled);
        assert_eq!(enrolment(None, &running(&[])), Enrolment::NotRequested);
    }

    #[test]
    fn dns_capture_is_on_unless_annotated_false() {
        let mut pod = running(&[]);
        assert!(pod.dns_capture());
        pod.annotations.insert(DNS_CAPTURE_ANNOTATION.into(), "true".into());
        assert!(pod.dns_capture());
        pod.annotations.insert(DNS_CAPTURE_ANNOTATION.into(), "false".into());
        assert!(!pod.dns_capture());
    }
}
