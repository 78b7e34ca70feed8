//! Whether one policy matches one connection.
//!
//! Structure (as upstream): a policy matches if any rule matches; a policy
//! with no rules matches nothing. A rule matches if every clause matches (a
//! rule with no clauses matches everything). A clause matches if any of its
//! matches does; a clause with no matches matches. A `Match` with every list
//! empty matches nothing (it is skipped). Otherwise each non-empty list must
//! hold: some positive entry matches, and no `not_` entry matches.
//!
//! Source identity:
//! - Principals are compared without the `spiffe://` scheme, as Istio writes
//!   them (`cluster.local/ns/x/sa/y`), and prefix, suffix and presence apply
//!   to that form. A policy value that itself starts with `spiffe://` never
//!   matches: Istio (Envoy and upstream ztunnel alike) implies the scheme,
//!   so we do not accept a second spelling that upstream would reject.
//! - Namespaces are compared with the identity's namespace, service
//!   accounts with its (namespace, service account); trust domain ignored.
//! - A plaintext source (no identity) matches no principal, namespace or
//!   service-account entry, including `Presence`. So a positive list fails
//!   and a `not_` list holds: a DENY with `not_principals: [presence]` (how
//!   PeerAuthentication STRICT is translated) denies exactly plaintext, and
//!   an ALLOW naming principals never admits plaintext. Upstream evaluates
//!   the empty string instead; the two differ only for matchers istiod never
//!   produces (an empty exact, prefix or suffix on namespaces).

use mesh_model::{Authorization, Identity, Match, StringMatch};

use super::ConnectionInfo;

const SPIFFE_SCHEME: &str = "spiffe://";

/// Whether `policy` matches `conn` (ignoring its action and dry-run flag).
pub fn matches_connection(policy: &Authorization, conn: &ConnectionInfo<'_>) -> bool {
    policy.rules.iter().any(|rule| {
        rule.clauses.iter().all(|clause| {
            clause.matches.is_empty() || clause.matches.iter().any(|m| match_holds(m, conn))
        })
    })
}

/// Whether a principal matcher matches `identity`, compared in Istio's
/// scheme-less form (see the module docs).
pub fn principal_matches(m: &StringMatch, identity: &Identity) -> bool {
    let full = identity.to_string();
    full.strip_prefix(SPIFFE_SCHEME).is_some_and(|bare| m.matches(bare))
}

fn match_holds(m: &Match, conn: &ConnectionInfo<'_>) -> bool {
    if is_empty(m) {
        return false;
    }
    let id = conn.source_identity;
    let ns = |s: &StringMatch| id.is_some_and(|i| s.matches(i.namespace()));
    let principal = |s: &StringMatch| id.is_some_and(|i| principal_matches(s, i));
    holds(&m.namespaces, &m.not_namespaces, ns)
        && holds(&m.principals, &m.not_principals, principal)
        && holds(&m.service_accounts, &m.not_service_accounts, |sa| {
            id.is_some_and(|i| {
                i.namespace() == sa.namespace && i.service_account() == sa.service_account
            })
        })
        && holds(&m.source_ips, &m.not_source_ips, |n| n.contains(&conn.source_ip))
        && holds(&m.destination_ips, &m.not_destination_ips, |n| n.contains(&conn.destination_ip))
        && holds(&m.destination_ports, &m.not_destination_ports, |p| *p == conn.destination_port)
}

/// An empty list holds; a positive list needs one hit; a negative list
/// needs none.
fn holds<T>(positive: &[T], negative: &[T], pred: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&pred)) && !negative.iter().any(&pred)
}

