//! Address ownership and ServiceEntry `exportTo` in the translation
//! (hardening issue, items 2 and 3).

use std::net::IpAddr;

use mesh_proto::workload::{Workload, address, service::Visibility};

use super::fixtures::{AMBIENT_DEFAULT, cfg, pod, snapshot};
use super::ownership::REASON_ADDRESS_CONFLICT;
use super::{Output, translate};

fn workload<'a>(out: &'a Output, uid: &str) -> &'a Workload {
    out.addresses
        .iter()
        .find_map(|a| match &a.r#type {
            Some(address::Type::Workload(w)) if w.uid == uid => Some(w),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no workload {uid}"))
}

fn ips(w: &Workload) -> Vec<IpAddr> {
    w.addresses.iter().map(|a| mesh_model::ip_from_bytes("a", a).unwrap()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn conditions<'a>(out: &'a Output, kind: &str, name: &str) -> Vec<&'a str> {
    out.statuses
        .iter()
        .filter(|s| s.kind == kind && s.name == name)
        .flat_map(|s| &s.conditions)
        .filter(|c| c.reason == REASON_ADDRESS_CONFLICT)
        .map(|c| c.message.as_str())
        .collect()
}

fn in_namespace(yaml: &str, ns: &str) -> String {
    yaml.replace("namespace: default", &format!("namespace: {ns}"))
}

const EVIL_NAMESPACE: &str = "apiVersion: v1
kind: Namespace
metadata: {name: evil, labels: {istio.io/dataplane-mode: ambient}}
";

/// Attack (item 2): a ServiceEntry in `evil` with `addresses:
/// [10.244.0.0/16]` and an endpoint on an attacker pod. The pods keep their
/// IPs, the entry's endpoint loses the attacker pod's IP, and the entry's
/// status says why.
#[test]
fn a_service_entry_over_pod_ips_takes_no_pod_address() {
    let attacker = in_namespace(&pod("attacker", "app: evil", "10.244.0.66"), "evil");
    let yaml = format!(
        "{AMBIENT_DEFAULT}---\n{EVIL_NAMESPACE}---\n{}---\n{attacker}---\n{}",
        pod("web-1", "app: web", "10.244.0.10"),
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: capture, namespace: evil, labels: {istio.io/dataplane-mode: ambient}}
spec:
  hosts: [capture.evil.example]
  addresses: [10.244.0.0/16]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.244.0.66}]
"
    );
    let out = translate(&cfg(), &snapshot(&yaml));
    assert_eq!(ips(workload(&out, "Kubernetes//Pod/default/web-1")), vec![ip("10.244.0.10")]);
    assert_eq!(ips(workload(&out, "Kubernetes//Pod/evil/attacker")), vec![ip("10.244.0.66")]);
    let endpoint =
        workload(&out, "Kubernetes/networking.istio.io/ServiceEntry/evil/capture/10.244.0.66");
    assert!(endpoint.addresses.is_empty(), "the pod's IP stays the pod's: {:?}", ips(endpoint));
    let msgs = conditions(&out, "ServiceEntry", "capture");
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].contains("address 10.244.0.66 belongs to Pod evil/attacker"), "{}", msgs[0]);
    assert!(msgs[0].contains("a pod's IP belongs to the pod"), "{}", msgs[0]);
    assert!(msgs[1].contains("10.244.0.0/16 covers the IPs of 2 pod(s)"), "{}", msgs[1]);
}

/// Item 3: a WorkloadEntry in a namespace outside the mesh with a pod's
/// address does not displace the pod, and its status says so.
#[test]
fn a_workload_entry_cannot_take_a_pod_ip() {
    let yaml = format!(
        "{AMBIENT_DEFAULT}---\n{}---\n{}",
        pod("web-1", "app: web", "10.244.0.10"),
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: squat, namespace: outside}
spec: {address: 10.244.0.10}
"
    );
    let out = translate(&cfg(), &snapshot(&yaml));
    assert_eq!(ips(workload(&out, "Kubernetes//Pod/default/web-1")), vec![ip("10.244.0.10")]);
    let squat = workload(&out, "Kubernetes/networking.istio.io/WorkloadEntry/outside/squat");
    assert!(squat.addresses.is_empty());
    let msgs = conditions(&out, "WorkloadEntry", "squat");
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("belongs to Pod default/web-1"), "{}", msgs[0]);
}

/// Two WorkloadEntries of one namespace with one address: the older keeps
/// it whoever asks. In different namespaces the winner depends on the
/// caller, so both keep it and ztunnel decides per connection.
#[test]
fn entries_of_one_namespace_resolve_by_age_others_are_left_to_the_proxy() {
    let entry = |name: &str, ns: &str, created: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}
spec: {{address: 10.1.0.5}}
---
"
        )
    };
    let yaml = format!(
        "{}{}{}",
        entry("b-old", "a", "2026-01-01T00:00:00Z"),
        entry("a-new", "a", "2026-02-01T00:00:00Z"),
        entry("x", "z", "2026-03-01T00:00:00Z")
    );
    let out = translate(&cfg(), &snapshot(&yaml));
    let uid = |ns: &str, n: &str| format!("Kubernetes/networking.istio.io/WorkloadEntry/{ns}/{n}");
    assert_eq!(ips(workload(&out, &uid("a", "b-old"))), vec![ip("10.1.0.5")]);
    assert!(workload(&out, &uid("a", "a-new")).addresses.is_empty());
    assert!(conditions(&out, "WorkloadEntry", "a-new")[0].contains("created earlier"));
    assert_eq!(ips(workload(&out, &uid("z", "x"))), vec![ip("10.1.0.5")]);
    assert!(conditions(&out, "WorkloadEntry", "x").is_empty());
}

fn entry_with_export(export: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: shop}}
spec:
  hosts: [api.example.com]
  addresses: [240.0.0.9]
  ports: [{{number: 443, name: tls}}]
  exportTo: {export}
"
    )
}

/// Item 2: `exportTo` is honoured, as ztunnel can enforce it.
#[test]
fn export_to_sets_the_visibility() {
    let visibility = |export: &str| {
        let out = translate(&cfg(), &snapshot(&entry_with_export(export)));
        let service = out.addresses.iter().find_map(|a| match &a.r#type {
            Some(address::Type::Service(s)) => Some(s.visibility),
            _ => None,
        });
        let warned = out.statuses.iter().any(|s| s.name == "ext");
        (service, warned)
    };
    let public = Some(Visibility::Public as i32);
    let private = Some(Visibility::Namespace as i32);
    assert_eq!(visibility("[]"), (public, false));
    assert_eq!(visibility("['*']"), (public, false));
    assert_eq!(visibility("['.']"), (private, false));
    assert_eq!(visibility("[shop]"), (private, false));
    assert_eq!(visibility("['.', other]"), (private, true), "narrowed, with a condition");
    assert_eq!(visibility("['~']"), (None, false), "exported nowhere: no service");
}
