//! Updates of the store, keeping every index consistent.

use std::collections::BTreeSet;
use std::sync::Arc;

use mesh_model::{Address, Authorization, NamespacedHostname, Scope, Service, Workload};

use super::{ProxyState, StateError};

impl ProxyState {
    /// Adds or replaces a workload or service. `name` is the xDS resource
    /// name and must be the resource's key: the uid of a workload,
    /// `<namespace>/<hostname>` of a service.
    pub fn insert_address(&mut self, name: &str, address: Address) -> Result<(), StateError> {
        match address {
            Address::Workload(w) => {
                check_name(name, &w.uid)?;
                self.insert_workload(Arc::new(*w));
            }
            Address::Service(s) => {
                check_name(name, &s.key().to_string())?;
                self.insert_service(Arc::new(*s));
            }
        }
        Ok(())
    }

    /// Removes the workload with uid `name`, or else the service whose key
    /// is `name`. Returns whether anything was removed.
    pub fn remove_address(&mut self, name: &str) -> bool {
        if self.remove_workload(name) {
            return true;
        }
        NamespacedHostname::parse("name", name).is_ok_and(|key| self.remove_service(&key))
    }

    fn insert_workload(&mut self, workload: Arc<Workload>) {
        self.remove_workload(&workload.uid);
        for ip in &workload.addresses {
            self.workloads_by_ip.insert((workload.network.clone(), *ip), workload.uid.clone());
        }
        for key in workload.services.keys() {
            self.endpoints.entry(key.clone()).or_default().insert(workload.uid.clone());
        }
        self.workloads.insert(workload.uid.clone(), workload);
    }

    fn remove_workload(&mut self, uid: &str) -> bool {
        let Some(old) = self.workloads.remove(uid) else {
            return false;
        };
        for ip in &old.addresses {
            let key = (old.network.clone(), *ip);
            // Another workload may have claimed the address since.
            if self.workloads_by_ip.get(&key).is_some_and(|owner| owner == uid) {
                self.workloads_by_ip.remove(&key);
            }
        }
        for key in old.services.keys() {
            if let Some(uids) = self.endpoints.get_mut(key) {
                uids.remove(uid);
                if uids.is_empty() {
                    self.endpoints.remove(key);
                }
            }
        }
        true
    }

    fn insert_service(&mut self, service: Arc<Service>) {
        let key = service.key();
        self.remove_service(&key);
        for a in &service.addresses {
            if a.prefix.prefix_len() == a.prefix.max_prefix_len() {
                self.services_by_vip.insert((a.network.clone(), a.prefix.addr()), key.clone());
            } else {
                self.service_ranges.push((a.network.clone(), a.prefix, key.clone()));
            }
        }
        self.services_by_host
            .entry(service.hostname.to_ascii_lowercase())
            .or_default()
            .insert(key.clone());
        self.services.insert(key, service);
    }

    fn remove_service(&mut self, key: &NamespacedHostname) -> bool {
        let Some(old) = self.services.remove(key) else {
            return false;
        };
        for a in &old.addresses {
            let vip = (a.network.clone(), a.prefix.addr());
            if self.services_by_vip.get(&vip).is_some_and(|owner| owner == key) {
                self.services_by_vip.remove(&vip);
            }
        }
        self.service_ranges.retain(|(_, _, owner)| owner != key);
        let host = old.hostname.to_ascii_lowercase();
        if let Some(keys) = self.services_by_host.get_mut(&host) {
            keys.remove(key);
            if keys.is_empty() {
                self.services_by_host.remove(&host);
            }
        }
        true
    }

    /// Adds or replaces a policy under its key, `<namespace>/<name>`.
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

    /// Removes a policy by key; returns whether it was held.
    pub fn remove_policy(&mut self, key: &str) -> bool {
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

    /// The policies that apply to `workload`: GLOBAL ones, NAMESPACE ones of
    /// its namespace, and the selector policies it lists. Each at most once,
    /// in key order (so evaluation and its logs are deterministic). Listed
    /// keys not (yet) held are skipped: a policy may arrive after the
    /// workload naming it, or be removed before the workload is updated.
    pub fn policies_for(&self, workload: &Workload) -> Vec<Arc<Authorization>> {
        let namespace = self.namespace_policies.get(&workload.namespace);
        let keys: BTreeSet<&str> = self
            .global_policies
            .iter()
            .chain(namespace.into_iter().flatten())
            .map(String::as_str)
            .chain(workload.authorization_policies.iter().map(String::as_str))
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                let p = self.policies.get(k);
                if p.is_none() {
                    tracing::debug!(policy = k, workload = %workload.uid, "skipping unknown policy");
                }
                p.cloned()
            })
            .collect()
    }

    pub fn workload_count(&self) -> usize {
        self.workloads.len()
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }
}

