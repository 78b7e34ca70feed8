//! Test fixtures: snapshots from multi-document YAML.

use serde::Deserialize;

use super::{Config, Snapshot};

pub(crate) fn cfg() -> Config {
    Config::default()
}

/// Parses every document of `yaml` into a snapshot, by `kind`. Objects
/// without a namespace land in `default`. Panics on an unknown kind or a
/// document that does not parse, naming it.
pub(crate) fn snapshot(yaml: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    add(&mut snap, yaml);
    snap
}

pub(crate) fn add(snap: &mut Snapshot, yaml: &str) {
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let mut value = serde_json::Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap().to_owned();
        if kind != "Namespace" && kind != "Node" && value["metadata"].get("namespace").is_none() {
            value["metadata"]["namespace"] = "default".into();
        }
        let ctx = format!("{kind}: {value}");
        match kind.as_str() {
            "Namespace" => snap.add_namespace(serde_json::from_value(value).expect(&ctx)),
            "Node" => snap.add_node(serde_json::from_value(value).expect(&ctx)),
            "Pod" => snap.add_pod(serde_json::from_value(value).expect(&ctx)),
            "Service" => snap.add_service(serde_json::from_value(value).expect(&ctx)),
            "EndpointSlice" => snap.add_endpoint_slice(serde_json::from_value(value).expect(&ctx)),
            "AuthorizationPolicy" => {
                snap.add_authorization_policy(serde_json::from_value(value).expect(&ctx))
            }
            "PeerAuthentication" => {
                snap.add_peer_authentication(serde_json::from_value(value).expect(&ctx))
            }
            "ServiceEntry" => snap.add_service_entry(serde_json::from_value(value).expect(&ctx)),
            "WorkloadEntry" => snap.add_workload_entry(serde_json::from_value(value).expect(&ctx)),
            other => panic!("fixture kind {other} not supported"),
        }
    }
}

/// Kinds the translation reads among the chart's example files.
pub(crate) const TRANSLATED_KINDS: [&str; 4] =
    ["AuthorizationPolicy", "PeerAuthentication", "ServiceEntry", "WorkloadEntry"];

/// Every `(file name, document)` of `helm/base/tests/examples` of a kind
/// translation reads.
pub(crate) fn chart_examples() -> Vec<(String, String)> {
    let dir = mesh_test_support::repo_path("helm/base/tests/examples");
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---") {
            let kind = doc.lines().find_map(|l| l.strip_prefix("kind: ")).map(str::trim);
            if kind.is_some_and(|k| TRANSLATED_KINDS.contains(&k)) {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, doc.to_owned()));
            }
        }
    }
    out
}

/// A ready pod in `default` on `node-a`, with `labels` (flow-mapping
/// entries, e.g. `"app: a, version: v1"`), a container port `http-web`
/// 8080, and `ip`.
pub(crate) fn pod(name: &str, labels: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels: {{{labels}}}
spec:
  serviceAccountName: sa-{name}
  nodeName: node-a
  containers:
  - name: app
    ports:
    - name: http-web
      containerPort: 8080
status:
  phase: Running
  podIP: {ip}
  podIPs:
  - ip: {ip}
  conditions:
  - type: Ready
    status: \"True\"
"
    )
}

/// Namespace `default` enrolled in ambient, and node `node-a` with
/// topology labels.
pub(crate) const AMBIENT_DEFAULT: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    topology.kubernetes.io/region: eu-west1
    topology.kubernetes.io/zone: eu-west1-b
    topology.istio.io/subzone: rack-7
";
