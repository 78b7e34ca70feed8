//! Which workloads an input change touches, so an incremental push can
//! recompute only those (see the table in the module docs of
//! [`super`]). Each function answers for the object as it is in the
//! snapshot; on an update, call it for the old and the new version and
//! recompute the union.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;

use super::crd::{AuthorizationPolicy, PeerAuthentication, ServiceEntry};
use super::{Config, ObjectKey, Snapshot, selector_matches};

/// Pods and WorkloadEntries whose Workload must be recomputed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    pub pods: BTreeSet<ObjectKey>,
    pub workload_entries: BTreeSet<ObjectKey>,
}

impl Affected {
    /// Workloads in `namespace` (every namespace when `None`) whose labels
    /// match `selector` (everything when `None`).
    fn select(
        snap: &Snapshot,
        namespace: Option<&str>,
        selector: Option<&BTreeMap<String, String>>,
    ) -> Self {
        let in_scope = |ns: &str| namespace.is_none_or(|n| n == ns);
        let matches = |labels: Option<&BTreeMap<String, String>>| {
            selector.is_none_or(|s| selector_matches(s, labels))
        };
        let pods = snap
            .pods
            .iter()
            .filter(|(k, p)| in_scope(&k.namespace) && matches(p.metadata.labels.as_ref()))
            .map(|(k, _)| k.clone())
            .collect();
        let workload_entries = snap
            .workload_entries
            .iter()
            .filter(|(k, we)| {
                let mut labels = we.metadata.labels.clone().unwrap_or_default();
                labels.extend(we.spec.labels.clone());
                in_scope(&k.namespace) && matches(Some(&labels))
            })
            .map(|(k, _)| k.clone())
            .collect();
        Self { pods, workload_entries }
    }
}

/// A Namespace's labels feed enrolment and waypoints of everything in it.
pub fn affected_by_namespace(snap: &Snapshot, namespace: &str) -> Affected {
    Affected::select(snap, Some(namespace), None)
}

/// A Node's labels feed the locality of the pods on it.
pub fn affected_by_node(snap: &Snapshot, node: &str) -> Affected {
    let pods = snap
        .pods
        .iter()
        .filter(|(_, p)| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .map(|(k, _)| k.clone())
        .collect();
    Affected { pods, workload_entries: BTreeSet::new() }
}

/// A Service feeds the `services` map of the pods its selector matches.
pub fn affected_by_service(snap: &Snapshot, svc: &Service) -> Affected {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty());
    match selector {
        Some(sel) => Affected {
            workload_entries: BTreeSet::new(),
            ..Affected::select(snap, svc.metadata.namespace.as_deref(), Some(sel))
        },
        None => Affected::default(),
    }
}

/// A ServiceEntry feeds the workloads its `workloadSelector` matches (its
/// own endpoint workloads are recomputed from it directly).
pub fn affected_by_service_entry(snap: &Snapshot, se: &ServiceEntry) -> Affected {
    match se.spec.workload_selector.as_ref().filter(|s| !s.labels.is_empty()) {
        Some(sel) => Affected::select(snap, Some(se.namespace()), Some(&sel.labels)),
        None => Affected::default(),
    }
}

/// A selector AuthorizationPolicy is listed by the workloads it selects (in
/// its namespace, or everywhere from the root namespace); a namespace- or
/// mesh-wide one touches no workload.
pub fn affected_by_authorization_policy(
    cfg: &Config,
    snap: &Snapshot,
    policy: &AuthorizationPolicy,
) -> Affected {
    let Some(sel) = policy.spec.selector.as_ref() else { return Affected::default() };
    let ns = (policy.namespace() != cfg.root_namespace).then_some(policy.namespace());
    Affected::select(snap, ns, Some(&sel.match_labels))
}

/// A PeerAuthentication can change which converted policy every workload
/// in its namespace (everywhere, from the root namespace) lists.
pub fn affected_by_peer_authentication(
    cfg: &Config,
    snap: &Snapshot,
    pa: &PeerAuthentication,
) -> Affected {
    let ns = (pa.namespace() != cfg.root_namespace).then_some(pa.namespace());
    Affected::select(snap, ns, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::fixtures::{AMBIENT_DEFAULT, cfg, pod, snapshot};

    fn names(a: &Affected) -> Vec<&str> {
        a.pods.iter().map(|k| k.name.as_str()).collect()
    }

    #[test]
    fn selects_by_namespace_labels_and_node() {
        let other_ns =
            pod("c", "app: web", "10.0.0.3").replace("namespace: default", "namespace: other");
        let snap = snapshot(&format!(
            "{AMBIENT_DEFAULT}---\n{}---\n{}---\n{other_ns}---\n{}",
            pod("a", "app: web", "10.0.0.1"),
            pod("b", "app: db", "10.0.0.2"),
            "apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh, namespace: istio-system}
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: default}
spec: {mtls: {mode: STRICT}}
"
        ));
        assert_eq!(names(&affected_by_namespace(&snap, "default")), vec!["a", "b"]);
        assert_eq!(names(&affected_by_node(&snap, "node-a")), vec!["a", "b", "c"]);
        let svc = snap.services.values().next().unwrap();
        assert_eq!(names(&affected_by_service(&snap, svc)), vec!["a"]);
        let ap = snap.authorization_policies.values().next().unwrap();
        assert_eq!(names(&affected_by_authorization_policy(&cfg(), &snap, ap)), vec!["a", "c"]);
        let pa = snap.peer_authentications.values().next().unwrap();
        assert_eq!(names(&affected_by_peer_authentication(&cfg(), &snap, pa)), vec!["a", "b"]);
    }
}
