//! L4 authorization policies (`istio.security.Authorization`).
//!
//! Structure: a policy's rules are OR-ed, a rule's clauses AND-ed, a
//! clause's matches OR-ed. Evaluation lives with the enforcing proxy; this
//! module only guarantees the policy is well formed.

use ipnet::IpNet;
use mesh_proto::security as pb;

use crate::address::{port, prefix_from_bytes};
use crate::error::Resource;
use crate::{ModelError, required};

mirror_enum! {
    Scope from pb::Scope, field "Authorization.scope" {
        /// Every workload in the mesh.
        Global = Global,
        /// Every workload in the policy's namespace.
        Namespace = Namespace,
        /// The workloads that list the policy by name.
        WorkloadSelector = WorkloadSelector,
    }
}

mirror_enum! {
    Action from pb::Action, field "Authorization.action" {
        Allow = Allow,
        Deny = Deny,
    }
}

/// A string condition on a peer attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any non-empty value.
    Presence,
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Suffix(s) => value.ends_with(s.as_str()),
            Self::Presence => !value.is_empty(),
        }
    }
}

impl TryFrom<pb::StringMatch> for StringMatch {
    type Error = ModelError;

    fn try_from(value: pb::StringMatch) -> Result<Self, Self::Error> {
        use pb::string_match::MatchType;
        match value.match_type {
            Some(MatchType::Exact(s)) => Ok(Self::Exact(s)),
            Some(MatchType::Prefix(s)) => Ok(Self::Prefix(s)),
            Some(MatchType::Suffix(s)) => Ok(Self::Suffix(s)),
            Some(MatchType::Presence(())) => Ok(Self::Presence),
            None => Err(ModelError::Missing { field: "StringMatch.match_type" }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccountMatch {
    pub namespace: String,
    pub service_account: String,
}

impl TryFrom<pb::ServiceAccountMatch> for ServiceAccountMatch {
    type Error = ModelError;

    fn try_from(value: pb::ServiceAccountMatch) -> Result<Self, Self::Error> {
        Ok(Self {
            namespace: required("ServiceAccountMatch.namespace", value.namespace)?,
            service_account: required("ServiceAccountMatch.serviceAccount", value.service_account)?,
        })
    }
}

/// Conditions on one connection; every non-empty list must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub service_accounts: Vec<ServiceAccountMatch>,
    pub not_service_accounts: Vec<ServiceAccountMatch>,
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub source_ips: Vec<IpNet>,
    pub not_source_ips: Vec<IpNet>,
    pub destination_ips: Vec<IpNet>,
    pub not_destination_ips: Vec<IpNet>,
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
}

fn strings(v: Vec<pb::StringMatch>) -> Result<Vec<StringMatch>, ModelError> {
    v.into_iter().map(StringMatch::try_from).collect()
}

fn accounts(v: Vec<pb::ServiceAccountMatch>) -> Result<Vec<ServiceAccountMatch>, ModelError> {
    v.into_iter().map(ServiceAccountMatch::try_from).collect()
}

fn prefixes(field: &'static str, v: Vec<pb::Address>) -> Result<Vec<IpNet>, ModelError> {
    v.into_iter().map(|a| prefix_from_bytes(field, &a.address, Some(a.length))).collect()
}

fn ports(field: &'static str, v: Vec<u32>) -> Result<Vec<u16>, ModelError> {
    v.into_iter().map(|p| port(field, p)).collect()
}

impl TryFrom<pb::Match> for Match {
    type Error = ModelError;

    fn try_from(m: pb::Match) -> Result<Self, Self::Error> {
        Ok(Self {
            namespaces: strings(m.namespaces)?,
            not_namespaces: strings(m.not_namespaces)?,
            service_accounts: accounts(m.service_accounts)?,
            not_service_accounts: accounts(m.not_service_accounts)?,
            principals: strings(m.principals)?,
            not_principals: strings(m.not_principals)?,
            source_ips: prefixes("Match.source_ips", m.source_ips)?,
            not_source_ips: prefixes("Match.not_source_ips", m.not_source_ips)?,
            destination_ips: prefixes("Match.destination_ips", m.destination_ips)?,
            not_destination_ips: prefixes("Match.not_destination_ips", m.not_destination_ips)?,
            destination_ports: ports("Match.destination_ports", m.destination_ports)?,
            not_destination_ports: ports("Match.not_destination_ports", m.not_destination_ports)?,
        })
    }
}

/// Matches OR-ed together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Clause {
    pub matches: Vec<Match>,
}

/// Clauses AND-ed together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub clauses: Vec<Clause>,
}

/// A validated L4 authorization policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub name: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    /// OR-ed. An ALLOW policy without rules allows nothing; a DENY policy
    /// without rules denies nothing.
    pub rules: Vec<Rule>,
    pub dry_run: bool,
}

impl Authorization {
    /// The xDS resource name, `<namespace>/<name>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl TryFrom<pb::Authorization> for Authorization {
    type Error = ModelError;

    fn try_from(value: pb::Authorization) -> Result<Self, Self::Error> {
        let key = format!("{}/{}", value.namespace, value.name);
        convert_authorization(value).map_err(|e| e.within(Resource::Authorization(key)))
    }
}

