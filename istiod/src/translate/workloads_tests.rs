use mesh_proto::workload::{
    GatewayAddress, Locality, NamespacedHostname, Port, TunnelProtocol, Workload, WorkloadStatus,
    WorkloadType, gateway_address,
};

use super::fixtures::{AMBIENT_DEFAULT, cfg, pod, snapshot};
use super::workloads::{all_workloads, pod_workload};

fn workloads(yaml: &str) -> Vec<Workload> {
    all_workloads(&cfg(), &snapshot(&format!("{AMBIENT_DEFAULT}---\n{yaml}")))
}

fn one(yaml: &str) -> Workload {
    let mut w = workloads(yaml);
    assert_eq!(w.len(), 1, "{w:?}");
    w.remove(0)
}

#[test]
fn pod_workload_fields() {
    let w = one(&pod("reviews-1", "app: reviews, version: v2", "10.244.1.5"));
    assert_eq!(w.uid, "Kubernetes//Pod/default/reviews-1");
    assert_eq!((w.name.as_str(), w.namespace.as_str()), ("reviews-1", "default"));
    assert_eq!(w.addresses, vec![vec![10, 244, 1, 5]]);
    assert_eq!(w.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(w.trust_domain, "cluster.local");
    assert_eq!(w.service_account, "sa-reviews-1");
    assert_eq!(w.node, "node-a");
    assert_eq!(w.cluster_id, "Kubernetes");
    assert_eq!((w.canonical_name.as_str(), w.canonical_revision.as_str()), ("reviews", "v2"));
    assert_eq!(
        (w.workload_name.as_str(), w.workload_type),
        ("reviews-1", WorkloadType::Pod as i32)
    );
    assert_eq!(w.status, WorkloadStatus::Healthy as i32);
    assert_eq!(
        w.locality,
        Some(Locality {
            region: "eu-west1".into(),
            zone: "eu-west1-b".into(),
            subzone: "rack-7".into()
        })
    );
    assert!(w.waypoint.is_none());
}

#[test]
fn dual_stack_addresses_and_unready_pods() {
    let yaml = pod("a", "", "10.0.0.1")
        .replace("  podIPs:\n  - ip: 10.0.0.1", "  podIPs:\n  - ip: 10.0.0.1\n  - ip: fd00::1");
    let yaml = yaml.replace("status: \"True\"", "status: \"False\"");
    let w = one(&yaml);
    assert_eq!(w.addresses.len(), 2);
    assert_eq!(w.addresses[1].len(), 16);
    assert_eq!(w.status, WorkloadStatus::Unhealthy as i32);
}

#[test]
fn canonical_name_and_revision_precedence() {
    let cases = [
        ("service.istio.io/canonical-name: c, app.kubernetes.io/name: k, app: a", "c"),
        ("app.kubernetes.io/name: k, app: a", "k"),
        ("app: a", "a"),
        ("", "p"),
    ];
    for (labels, want) in cases {
        assert_eq!(one(&pod("p", labels, "10.0.0.1")).canonical_name, want, "{labels}");
    }
    let cases = [
        ("service.istio.io/canonical-revision: c, app.kubernetes.io/version: k, version: v", "c"),
        ("app.kubernetes.io/version: k, version: v", "k"),
        ("version: v", "v"),
        ("", "latest"),
    ];
    for (labels, want) in cases {
        assert_eq!(one(&pod("p", labels, "10.0.0.1")).canonical_revision, want, "{labels}");
    }
}

fn owned_by(kind: &str, name: &str) -> String {
    pod("p", "", "10.0.0.1").replace(
        "  namespace: default\n",
        &format!(
            "  namespace: default\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: {kind}, name: {name}, uid: u, controller: true}}\n"
        ),
    )
}

#[test]
fn workload_name_and_type_from_owner() {
    let cases = [
        ("ReplicaSet", "reviews-v2-5d8f9c7b6d", "reviews-v2", WorkloadType::Deployment),
        ("ReplicaSet", "plain", "plain", WorkloadType::Pod),
        ("Job", "batch", "batch", WorkloadType::Job),
        ("Job", "nightly-29043210", "nightly", WorkloadType::Cronjob),
        ("StatefulSet", "db", "db", WorkloadType::Pod),
    ];
    for (kind, owner, name, ty) in cases {
        let w = one(&owned_by(kind, owner));
        assert_eq!(
            (w.workload_name.as_str(), w.workload_type),
            (name, ty as i32),
            "{kind} {owner}"
        );
    }
    // The canonical name falls back to the workload name.
    assert_eq!(one(&owned_by("ReplicaSet", "reviews-v2-5d8f9c7b6d")).canonical_name, "reviews-v2");
}

const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http-web}
  - {name: metrics, port: 9090, targetPort: 9091}
  - {name: plain, port: 7000}
  - {name: missing, port: 7001, targetPort: nope}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec:
  clusterIP: 10.96.0.11
  selector: {app: other}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80}]