fn check_name(name: &str, key: &str) -> Result<(), StateError> {
    if name == key {
        Ok(())
    } else {
        Err(StateError::NameMismatch { name: name.to_owned(), key: key.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::*;
    use mesh_model::Action;

    #[test]
    fn workload_ip_change_moves_the_index() {
        let mut s = ProxyState::default();
        insert_workload(&mut s, workload("w1", "10.0.0.1"));
        let mut moved = workload("w1", "10.0.0.2");
        moved.network = "n2".into();
        insert_workload(&mut s, moved);
        assert!(s.workload_by_ip("", ip("10.0.0.1")).is_none());
        assert!(s.workload_by_ip("", ip("10.0.0.2")).is_none(), "network is part of the key");
        assert_eq!(s.workload_by_ip("n2", ip("10.0.0.2")).unwrap().uid, "w1");
        assert!(s.remove_address("w1"));
        assert!(s.workload_by_ip("n2", ip("10.0.0.2")).is_none());
        assert!(s.workload_by_uid("w1").is_none());
        assert!(!s.remove_address("w1"), "second removal is a no-op");
        assert!(s.workloads_by_ip.is_empty() && s.endpoints.is_empty());
    }

    #[test]
    fn removing_a_workload_keeps_an_address_another_one_claimed() {
        let mut s = ProxyState::default();
        insert_workload(&mut s, workload("old", "10.0.0.1"));
        insert_workload(&mut s, workload("new", "10.0.0.1"));
        s.remove_address("old");
        assert_eq!(s.workload_by_ip("", ip("10.0.0.1")).unwrap().uid, "new");
    }

    #[test]
    fn service_vip_change_and_removal_update_the_index() {
        let mut s = ProxyState::default();
        insert_service(&mut s, service("svc", &["10.96.0.1", "10.200.0.0/16"]));
        assert!(s.service_by_vip("", ip("10.200.3.4")).is_some(), "ranges match");
        insert_service(&mut s, service("svc", &["10.96.0.2"]));
        assert!(s.service_by_vip("", ip("10.96.0.1")).is_none());
        assert!(s.service_by_vip("", ip("10.200.3.4")).is_none());
        assert_eq!(s.service_by_vip("", ip("10.96.0.2")).unwrap().name, "svc");
        assert!(s.remove_address("ns/svc.ns.svc.cluster.local"));
        assert!(s.service_by_vip("", ip("10.96.0.2")).is_none());
        assert_eq!(s.service_count(), 0);
    }

    #[test]
    fn endpoints_follow_the_workloads_service_list() {
        let mut s = ProxyState::default();
        let key = service("svc", &[]).key();
        insert_workload(&mut s, endpoint_of("w1", "10.0.0.1", "svc", 80, Some(8080)));
        assert_eq!(s.endpoints[&key].len(), 1, "indexed before the service exists");
        insert_workload(&mut s, workload("w1", "10.0.0.1"));
        assert!(!s.endpoints.contains_key(&key), "dropped when the workload leaves the service");
    }

    #[test]
    fn insert_rejects_a_name_that_is_not_the_key() {
        let mut s = ProxyState::default();
        let err = s
            .insert_address("other", Address::Workload(Box::new(workload("w1", "10.0.0.1"))))
            .unwrap_err();
        assert_eq!(err, StateError::NameMismatch { name: "other".into(), key: "w1".into() });
        let err =
            s.insert_address("ns/x", Address::Service(Box::new(service("svc", &[])))).unwrap_err();
        assert!(matches!(err, StateError::NameMismatch { .. }));
        assert_eq!(s.workload_count() + s.service_count(), 0);
    }

    #[test]
    fn policy_scope_indexes_follow_updates_and_removal() {
        let mut s = ProxyState::default();
        let w = workload("w1", "10.0.0.1");
        s.insert_policy(policy("ns", "p", Scope::Global, Action::Allow, vec![]));
        assert_eq!(s.policies_for(&w).len(), 1);
        // Re-scoped to another namespace: no longer global.
        s.insert_policy(policy("other", "p", Scope::Namespace, Action::Allow, vec![]));
        s.insert_policy(policy("ns", "p", Scope::Namespace, Action::Allow, vec![]));
        assert_eq!(keys(&s.policies_for(&w)), vec!["ns/p"]);
        assert!(s.remove_policy("ns/p"));
        assert!(!s.remove_policy("ns/p"));
        assert!(s.policies_for(&w).is_empty());
        assert!(s.global_policies.is_empty() && !s.namespace_policies.contains_key("ns"));
        assert_eq!(s.policy_count(), 1);
    }

    fn keys(p: &[Arc<Authorization>]) -> Vec<String> {
        p.iter().map(|p| p.key()).collect()
    }
}
