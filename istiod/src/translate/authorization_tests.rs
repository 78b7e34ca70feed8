use mesh_proto::security::{
    Action, Address, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch, StringMatch,
    string_match::MatchType,
};

use super::authorization::convert_authorization_policy;
use super::fixtures::{cfg, snapshot};
use super::status::{ObjectStatus, REASON_INVALID, REASON_UNSUPPORTED_VALUE};

fn convert_all(yaml: &str) -> Vec<(String, Option<Authorization>, Option<ObjectStatus>)> {
    let snap = snapshot(yaml);
    snap.authorization_policies
        .values()
        .map(|p| {
            let (a, s) = convert_authorization_policy(&cfg(), p);
            (p.name().to_owned(), a, s)
        })
        .collect()
}

fn convert(yaml: &str) -> (Option<Authorization>, Option<ObjectStatus>) {
    let mut all = convert_all(yaml);
    assert_eq!(all.len(), 1);
    let (_, a, s) = all.remove(0);
    (a, s)
}

fn exact(s: &str) -> StringMatch {
    StringMatch { match_type: Some(MatchType::Exact(s.into())) }
}

fn clause(m: Match) -> Clause {
    Clause { matches: vec![m] }
}

#[test]
fn allow_l4_example() {
    let (a, s) = convert(include_str!(
        "../../../helm/base/tests/examples/authorizationpolicy-allow-l4.yaml"
    ));
    assert!(s.is_none());
    let a = a.unwrap();
    assert_eq!((a.name.as_str(), a.namespace.as_str()), ("reviews-allow-frontend", "default"));
    assert_eq!(a.scope, Scope::WorkloadSelector as i32);
    assert_eq!(a.action, Action::Allow as i32);
    let want = Rule {
        clauses: vec![
            clause(Match { destination_ports: vec![9080], ..Default::default() }),
            Clause {
                matches: vec![
                    Match {
                        principals: vec![exact("cluster.local/ns/shop/sa/frontend")],
                        ..Default::default()
                    },
                    Match {
                        namespaces: vec![exact("monitoring")],
                        not_source_ips: vec![Address { address: vec![10, 10, 0, 0], length: 16 }],
                        ..Default::default()
                    },
                ],
            },
        ],
    };
    assert_eq!(a.rules, vec![want]);
}

#[test]
fn deny_when_example_is_namespace_scoped() {
    let (a, s) = convert(include_str!(
        "../../../helm/base/tests/examples/authorizationpolicy-deny-when.yaml"
    ));
    assert!(s.is_none());
    let a = a.unwrap();
    assert_eq!(a.scope, Scope::Namespace as i32);
    assert_eq!(a.action, Action::Deny as i32);
    let clauses = &a.rules[0].clauses;
    assert_eq!(clauses.len(), 3);
    assert_eq!(clauses[0].matches[0].not_namespaces, vec![exact("shop"), exact("payments")]);
    assert_eq!(
        clauses[1].matches[0].source_ips,
        vec![
            Address { address: vec![192, 168, 0, 0], length: 16 },
            Address { address: vec![172, 16, 0, 0], length: 12 }
        ]
    );
    assert_eq!(clauses[2].matches[0].not_destination_ports, vec![8443]);
}

#[test]
fn target_refs_are_left_to_waypoints() {
    let all = convert_all(include_str!(
        "../../../helm/base/tests/examples/authorizationpolicy-waypoint-l7.yaml"
    ));
    for (name, a, s) in &all {
        if name == "allow-nothing" {
            let a = a.as_ref().unwrap();
            assert_eq!((a.scope, a.action), (Scope::Namespace as i32, Action::Allow as i32));
            assert!(a.rules.is_empty(), "ALLOW without rules allows nothing");
        } else {
            assert!(a.is_none() && s.is_none(), "{name}");
        }
    }
    // The single targetRef form too.
    let (a, s) = convert(
        "apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: p}
spec: {targetRef: {kind: Gateway, name: wp}, action: DENY}
",
    );
    assert!(a.is_none() && s.is_none());
}

#[test]
fn scopes_and_allow_all() {
    let all = convert_all(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh, namespace: istio-system}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-selector, namespace: istio-system}
spec: {selector: {matchLabels: {app: a}}}
",
    );
    let mesh = all[0].1.as_ref().unwrap();
    assert_eq!(mesh.scope, Scope::Global as i32);
    assert_eq!(mesh.rules, vec![Rule { clauses: vec![] }], "rules: [{{}}] allows all");
    assert_eq!(all[1].1.as_ref().unwrap().scope, Scope::WorkloadSelector as i32);
}