";

#[test]
fn services_map_resolves_target_ports_per_pod() {
    let w = one(&format!("{SERVICES}---\n{}", pod("web-1", "app: web", "10.0.0.1")));
    // The headless Service lists the pod too (its DNS name resolves to it).
    assert_eq!(w.services.len(), 2, "{:?}", w.services);
    assert!(w.services.contains_key("default/headless.default.svc.cluster.local"));
    let ports = &w.services["default/web.default.svc.cluster.local"].ports;
    let got: Vec<(u32, u32)> =
        ports.iter().map(|p: &Port| (p.service_port, p.target_port)).collect();
    assert_eq!(got, vec![(80, 8080), (9090, 9091), (7000, 7000)]);
}

fn hostname_waypoint(ns: &str, name: &str) -> Option<GatewayAddress> {
    Some(GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: ns.into(),
            hostname: format!("{name}.{ns}.svc.cluster.local"),
        })),
        hbone_mtls_port: 15008,
    })
}

#[test]
fn waypoint_precedence() {
    let ns = |labels: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default, labels: {{istio.io/dataplane-mode: ambient, {labels}}}}}\n"
        )
    };
    let cases = [
        ("istio.io/use-waypoint: ns-wp", "", hostname_waypoint("default", "ns-wp")),
        (
            "istio.io/use-waypoint: ns-wp",
            "istio.io/use-waypoint: pod-wp",
            hostname_waypoint("default", "pod-wp"),
        ),
        ("istio.io/use-waypoint: ns-wp", "istio.io/use-waypoint: none", None),
        (
            "",
            "istio.io/use-waypoint: shared, istio.io/use-waypoint-namespace: infra",
            hostname_waypoint("infra", "shared"),
        ),
        ("", "", None),
        (
            "istio.io/use-waypoint: ns-wp",
            "gateway.istio.io/managed: istio.io-mesh-controller",
            None,
        ),
    ];
    for (ns_labels, pod_labels, want) in cases {
        let snap = snapshot(&format!("{}---\n{}", ns(ns_labels), pod("p", pod_labels, "10.0.0.1")));
        let w = pod_workload(&cfg(), &snap, snap.pods.values().next().unwrap()).unwrap();
        assert_eq!(w.waypoint, want, "ns {ns_labels:?} pod {pod_labels:?}");
    }
}

#[test]
fn lists_selector_policies_that_select_it() {
    let policies = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: match, namespace: default}
spec: {selector: {matchLabels: {app: web}}, action: DENY}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-match, namespace: istio-system}
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-app, namespace: default}
spec: {selector: {matchLabels: {app: other}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: elsewhere}
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: namespace-wide, namespace: default}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {ipBlocks: [not-an-ip]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: default}
spec: {selector: {matchLabels: {app: web}}, action: AUDIT}
";
    let w = one(&format!("{policies}---\n{}", pod("web-1", "app: web", "10.0.0.1")));
    // `broken` fails closed (sent allowing nothing), so it stays listed.
    assert_eq!(
        w.authorization_policies,
        vec!["default/broken", "default/match", "istio-system/mesh-match"]
    );
}

#[test]
fn skipped_pods_produce_no_workload() {
    let no_ip =
        pod("p", "", "10.0.0.1").replace("  podIP: 10.0.0.1\n  podIPs:\n  - ip: 10.0.0.1\n", "");
    assert!(workloads(&no_ip).is_empty());
    assert!(workloads(&pod("p", "istio.io/dataplane-mode: none", "10.0.0.1")).is_empty());
}

#[test]
fn network_from_pod_or_namespace_label() {
    assert_eq!(one(&pod("p", "topology.istio.io/network: net-b", "10.0.0.1")).network, "net-b");
    let snap = snapshot(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default, labels: {{istio.io/dataplane-mode: ambient, topology.istio.io/network: net-ns}}}}\n---\n{}",
        pod("p", "", "10.0.0.1")
    ));
    assert_eq!(all_workloads(&cfg(), &snap)[0].network, "net-ns");
    assert_eq!(one(&pod("p", "", "10.0.0.1")).network, "");
}

#[test]
fn unenrolled_pods_only_on_request() {
    let yaml = format!(
        "{}---\n{}",
        pod("off", "istio.io/dataplane-mode: none", "10.0.0.1"),
        pod("on", "", "10.0.0.2")
    );
    assert_eq!(workloads(&yaml).len(), 1);
    let snap = snapshot(&format!("{AMBIENT_DEFAULT}---\n{yaml}"));
    let cfg = super::Config { include_unenrolled_pods: true, ..cfg() };
    let all = all_workloads(&cfg, &snap);
    let tunnel = |n: &str| all.iter().find(|w| w.name == n).unwrap().tunnel_protocol;
    assert_eq!(tunnel("off"), TunnelProtocol::None as i32);
    assert_eq!(tunnel("on"), TunnelProtocol::Hbone as i32);
}
