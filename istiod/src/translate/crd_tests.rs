use super::crd::*;
use super::fixtures::{chart_examples, snapshot};

#[test]
fn parses_every_chart_example_of_the_translated_kinds() {
    let examples = chart_examples();
    let files: std::collections::BTreeSet<_> = examples.iter().map(|(f, _)| f.as_str()).collect();
    for want in [
        "authorizationpolicy-allow-l4.yaml",
        "authorizationpolicy-deny-when.yaml",
        "authorizationpolicy-waypoint-l7.yaml",
        "peerauthentication-strict.yaml",
        "serviceentry-no-addresses.yaml",
        "workloadentry.yaml",
    ] {
        assert!(files.contains(want), "{want} not found among {files:?}");
    }
    for (file, doc) in &examples {
        let snap = std::panic::catch_unwind(|| snapshot(doc))
            .unwrap_or_else(|_| panic!("{file}: does not parse:\n{doc}"));
        let total = snap.authorization_policies.len()
            + snap.peer_authentications.len()
            + snap.service_entries.len()
            + snap.workload_entries.len();
        assert_eq!(total, 1, "{file}");
    }
}

#[test]
fn example_fields_land_in_the_typed_specs() {
    let snap =
        snapshot(include_str!("../../../helm/base/tests/examples/peerauthentication-strict.yaml"));
    let pa = snap.peer_authentications.values().find(|p| p.name() == "legacy-metrics").unwrap();
    assert_eq!(pa.spec.mtls.as_ref().unwrap().mode, "STRICT");
    assert_eq!(pa.spec.port_level_mtls["9102"].mode, "PERMISSIVE");
    assert_eq!(pa.spec.selector.as_ref().unwrap().match_labels["app"], "legacy");

    let snap = snapshot(include_str!("../../../helm/base/tests/examples/workloadentry.yaml"));
    let we = snap.workload_entries.values().next().unwrap();
    assert_eq!(we.spec.address, "10.128.0.17");
    assert_eq!(we.spec.ports["http"], 18080);
    assert_eq!(we.spec.weight, 10);

    let snap =
        snapshot(include_str!("../../../helm/base/tests/examples/serviceentry-no-addresses.yaml"));
    let se = snap.service_entries.values().find(|s| s.name() == "vm-backend").unwrap();
    assert_eq!(se.spec.ports[0].target_port, 18080);
    assert_eq!(se.spec.workload_selector.as_ref().unwrap().labels["app"], "backend-vm");
}

#[test]
fn unquoted_numeric_port_keys_and_unknown_fields_parse() {
    let snap = snapshot(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p}
spec:
  futureField: 1
  selector: {matchLabels: {app: a}}
  portLevelMtls:
    8080: {mode: STRICT}
",
    );
    let pa = snap.peer_authentications.values().next().unwrap();
    assert_eq!(pa.spec.port_level_mtls["8080"].mode, "STRICT");
}

#[test]
fn from_json_reads_a_dynamic_object() {
    let v = serde_json::json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "a", "namespace": "ns"},
        "spec": {"action": "DENY"}
    });
    let p = AuthorizationPolicy::from_json(v).unwrap();
    assert_eq!((p.namespace(), p.name(), p.spec.action.as_str()), ("ns", "a", "DENY"));
}
