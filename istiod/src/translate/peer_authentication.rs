//! PeerAuthentication -> synthesized DENY `Authorization`s named
//! `converted_peer_authentication_<name>`, scope WORKLOAD_SELECTOR; each
//! workload lists the one effective for it (see [`effective_policy_for`]).
//!
//! Precedence as upstream: the oldest selector policy matching the workload
//! (outside the root namespace), else the oldest namespace-wide policy, else
//! the oldest mesh-wide one (root namespace, no selector). An UNSET mode
//! inherits from the next level. A STRICT result denies connections without
//! a peer principal (`not_principals: [presence]`); `portLevelMtls` (only on
//! selector policies) makes single ports PERMISSIVE (exempted) or STRICT
//! (denied without a principal while the rest is permissive). PERMISSIVE
//! produces nothing; DISABLE is treated as PERMISSIVE (ztunnel always
//! accepts plaintext then) with a status note.
//!
//! Fail closed: a mode that is not one of UNSET, DISABLE, PERMISSIVE,
//! STRICT means STRICT (for the policy, or for its port), and a
//! `portLevelMtls` key that is not a port makes the whole policy STRICT
//! unless that entry only relaxes it; a condition says so.

use std::collections::BTreeMap;

use mesh_proto::security::{
    Action, Authorization, Clause, Match, Rule, Scope, StringMatch, string_match::MatchType,
};

use super::crd::{MutualTls, PeerAuthentication};
use super::status::{Condition, ObjectStatus, REASON_INVALID, REASON_UNSUPPORTED_VALUE};
use super::{Config, Snapshot, selector_matches};

pub const KIND: &str = "PeerAuthentication";
pub const NAME_PREFIX: &str = "converted_peer_authentication_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unset,
    Strict,
    /// PERMISSIVE or DISABLE.
    Permissive,
}

/// The mode as enforced; an unknown value is STRICT (fail closed).
fn mode(m: Option<&MutualTls>) -> Mode {
    match m.map(|m| m.mode.as_str()) {
        None | Some("" | "UNSET") => Mode::Unset,
        Some("PERMISSIVE" | "DISABLE") => Mode::Permissive,
        Some(_) => Mode::Strict,
    }
}

fn has_selector(pa: &PeerAuthentication) -> bool {
    pa.spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty())
}

/// The oldest of `candidates` (creation time, then name).
fn oldest<'a>(
    candidates: impl Iterator<Item = &'a PeerAuthentication>,
) -> Option<&'a PeerAuthentication> {
    candidates.min_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ta.cmp(&tb).then_with(|| a.name().cmp(b.name()))
    })
}

/// The mode a workload in `namespace` inherits from namespace- and
/// mesh-wide policies.
fn inherited_strict(cfg: &Config, snap: &Snapshot, namespace: &str) -> bool {
    let wide = |ns: &str| {
        oldest(
            snap.peer_authentications.values().filter(|p| p.namespace() == ns && !has_selector(p)),
        )
        .map(|p| mode(p.spec.mtls.as_ref()))
    };
    match wide(namespace).filter(|m| *m != Mode::Unset) {
        Some(m) => m == Mode::Strict,
        None => wide(&cfg.root_namespace) == Some(Mode::Strict),
    }
}

fn presence() -> StringMatch {
    StringMatch { match_type: Some(MatchType::Presence(())) }
}

