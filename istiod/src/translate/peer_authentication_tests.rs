use mesh_proto::security::{
    Action, Authorization, Clause, Match, Rule, Scope, StringMatch, string_match::MatchType,
};

use super::Snapshot;
use super::fixtures::{AMBIENT_DEFAULT, cfg, pod, snapshot};
use super::peer_authentication::{convert_peer_authentication, effective_policy_for};
use super::status::{ObjectStatus, REASON_UNSUPPORTED_VALUE};
use super::workloads::all_workloads;

fn pa(name: &str, ns: &str, body: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: '2026-01-01T00:00:00Z'}}
spec:
{body}
---
"
    )
}

fn converted(snap: &Snapshot, name: &str) -> (Option<Authorization>, Option<ObjectStatus>) {
    let p = snap.peer_authentications.values().find(|p| p.name() == name).unwrap();
    convert_peer_authentication(&cfg(), snap, p)
}

fn no_principal() -> Match {
    Match {
        not_principals: vec![StringMatch { match_type: Some(MatchType::Presence(())) }],
        ..Default::default()
    }
}

fn clause(m: Match) -> Clause {
    Clause { matches: vec![m] }
}

fn policies_of(snap: &Snapshot, pod_name: &str) -> Vec<String> {
    all_workloads(&cfg(), snap)
        .into_iter()
        .find(|w| w.name == pod_name)
        .unwrap()
        .authorization_policies
}

#[test]
fn strict_example_and_port_level_exemption() {
    let snap = snapshot(&format!(
        "{AMBIENT_DEFAULT}---\n{}---\n{}---\n{}",
        include_str!("../../../helm/base/tests/examples/peerauthentication-strict.yaml"),
        pod("legacy-1", "app: legacy", "10.0.0.1"),
        pod("web-1", "app: web", "10.0.0.2"),
    ));
    let (ns_wide, s) = converted(&snap, "default");
    assert!(s.is_none());
    let ns_wide = ns_wide.unwrap();
    assert_eq!(ns_wide.name, "converted_peer_authentication_default");
    assert_eq!(ns_wide.namespace, "default");
    assert_eq!(ns_wide.scope, Scope::WorkloadSelector as i32);
    assert_eq!(ns_wide.action, Action::Deny as i32);
    assert_eq!(ns_wide.rules, vec![Rule { clauses: vec![clause(no_principal())] }]);

    let (legacy, _) = converted(&snap, "legacy-metrics");
    let legacy = legacy.unwrap();
    // Deny without a principal AND not on 9102.
    let exempt = Match { not_destination_ports: vec![9102], ..Default::default() };
    assert_eq!(legacy.rules, vec![Rule { clauses: vec![clause(no_principal()), clause(exempt)] }]);

    assert_eq!(
        policies_of(&snap, "legacy-1"),
        vec!["default/converted_peer_authentication_legacy-metrics"]
    );
    assert_eq!(policies_of(&snap, "web-1"), vec!["default/converted_peer_authentication_default"]);
}

#[test]
fn permissive_and_unset_produce_nothing() {
    for mode in ["PERMISSIVE", "UNSET"] {
        let snap = snapshot(&format!(
            "{AMBIENT_DEFAULT}---\n{}{}",
            pa("p", "default", &format!("  mtls: {{mode: {mode}}}")),
            pod("a", "", "10.0.0.1")
        ));
        let (a, s) = converted(&snap, "p");
        assert!(a.is_none() && s.is_none(), "{mode}");
        assert!(policies_of(&snap, "a").is_empty(), "{mode}");
    }
}

#[test]
fn strict_port_under_permissive() {
    let snap = snapshot(&format!(
        "{AMBIENT_DEFAULT}---\n{}{}",
        pa(
            "p",
            "default",
            "  selector: {matchLabels: {app: a}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls: {8080: {mode: STRICT}}"
        ),
        pod("a", "app: a", "10.0.0.1")
    ));
    let (a, _) = converted(&snap, "p");
    let strict_port = Match { destination_ports: vec![8080], ..no_principal() };
    assert_eq!(a.unwrap().rules, vec![Rule { clauses: vec![clause(strict_port)] }]);
    assert_eq!(policies_of(&snap, "a"), vec!["default/converted_peer_authentication_p"]);
}

