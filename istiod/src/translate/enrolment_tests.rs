use super::enrolment::{Enrolment, enrolment};
use super::fixtures::snapshot;

const NAMESPACES: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Namespace
metadata: {name: off, labels: {istio.io/dataplane-mode: none}}
";

/// A running pod with an IP in `ns`, with extra metadata/spec/status YAML.
fn pod(ns: &str, labels: &str, extra_spec: &str, status: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: {ns}
  labels: {{{labels}}}
spec:
  containers:
  - name: app
{extra_spec}
status:
{status}
"
    )
}

const RUNNING: &str = "  phase: Running\n  podIP: 10.0.0.1";

fn decide(ns: &str, pod_yaml: &str) -> Enrolment {
    let snap = snapshot(&format!("{NAMESPACES}---\n{pod_yaml}"));
    let pod = snap.pods.values().next().unwrap();
    enrolment(snap.namespaces.get(ns), pod)
}

#[test]
fn enrolment_matrix() {
    let cases = [
        ("amb", "", "", RUNNING, Enrolment::Enrolled),
        ("plain", "", "", RUNNING, Enrolment::NotRequested),
        ("plain", "istio.io/dataplane-mode: ambient", "", RUNNING, Enrolment::Enrolled),
        ("amb", "istio.io/dataplane-mode: none", "", RUNNING, Enrolment::OptedOut),
        ("off", "", "", RUNNING, Enrolment::OptedOut),
        ("off", "istio.io/dataplane-mode: ambient", "", RUNNING, Enrolment::Enrolled),
        ("amb", "", "  - name: istio-proxy", RUNNING, Enrolment::Sidecar),
        ("amb", "", "  hostNetwork: true", RUNNING, Enrolment::HostNetwork),
        ("amb", "", "", "  phase: Pending", Enrolment::NoIp),
        ("amb", "", "", "  phase: Succeeded\n  podIP: 10.0.0.1", Enrolment::Finished),
        ("amb", "", "", "  phase: Failed\n  podIP: 10.0.0.1", Enrolment::Finished),
    ];
    for (ns, labels, spec, status, want) in cases {
        let yaml = pod(ns, labels, spec, status);
        assert_eq!(decide(ns, &yaml), want, "{yaml}");
    }
}

#[test]
fn sidecar_status_annotation_keeps_the_sidecar() {
    let yaml = "apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: amb
  annotations: {sidecar.istio.io/status: '{}'}
spec: {containers: [{name: app}]}
status: {phase: Running, podIP: 10.0.0.1}
";
    assert_eq!(decide("amb", yaml), Enrolment::Sidecar);
}

#[test]
fn unknown_namespace_falls_back_to_the_pod_label() {
    let snap = snapshot(&pod("ghost", "istio.io/dataplane-mode: ambient", "", RUNNING));
    let pod = snap.pods.values().next().unwrap();
    assert_eq!(enrolment(None, pod), Enrolment::Enrolled);
}
