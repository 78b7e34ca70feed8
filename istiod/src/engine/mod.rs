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

mod addresses;
mod dirty;
mod run;

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::type_url;
use mesh_proto::workload::{Address, Workload, address};

use self::dirty::Dirty;
pub use self::run::{EngineHandle, EngineStats, FlushHook, RunOptions, StatusChanges, run};
use crate::source::{Kind, Object, ObjectRef, SourceEvent, UntypedObject};
use crate::translate::ownership::AddressClaims;
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
    /// Current conditions of each object, by producer.
    conditions: BTreeMap<(ObjectRef, Producer), Vec<Condition>>,
    /// Current conditions of each object, all producers together.
    statuses: BTreeMap<ObjectRef, Vec<Condition>>,
    /// Every workload's claim on its addresses (`translate::ownership`).
    claims: AddressClaims,
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
            conditions: BTreeMap::new(),
            statuses: BTreeMap::new(),
            claims: AddressClaims::default(),
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

        let (workload_changes, address_scope, address_statuses) =
            self.flush_workloads(&dirty.workload_sources);
        addresses.removals.extend(workload_changes.removals);
        addresses.upserts.extend(workload_changes.upserts);
        let mut status_changes =
            self.update_statuses(Producer::Addresses, address_scope, address_statuses);

        if dirty.all_services {
            let mut service_statuses = Vec::new();
            let mut status_scope = BTreeSet::new();
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
            status_changes.extend(self.update_statuses(
                Producer::ServiceSet,
                status_scope,
                service_statuses,
            ));
        }
        let mut statuses: Vec<ObjectStatus> = Vec::new();
        let mut status_scope: BTreeSet<ObjectRef> = BTreeSet::new();

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
            statuses: merge_changes(
                status_changes,
                self.update_statuses(Producer::Own, status_scope, statuses),
            ),
        }
    }

    /// The workloads `reference` produces, before address ownership is
    /// settled.
    fn workloads_of(&self, reference: &ObjectRef) -> Vec<Workload> {
        let (cfg, snap, key) = (&self.cfg, &self.snap, &reference.key);
        match reference.kind {
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
        }
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

    /// Replaces `producer`'s conditions of every object in `scope` with
    /// those in `produced`; returns the objects whose conditions (all
    /// producers' together) changed, with the new ones.
    fn update_statuses(
        &mut self,
        producer: Producer,
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
            let slot = (reference.clone(), producer);
            if new.is_empty() {
                self.conditions.remove(&slot);
            } else {
                self.conditions.insert(slot, new);
            }
            let combined: Vec<Condition> = Producer::ALL
                .iter()
                .filter_map(|p| self.conditions.get(&(reference.clone(), *p)))
                .flatten()
                .cloned()
                .collect();
            let old = self.statuses.get(&reference).cloned().unwrap_or_default();
            if combined != old {
                if combined.is_empty() {
                    self.statuses.remove(&reference);
                } else {
                    self.statuses.insert(reference.clone(), combined.clone());
                }
                changed.push((reference, combined));
            }
        }
        changed
    }
}

/// Who computes a set of conditions: each replaces only its own, so an
/// object's conditions from several computations do not erase each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Producer {
    /// Address ownership of workloads and ServiceEntry VIPs.
    Addresses,
    /// The Service set (ServiceEntry hosts, addresses, exportTo).
    ServiceSet,
    /// The object's own translation (policies).
    Own,
}

impl Producer {
    const ALL: [Self; 3] = [Self::Addresses, Self::ServiceSet, Self::Own];
}

/// Status changes of one flush, the later one winning per object.
fn merge_changes(
    first: Vec<(ObjectRef, Vec<Condition>)>,
    second: Vec<(ObjectRef, Vec<Condition>)>,
) -> Vec<(ObjectRef, Vec<Condition>)> {
    let mut merged: BTreeMap<ObjectRef, Vec<Condition>> = first.into_iter().collect();
    merged.extend(second);
    merged.into_iter().collect()
}

#[cfg(test)]
mod tests;
