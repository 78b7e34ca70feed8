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
