//! Choosing the applicable policies and combining their outcomes.

use std::sync::Arc;

use mesh_model::{Action, Authorization};

use super::{ConnectionInfo, Decision, DryRunFinding, Reason, matches_connection};
use crate::state::ProxyState;

impl ProxyState {
    /// Authorizes a new connection to `conn.destination_workload`.
    ///
    /// Fail closed: when a policy bound to the workload is missing or was
    /// rejected, nothing can be known about what it allows, so the
    /// connection is denied (see `crate::state::BoundPolicies`).
    pub fn authorize(&self, conn: &ConnectionInfo<'_>) -> Decision {
        let bound = self.policies_for(conn.destination_workload);
        if let Some((policy, why)) = bound.unavailable.first() {
            let reason = Reason::Unavailable { policy: policy.clone(), why: why.to_string() };
            tracing::debug!(workload = %conn.destination_workload.uid, %reason, "authorization");
            return Decision {
                allowed: false,
                reason,
                dry_run_findings: Vec::new(),
                shadow_allowed: false,
            };
        }
        evaluate(&bound.policies, conn)
    }

    /// Re-checks an open connection after a policy or workload change; the
    /// proxy closes it when this is no longer allowed. Pass the current
    /// version of the destination workload (its policy list may have
    /// changed).
    pub fn still_allowed(&self, conn: &ConnectionInfo<'_>) -> Decision {
        self.authorize(conn)
    }
}

/// Istio's combination over `policies` (see the module docs).
pub(super) fn evaluate(policies: &[Arc<Authorization>], conn: &ConnectionInfo<'_>) -> Decision {
    let (enforced, dry): (Vec<&Authorization>, Vec<&Authorization>) =
        policies.iter().map(AsRef::as_ref).partition(|p| !p.dry_run);
    let (allowed, reason) = combine(&enforced, conn);
    let dry_run_findings: Vec<DryRunFinding> = dry
        .iter()
        .map(|p| DryRunFinding {
            policy: p.key(),
            action: p.action,
            matched: matches_connection(p, conn),
        })
        .collect();
    let shadow_allowed = if dry.is_empty() {
        allowed
    } else {
        let all: Vec<&Authorization> = policies.iter().map(AsRef::as_ref).collect();
        combine(&all, conn).0
    };
    let workload = &conn.destination_workload.uid;
    if shadow_allowed != allowed {
        tracing::info!(
            %workload,
            allowed,
            shadow_allowed,
            findings = ?dry_run_findings,
            "dry-run policies would change this decision (not enforced)"
        );
    }
    tracing::debug!(%workload, allowed, %reason, dry_run = ?dry_run_findings, "authorization");
    Decision { allowed, reason, dry_run_findings, shadow_allowed }
}

