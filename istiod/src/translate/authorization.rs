//! AuthorizationPolicy -> L4 `istio.security.Authorization`, as upstream's
//! ambient translation.
//!
//! - Policies with `targetRef(s)` are skipped: they belong to waypoints.
//! - No selector: NAMESPACE scope (GLOBAL in the root namespace); a
//!   selector: WORKLOAD_SELECTOR, listed by the workloads it selects.
//! - Only ALLOW and DENY; AUDIT and CUSTOM produce nothing and a condition.
//! - Each spec rule becomes one `Rule` (OR-ed); its `to` operations, its
//!   `from` sources and each `when` become AND-ed `Clause`s whose matches are
//!   OR-ed. A rule with nothing in it matches everything (`rules: [{}]`
//!   allows all); an ALLOW without rules allows nothing.
//! - L7 parts (hosts, methods, paths, request principals, remote IP blocks,
//!   other `when` keys): in ALLOW the whole rule is dropped, in DENY the rule
//!   is kept minus them; either way an `UnsupportedValue` condition.
//! - A malformed IP block or port rejects the whole policy (nothing is
//!   produced, and a condition says why).
//! - `istio.io/dry-run: "true"` sets `dry_run` when
//!   [`Config::dry_run_authorization`] is on; otherwise the policy is not
//!   sent and gets a condition (as upstream without the feature flag).
//! - Principals are sent without a `spiffe://` prefix (`td/ns/x/sa/y`), the
//!   form users write and upstream sends; a prefixed value is stripped.

use std::collections::BTreeSet;

use mesh_proto::security::{
    Action, Address, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch, StringMatch,
    string_match::MatchType,
};

use super::crd::{AuthorizationPolicy, Rule as SpecRule, WhenCondition};
use super::services::parse_address;
use super::status::{Condition, ObjectStatus, REASON_INVALID, REASON_UNSUPPORTED_VALUE};
use super::{Config, ip_bytes};

pub const KIND: &str = "AuthorizationPolicy";
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

const L4_WHEN_KEYS: [&str; 5] =
    ["source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"];

/// Converts one policy. `(None, None)` for a waypoint policy; `(None,
/// Some(status))` for a rejected one.
///
/// Reads: the policy only (and the root namespace setting).
pub fn convert_authorization_policy(
    cfg: &Config,
    policy: &AuthorizationPolicy,
) -> (Option<Authorization>, Option<ObjectStatus>) {
    let (namespace, name) = (policy.namespace(), policy.name());
    let status = |c: Condition| Some(ObjectStatus::new(KIND, namespace, name, vec![c]));
    let spec = &policy.spec;
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        return (None, None);
    }
    if namespace.is_empty() || name.is_empty() {
        return (None, None);
    }
    let dry_run = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if dry_run && !cfg.dry_run_authorization {
        let msg = "dry-run policies are not enabled for ztunnel; the policy is not applied";
        return (None, status(Condition::rejected(REASON_UNSUPPORTED_VALUE, msg)));
    }
    let action = match spec.action.as_str() {
        "" | "ALLOW" => Action::Allow,
        "DENY" => Action::Deny,
        other => {
            let msg = format!("ztunnel does not support the {other} action");
            return (None, status(Condition::rejected(REASON_UNSUPPORTED_VALUE, msg)));
        }
    };
    let scope = match &spec.selector {
        Some(_) => Scope::WorkloadSelector,
        None if namespace == cfg.root_namespace => Scope::Global,
        None => Scope::Namespace,
    };
    let mut rules = Vec::new();
    let mut l7 = BTreeSet::new();
    for rule in &spec.rules {
        match convert_rule(rule, namespace) {
            Ok(converted) => {
                let has_l7 = !converted.l7.is_empty();
                l7.extend(converted.l7);
                if !(has_l7 && action == Action::Allow) {
                    rules.push(converted.rule);
                }
            }
            Err(msg) => return (None, status(Condition::rejected(REASON_INVALID, msg))),
        }
    }
    let authz = Authorization {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        scope: scope as i32,
        action: action as i32,
        rules,
        dry_run,
        ..Default::default()
    };
    if l7.is_empty() {
        return (Some(authz), None);
    }
    let found = l7.into_iter().collect::<Vec<_>>().join(", ");
    let consequence = if action == Action::Allow {
        "Within an ALLOW policy, rules matching HTTP attributes are omitted; this is more restrictive than requested."
    } else {
        "The DENY policy is enforced without its HTTP attributes; this is more restrictive than requested."
    };
    let msg = format!(
        "ztunnel does not support HTTP attributes (found: {found}). Use a waypoint proxy to enforce HTTP rules. {consequence}"
    );
    (Some(authz), status(Condition::accepted_with_warning(REASON_UNSUPPORTED_VALUE, msg)))
}

/// Whether a selector policy yields a WORKLOAD_SELECTOR Authorization that
/// workloads should list.
pub(crate) fn applies_to_selected_workloads(cfg: &Config, policy: &AuthorizationPolicy) -> bool {
    matches!(
        convert_authorization_policy(cfg, policy).0,
        Some(a) if a.scope == Scope::WorkloadSelector as i32
    )
}

struct ConvertedRule {
    rule: Rule,
    l7: Vec<String>,
}

