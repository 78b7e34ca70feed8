//! What an input change makes dirty (the table in [`crate::translate`]).

use std::collections::BTreeSet;

use crate::source::{Kind, ObjectRef};
use crate::translate::dependents::{self, Affected};
use crate::translate::{Config, ObjectKey, Snapshot};

/// Outputs waiting to be recomputed.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    /// Objects whose workloads to recompute: Pods, WorkloadEntries,
    /// ServiceEntries (their endpoint workloads) and EndpointSlices.
    pub workload_sources: BTreeSet<ObjectRef>,
    pub all_services: bool,
    pub authorization_policies: BTreeSet<ObjectRef>,
    pub all_peer_authentications: bool,
}

fn reference(kind: Kind, key: &ObjectKey) -> ObjectRef {
    ObjectRef { kind, key: key.clone() }
}

impl Dirty {
    pub(super) fn is_empty(&self) -> bool {
        self.workload_sources.is_empty()
            && !self.all_services
            && self.authorization_policies.is_empty()
            && !self.all_peer_authentications
    }

    fn affected(&mut self, affected: Affected) {
        self.workload_sources.extend(affected.pods.iter().map(|k| reference(Kind::Pod, k)));
        self.workload_sources
            .extend(affected.workload_entries.iter().map(|k| reference(Kind::WorkloadEntry, k)));
    }

    /// ServiceEntry endpoint workloads list the selector policies and the
    /// PeerAuthentication in scope too; `dependents` only names pods and
    /// WorkloadEntries, so policies mark the entries of their scope here.
    fn service_entries_in_scope(&mut self, cfg: &Config, snap: &Snapshot, namespace: &str) {
        let everywhere = namespace == cfg.root_namespace;
        self.workload_sources.extend(
            snap.service_entries
                .keys()
                .filter(|k| everywhere || k.namespace == namespace)
                .map(|k| reference(Kind::ServiceEntry, k)),
        );
    }

    /// Everything in a namespace that produces workloads.
    fn namespace_contents(&mut self, snap: &Snapshot, namespace: &str) {
        self.affected(dependents::affected_by_namespace(snap, namespace));
        let in_ns = |k: &&ObjectKey| k.namespace == namespace;
        self.workload_sources.extend(
            snap.service_entries.keys().filter(in_ns).map(|k| reference(Kind::ServiceEntry, k)),
        );
        self.workload_sources.extend(
            snap.endpoint_slices.keys().filter(in_ns).map(|k| reference(Kind::EndpointSlice, k)),
        );
    }

    /// Marks what depends on the object as the snapshot holds it now (call
    /// before and after changing it).
    pub(super) fn mark_dependents(&mut self, cfg: &Config, snap: &Snapshot, object: &ObjectRef) {
        let key = &object.key;
        match object.kind {
            Kind::Namespace => {
                self.namespace_contents(snap, &key.name);
                self.all_services = true;
            }
            Kind::Node => self.affected(dependents::affected_by_node(snap, &key.name)),
            Kind::Pod | Kind::WorkloadEntry | Kind::EndpointSlice => {
                self.workload_sources.insert(object.clone());
            }
            Kind::Service => {
                if let Some(svc) = snap.services.get(key) {
                    self.affected(dependents::affected_by_service(snap, svc));
                }
                // Its hand-made endpoints (selectorless Services).
                self.workload_sources.extend(
                    snap.endpoint_slices
                        .iter()
                        .filter(|(k, slice)| {
                            k.namespace == key.namespace
                                && slice.metadata.labels.as_ref().and_then(|l| {
                                    l.get(crate::translate::endpoint_slices::SERVICE_NAME_LABEL)
                                }) == Some(&key.name)
                        })
                        .map(|(k, _)| reference(Kind::EndpointSlice, k)),
                );
                self.all_services = true;
            }
            Kind::ServiceEntry => {
                if let Some(se) = snap.service_entries.get(key) {
                    self.affected(dependents::affected_by_service_entry(snap, se));
                }
                self.workload_sources.insert(object.clone());
                self.all_services = true;
            }
            Kind::AuthorizationPolicy => {
                if let Some(p) = snap.authorization_policies.get(key) {
                    self.affected(dependents::affected_by_authorization_policy(cfg, snap, p));
                    if p.spec.selector.is_some() {
                        self.service_entries_in_scope(cfg, snap, &key.namespace);
                    }
                }
                self.authorization_policies.insert(object.clone());
            }
            Kind::PeerAuthentication => {
                if let Some(p) = snap.peer_authentications.get(key) {
                    self.affected(dependents::affected_by_peer_authentication(cfg, snap, p));
                    self.service_entries_in_scope(cfg, snap, &key.namespace);
                }
                self.all_peer_authentications = true;
            }
            Kind::RequestAuthentication
            | Kind::Gateway
            | Kind::GatewayClass
            | Kind::HttpRoute
            | Kind::GrpcRoute => {}
        }
    }
}
