//! The engine's increments must always equal a full translation of the same
//! objects, and touch only what changed.

use std::collections::BTreeMap;

use mesh_proto::type_url;
use serde::Deserialize;

use super::{Engine, Flush};
use crate::source::kube::object_from_json;
use crate::source::{Kind, Object, ObjectRef, SourceEvent};
use crate::translate::fixtures::{AMBIENT_DEFAULT, cfg, pod};
use crate::translate::{ObjectKey, translate};
use crate::xds::{ConfigStore, address_resource, authorization_resource};

fn objects(yaml: &str) -> Vec<Object> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let mut value = serde_json::Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let kind =
            Kind::from_api(value["apiVersion"].as_str().unwrap(), value["kind"].as_str().unwrap())
                .unwrap();
        if kind.namespaced() && value["metadata"].get("namespace").is_none() {
            value["metadata"]["namespace"] = "default".into();
        }
        out.push(object_from_json(kind, value).unwrap());
    }
    out
}

fn apply_yaml(engine: &mut Engine, yaml: &str) {
    for object in objects(yaml) {
        engine.apply(SourceEvent::Applied(object));
    }
}

/// name -> version, per type, of what the store serves.
fn served(store: &ConfigStore) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    use mesh_xds::server::ViewSource;
    [type_url::ADDRESS, type_url::AUTHORIZATION]
        .into_iter()
        .map(|t| {
            let view = store.view(None, t);
            (t, view.iter().map(|(n, r)| (n.clone(), r.version.clone())).collect())
        })
        .collect()
}

/// What a full translation of the engine's snapshot would serve.
fn expected(engine: &Engine) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let out = translate(&cfg(), engine.snapshot());
    let addresses = out.addresses.iter().map(address_resource);
    let authorizations = out.authorizations.iter().map(authorization_resource);
    BTreeMap::from([
        (type_url::ADDRESS, addresses.map(|(n, r)| (n, r.version)).collect()),
        (type_url::AUTHORIZATION, authorizations.map(|(n, r)| (n, r.version)).collect()),
    ])
}

fn flush_into(engine: &mut Engine, store: &ConfigStore) -> Vec<(String, Vec<String>)> {
    let Flush { resources, .. } = engine.flush();
    store.apply(resources)
}

const WORLD: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http-web}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/sa-client]}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  addresses: [240.0.0.9]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 203.0.113.7}]
";

fn world() -> (Engine, std::sync::Arc<ConfigStore>) {
    let mut engine = Engine::new(cfg());
    apply_yaml(&mut engine, AMBIENT_DEFAULT);
    apply_yaml(&mut engine, WORLD);
    apply_yaml(&mut engine, &pod("web-1", "app: web", "10.244.0.10"));
    apply_yaml(&mut engine, &pod("client-1", "app: client", "10.244.0.11"));
    let store = ConfigStore::new();
    flush_into(&mut engine, &store);
    (engine, store)
}

#[test]
fn a_first_flush_serves_exactly_the_full_translation() {
    let (engine, store) = world();
    let served = served(&store);
    assert_eq!(served, expected(&engine));
    assert!(served[type_url::ADDRESS].contains_key("Kubernetes//Pod/default/web-1"));
    assert!(served[type_url::ADDRESS].contains_key("default/web.default.svc.cluster.local"));
    assert!(served[type_url::AUTHORIZATION].contains_key("default/allow-web"));
}

#[test]
fn a_pod_change_recomputes_that_pod_only() {
    let (mut engine, store) = world();
    apply_yaml(&mut engine, &pod("client-2", "app: client", "10.244.0.12"));
    let changed = flush_into(&mut engine, &store);
    assert_eq!(
        changed,
        vec![(type_url::ADDRESS.to_owned(), vec!["Kubernetes//Pod/default/client-2".to_owned()])]
    );
    engine.apply(SourceEvent::Deleted(ObjectRef {
        kind: Kind::Pod,
        key: ObjectKey::new("default", "client-1"),
    }));
    let changed = flush_into(&mut engine, &store);
    assert_eq!(
        changed,
        vec![(type_url::ADDRESS.to_owned(), vec!["Kubernetes//Pod/default/client-1".to_owned()])]
    );
    assert_eq!(served(&store), expected(&engine));
}

#[test]
fn unenrolling_a_namespace_removes_its_workloads_without_a_restart() {
    let (mut engine, store) = world();
    apply_yaml(&mut engine, "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n");
    flush_into(&mut engine, &store);
    let unenrolled = served(&store);
    assert_eq!(unenrolled, expected(&engine));
    assert!(!unenrolled[type_url::ADDRESS].keys().any(|k| k.contains("/Pod/")));
    // Enrolling it again brings them back.
    apply_yaml(&mut engine, AMBIENT_DEFAULT);
    flush_into(&mut engine, &store);
    assert!(served_has(&store, "Kubernetes//Pod/default/web-1"));
    assert_eq!(served(&store), expected(&engine));
}