#[test]
fn unset_selector_policy_inherits_strict_and_mesh_wide_strict() {
    let snap = snapshot(&format!(
        "{AMBIENT_DEFAULT}---\n{}{}{}---\n{}",
        pa("mesh", "istio-system", "  mtls: {mode: STRICT}"),
        pa(
            "exempt-metrics",
            "default",
            "  selector: {matchLabels: {app: a}}\n  portLevelMtls: {'15020': {mode: PERMISSIVE}}"
        ),
        pod("a", "app: a", "10.0.0.1"),
        pod("b", "app: b", "10.0.0.2"),
    ));
    let (a, _) = converted(&snap, "exempt-metrics");
    let exempt = Match { not_destination_ports: vec![15020], ..Default::default() };
    assert_eq!(
        a.unwrap().rules,
        vec![Rule { clauses: vec![clause(no_principal()), clause(exempt)] }]
    );
    assert_eq!(
        policies_of(&snap, "a"),
        vec!["default/converted_peer_authentication_exempt-metrics"]
    );
    assert_eq!(policies_of(&snap, "b"), vec!["istio-system/converted_peer_authentication_mesh"]);

    // A PERMISSIVE namespace policy overrides the mesh-wide STRICT one.
    let snap = snapshot(&format!(
        "{AMBIENT_DEFAULT}---\n{}{}{}",
        pa("mesh", "istio-system", "  mtls: {mode: STRICT}"),
        pa("ns", "default", "  mtls: {mode: PERMISSIVE}"),
        pod("b", "app: b", "10.0.0.2"),
    ));
    assert!(policies_of(&snap, "b").is_empty());
}

#[test]
fn disable_is_noted_and_enforces_nothing() {
    let snap = snapshot(&pa("off", "default", "  mtls: {mode: DISABLE}"));
    let (a, s) = converted(&snap, "off");
    assert!(a.is_none());
    let c = &s.unwrap().conditions[0];
    assert_eq!((c.reason.as_str(), c.status.as_str()), (REASON_UNSUPPORTED_VALUE, "True"));
    assert!(c.message.contains("DISABLE"));
}

#[test]
fn port_level_without_selector_is_ignored_with_a_note() {
    let snap = snapshot(&pa(
        "p",
        "default",
        "  mtls: {mode: STRICT}\n  portLevelMtls: {80: {mode: PERMISSIVE}}",
    ));
    let (a, s) = converted(&snap, "p");
    assert_eq!(a.unwrap().rules, vec![Rule { clauses: vec![clause(no_principal())] }]);
    assert!(s.unwrap().conditions[0].message.contains("portLevelMtls"));
}

#[test]
fn the_oldest_policy_of_a_level_wins() {
    let newer = pa("newer", "default", "  mtls: {mode: PERMISSIVE}")
        .replace("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z");
    let snap = snapshot(&format!("{newer}{}", pa("older", "default", "  mtls: {mode: STRICT}")));
    assert_eq!(
        effective_policy_for(&cfg(), &snap, "default", None),
        Some("default/converted_peer_authentication_older".to_owned())
    );
}

#[test]
fn selector_policies_in_the_root_namespace_are_ignored() {
    let snap = snapshot(&pa(
        "p",
        "istio-system",
        "  selector: {matchLabels: {app: a}}\n  mtls: {mode: STRICT}",
    ));
    let (a, s) = converted(&snap, "p");
    assert!(a.is_none());
    assert_eq!(s.unwrap().conditions[0].status, "False");
}

/// Fail closed (hardening issue, item 4): an invalid mode means STRICT, for
/// the policy and for a port; a key that is not a port tightens the whole
/// policy unless the entry only relaxes it.
#[test]
fn invalid_modes_and_port_keys_fail_closed() {
    let snap = snapshot(&pa("p", "default", "  mtls: {mode: STRICTEST}"));
    let (a, s) = converted(&snap, "p");
    assert_eq!(a.unwrap().rules, vec![Rule { clauses: vec![clause(no_principal())] }]);
    assert!(s.unwrap().conditions[0].message.contains("enforced as STRICT"));

    let snap = snapshot(&pa(
        "p",
        "default",
        "  selector: {matchLabels: {app: a}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls: {8080: {mode: Strict}}",
    ));
    let (a, _) = converted(&snap, "p");
    let strict_8080 = Match { destination_ports: vec![8080], ..no_principal() };
    assert_eq!(a.unwrap().rules, vec![Rule { clauses: vec![clause(strict_8080)] }]);

    let snap = snapshot(&pa(
        "p",
        "default",
        "  selector: {matchLabels: {app: a}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls: {http: {mode: STRICT}}",
    ));
    let (a, s) = converted(&snap, "p");
    assert_eq!(a.unwrap().rules, vec![Rule { clauses: vec![clause(no_principal())] }]);
    assert!(s.unwrap().conditions[0].message.contains("whole policy is enforced as STRICT"));

    // A workload in scope lists the converted policy.
    let snap = snapshot(&format!(
        "{AMBIENT_DEFAULT}---\n{}---\n{}",
        pod("a-1", "app: a", "10.0.0.1"),
        pa("bad", "default", "  mtls: {mode: bogus}")
    ));
    assert_eq!(policies_of(&snap, "a-1"), vec!["default/converted_peer_authentication_bad"]);
}