fn combine(policies: &[&Authorization], conn: &ConnectionInfo<'_>) -> (bool, Reason) {
    let (allow, deny): (Vec<&Authorization>, Vec<&Authorization>) =
        policies.iter().partition(|p| p.action == Action::Allow);
    if let Some(p) = deny.iter().find(|p| matches_connection(p, conn)) {
        return (false, Reason::Denied { policy: p.key() });
    }
    if allow.is_empty() {
        return (true, Reason::NoAllowPolicies);
    }
    match allow.iter().find(|p| matches_connection(p, conn)) {
        Some(p) => (true, Reason::Allowed { policy: p.key() }),
        None => (false, Reason::NotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::*;
    use mesh_model::{Clause, Identity, Match, Rule, Scope, Workload};

    /// A rule allowing (or denying) destination port `port`.
    fn on_port(port: u16) -> Vec<Rule> {
        vec![Rule {
            clauses: vec![Clause {
                matches: vec![Match { destination_ports: vec![port], ..Default::default() }],
            }],
        }]
    }

    fn conn<'a>(w: &'a Workload, id: Option<&'a Identity>, port: u16) -> ConnectionInfo<'a> {
        ConnectionInfo {
            source_identity: id,
            source_ip: ip("10.1.0.1"),
            destination_ip: ip("10.0.0.1"),
            destination_port: port,
            destination_workload: w,
        }
    }

    fn p(ns: &str, name: &str, scope: Scope, action: Action, port: u16) -> Authorization {
        policy(ns, name, scope, action, on_port(port))
    }

    #[test]
    fn scopes_decide_which_policies_apply() {
        use Action::Deny;
        use Scope::{Global, Namespace, WorkloadSelector};
        let cases = [
            ("global from any namespace", p("istio-system", "x", Global, Deny, 80), false),
            ("namespace: same namespace", p("ns", "x", Namespace, Deny, 80), false),
            ("namespace: other namespace", p("other", "x", Namespace, Deny, 80), true),
            ("selector: listed", p("ns", "listed", WorkloadSelector, Deny, 80), false),
            ("selector: not listed", p("ns", "unlisted", WorkloadSelector, Deny, 80), true),
        ];
        let mut w = workload("w1", "10.0.0.1");
        w.authorization_policies = vec!["ns/listed".into()];
        // What the workload lists is held (a missing one denies on its own).
        let listed = || p("ns", "listed", WorkloadSelector, Action::Allow, 9);
        let allow_80 = || p("ns", "allow-80", Namespace, Action::Allow, 80);
        for (name, policy, want_allowed) in cases {
            let mut s = ProxyState::default();
            s.insert_policy(listed());
            s.insert_policy(allow_80());
            s.insert_policy(policy);
            assert_eq!(s.authorize(&conn(&w, None, 80)).allowed, want_allowed, "{name}");
        }
    }

    #[test]
    fn combination_rules() {
        use Action::{Allow, Deny};
        use Scope::Namespace;
        let allow80 = || p("ns", "allow80", Namespace, Allow, 80);
        let deny80 = || p("ns", "deny80", Namespace, Deny, 80);
        let deny90 = || p("ns", "deny90", Namespace, Deny, 90);
        let allow90 = || p("ns", "allow90", Namespace, Allow, 90);
        let denied = |p: &str| Reason::Denied { policy: format!("ns/{p}") };
        let allowed = |p: &str| Reason::Allowed { policy: format!("ns/{p}") };
        let cases: Vec<(&str, Vec<Authorization>, Reason)> = vec![
            ("nothing applies: allow", vec![], Reason::NoAllowPolicies),
            ("only a non-matching deny: allow", vec![deny90()], Reason::NoAllowPolicies),
            ("deny wins over allow", vec![allow80(), deny80()], denied("deny80")),
            ("an allow matches", vec![allow90(), allow80(), deny90()], allowed("allow80")),
            ("allows exist, none match: deny", vec![allow90()], Reason::NotAllowed),
            (
                "allow without rules allows nothing",
                vec![policy("ns", "empty", Namespace, Allow, vec![])],
                Reason::NotAllowed,
            ),
            (
                "deny without rules denies nothing",
                vec![policy("ns", "empty", Namespace, Deny, vec![])],
                Reason::NoAllowPolicies,
            ),
        ];
        let w = workload("w1", "10.0.0.1");
        for (name, policies, want) in cases {
            let mut s = ProxyState::default();
            policies.into_iter().for_each(|p| s.insert_policy(p));
            let d = s.authorize(&conn(&w, None, 80));
            assert_eq!(d.allowed, matches!(want, Reason::Allowed { .. } | Reason::NoAllowPolicies));
            assert_eq!(d.reason, want, "{name}");
            assert!(d.dry_run_findings.is_empty() && d.shadow_allowed == d.allowed, "{name}");
        }
    }

    #[test]
    fn dry_run_is_reported_never_enforced() {
        let dry = |mut a: Authorization| {
            a.dry_run = true;
            a
        };
        let w = workload("w1", "10.0.0.1");
        let mut s = ProxyState::default();
        s.insert_policy(dry(p("ns", "deny80", Scope::Namespace, Action::Deny, 80)));
        s.insert_policy(dry(p("ns", "allow90", Scope::Namespace, Action::Allow, 90)));
        let d = s.authorize(&conn(&w, None, 80));
        assert!(d.allowed);
        assert_eq!(d.reason, Reason::NoAllowPolicies);
        assert!(!d.shadow_allowed);
        assert_eq!(
            d.dry_run_findings,
            vec![
                DryRunFinding {
                    policy: "ns/allow90".into(),
                    action: Action::Allow,
                    matched: false
                },
                DryRunFinding { policy: "ns/deny80".into(), action: Action::Deny, matched: true },
            ]
        );
        s.remove_policy("ns/deny80");
        let d = s.authorize(&conn(&w, None, 90));
        assert!(d.allowed && d.shadow_allowed);
    }

    #[test]
    fn still_allowed_follows_policy_changes() {
        let w = workload("w1", "10.0.0.1");
        let mut s = ProxyState::default();
        assert!(s.still_allowed(&conn(&w, None, 80)).allowed);
        s.insert_policy(p("ns", "deny80", Scope::Namespace, Action::Deny, 80));
        assert!(!s.still_allowed(&conn(&w, None, 80)).allowed);
        s.remove_policy("ns/deny80");
        assert!(s.still_allowed(&conn(&w, None, 80)).allowed);
    }

    #[test]
    fn plaintext_against_identity_policies() {
        use mesh_model::StringMatch;
        let rule = |m: Match| vec![Rule { clauses: vec![Clause { matches: vec![m] }] }];
        // PeerAuthentication STRICT, as istiod translates it.
        let strict = policy(
            "ns",
            "converted_peer_authentication_strict",
            Scope::Namespace,
            Action::Deny,
            rule(Match { not_principals: vec![StringMatch::Presence], ..Default::default() }),
        );
        let allow_principal = policy(
            "ns",
            "allow-client",
            Scope::Namespace,
            Action::Allow,
            rule(Match {
                principals: vec![StringMatch::Exact("cluster.local/ns/ns/sa/client".into())],
                ..Default::default()
            }),
        );
        let client = Identity::new("cluster.local", "ns", "client").unwrap();
        let other = Identity::new("cluster.local", "ns", "other").unwrap();
        let w = workload("w1", "10.0.0.1");
        let cases = [
            ("strict: plaintext denied", vec![strict.clone()], None, false),
            ("strict: mTLS allowed", vec![strict], Some(&client), true),
            ("allow principal: plaintext denied", vec![allow_principal.clone()], None, false),
            (
                "allow principal: other identity denied",
                vec![allow_principal.clone()],
                Some(&other),
                false,
            ),
            ("allow principal: named identity allowed", vec![allow_principal], Some(&client), true),
        ];
        for (name, policies, id, want) in cases {
            let mut s = ProxyState::default();
            policies.into_iter().for_each(|p| s.insert_policy(p));
            assert_eq!(s.authorize(&conn(&w, id, 80)).allowed, want, "{name}");
        }
    }

    #[test]
    fn a_missing_or_rejected_bound_policy_denies() {
        let mut w = workload("w1", "10.0.0.1");
        w.authorization_policies = vec!["ns/not-yet-here".into()];
        let mut s = ProxyState::default();
        let d = s.authorize(&conn(&w, None, 80));
        assert!(!d.allowed);
        assert_eq!(
            d.reason.to_string(),
            "policy ns/not-yet-here is bound to the workload but not known"
        );
        s.reject_policy(
            "ns/not-yet-here",
            crate::state::RejectedPolicy {
                namespace: "ns".into(),
                scope: Some(Scope::WorkloadSelector),
                reason: "invalid: unknown enum".into(),
            },
        );
        let d = s.authorize(&conn(&w, None, 80));
        assert!(!d.allowed && d.reason.to_string().contains("was rejected"), "{}", d.reason);
        s.insert_policy(p("ns", "not-yet-here", Scope::WorkloadSelector, Action::Deny, 90));
        assert!(s.authorize(&conn(&w, None, 80)).allowed);
    }

    /// Attack (hardening issue, item 4): the workload's only ALLOW policy got
    /// an invalid port; istiod sends it with no rules (see
    /// `istiod::translate::authorization`), and everyone is still denied.
    #[test]
    fn an_allow_policy_sent_without_rules_still_denies_everyone() {
        let mut w = workload("w1", "10.0.0.1");
        w.authorization_policies = vec!["ns/only-allow".into()];
        let mut s = ProxyState::default();
        s.insert_policy(policy("ns", "only-allow", Scope::WorkloadSelector, Action::Allow, vec![]));
        let client = Identity::new("cluster.local", "ns", "client").unwrap();
        for id in [None, Some(&client)] {
            let d = s.authorize(&conn(&w, id, 80));
            assert!(!d.allowed);
            assert_eq!(d.reason, Reason::NotAllowed);
        }
        // A DENY sent as deny-everything (one rule without clauses) denies all.
        let deny_all = policy("ns", "deny", Scope::Namespace, Action::Deny, vec![Rule::default()]);
        let mut s = ProxyState::default();
        s.insert_policy(deny_all);
        assert!(!s.authorize(&conn(&workload("w2", "10.0.0.2"), Some(&client), 443)).allowed);
    }
}
