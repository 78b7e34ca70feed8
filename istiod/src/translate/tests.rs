//! Whole-snapshot tests: everything translation emits passes the proxies'
//! validation (`mesh_model`), keys are unique, bad input never panics.

use std::collections::BTreeSet;

use super::fixtures::{AMBIENT_DEFAULT, add, cfg, chart_examples, pod, snapshot};
use super::{Output, Snapshot, address_name, authorization_name, translate};

const EXTRA: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default, labels: {istio.io/use-waypoint: wp}}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  trafficDistribution: PreferClose
  ports: [{name: http, port: 9080, targetPort: http-web}, {name: grpc, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: external-db, namespace: default}
spec: {clusterIP: 10.96.0.30, ports: [{name: sql, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: external-db-1, namespace: default, labels: {kubernetes.io/service-name: external-db}}
addressType: IPv4
ports: [{name: sql, port: 5432}]
endpoints: [{addresses: [192.168.50.1]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec:
  action: DENY
  rules: [{from: [{source: {ipBlocks: ['not-a-cidr']}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

fn full_snapshot() -> Snapshot {
    let mut snap = snapshot(AMBIENT_DEFAULT);
    add(&mut snap, EXTRA);
    for (_, doc) in chart_examples() {
        add(&mut snap, &doc);
    }
    add(&mut snap, &pod("reviews-1", "app: reviews, version: v1", "10.244.0.5"));
    add(&mut snap, &pod("legacy-1", "app: legacy", "10.244.0.6"));
    add(&mut snap, &pod("vm-like", "app: backend-vm", "fd00::6"));
    snap
}

fn assert_valid(out: &Output) {
    let mut keys = BTreeSet::new();
    for a in &out.addresses {
        let key = match mesh_model::Address::try_from(a.clone()) {
            Ok(mesh_model::Address::Workload(w)) => w.uid.clone(),
            Ok(mesh_model::Address::Service(s)) => s.key().to_string(),
            Err(e) => panic!("ztunnel would NACK {a:?}: {e}"),
        };
        assert_eq!(address_name(a), key);
        assert!(keys.insert(key.clone()), "duplicate address key {key}");
    }
    let mut names = BTreeSet::new();
    for a in &out.authorizations {
        let m = mesh_model::Authorization::try_from(a.clone())
            .unwrap_or_else(|e| panic!("ztunnel would NACK {a:?}: {e}"));
        assert_eq!(authorization_name(a), m.key());
        assert!(names.insert(m.key()), "duplicate policy {}", m.key());
    }
}

#[test]
fn everything_emitted_passes_the_proxies_validation() {
    let out = translate(&cfg(), &full_snapshot());
    assert_valid(&out);
    let workloads = out
        .addresses
        .iter()
        .filter(|a| matches!(a.r#type, Some(mesh_proto::workload::address::Type::Workload(_))))
        .count();
    // 3 pods, 1 WorkloadEntry, 1 EndpointSlice endpoint.
    assert_eq!(workloads, 5);
    // reviews, external-db, external-api, vm-backend.
    assert_eq!(out.addresses.len() - workloads, 4);
    let policy_names: BTreeSet<_> =
        out.authorizations.iter().map(|a| format!("{}/{}", a.namespace, a.name)).collect();
    for want in [
        "default/reviews-allow-frontend",
        "default/deny-untrusted-ranges",
        "default/allow-nothing",
        "default/converted_peer_authentication_default",
        "default/converted_peer_authentication_legacy-metrics",
        "istio-system/converted_peer_authentication_mesh",
    ] {
        assert!(policy_names.contains(want), "{want} missing from {policy_names:?}");
    }
    // Fail closed: the malformed mesh-wide DENY denies everything.
    let mesh_deny = out.authorizations.iter().find(|a| a.name == "mesh-deny").unwrap();
    assert_eq!(mesh_deny.rules, vec![mesh_proto::security::Rule::default()]);
    let rejected: Vec<_> = out.statuses.iter().map(|s| s.name.as_str()).collect();
    assert!(rejected.contains(&"mesh-deny"), "{rejected:?}");
    // CUSTOM with targetRefs belongs to the waypoint: no status from here.
    assert!(!rejected.contains(&"ext-authz"), "{rejected:?}");
}

#[test]
fn workloads_reference_only_emitted_policies() {
    let out = translate(&cfg(), &full_snapshot());
    let emitted: BTreeSet<_> =
        out.authorizations.iter().map(|a| format!("{}/{}", a.namespace, a.name)).collect();
    for a in &out.addresses {
        if let Some(mesh_proto::workload::address::Type::Workload(w)) = &a.r#type {
            for p in &w.authorization_policies {
                assert!(emitted.contains(p), "{} references missing {p}", w.uid);
            }
        }
    }
}

/// Malformed objects produce nothing or something valid, never a panic.
#[test]
fn bad_input_never_panics_and_stays_valid() {
    let bad = "
apiVersion: v1
kind: Service
metadata: {name: weird, namespace: default}
spec:
  clusterIP: 10.96.0.99
  selector: {app: weird}
  ports: [{port: 0}, {port: 70000, targetPort: 70000}, {port: 80, targetPort: -1}]
---
apiVersion: v1
kind: Service
metadata: {name: bad-ip, namespace: default}
spec: {clusterIP: 'not-an-ip', ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: weird-1, namespace: default, labels: {app: weird}}
spec: {containers: [{name: app, ports: [{name: x, containerPort: 0}]}]}
status: {phase: Running, podIP: 'garbage', podIPs: [{ip: 'garbage'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: weird-2, namespace: default, labels: {app: weird}}
spec: {containers: []}
status: {phase: Running, podIP: 10.0.0.9}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se, namespace: default}
spec:
  hosts: ['', 'ok.example.com']
  addresses: ['10.0.0.0/99', '']
  ports: [{number: 0}, {number: 99999}, {number: 80, targetPort: 99999}]
  workloadSelector: {labels: {app: weird}}
  endpoints: [{address: ''}, {address: 10.1.1.1, ports: {http: 0}}, {address: 'fd00::1', weight: 0}, {address: 10.1.1.1}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we, namespace: default}
spec: {address: '', locality: 'a/b/c/d/e'}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa, namespace: default}
spec:
  selector: {matchLabels: {app: weird}}
  mtls: {mode: STRICT}
  portLevelMtls: {'0': {mode: PERMISSIVE}, 'abc': {mode: PERMISSIVE}, '70000': {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: default}
spec:
  selector: {}
  action: DENY
  rules: [{to: [{operation: {ports: ['0']}}]}]
";
    let snap = snapshot(&format!("{AMBIENT_DEFAULT}---\n{bad}"));
    let out = translate(&cfg(), &snap);
    assert_valid(&out);
    let pa = out.statuses.iter().find(|s| s.name == "pa").unwrap();
    assert_eq!(pa.conditions.len(), 3, "{pa:?}");
}

/// The chart's invalid examples (which the API server rejects) still
/// translate safely, each with a condition saying why, except the
/// selector+targetRefs policy, which goes to waypoints and is skipped here.
#[test]
fn chart_invalid_examples_get_conditions() {
    let dir = mesh_test_support::repo_path("helm/base/tests/invalid");
    let mut snap = snapshot(AMBIENT_DEFAULT);
    for entry in std::fs::read_dir(dir).unwrap() {
        add(&mut snap, &std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let out = translate(&cfg(), &snap);
    assert_valid(&out);
    // Fail closed: the bad mode is enforced as STRICT.
    let names: Vec<&str> = out.authorizations.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["converted_peer_authentication_bad-mode"]);
    let mut with_status: Vec<_> = out.statuses.iter().map(|s| s.name.as_str()).collect();
    with_status.sort_unstable();
    assert_eq!(with_status, vec!["bad-mode", "bogus-action", "no-hosts"]);
}