fn is_empty(m: &Match) -> bool {
    *m == Match::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::{ip, policy, workload};
    use mesh_model::{Action, Clause, Rule, Scope, ServiceAccountMatch};

    fn sa(ns: &str, sa: &str) -> ServiceAccountMatch {
        ServiceAccountMatch { namespace: ns.into(), service_account: sa.into() }
    }

    fn exact(s: &str) -> StringMatch {
        StringMatch::Exact(s.into())
    }

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap()
    }

    /// Whether a one-rule, one-clause policy with `m` matches, for an mTLS
    /// source `spiffe://cluster.local/ns/src-ns/sa/src-sa` and for plaintext;
    /// both from 10.1.2.3 to 10.0.0.1:8080.
    fn check(m: Match) -> (bool, bool) {
        let p = policy(
            "ns",
            "p",
            Scope::Global,
            Action::Allow,
            vec![Rule { clauses: vec![Clause { matches: vec![m] }] }],
        );
        let w = workload("w1", "10.0.0.1");
        let id = Identity::new("cluster.local", "src-ns", "src-sa").unwrap();
        let conn = |id| ConnectionInfo {
            source_identity: id,
            source_ip: ip("10.1.2.3"),
            destination_ip: ip("10.0.0.1"),
            destination_port: 8080,
            destination_workload: &w,
        };
        (matches_connection(&p, &conn(Some(&id))), matches_connection(&p, &conn(None)))
    }

    #[test]
    fn every_match_field_and_its_negation() {
        let m = Match::default;
        #[rustfmt::skip]
        let cases: Vec<(&str, Match, (bool, bool))> = vec![
            ("empty match matches nothing", m(), (false, false)),
            ("namespace hit", Match { namespaces: vec![exact("src-ns")], ..m() }, (true, false)),
            ("namespace miss", Match { namespaces: vec![exact("other")], ..m() }, (false, false)),
            ("namespace any-of", Match { namespaces: vec![exact("other"), StringMatch::Prefix("src-".into())], ..m() }, (true, false)),
            ("not_namespace hit", Match { not_namespaces: vec![exact("src-ns")], ..m() }, (false, true)),
            ("not_namespace miss", Match { not_namespaces: vec![exact("other")], ..m() }, (true, true)),
            ("service account hit", Match { service_accounts: vec![sa("src-ns", "src-sa")], ..m() }, (true, false)),
            ("service account wrong ns", Match { service_accounts: vec![sa("other", "src-sa")], ..m() }, (false, false)),
            ("not_service_account hit", Match { not_service_accounts: vec![sa("src-ns", "src-sa")], ..m() }, (false, true)),
            ("not_service_account miss", Match { not_service_accounts: vec![sa("src-ns", "x")], ..m() }, (true, true)),
            ("principal exact, Istio form", Match { principals: vec![exact("cluster.local/ns/src-ns/sa/src-sa")], ..m() }, (true, false)),
            ("principal exact, spiffe form never matches", Match { principals: vec![exact("spiffe://cluster.local/ns/src-ns/sa/src-sa")], ..m() }, (false, false)),
            ("principal prefix", Match { principals: vec![StringMatch::Prefix("cluster.local/ns/src-ns/".into())], ..m() }, (true, false)),
            ("principal prefix is scheme-less", Match { principals: vec![StringMatch::Prefix("spiffe://".into())], ..m() }, (false, false)),
            ("principal suffix", Match { principals: vec![StringMatch::Suffix("/sa/src-sa".into())], ..m() }, (true, false)),
            ("principal suffix miss", Match { principals: vec![StringMatch::Suffix("/sa/other".into())], ..m() }, (false, false)),
            ("principal presence", Match { principals: vec![StringMatch::Presence], ..m() }, (true, false)),
            ("not_principal presence (STRICT mTLS)", Match { not_principals: vec![StringMatch::Presence], ..m() }, (false, true)),
            ("not_principal miss", Match { not_principals: vec![exact("cluster.local/ns/x/sa/y")], ..m() }, (true, true)),
            ("source ip in prefix", Match { source_ips: vec![net("10.1.0.0/16")], ..m() }, (true, true)),
            ("source ip outside", Match { source_ips: vec![net("10.2.0.0/16")], ..m() }, (false, false)),
            ("not_source ip hit", Match { not_source_ips: vec![net("10.1.2.3/32")], ..m() }, (false, false)),
            ("not_source ip miss", Match { not_source_ips: vec![net("10.9.0.0/16")], ..m() }, (true, true)),
            ("destination ip in prefix", Match { destination_ips: vec![net("10.0.0.0/24")], ..m() }, (true, true)),
            ("destination ip outside", Match { destination_ips: vec![net("10.0.1.0/24")], ..m() }, (false, false)),
            ("not_destination ip hit", Match { not_destination_ips: vec![net("10.0.0.1/32")], ..m() }, (false, false)),
            ("destination port hit", Match { destination_ports: vec![80, 8080], ..m() }, (true, true)),
            ("destination port miss", Match { destination_ports: vec![80], ..m() }, (false, false)),
            ("not_destination port hit", Match { not_destination_ports: vec![8080], ..m() }, (false, false)),
            ("not_destination port miss", Match { not_destination_ports: vec![80], ..m() }, (true, true)),
            ("positive and negative together", Match { destination_ports: vec![8080], not_source_ips: vec![net("10.1.0.0/16")], ..m() }, (false, false)),
            ("all fields must hold", Match { namespaces: vec![exact("src-ns")], destination_ports: vec![80], ..m() }, (false, false)),
        ];
        for (name, m, want) in cases {
            assert_eq!(check(m), want, "{name} (mtls, plaintext)");
        }
    }

    #[test]
    fn rule_and_clause_structure() {
        let port = |p: u16| Match { destination_ports: vec![p], ..Default::default() };
        let clause = |ms: Vec<Match>| Clause { matches: ms };
        let w = workload("w1", "10.0.0.1");
        let conn = ConnectionInfo {
            source_identity: None,
            source_ip: ip("10.1.2.3"),
            destination_ip: ip("10.0.0.1"),
            destination_port: 8080,
            destination_workload: &w,
        };
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<Rule>, bool)> = vec![
            ("no rules: nothing", vec![], false),
            ("rule without clauses: everything", vec![Rule::default()], true),
            ("clause without matches holds", vec![Rule { clauses: vec![clause(vec![])] }], true),
            ("matches are OR-ed", vec![Rule { clauses: vec![clause(vec![port(80), port(8080)])] }], true),
            ("clauses are AND-ed", vec![Rule { clauses: vec![clause(vec![port(8080)]), clause(vec![port(80)])] }], false),
            ("rules are OR-ed", vec![Rule { clauses: vec![clause(vec![port(80)])] }, Rule { clauses: vec![clause(vec![port(8080)])] }], true),
            ("an empty match is skipped", vec![Rule { clauses: vec![clause(vec![Match::default()])] }], false),
        ];
        for (name, rules, want) in cases {
            let p = policy("ns", "p", Scope::Global, Action::Deny, rules);
            assert_eq!(matches_connection(&p, &conn), want, "{name}");
        }
    }

    #[test]
    fn principal_matches_compares_the_scheme_less_form() {
        let id: Identity = "spiffe://td.example/ns/a/sa/b".parse().unwrap();
        assert!(principal_matches(&exact("td.example/ns/a/sa/b"), &id));
        assert!(principal_matches(&StringMatch::Prefix("td.example/".into()), &id));
        assert!(!principal_matches(&exact("cluster.local/ns/a/sa/b"), &id), "trust domain counts");
    }
}