#[test]
fn audit_and_custom_are_rejected_with_a_condition() {
    for action in ["AUDIT", "CUSTOM"] {
        let (a, s) = convert(&format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p}}
spec: {{action: {action}, provider: {{name: x}}, rules: [{{}}]}}
"
        ));
        assert!(a.is_none());
        let s = s.unwrap();
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("AuthorizationPolicy", "p"));
        assert_eq!(s.conditions[0].reason, REASON_UNSUPPORTED_VALUE);
        assert_eq!(s.conditions[0].status, "False");
        assert!(s.conditions[0].message.contains(action));
    }
}

const MIXED_RULES: &str = "
  rules:
  - from: [{source: {principals: [cluster.local/ns/a/sa/x]}}]
    to: [{operation: {methods: [GET], paths: [/admin]}}]
  - from: [{source: {namespaces: [b]}}]
    to: [{operation: {ports: ['8080'], methods: [POST]}}]
    when: [{key: 'request.headers[x-user]', values: [bob]}]
  - from: [{source: {requestPrincipals: ['*']}}]
  - to: [{operation: {ports: ['9090']}}]
";

#[test]
fn l7_rules_are_dropped_from_allow() {
    let (a, s) = convert(&format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p}}
spec:
  action: ALLOW
{MIXED_RULES}"
    ));
    let a = a.unwrap();
    assert_eq!(
        a.rules,
        vec![Rule {
            clauses: vec![clause(Match { destination_ports: vec![9090], ..Default::default() })]
        }]
    );
    let c = &s.unwrap().conditions[0];
    assert_eq!((c.reason.as_str(), c.status.as_str()), (REASON_UNSUPPORTED_VALUE, "True"));
    for field in ["methods", "paths", "requestPrincipals", "when request.headers[x-user]"] {
        assert!(c.message.contains(field), "{field}: {}", c.message);
    }
    assert!(c.message.contains("ALLOW"));
}

#[test]
fn l7_parts_are_removed_from_deny_rules() {
    let (a, s) = convert(&format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p}}
spec:
  action: DENY
{MIXED_RULES}"
    ));
    let a = a.unwrap();
    let want = vec![
        // Methods/paths only: the operation matches anything, its clause goes.
        Rule {
            clauses: vec![clause(Match {
                principals: vec![exact("cluster.local/ns/a/sa/x")],
                ..Default::default()
            })],
        },
        // Port kept without the method; the header condition is dropped.
        Rule {
            clauses: vec![
                clause(Match { destination_ports: vec![8080], ..Default::default() }),
                clause(Match { namespaces: vec![exact("b")], ..Default::default() }),
            ],
        },
        // Only L7: the rule matches every connection.
        Rule { clauses: vec![] },
        Rule {
            clauses: vec![clause(Match { destination_ports: vec![9090], ..Default::default() })],
        },
    ];
    assert_eq!(a.rules, want);
    let c = &s.unwrap().conditions[0];
    assert_eq!(c.reason, REASON_UNSUPPORTED_VALUE);
    assert!(c.message.contains("DENY"));
}