fn convert_rule(rule: &SpecRule, namespace: &str) -> Result<ConvertedRule, String> {
    let mut l7 = Vec::new();
    let mut clauses = Vec::new();
    // An operation (or source) that only had L7 parts matches anything
    // once they are removed, so its OR-ed clause is dropped (rule kept minus
    // L7, the restrictive reading for DENY; ALLOW drops the whole rule).
    let mut to_any = false;
    let mut to_matches = Vec::new();
    for to in &rule.to {
        let op = &to.operation;
        let l7_before = l7.len();
        for (field, values) in [
            ("hosts", &op.hosts),
            ("notHosts", &op.not_hosts),
            ("methods", &op.methods),
            ("notMethods", &op.not_methods),
            ("paths", &op.paths),
            ("notPaths", &op.not_paths),
        ] {
            if !values.is_empty() {
                l7.push(field.to_owned());
            }
        }
        let m = Match {
            destination_ports: ports(&op.ports)?,
            not_destination_ports: ports(&op.not_ports)?,
            ..Default::default()
        };
        to_any |= l7.len() > l7_before && m == Match::default();
        to_matches.push(m);
    }
    if !to_matches.is_empty() && !to_any {
        clauses.push(Clause { matches: to_matches });
    }
    let mut from_any = false;
    let mut from_matches = Vec::new();
    for from in &rule.from {
        let s = &from.source;
        let l7_before = l7.len();
        for (field, values) in [
            ("requestPrincipals", &s.request_principals),
            ("notRequestPrincipals", &s.not_request_principals),
            ("remoteIpBlocks", &s.remote_ip_blocks),
            ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ] {
            if !values.is_empty() {
                l7.push(field.to_owned());
            }
        }
        let m = Match {
            source_ips: ips(&s.ip_blocks)?,
            not_source_ips: ips(&s.not_ip_blocks)?,
            namespaces: strings(&s.namespaces),
            not_namespaces: strings(&s.not_namespaces),
            service_accounts: service_accounts(&s.service_accounts, namespace)?,
            not_service_accounts: service_accounts(&s.not_service_accounts, namespace)?,
            principals: principals(&s.principals),
            not_principals: principals(&s.not_principals),
            ..Default::default()
        };
        from_any |= l7.len() > l7_before && m == Match::default();
        from_matches.push(m);
    }
    if !from_matches.is_empty() && !from_any {
        clauses.push(Clause { matches: from_matches });
    }
    for when in &rule.when {
        match when_match(when)? {
            Some(m) => clauses.push(Clause { matches: vec![m] }),
            // An L7 `when` is dropped from the rule (it would be AND-ed).
            None => l7.push(format!("when {}", when.key)),
        }
    }
    Ok(ConvertedRule { rule: Rule { clauses }, l7 })
}

/// One `when` condition as a match, `None` for a key ztunnel cannot see.
fn when_match(when: &WhenCondition) -> Result<Option<Match>, String> {
    if !L4_WHEN_KEYS.contains(&when.key.as_str()) {
        return Ok(None);
    }
    let (v, nv) = (&when.values, &when.not_values);
    let mut m = Match::default();
    match when.key.as_str() {
        "source.ip" => (m.source_ips, m.not_source_ips) = (ips(v)?, ips(nv)?),
        "source.namespace" => (m.namespaces, m.not_namespaces) = (strings(v), strings(nv)),
        "source.principal" => (m.principals, m.not_principals) = (principals(v), principals(nv)),
        "destination.ip" => (m.destination_ips, m.not_destination_ips) = (ips(v)?, ips(nv)?),
        _ => (m.destination_ports, m.not_destination_ports) = (ports(v)?, ports(nv)?),
    }
    Ok(Some(m))
}

/// `*` presence, `*x` suffix, `x*` prefix, else exact.
fn string_match(v: &str) -> StringMatch {
    let t = if v == "*" {
        MatchType::Presence(())
    } else if let Some(suffix) = v.strip_prefix('*') {
        MatchType::Suffix(suffix.to_owned())
    } else if let Some(prefix) = v.strip_suffix('*') {
        MatchType::Prefix(prefix.to_owned())
    } else {
        MatchType::Exact(v.to_owned())
    };
    StringMatch { match_type: Some(t) }
}

fn strings(values: &[String]) -> Vec<StringMatch> {
    values.iter().map(|v| string_match(v)).collect()
}

fn principals(values: &[String]) -> Vec<StringMatch> {
    values.iter().map(|v| string_match(v.strip_prefix("spiffe://").unwrap_or(v))).collect()
}

/// `ns/sa`, or a bare `sa` in the policy's namespace.
fn service_accounts(
    values: &[String],
    namespace: &str,
) -> Result<Vec<ServiceAccountMatch>, String> {
    values
        .iter()
        .map(|v| {
            let (ns, sa) = v.split_once('/').unwrap_or((namespace, v));
            if ns.is_empty() || sa.is_empty() || sa.contains('/') {
                return Err(format!("invalid service account {v:?}; the policy is ignored"));
            }
            Ok(ServiceAccountMatch { namespace: ns.to_owned(), service_account: sa.to_owned() })
        })
        .collect()
}

fn ports(values: &[String]) -> Result<Vec<u32>, String> {
    values
        .iter()
        .map(|v| match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(u32::from(p)),
            _ => Err(format!("invalid port {v:?}; the policy is ignored")),
        })
        .collect()
}

fn ips(values: &[String]) -> Result<Vec<Address>, String> {
    values
        .iter()
        .map(|v| match parse_address(v.trim()) {
            Some(net) => {
                Ok(Address { address: ip_bytes(net.addr()), length: u32::from(net.prefix_len()) })
            }
            None => Err(format!("invalid IP address or CIDR {v:?}; the policy is ignored")),
        })
        .collect()
}