fn served_has(store: &ConfigStore, name: &str) -> bool {
    served(store)[type_url::ADDRESS].contains_key(name)
}

#[test]
fn policy_edits_update_the_policy_and_the_workloads_it_selects() {
    let (mut engine, store) = world();
    apply_yaml(
        &mut engine,
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: default}
spec:
  selector: {matchLabels: {app: client}}
  rules: [{from: [{source: {namespaces: [default]}}]}]
",
    );
    let changed = flush_into(&mut engine, &store);
    let names: Vec<&String> = changed.iter().flat_map(|(_, n)| n).collect();
    assert!(names.contains(&&"default/allow-web".to_owned()));
    assert!(names.contains(&&"Kubernetes//Pod/default/web-1".to_owned()));
    assert!(names.contains(&&"Kubernetes//Pod/default/client-1".to_owned()));
    assert_eq!(served(&store), expected(&engine));
}

#[test]
fn an_invalid_policy_gets_a_condition_and_leaves_the_rest_alone() {
    let (mut engine, store) = world();
    let before = served(&store);
    apply_yaml(
        &mut engine,
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-cidr, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {ipBlocks: ['10.0.0.0/99']}}]}]
",
    );
    let flush = engine.flush();
    let bad =
        ObjectRef { kind: Kind::AuthorizationPolicy, key: ObjectKey::new("default", "bad-cidr") };
    assert_eq!(flush.statuses.len(), 1);
    assert_eq!(flush.statuses[0].0, bad);
    assert_eq!(flush.statuses[0].1[0].status, "False");
    assert_eq!(flush.statuses[0].1[0].reason, "InvalidValue");
    store.apply(flush.resources);
    // Fail closed: the DENY is served as denying everything, nothing else moved.
    let mut after = served(&store);
    let version = after.get_mut(type_url::AUTHORIZATION).unwrap().remove("default/bad-cidr");
    assert!(version.is_some(), "the broken DENY is not dropped");
    assert_eq!(after, before);
    assert_eq!(served(&store), expected(&engine));

    // Fixing it clears the condition and serves the policy.
    apply_yaml(
        &mut engine,
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-cidr, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {ipBlocks: ['10.0.0.0/8']}}]}]
",
    );
    let flush = engine.flush();
    assert_eq!(flush.statuses, vec![(bad, Vec::new())]);
    store.apply(flush.resources);
    assert!(served(&store)[type_url::AUTHORIZATION].contains_key("default/bad-cidr"));
    assert!(engine.statuses().is_empty());
}

#[test]
fn every_kind_of_change_keeps_the_increment_equal_to_a_full_translation() {
    let (mut engine, store) = world();
    let steps = [
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {topology.kubernetes.io/region: us}}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default, labels: {istio.io/use-waypoint: wp}}\nspec: {clusterIP: 10.96.0.1, selector: {app: client}, ports: [{port: 80}]}\n",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: default}\nspec: {hosts: [api.example.com], ports: [{number: 443, name: tls}], resolution: STATIC, endpoints: [{address: 203.0.113.8}]}\n",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: default}\nspec: {mtls: {mode: PERMISSIVE}}\n",
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: default, labels: {app: web}}\nspec: {address: 10.1.0.5, serviceAccount: vm}\n",
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: default, labels: {app: web}}\nspec: {address: 10.244.0.11, serviceAccount: vm}\n",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: default}\nspec: {hosts: [api.example.com], addresses: [10.244.0.0/24], ports: [{number: 443, name: tls}], resolution: STATIC, endpoints: [{address: 10.244.0.10}, {address: 203.0.113.8}]}\n",
    ];
    for step in steps {
        apply_yaml(&mut engine, step);
        flush_into(&mut engine, &store);
        assert_eq!(served(&store), expected(&engine), "after applying:\n{step}");
    }
    for (kind, name) in [
        (Kind::Pod, "client-1"),
        (Kind::Pod, "web-1"),
        (Kind::ServiceEntry, "ext"),
        (Kind::PeerAuthentication, "strict"),
        (Kind::Service, "web"),
        (Kind::AuthorizationPolicy, "allow-web"),
        (Kind::WorkloadEntry, "vm"),
    ] {
        engine
            .apply(SourceEvent::Deleted(ObjectRef { kind, key: ObjectKey::new("default", name) }));
        flush_into(&mut engine, &store);
        assert_eq!(served(&store), expected(&engine), "after deleting {kind} {name}");
    }
}

