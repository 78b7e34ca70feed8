//! The policy store: held policies indexed by scope, and the policies istiod
//! sent that could not be converted (rejected).
//!
//! Fail closed: a policy bound to a workload that is missing (the workload
//! lists it by name but it is not held) or rejected (its last update could not
//! be converted) makes every connection to that workload denied, see
//! [`BoundPolicies::unavailable`]. Upstream ztunnel (`assert_rbac`) instead
//! skips a listed policy it does not hold ("skipping unknown policy") and
//! keeps the last good version of one it could not convert; either lets
//! traffic through that the author meant to restrict, so we deliberately
//! differ (hardening issue, item 4).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use mesh_model::{Authorization, Scope, Workload};

use super::ProxyState;

/// A policy update istiod sent that could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedPolicy {
    /// The policy's namespace, from the resource if it decoded, else from
    /// its name.
    pub namespace: String,
    /// Its scope when that much could be read; `None` binds it as widely as
    /// it could have been (its namespace, and workloads listing it).
    pub scope: Option<Scope>,
    pub reason: String,
}

/// Why a bound policy cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// The workload lists it, but it is not held (not yet sent, or removed
    /// before the workload was updated).
    Missing,
    /// Its last update was rejected, for this reason.
    Rejected(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(f, "is bound to the workload but not known"),
            Self::Rejected(reason) => write!(f, "was rejected ({reason})"),
        }
    }
}

/// The policies bound to one workload.
#[derive(Debug, Clone, Default)]
pub struct BoundPolicies {
    /// Held policies, each once, in key order.
    pub policies: Vec<Arc<Authorization>>,
    /// Bound policies that cannot be evaluated, by key, in key order. Any
    /// entry here denies the connection.
    pub unavailable: Vec<(String, Unavailable)>,
}

impl ProxyState {
    /// Adds or replaces a policy under its key, `<namespace>/<name>`; a
    /// rejection recorded under that key is cleared.
    pub fn insert_policy(&mut self, policy: Authorization) {
        let key = policy.key();
        self.remove_policy(&key);
        match policy.scope {
            Scope::Global => {
                self.global_policies.insert(key.clone());
            }
            Scope::Namespace => {
                self.namespace_policies
                    .entry(policy.namespace.clone())
                    .or_default()
                    .insert(key.clone());
            }
            // Found through `Workload.authorization_policies`.
            Scope::WorkloadSelector => {}
        }
        self.policies.insert(key, Arc::new(policy));
    }

    /// Records that the update of policy `key` was rejected: the previous
    /// version (if any) is dropped rather than kept, and workloads the policy
    /// is bound to are denied until a valid version arrives.
    pub fn reject_policy(&mut self, key: &str, rejected: RejectedPolicy) {
        self.remove_policy(key);
        self.rejected_policies.insert(key.to_owned(), rejected);
    }

    /// Removes a policy (held or rejected) by key; returns whether it was
    /// held.
    pub fn remove_policy(&mut self, key: &str) -> bool {
        self.rejected_policies.remove(key);
        let Some(old) = self.policies.remove(key) else {
            return false;
        };
        self.global_policies.remove(key);
        if let Some(keys) = self.namespace_policies.get_mut(&old.namespace) {
            keys.remove(key);
            if keys.is_empty() {
                self.namespace_policies.remove(&old.namespace);
            }
        }
        true
    }

    pub fn policy(&self, key: &str) -> Option<Arc<Authorization>> {
        self.policies.get(key).cloned()
    }

    /// The policies bound to `workload`: GLOBAL ones, NAMESPACE ones of its
    /// namespace, and the selector policies it lists; plus the bound ones
    /// that are missing or rejected (see the module docs).
    pub fn policies_for(&self, workload: &Workload) -> BoundPolicies {
        let namespace = self.namespace_policies.get(&workload.namespace);
        let listed = workload.authorization_policies.iter().map(String::as_str);
        let rejected_in_scope = self.rejected_policies.iter().filter_map(|(key, r)| {
            let bound = match r.scope {
                Some(Scope::Global) => true,
                Some(Scope::Namespace) | None => r.namespace == workload.namespace,
                Some(Scope::WorkloadSelector) => false,
            };
            bound.then_some(key.as_str())
        });
        let keys: BTreeSet<&str> = self
            .global_policies
            .iter()
            .chain(namespace.into_iter().flatten())
            .map(String::as_str)
            .chain(listed)
            .chain(rejected_in_scope)
            .collect();
        let mut bound = BoundPolicies::default();
        for key in keys {
            if let Some(p) = self.policies.get(key) {
                bound.policies.push(Arc::clone(p));
            } else {
                let why = match self.rejected_policies.get(key) {
                    Some(r) => Unavailable::Rejected(r.reason.clone()),
                    None => Unavailable::Missing,
                };
                tracing::debug!(policy = key, workload = %workload.uid, %why, "bound policy unavailable");
                bound.unavailable.push((key.to_owned(), why));
            }
        }
        bound
    }

