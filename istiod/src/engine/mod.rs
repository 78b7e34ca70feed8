//! The translation engine: applies [`SourceEvent`]s to a [`Snapshot`] and
//! recomputes only the outputs they touch.
//!
//! An event marks outputs dirty (using the dependency table in
//! [`crate::translate`] and [`crate::translate::dependents`]); [`Engine::flush`]
//! recomputes the dirty ones and returns the resource changes for the
//! [`ConfigStore`](crate::xds::ConfigStore) and the status changes for the
//! status writer. A pod change recomputes that pod's workload and nothing
//! else; Services are recomputed as a set (hostname conflicts span objects)
//! only when a Service, ServiceEntry or Namespace changed; PeerAuthentications
//! likewise as a set, since selector policies inherit from wider ones.

mod dirty;
mod run;

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::type_url;
use mesh_proto::workload::{Address, address};

use self::dirty::Dirty;
pub use self::run::{EngineHandle, EngineStats, FlushHook, RunOptions, StatusChanges, run};
use crate::source::{Kind, Object, ObjectRef, SourceEvent, UntypedObject};
use crate::translate::status::{Condition, ObjectStatus};
use crate::translate::{
    Config, ObjectKey, Snapshot, authorization, endpoint_slices, entries, peer_authentication,
    services, workloads,
};
use crate::xds::{TypeChanges, address_resource, authorization_resource};

/// What one flush changed.
#[derive(Debug, Default)]
pub struct Flush {
    /// Resource changes by type URL, for `ConfigStore::apply`.
    pub resources: Vec<(&'static str, TypeChanges)>,
    /// Objects whose translation conditions changed: the new conditions
    /// (empty when the object is now fine).
    pub statuses: Vec<(ObjectRef, Vec<Condition>)>,
}

/// The objects, the outputs computed from them, and what is dirty.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    snap: Snapshot,
    untyped: BTreeMap<ObjectRef, UntypedObject>,
    /// Address names each source object produced (workloads of pods,
    /// WorkloadEntries, ServiceEntries, EndpointSlices).
    workload_names: BTreeMap<ObjectRef, BTreeSet<String>>,
    service_names: BTreeSet<String>,
    /// Authorization names each policy produced.
    authorization_names: BTreeMap<ObjectRef, String>,
    /// Current conditions, by producer (an object's own translation, or the
    /// Service set for ServiceEntry host conflicts) then object.
    statuses: BTreeMap<ObjectRef, Vec<Condition>>,
    dirty: Dirty,
}

fn kind_of_status(status: &ObjectStatus) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.name() == status.kind)
}

impl Engine {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            snap: Snapshot::default(),
            untyped: BTreeMap::new(),
            workload_names: BTreeMap::new(),
            service_names: BTreeSet::new(),
            authorization_names: BTreeMap::new(),
            statuses: BTreeMap::new(),
            dirty: Dirty::default(),
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// Objects of the kinds not translated for ztunnel.
    pub fn untyped(&self) -> &BTreeMap<ObjectRef, UntypedObject> {
        &self.untyped
    }

    /// The current translation conditions of every object that has some.
    pub fn statuses(&self) -> &BTreeMap<ObjectRef, Vec<Condition>> {
        &self.statuses
    }