fn convert_authorization(a: pb::Authorization) -> Result<Authorization, ModelError> {
    let rules = a
        .rules
        .into_iter()
        .map(|rule| {
            let clauses = rule
                .clauses
                .into_iter()
                .map(|clause| {
                    let matches = clause
                        .matches
                        .into_iter()
                        .map(Match::try_from)
                        .collect::<Result<_, _>>()?;
                    Ok(Clause { matches })
                })
                .collect::<Result<_, ModelError>>()?;
            Ok(Rule { clauses })
        })
        .collect::<Result<_, ModelError>>()?;
    Ok(Authorization {
        name: required("Authorization.name", a.name)?,
        namespace: required("Authorization.namespace", a.namespace)?,
        scope: Scope::from_wire(a.scope)?,
        action: Action::from_wire(a.action)?,
        rules,
        dry_run: a.dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::string_match::MatchType;

    fn exact(s: &str) -> pb::StringMatch {
        pb::StringMatch { match_type: Some(MatchType::Exact(s.into())) }
    }

    fn policy() -> pb::Authorization {
        pb::Authorization {
            name: "allow-client".into(),
            namespace: "default".into(),
            scope: pb::Scope::WorkloadSelector as i32,
            action: pb::Action::Allow as i32,
            rules: vec![pb::Rule {
                clauses: vec![
                    pb::Clause {
                        matches: vec![pb::Match {
                            principals: vec![exact("spiffe://cluster.local/ns/default/sa/client")],
                            source_ips: vec![pb::Address {
                                address: vec![10, 1, 2, 3],
                                length: 16,
                            }],
                            ..Default::default()
                        }],
                    },
                    pb::Clause {
                        matches: vec![pb::Match {
                            destination_ports: vec![8080],
                            ..Default::default()
                        }],
                    },
                ],
            }],
            ..Default::default()
        }
    }

    fn reason(err: ModelError) -> ModelError {
        match err {
            ModelError::In { resource: Resource::Authorization(_), source } => *source,
            other => panic!("expected an error wrapped with its policy, got {other:?}"),
        }
    }

    #[test]
    fn converts_a_policy() {
        let a = Authorization::try_from(policy()).unwrap();
        assert_eq!(a.key(), "default/allow-client");
        assert_eq!(a.scope, Scope::WorkloadSelector);
        assert_eq!(a.action, Action::Allow);
        let clauses = &a.rules[0].clauses;
        assert_eq!(clauses[0].matches[0].source_ips[0].to_string(), "10.1.0.0/16");
        assert_eq!(clauses[1].matches[0].destination_ports, vec![8080]);
    }

    #[test]
    fn rejects_bad_fields() {
        type Mutate = fn(&mut pb::Authorization);
        fn first_match(a: &mut pb::Authorization) -> &mut pb::Match {
            &mut a.rules[0].clauses[0].matches[0]
        }
        let cases: Vec<(Mutate, ModelError)> = vec![
            (|a| a.name.clear(), ModelError::Missing { field: "Authorization.name" }),
            (|a| a.namespace.clear(), ModelError::Missing { field: "Authorization.namespace" }),
            (|a| a.action = 2, ModelError::UnknownEnum { field: "Authorization.action", value: 2 }),
            (|a| a.scope = 3, ModelError::UnknownEnum { field: "Authorization.scope", value: 3 }),
            (
                |a| first_match(a).principals.push(pb::StringMatch { match_type: None }),
                ModelError::Missing { field: "StringMatch.match_type" },
            ),
            (
                |a| first_match(a).source_ips[0].length = 33,
                ModelError::PrefixLength { field: "Match.source_ips", length: 33, max: 32 },
            ),
            (
                |a| {
                    first_match(a)
                        .destination_ips
                        .push(pb::Address { address: vec![1, 2], length: 8 })
                },
                ModelError::AddressLength { field: "Match.destination_ips", len: 2 },
            ),
            (
                |a| first_match(a).not_destination_ports.push(65536),
                ModelError::Port { field: "Match.not_destination_ports", value: 65536 },
            ),
            (
                |a| {
                    first_match(a).service_accounts.push(pb::ServiceAccountMatch {
                        namespace: "ns".into(),
                        service_account: String::new(),
                    })
                },
                ModelError::Missing { field: "ServiceAccountMatch.serviceAccount" },
            ),
        ];
        for (mutate, want) in cases {
            let mut a = policy();
            mutate(&mut a);
            assert_eq!(reason(Authorization::try_from(a).unwrap_err()), want);
        }
    }

    #[test]
    fn string_matches() {
        assert!(StringMatch::Exact("a".into()).matches("a"));
        assert!(!StringMatch::Exact("a".into()).matches("ab"));
        assert!(StringMatch::Prefix("spiffe://td/".into()).matches("spiffe://td/ns/x/sa/y"));
        assert!(StringMatch::Suffix("/sa/y".into()).matches("spiffe://td/ns/x/sa/y"));
        assert!(!StringMatch::Suffix("/sa/y".into()).matches("spiffe://td/ns/x/sa/z"));
        assert!(StringMatch::Presence.matches("x"));
        assert!(!StringMatch::Presence.matches(""));
    }
}
