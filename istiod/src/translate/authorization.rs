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
//! - Fail closed: a policy with a value that cannot be translated (a
//!   malformed IP block, port or service account) is never dropped, since
//!   dropping an ALLOW lets everyone in. It keeps its scope (so workloads
//!   still list it) and becomes: for ALLOW, no rules (it allows nothing);
//!   for DENY, one empty rule (it denies everything in its scope). A
//!   `False` condition names each bad value by its path and says how the
//!   policy is enforced. (Upstream skips a bad port or IP inside the match,
//!   which can widen an ALLOW; the API server's validation normally stops
//!   such values first, which a local config directory does not.)
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
    let mut invalid = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        match convert_rule(rule, namespace) {
            Ok(converted) => {
                let has_l7 = !converted.l7.is_empty();
                l7.extend(converted.l7);
                if !(has_l7 && action == Action::Allow) {
                    rules.push(converted.rule);
                }
            }
            Err(problems) => {
                invalid.extend(problems.into_iter().map(|p| format!("rules[{i}].{p}")))
            }
        }
    }
    let mut authz = Authorization {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        scope: scope as i32,
        action: action as i32,
        rules,
        dry_run,
        ..Default::default()
    };
    if !invalid.is_empty() {
        let (rules, consequence) = fail_closed(action);
        authz.rules = rules;
        let msg = format!("invalid values: {}. {consequence}", invalid.join("; "));
        return (Some(authz), status(Condition::rejected(REASON_INVALID, msg)));
    }
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

/// The rules a policy that could not be translated in full is enforced with,
/// and what that means for its author.
fn fail_closed(action: Action) -> (Vec<Rule>, &'static str) {
    match action {
        Action::Deny => (
            // One rule without clauses matches every connection.
            vec![Rule::default()],
            "The DENY policy is enforced as denying every connection in its scope until it is fixed.",
        ),
        Action::Allow => (
            Vec::new(),
            "The ALLOW policy is enforced with no rules, so it allows nothing: connections only it would have allowed are denied until it is fixed.",
        ),
    }
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

/// Converts one rule; `Err` lists every value that cannot be translated,
/// each with its path inside the rule (`to[0].operation.ports[1]: ...`).
fn convert_rule(rule: &SpecRule, namespace: &str) -> Result<ConvertedRule, Vec<String>> {
    let mut problems = Vec::new();
    let mut l7 = Vec::new();
    let mut clauses = Vec::new();
    // An operation (or source) that only had L7 parts matches anything
    // once they are removed, so its OR-ed clause is dropped (rule kept minus
    // L7, the restrictive reading for DENY; ALLOW drops the whole rule).
    let mut to_any = false;
    let mut to_matches = Vec::new();
    for (j, to) in rule.to.iter().enumerate() {
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
        let at = |field: &str| format!("to[{j}].operation.{field}");
        let m = Match {
            destination_ports: ports(&at("ports"), &op.ports, &mut problems),
            not_destination_ports: ports(&at("notPorts"), &op.not_ports, &mut problems),
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
    for (j, from) in rule.from.iter().enumerate() {
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
        let at = |field: &str| format!("from[{j}].source.{field}");
        let m = Match {
            source_ips: ips(&at("ipBlocks"), &s.ip_blocks, &mut problems),
            not_source_ips: ips(&at("notIpBlocks"), &s.not_ip_blocks, &mut problems),
            namespaces: strings(&s.namespaces),
            not_namespaces: strings(&s.not_namespaces),
            service_accounts: service_accounts(
                &at("serviceAccounts"),
                &s.service_accounts,
                namespace,
                &mut problems,
            ),
            not_service_accounts: service_accounts(
                &at("notServiceAccounts"),
                &s.not_service_accounts,
                namespace,
                &mut problems,
            ),
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
    for (j, when) in rule.when.iter().enumerate() {
        match when_match(&format!("when[{j}]"), when, &mut problems) {
            Some(m) => clauses.push(Clause { matches: vec![m] }),
            // An L7 `when` is dropped from the rule (it would be AND-ed).
            None => l7.push(format!("when {}", when.key)),
        }
    }
    if problems.is_empty() {
        Ok(ConvertedRule { rule: Rule { clauses }, l7 })
    } else {
        Err(problems)
    }
}

/// One `when` condition as a match, `None` for a key ztunnel cannot see.
fn when_match(at: &str, when: &WhenCondition, problems: &mut Vec<String>) -> Option<Match> {
    if !L4_WHEN_KEYS.contains(&when.key.as_str()) {
        return None;
    }
    let (v, nv) = (&when.values, &when.not_values);
    let (values, not_values) = (format!("{at}.values"), format!("{at}.notValues"));
    let mut m = Match::default();
    match when.key.as_str() {
        "source.ip" => {
            m.source_ips = ips(&values, v, problems);
            m.not_source_ips = ips(&not_values, nv, problems);
        }
        "source.namespace" => (m.namespaces, m.not_namespaces) = (strings(v), strings(nv)),
        "source.principal" => (m.principals, m.not_principals) = (principals(v), principals(nv)),
        "destination.ip" => {
            m.destination_ips = ips(&values, v, problems);
            m.not_destination_ips = ips(&not_values, nv, problems);
        }
        _ => {
            m.destination_ports = ports(&values, v, problems);
            m.not_destination_ports = ports(&not_values, nv, problems);
        }
    }
    Some(m)
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

/// `ns/sa`, or a bare `sa` in the policy's namespace; bad values are
/// reported in `problems` under `at[index]`.
fn service_accounts(
    at: &str,
    values: &[String],
    namespace: &str,
    problems: &mut Vec<String>,
) -> Vec<ServiceAccountMatch> {
    let mut out = Vec::new();
    for (k, v) in values.iter().enumerate() {
        let (ns, sa) = v.split_once('/').unwrap_or((namespace, v));
        if ns.is_empty() || sa.is_empty() || sa.contains('/') {
            problems.push(format!(
                "{at}[{k}]: {v:?} is not a service account (<namespace>/<name> or <name>)"
            ));
        } else {
            out.push(ServiceAccountMatch {
                namespace: ns.to_owned(),
                service_account: sa.to_owned(),
            });
        }
    }
    out
}

/// Port numbers (1-65535); others are reported in `problems`.
fn ports(at: &str, values: &[String], problems: &mut Vec<String>) -> Vec<u32> {
    let mut out = Vec::new();
    for (k, v) in values.iter().enumerate() {
        match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => out.push(u32::from(p)),
            _ => problems.push(format!("{at}[{k}]: {v:?} is not a port number (1-65535)")),
        }
    }
    out
}

/// IP addresses or CIDRs; others are reported in `problems`.
fn ips(at: &str, values: &[String], problems: &mut Vec<String>) -> Vec<Address> {
    let mut out = Vec::new();
    for (k, v) in values.iter().enumerate() {
        match parse_address(v.trim()) {
            Some(net) => out.push(Address {
                address: ip_bytes(net.addr()),
                length: u32::from(net.prefix_len()),
            }),
            None => problems.push(format!("{at}[{k}]: {v:?} is not an IP address or CIDR")),
        }
    }
    out
}
