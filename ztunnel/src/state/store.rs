//! Updates of the store, keeping every index consistent.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use mesh_model::{Address, NamespacedHostname, Service, Workload};

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
            self.workloads_by_ip
                .entry((workload.network.clone(), *ip))
                .or_default()
                .insert(workload.uid.clone());
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
            // Only this claim goes: the other claimants of the address stay
            // indexed, so the next owner takes over at once.
            release(&mut self.workloads_by_ip, (old.network.clone(), *ip), |u| u == uid);
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
                self.services_by_vip
                    .entry((a.network.clone(), a.prefix.addr()))
                    .or_default()
                    .insert(key.clone());
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
            release(&mut self.services_by_vip, (a.network.clone(), a.prefix.addr()), |k| k == key);
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

/// Drops the claims matching `is_mine` on `address`, and the entry once no
/// claim is left.
fn release<K, V: Ord>(index: &mut HashMap<K, BTreeSet<V>>, address: K, is_mine: impl Fn(&V) -> bool)
where
    K: std::hash::Hash + Eq,
{
    if let Some(claims) = index.get_mut(&address) {
        claims.retain(|c| !is_mine(c));
        if claims.is_empty() {
            index.remove(&address);
        }
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
}