    pub fn rejected_policy_count(&self) -> usize {
        self.rejected_policies.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::*;
    use mesh_model::Action;

    fn keys(p: &BoundPolicies) -> Vec<String> {
        p.policies.iter().map(|p| p.key()).collect()
    }

    #[test]
    fn policy_scope_indexes_follow_updates_and_removal() {
        let mut s = ProxyState::default();
        let w = workload("w1", "10.0.0.1");
        s.insert_policy(policy("ns", "p", Scope::Global, Action::Allow, vec![]));
        assert_eq!(s.policies_for(&w).policies.len(), 1);
        // Re-scoped to another namespace: no longer global.
        s.insert_policy(policy("other", "p", Scope::Namespace, Action::Allow, vec![]));
        s.insert_policy(policy("ns", "p", Scope::Namespace, Action::Allow, vec![]));
        assert_eq!(keys(&s.policies_for(&w)), vec!["ns/p"]);
        assert!(s.remove_policy("ns/p"));
        assert!(!s.remove_policy("ns/p"));
        assert!(s.policies_for(&w).policies.is_empty());
        assert!(s.global_policies.is_empty() && !s.namespace_policies.contains_key("ns"));
        assert_eq!(s.policy_count(), 1);
    }

    #[test]
    fn listed_policies_that_are_not_held_are_reported_missing() {
        let mut w = workload("w1", "10.0.0.1");
        w.authorization_policies = vec!["ns/not-yet-here".into()];
        let s = ProxyState::default();
        let bound = s.policies_for(&w);
        assert_eq!(bound.unavailable, vec![("ns/not-yet-here".to_owned(), Unavailable::Missing)]);
    }

    #[test]
    fn a_rejection_replaces_the_held_version_and_binds_by_scope() {
        let mut s = ProxyState::default();
        let mut listing = workload("w1", "10.0.0.1");
        listing.authorization_policies = vec!["ns/sel".into()];
        let mut elsewhere = workload("w2", "10.0.0.2");
        elsewhere.namespace = "other".into();
        s.insert_policy(policy("ns", "sel", Scope::WorkloadSelector, Action::Allow, vec![]));
        let rejected = |scope| RejectedPolicy {
            namespace: "ns".into(),
            scope,
            reason: "invalid: bad port".into(),
        };
        s.reject_policy("ns/sel", rejected(Some(Scope::WorkloadSelector)));
        assert_eq!(s.policy_count(), 0, "the last good version is not kept");
        let bound = s.policies_for(&listing);
        assert_eq!(bound.unavailable[0].0, "ns/sel");
        assert!(
            matches!(&bound.unavailable[0].1, Unavailable::Rejected(r) if r.contains("bad port"))
        );
        assert!(s.policies_for(&elsewhere).unavailable.is_empty());

        // Unknown scope: every workload of its namespace; global: everyone.
        s.reject_policy("ns/wide", rejected(None));
        assert_eq!(s.policies_for(&workload("w3", "10.0.0.3")).unavailable.len(), 1);
        assert!(s.policies_for(&elsewhere).unavailable.is_empty());
        s.reject_policy("ns/global", rejected(Some(Scope::Global)));
        assert_eq!(s.policies_for(&elsewhere).unavailable.len(), 1);

        // A valid version, or the removal, clears the rejection.
        s.insert_policy(policy("ns", "sel", Scope::WorkloadSelector, Action::Allow, vec![]));
        s.remove_policy("ns/wide");
        s.remove_policy("ns/global");
        assert!(s.policies_for(&listing).unavailable.is_empty());
        assert_eq!(s.rejected_policy_count(), 0);
    }
}