#[test]
fn invalid_values_reject_only_that_policy() {
    let all = convert_all(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-cidr}
spec: {rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-port}
spec: {rules: [{to: [{operation: {ports: ['http']}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-when-ip}
spec: {action: DENY, rules: [{when: [{key: destination.ip, values: [nope]}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-sa}
spec: {rules: [{from: [{source: {serviceAccounts: [ns/]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: good}
spec: {rules: [{from: [{source: {ipBlocks: [10.0.0.1]}}]}]}
",
    );
    for (name, a, s) in all {
        if name == "good" {
            let a = a.unwrap();
            let ip = &a.rules[0].clauses[0].matches[0].source_ips[0];
            assert_eq!((ip.address.clone(), ip.length), (vec![10, 0, 0, 1], 32));
            assert!(s.is_none());
            continue;
        }
        // Never dropped: an ALLOW allows nothing, a DENY denies everything.
        let a = a.unwrap_or_else(|| panic!("{name} was dropped"));
        let want = if name == "bad-when-ip" { vec![Rule::default()] } else { Vec::new() };
        assert_eq!(a.rules, want, "{name}");
        let c = &s.unwrap().conditions[0];
        assert_eq!((c.reason.as_str(), c.status.as_str()), (REASON_INVALID, "False"), "{name}");
        let path = match name.as_str() {
            "bad-cidr" => "rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\"",
            "bad-port" => "rules[0].to[0].operation.ports[0]: \"http\" is not a port number",
            "bad-when-ip" => "rules[0].when[0].values[0]: \"nope\"",
            _ => "rules[0].from[0].source.serviceAccounts[0]: \"ns/\"",
        };
        assert!(c.message.contains(path), "{name}: {}", c.message);
    }
}

/// Attack (hardening issue, item 4): adding an invalid port to a workload's
/// only ALLOW policy must not let everyone in. The policy keeps its scope,
/// the workload still lists it, and it allows nothing.
#[test]
fn an_invalid_port_in_the_only_allow_policy_fails_closed() {
    let yaml = format!(
        "{}---\n{}---\n{}",
        super::fixtures::AMBIENT_DEFAULT,
        super::fixtures::pod("web-1", "app: web", "10.244.0.10"),
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {ports: ['8080', 'http']}}]
"
    );
    let out = super::translate(&cfg(), &snapshot(&yaml));
    let policy = out.authorizations.iter().find(|a| a.name == "allow-client").expect("not dropped");
    assert_eq!(policy.scope, Scope::WorkloadSelector as i32);
    assert_eq!(policy.action, Action::Allow as i32);
    assert!(policy.rules.is_empty(), "allows nothing: {:?}", policy.rules);
    let listed = out.addresses.iter().any(|a| match &a.r#type {
        Some(mesh_proto::workload::address::Type::Workload(w)) => {
            w.authorization_policies.contains(&"default/allow-client".to_owned())
        }
        _ => false,
    });
    assert!(listed, "the selected workload still lists the policy");
    let status = out.statuses.iter().find(|s| s.name == "allow-client").unwrap();
    let c = &status.conditions[0];
    assert_eq!(c.status, "False");
    assert!(c.message.contains("rules[0].to[0].operation.ports[1]: \"http\""), "{}", c.message);
    assert!(c.message.contains("allows nothing"), "{}", c.message);
}

#[test]
fn string_matches_principals_and_service_accounts() {
    let (a, _) = convert(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source:
        principals: ['spiffe://cluster.local/ns/a/sa/b', 'cluster.local/ns/a/*', '*/sa/b', '*']
        serviceAccounts: [other/sa1, sa2]
        notNamespaces: ['kube-*']
      ",
    );
    let m = &a.unwrap().rules[0].clauses[0].matches[0];
    let mt = |t| StringMatch { match_type: Some(t) };
    assert_eq!(
        m.principals,
        vec![
            exact("cluster.local/ns/a/sa/b"),
            mt(MatchType::Prefix("cluster.local/ns/a/".into())),
            mt(MatchType::Suffix("/sa/b".into())),
            mt(MatchType::Presence(())),
        ]
    );
    assert_eq!(
        m.service_accounts,
        vec![
            ServiceAccountMatch { namespace: "other".into(), service_account: "sa1".into() },
            ServiceAccountMatch { namespace: "shop".into(), service_account: "sa2".into() },
        ]
    );
    assert_eq!(m.not_namespaces, vec![mt(MatchType::Prefix("kube-".into()))]);
}

#[test]
fn every_l4_when_key_translates() {
    let (a, s) = convert(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  action: DENY
  rules:
  - when:
    - {key: source.ip, notValues: [10.0.0.0/8]}
    - {key: source.namespace, values: [a]}
    - {key: source.principal, notValues: ['*']}
    - {key: destination.ip, values: ['fd00::/64']}
    - {key: destination.port, values: ['80']}
",
    );
    assert!(s.is_none());
    let c = &a.unwrap().rules[0].clauses;
    assert_eq!(c[0].matches[0].not_source_ips[0].length, 8);
    assert_eq!(c[1].matches[0].namespaces, vec![exact("a")]);
    assert_eq!(c[2].matches[0].not_principals.len(), 1);
    assert_eq!(c[3].matches[0].destination_ips[0].address.len(), 16);
    assert_eq!(c[4].matches[0].destination_ports, vec![80]);
}

#[test]
fn dry_run_needs_the_feature() {
    let yaml = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, annotations: {istio.io/dry-run: 'true'}}
spec: {action: DENY, rules: [{}]}
";
    let snap = snapshot(yaml);
    let policy = snap.authorization_policies.values().next().unwrap();
    let (a, s) = convert_authorization_policy(&cfg(), policy);
    assert!(a.is_none());
    assert_eq!(s.unwrap().conditions[0].reason, REASON_UNSUPPORTED_VALUE);

    let enabled = super::Config { dry_run_authorization: true, ..cfg() };
    let (a, s) = convert_authorization_policy(&enabled, policy);
    assert!(a.unwrap().dry_run);
    assert!(s.is_none());
}