/// Converts one PeerAuthentication; `None` when it enforces nothing.
///
/// Reads: the policy and, for selector policies with an UNSET mode, the
/// namespace- and mesh-wide policies it inherits from.
pub fn convert_peer_authentication(
    cfg: &Config,
    snap: &Snapshot,
    pa: &PeerAuthentication,
) -> (Option<Authorization>, Option<ObjectStatus>) {
    let (namespace, name) = (pa.namespace(), pa.name());
    let mut conditions = Vec::new();
    let all_modes = pa.spec.mtls.iter().chain(pa.spec.port_level_mtls.values());
    if all_modes.into_iter().any(|m| m.mode == "DISABLE") {
        conditions.push(Condition::accepted_with_warning(
            REASON_UNSUPPORTED_VALUE,
            "DISABLE is not enforced by ztunnel; it is treated as PERMISSIVE",
        ));
    }
    let known = ["", "UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
    let all_modes = pa.spec.mtls.iter().chain(pa.spec.port_level_mtls.values());
    for m in all_modes.filter(|m| !known.contains(&m.mode.as_str())) {
        conditions.push(Condition::accepted_with_warning(
            REASON_INVALID,
            format!(
                "unknown mTLS mode {:?} (expected UNSET, DISABLE, PERMISSIVE or STRICT); enforced as STRICT",
                m.mode
            ),
        ));
    }
    let selector = has_selector(pa);
    if !selector && !pa.spec.port_level_mtls.is_empty() {
        conditions.push(Condition::accepted_with_warning(
            REASON_UNSUPPORTED_VALUE,
            "portLevelMtls requires a selector and is ignored",
        ));
    }
    if selector && namespace == cfg.root_namespace {
        conditions.push(Condition::rejected(
            REASON_UNSUPPORTED_VALUE,
            "a selector policy in the root namespace is ignored",
        ));
        return (None, Some(ObjectStatus::new(KIND, namespace, name, conditions)));
    }
    let mut base = match mode(pa.spec.mtls.as_ref()) {
        Mode::Strict => true,
        Mode::Permissive => false,
        Mode::Unset if selector => inherited_strict(cfg, snap, namespace),
        Mode::Unset => false,
    };
    let (mut exempt, mut strict_ports) = (Vec::new(), Vec::new());
    if selector {
        for (port, m) in &pa.spec.port_level_mtls {
            let Some(port) = port.trim().parse::<u16>().ok().filter(|p| *p > 0) else {
                // Which port it meant to tighten is unknown: tighten them all.
                let relaxes_only = mode(Some(m)) == Mode::Permissive;
                let consequence = if relaxes_only || base {
                    "ignored"
                } else {
                    base = true;
                    "the whole policy is enforced as STRICT"
                };
                conditions.push(Condition::accepted_with_warning(
                    REASON_INVALID,
                    format!(
                        "portLevelMtls key {port:?} is not a port number (1-65535); {consequence}"
                    ),
                ));
                continue;
            };
            match (base, mode(Some(m))) {
                (true, Mode::Permissive) => exempt.push(u32::from(port)),
                (false, Mode::Strict) => strict_ports.push(u32::from(port)),
                _ => {}
            }
        }
    }
    let status =
        (!conditions.is_empty()).then(|| ObjectStatus::new(KIND, namespace, name, conditions));
    let mut rules = Vec::new();
    if base {
        // Deny without a principal, unless the port is exempt (AND-ed).
        let mut clauses = vec![Clause {
            matches: vec![Match { not_principals: vec![presence()], ..Default::default() }],
        }];
        if !exempt.is_empty() {
            exempt.sort_unstable();
            clauses.push(Clause {
                matches: vec![Match { not_destination_ports: exempt, ..Default::default() }],
            });
        }
        rules.push(Rule { clauses });
    }
    for port in strict_ports {
        rules.push(Rule {
            clauses: vec![Clause {
                matches: vec![Match {
                    not_principals: vec![presence()],
                    destination_ports: vec![port],
                    ..Default::default()
                }],
            }],
        });
    }
    if rules.is_empty() || namespace.is_empty() || name.is_empty() {
        return (None, status);
    }
    let authz = Authorization {
        name: format!("{NAME_PREFIX}{name}"),
        namespace: namespace.to_owned(),
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        rules,
        ..Default::default()
    };
    (Some(authz), status)
}

/// The `ns/name` of the converted PeerAuthentication effective for a
/// workload with `labels` in `namespace`, if it enforces anything.
pub fn effective_policy_for(
    cfg: &Config,
    snap: &Snapshot,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Option<String> {
    fn in_ns<'a>(snap: &'a Snapshot, ns: &'a str) -> impl Iterator<Item = &'a PeerAuthentication> {
        snap.peer_authentications.values().filter(move |p| p.namespace() == ns)
    }
    let selected = (namespace != cfg.root_namespace)
        .then(|| {
            oldest(in_ns(snap, namespace).filter(|p| {
                p.spec.selector.as_ref().is_some_and(|s| {
                    !s.match_labels.is_empty() && selector_matches(&s.match_labels, labels)
                })
            }))
        })
        .flatten();
    let unset_without_ports = |p: &PeerAuthentication| {
        mode(p.spec.mtls.as_ref()) == Mode::Unset && p.spec.port_level_mtls.is_empty()
    };
    let chosen = match selected.filter(|p| !unset_without_ports(p)) {
        Some(p) => p,
        None => {
            let ns_wide = oldest(in_ns(snap, namespace).filter(|p| !has_selector(p)))
                .filter(|p| mode(p.spec.mtls.as_ref()) != Mode::Unset);
            match ns_wide {
                Some(p) => p,
                None => oldest(in_ns(snap, &cfg.root_namespace).filter(|p| !has_selector(p)))?,
            }
        }
    };
    let (authz, _) = convert_peer_authentication(cfg, snap, chosen);
    authz.map(|a| format!("{}/{}", a.namespace, a.name))
}