fn addresses_of(store: &ConfigStore, name: &str) -> Vec<Vec<u8>> {
    use mesh_proto::workload::{Address, address};
    use mesh_xds::server::ViewSource;
    use prost::Message;
    let view = store.view(None, type_url::ADDRESS);
    let Some(resource) = view.get(name) else { return Vec::new() };
    match Address::decode(resource.resource.value.as_slice()).unwrap().r#type {
        Some(address::Type::Workload(w)) => w.addresses,
        _ => Vec::new(),
    }
}

/// Item 3: a WorkloadEntry squatting a pod's IP gets no address while the
/// pod is there, gets it back at once when the pod goes (an ownership change
/// of one object changes another's output), and loses it again when the pod
/// returns; every step equals a full translation.
#[test]
fn an_ownership_change_recomputes_the_other_claimant() {
    let (mut engine, store) = world();
    let squat = "Kubernetes/networking.istio.io/WorkloadEntry/outside/squat";
    let pod_uid = "Kubernetes//Pod/default/web-1";
    apply_yaml(
        &mut engine,
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: squat, namespace: outside}
spec: {address: 10.244.0.10}
",
    );
    let flush = engine.flush();
    let conflict = flush.statuses.iter().find(|(r, _)| r.key.name == "squat").unwrap();
    assert_eq!(conflict.1[0].reason, "AddressConflict");
    store.apply(flush.resources);
    assert_eq!(served(&store), expected(&engine));
    assert!(addresses_of(&store, squat).is_empty());
    assert_eq!(addresses_of(&store, pod_uid), vec![vec![10, 244, 0, 10]]);

    let web = ObjectRef { kind: Kind::Pod, key: ObjectKey::new("default", "web-1") };
    engine.apply(SourceEvent::Deleted(web));
    let flush = engine.flush();
    let cleared = flush.statuses.iter().find(|(r, _)| r.key.name == "squat").unwrap();
    assert!(cleared.1.is_empty(), "the condition goes with the conflict");
    store.apply(flush.resources);
    assert_eq!(served(&store), expected(&engine));
    assert_eq!(addresses_of(&store, squat), vec![vec![10, 244, 0, 10]], "restored at once");

    apply_yaml(&mut engine, &pod("web-1", "app: web", "10.244.0.10"));
    flush_into(&mut engine, &store);
    assert_eq!(served(&store), expected(&engine));
    assert!(addresses_of(&store, squat).is_empty());
    assert_eq!(addresses_of(&store, pod_uid), vec![vec![10, 244, 0, 10]]);

    engine.apply(SourceEvent::Deleted(ObjectRef {
        kind: Kind::WorkloadEntry,
        key: ObjectKey::new("outside", "squat"),
    }));
    flush_into(&mut engine, &store);
    assert_eq!(served(&store), expected(&engine));
    assert_eq!(addresses_of(&store, pod_uid), vec![vec![10, 244, 0, 10]]);
}

/// Item 2: a ServiceEntry's range over pod IPs is reported on the entry,
/// and the report follows the pods it covers.
#[test]
fn a_range_over_pod_ips_is_reported_and_follows_the_pods() {
    let (mut engine, store) = world();
    apply_yaml(
        &mut engine,
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: capture, namespace: evil}
spec:
  hosts: [capture.evil.example]
  addresses: [10.244.0.0/16]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.244.0.11}]
",
    );
    let flush = engine.flush();
    let entry = ObjectRef { kind: Kind::ServiceEntry, key: ObjectKey::new("evil", "capture") };
    let conditions = &flush.statuses.iter().find(|(r, _)| *r == entry).unwrap().1;
    assert_eq!(conditions.len(), 2, "{conditions:?}");
    assert!(conditions[1].message.contains("covers the IPs of 2 pod(s)"), "{conditions:?}");
    store.apply(flush.resources);
    assert_eq!(served(&store), expected(&engine));
    let endpoint = "Kubernetes/networking.istio.io/ServiceEntry/evil/capture/10.244.0.11";
    assert!(addresses_of(&store, endpoint).is_empty());

    apply_yaml(&mut engine, &pod("web-2", "app: web", "10.244.0.12"));
    let flush = engine.flush();
    let conditions = &flush.statuses.iter().find(|(r, _)| *r == entry).unwrap().1;
    assert!(conditions[1].message.contains("covers the IPs of 3 pod(s)"), "{conditions:?}");
    store.apply(flush.resources);
    engine.apply(SourceEvent::Deleted(ObjectRef {
        kind: Kind::Pod,
        key: ObjectKey::new("default", "client-1"),
    }));
    flush_into(&mut engine, &store);
    assert_eq!(served(&store), expected(&engine));
    assert_eq!(addresses_of(&store, endpoint), vec![vec![10, 244, 0, 11]], "client-1 is gone");
    assert_eq!(engine.statuses()[&entry].len(), 1, "{:?}", engine.statuses()[&entry]);
}