    /// Whether a flush would do anything.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Applies one event; `Synced` is the caller's business.
    pub fn apply(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Applied(object) => self.apply_object(object),
            SourceEvent::Deleted(reference) => self.delete_object(&reference),
            SourceEvent::Synced => {}
        }
    }

    fn apply_object(&mut self, object: Object) {
        let reference = object.reference();
        // Outputs depending on the old version, then on the new one.
        self.dirty.mark_dependents(&self.cfg, &self.snap, &reference);
        let key = reference.key.clone();
        match object {
            Object::Namespace(o) => {
                self.snap.namespaces.insert(key.name, o);
            }
            Object::Node(o) => {
                self.snap.nodes.insert(key.name, o);
            }
            Object::Pod(o) => {
                self.snap.pods.insert(key, o);
            }
            Object::Service(o) => {
                self.snap.services.insert(key, o);
            }
            Object::EndpointSlice(o) => {
                self.snap.endpoint_slices.insert(key, o);
            }
            Object::AuthorizationPolicy(o) => {
                self.snap.authorization_policies.insert(key, o);
            }
            Object::PeerAuthentication(o) => {
                self.snap.peer_authentications.insert(key, o);
            }
            Object::ServiceEntry(o) => {
                self.snap.service_entries.insert(key, o);
            }
            Object::WorkloadEntry(o) => {
                self.snap.workload_entries.insert(key, o);
            }
            Object::Untyped(o) => {
                self.untyped.insert(reference.clone(), o);
            }
        }
        self.dirty.mark_dependents(&self.cfg, &self.snap, &reference);
    }

    fn delete_object(&mut self, reference: &ObjectRef) {
        self.dirty.mark_dependents(&self.cfg, &self.snap, reference);
        let key = &reference.key;
        match reference.kind {
            Kind::Namespace => drop(self.snap.namespaces.remove(&key.name)),
            Kind::Node => drop(self.snap.nodes.remove(&key.name)),
            Kind::Pod => drop(self.snap.pods.remove(key)),
            Kind::Service => drop(self.snap.services.remove(key)),
            Kind::EndpointSlice => drop(self.snap.endpoint_slices.remove(key)),
            Kind::AuthorizationPolicy => drop(self.snap.authorization_policies.remove(key)),
            Kind::PeerAuthentication => drop(self.snap.peer_authentications.remove(key)),
            Kind::ServiceEntry => drop(self.snap.service_entries.remove(key)),
            Kind::WorkloadEntry => drop(self.snap.workload_entries.remove(key)),
            Kind::RequestAuthentication
            | Kind::Gateway
            | Kind::GatewayClass
            | Kind::HttpRoute
            | Kind::GrpcRoute => drop(self.untyped.remove(reference)),
        }
    }

    /// Recomputes everything dirty and says what changed.
    pub fn flush(&mut self) -> Flush {
        let dirty = std::mem::take(&mut self.dirty);
        let mut addresses = TypeChanges::default();
        let mut authorizations = TypeChanges::default();
        let mut statuses: Vec<ObjectStatus> = Vec::new();
        let mut status_scope: BTreeSet<ObjectRef> = BTreeSet::new();

        for reference in &dirty.workload_sources {
            let produced = self.workloads_of(reference);
            let names: BTreeSet<String> = produced.iter().map(|a| address_resource(a).0).collect();
            let old = self.workload_names.remove(reference).unwrap_or_default();
            addresses.removals.extend(old.difference(&names).cloned());
            addresses.upserts.extend(produced.iter().map(address_resource));
            if !names.is_empty() {
                self.workload_names.insert(reference.clone(), names);
            }
        }

        if dirty.all_services {
            let mut service_statuses = Vec::new();
            let all = services::all_services(&self.cfg, &self.snap, &mut service_statuses);
            let produced: Vec<Address> = all
                .into_iter()
                .map(|s| Address { r#type: Some(address::Type::Service(s)) })
                .collect();
            let names: BTreeSet<String> = produced.iter().map(|a| address_resource(a).0).collect();
            addresses.removals.extend(self.service_names.difference(&names).cloned());
            addresses.upserts.extend(produced.iter().map(address_resource));
            self.service_names = names;
            // The Service set owns the conditions of every ServiceEntry.
            status_scope
                .extend(self.statuses.keys().filter(|r| r.kind == Kind::ServiceEntry).cloned());
            status_scope.extend(
                self.snap
                    .service_entries
                    .keys()
                    .map(|k| ObjectRef { kind: Kind::ServiceEntry, key: k.clone() }),
            );
            statuses.extend(service_statuses);
        }

        let mut policies: BTreeSet<ObjectRef> = dirty.authorization_policies.clone();
        if dirty.all_peer_authentications {
            policies.extend(
                self.authorization_names
                    .keys()
                    .filter(|r| r.kind == Kind::PeerAuthentication)
                    .cloned(),
            );
            policies.extend(
                self.snap
                    .peer_authentications
                    .keys()
                    .map(|k| ObjectRef { kind: Kind::PeerAuthentication, key: k.clone() }),
            );
        }
        for reference in &policies {
            let (authz, status) = self.convert_policy(reference);
            status_scope.insert(reference.clone());
            statuses.extend(status);
            let old = self.authorization_names.remove(reference);
            let new = authz.as_ref().map(|a| authorization_resource(a).0);
            if let Some(old) = old.filter(|o| Some(o) != new.as_ref()) {
                authorizations.removals.push(old);
            }
            if let Some(a) = authz {
                let (name, resource) = authorization_resource(&a);
                self.authorization_names.insert(reference.clone(), name.clone());
                authorizations.upserts.push((name, resource));
            }
        }

        Flush {
            resources: vec![
                (type_url::ADDRESS, addresses),
                (type_url::AUTHORIZATION, authorizations),
            ],
            statuses: self.update_statuses(status_scope, statuses),
        }
    }

    fn workloads_of(&self, reference: &ObjectRef) -> Vec<Address> {
        let (cfg, snap, key) = (&self.cfg, &self.snap, &reference.key);
        let list = match reference.kind {
            Kind::Pod => snap
                .pods
                .get(key)
                .and_then(|p| workloads::pod_workload(cfg, snap, p))
                .into_iter()
                .collect(),
            Kind::WorkloadEntry => snap
                .workload_entries
                .get(key)
                .and_then(|we| entries::workload_entry_workload(cfg, snap, we))
                .into_iter()
                .collect(),
            Kind::ServiceEntry => snap
                .service_entries
                .get(key)
                .map(|se| entries::service_entry_workloads(cfg, snap, se))
                .unwrap_or_default(),
            Kind::EndpointSlice => snap
                .endpoint_slices
                .get(key)
                .map(|s| endpoint_slices::endpoint_slice_workloads(cfg, snap, s))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        list.into_iter().map(|w| Address { r#type: Some(address::Type::Workload(w)) }).collect()
    }

    fn convert_policy(
        &self,
        reference: &ObjectRef,
    ) -> (Option<mesh_proto::security::Authorization>, Option<ObjectStatus>) {
        match reference.kind {
            Kind::AuthorizationPolicy => match self.snap.authorization_policies.get(&reference.key)
            {
                Some(p) => authorization::convert_authorization_policy(&self.cfg, p),
                None => (None, None),
            },
            Kind::PeerAuthentication => match self.snap.peer_authentications.get(&reference.key) {
                Some(p) => {
                    peer_authentication::convert_peer_authentication(&self.cfg, &self.snap, p)
                }
                None => (None, None),
            },
            _ => (None, None),
        }
    }

    /// Replaces the conditions of every object in `scope` with those in
    /// `produced`; returns the objects whose conditions changed.
    fn update_statuses(
        &mut self,
        scope: BTreeSet<ObjectRef>,
        produced: Vec<ObjectStatus>,
    ) -> Vec<(ObjectRef, Vec<Condition>)> {
        let mut next: BTreeMap<ObjectRef, Vec<Condition>> = BTreeMap::new();
        for status in produced {
            let Some(kind) = kind_of_status(&status) else { continue };
            let reference =
                ObjectRef { kind, key: ObjectKey::new(&status.namespace, &status.name) };
            next.entry(reference).or_default().extend(status.conditions);
        }
        let mut references = scope;
        references.extend(next.keys().cloned());
        let mut changed = Vec::new();
        for reference in references {
            let new = next.remove(&reference).unwrap_or_default();
            let old = self.statuses.get(&reference).cloned().unwrap_or_default();
            if new != old {
                if new.is_empty() {
                    self.statuses.remove(&reference);
                } else {
                    self.statuses.insert(reference.clone(), new.clone());
                }
                changed.push((reference, new));
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests;
