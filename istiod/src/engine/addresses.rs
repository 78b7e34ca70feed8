//! Recomputing workloads: the dirty sources, then every other claimant of
//! the addresses they claim(ed), since an ownership change for one object
//! can change another's output (a pod deleted gives its IP back to the
//! WorkloadEntry that claimed it too).

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::workload::{Address, Workload, address};

use super::Engine;
use crate::source::{Kind, ObjectRef};
use crate::translate::ownership::{self, Source, SourceKind};
use crate::translate::status::ObjectStatus;
use crate::xds::{TypeChanges, address_resource};

fn source_of(reference: &ObjectRef) -> Option<Source> {
    let kind = match reference.kind {
        Kind::Pod => SourceKind::Pod,
        Kind::WorkloadEntry => SourceKind::WorkloadEntry,
        Kind::ServiceEntry => SourceKind::ServiceEntry,
        Kind::EndpointSlice => SourceKind::EndpointSlice,
        _ => return None,
    };
    Some(Source { kind, key: reference.key.clone() })
}

fn reference_of(source: &Source) -> ObjectRef {
    let kind = match source.kind {
        SourceKind::Pod => Kind::Pod,
        SourceKind::WorkloadEntry => Kind::WorkloadEntry,
        SourceKind::ServiceEntry => Kind::ServiceEntry,
        SourceKind::EndpointSlice => Kind::EndpointSlice,
    };
    ObjectRef { kind, key: source.key.clone() }
}

impl Engine {
    /// Recomputes the workloads of `dirty` and of the other claimants of
    /// their addresses. Returns the address changes, the objects whose
    /// ownership conditions were recomputed, and those conditions.
    pub(super) fn flush_workloads(
        &mut self,
        dirty: &BTreeSet<ObjectRef>,
    ) -> (TypeChanges, BTreeSet<ObjectRef>, Vec<ObjectStatus>) {
        let mut produced: BTreeMap<ObjectRef, (Source, Vec<Workload>)> = BTreeMap::new();
        let mut touched = BTreeSet::new();
        for reference in dirty {
            let Some(source) = source_of(reference) else { continue };
            let workloads = self.workloads_of(reference);
            touched.extend(self.claims.replace(&self.cfg, &self.snap, &source, &workloads));
            produced.insert(reference.clone(), (source, workloads));
        }
        for source in self.claims.co_claimants(&touched) {
            let reference = reference_of(&source);
            if let std::collections::btree_map::Entry::Vacant(slot) = produced.entry(reference) {
                let workloads = self.workloads_of(slot.key());
                slot.insert((source, workloads));
            }
        }
        let mut changes = TypeChanges::default();
        let mut scope = BTreeSet::new();
        let mut statuses = Vec::new();
        for (reference, (source, mut workloads)) in produced {
            statuses.extend(ownership::settle_source(&self.claims, &source, &mut workloads));
            scope.insert(reference.clone());
            let addresses: Vec<Address> = workloads
                .into_iter()
                .map(|w| Address { r#type: Some(address::Type::Workload(w)) })
                .collect();
            let names: BTreeSet<String> = addresses.iter().map(|a| address_resource(a).0).collect();
            let old = self.workload_names.remove(&reference).unwrap_or_default();
            changes.removals.extend(old.difference(&names).cloned());
            changes.upserts.extend(addresses.iter().map(address_resource));
            if !names.is_empty() {
                self.workload_names.insert(reference, names);
            }
        }
        (changes, scope, statuses)
    }
}
