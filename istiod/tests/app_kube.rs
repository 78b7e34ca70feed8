//! istiod against a real kube-apiserver (etcd + kube-apiserver from
//! `KubeHarness`): objects created through the API become delta xDS for a
//! real xDS client; relabelling, deleting and editing produce exactly the
//! matching increments; an invalid policy gets a status condition written
//! by the elected leader and disturbs nothing else; a NACK leaves istiod
//! serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod app_support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use app_support::*;
use istiod::app::{App, Config};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use mesh_test_support::KubeHarness;
use serde_json::json;

/// The API server's own Service, in every cluster.
const API_SERVICE: &str = "default/kubernetes.default.svc.cluster.local";

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

async fn create<K>(api: &Api<K>, yaml: &str) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_yaml_ng::from_str(yaml).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap()
}

/// A pod the API server accepts, then the status a kubelet would write.
async fn running_pod(pods: &Api<Pod>, name: &str, app: &str, node: &str, ip: &str) {
    create(
        pods,
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: demo, labels: {{app: {app}}}}}
spec:
  nodeName: {node}
  serviceAccountName: {app}
  containers: [{{name: app, image: busybox, ports: [{{name: http, containerPort: 8080}}]}}]
"
        ),
    )
    .await;
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

fn authorization_policies(client: kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("security.istio.io", "v1", "AuthorizationPolicy");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "authorizationpolicies");
    Api::namespaced_with(client, "demo", &ar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_objects_become_incremental_xds() {
    let harness = KubeHarness::start().await.expect("kube-apiserver harness");
    let client = harness.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(&namespaces, "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n").await;
    create(
        &namespaces,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}\n",
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "demo");
    running_pod(&pods, "client", "client", "node-a", "10.244.1.10").await;
    running_pod(&pods, "server", "server", "node-b", "10.244.2.20").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "demo");
    create(
        &services,
        "apiVersion: v1\nkind: Service\nmetadata: {name: server, namespace: demo}\nspec: {selector: {app: server}, ports: [{name: http, port: 80, targetPort: http}]}\n",
    )
    .await;
    let policies = authorization_policies(client.clone());
    create(
        &policies,
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-allow-client, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  rules: [{from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]}]
",
    )
    .await;

    let config = Config::from_map(&HashMap::from([
        ("POD_NAME", "istiod-test-0"),
        ("GRPC_ADDRESS", "127.0.0.1:0"),
        ("PLAINTEXT_XDS_ADDRESS", "127.0.0.1:0"),
        ("MONITORING_ADDRESS", "127.0.0.1:0"),
        ("PILOT_DEBOUNCE_AFTER", "20"),
    ]))
    .unwrap();
    let app = App::start_with_client(config, Some(client.clone())).await.unwrap();
    let monitoring = app.monitoring_address;
    let channel = plaintext_channel(app.plaintext_address.unwrap());
    let proxy = subscribe(channel.clone(), "ztunnel~a", None);
    eventually("the cluster's workloads, service and policy", || {
        proxy.addresses.names() == set(&[POD_CLIENT, POD_SERVER, SERVICE, API_SERVICE])
            && proxy.authorizations.names() == set(&[POLICY])
    })
    .await;
    assert_eq!(get(monitoring, "/ready").await.0, 200);

    // A NACKing proxy does not stop istiod serving the others.
    let picky = subscribe(channel, "ztunnel~picky", None);
    picky.addresses.0.lock().unwrap().reject.insert(SERVICE.to_owned());
    eventually("the picky proxy served", || picky.addresses.names().len() == 3).await;

    // Deleting a pod: exactly that workload goes.
    let seen = proxy.addresses.responses();
    pods.delete("client", &DeleteParams::default().grace_period(0)).await.unwrap();
    eventually("the client removed", || !proxy.addresses.names().contains(POD_CLIENT)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.addresses.changed_since(seen), (BTreeSet::new(), set(&[POD_CLIENT])));
    eventually("the picky proxy too", || !picky.addresses.names().contains(POD_CLIENT)).await;

    // Editing a policy: the policy alone.
    let (seen_a, seen_p) = (proxy.addresses.responses(), proxy.authorizations.responses());
    let patch = json!({"spec": {"rules": [{"from": [{"source": {"namespaces": ["demo"]}}]}]}});
    policies
        .patch("server-allow-client", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("the edited policy", || proxy.authorizations.responses() > seen_p).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.authorizations.changed_since(seen_p), (set(&[POLICY]), BTreeSet::new()));
    assert_eq!(proxy.addresses.changed_since(seen_a), (BTreeSet::new(), BTreeSet::new()));

    // An invalid CIDR: a status condition from the leader, the policy served
    // fail closed (an ALLOW whose rules match nothing), nothing else disturbed.
    create(&policies, BAD_POLICY).await;
    let mut conditions = serde_json::Value::Null;
    for _ in 0..400 {
        let object = policies.get("bad-cidr").await.unwrap();
        conditions = object.data["status"]["conditions"].clone();
        if conditions.is_array() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(conditions[0]["type"], "Accepted", "{conditions}");
    assert_eq!(conditions[0]["status"], "False");
    assert_eq!(conditions[0]["reason"], "InvalidValue");
    assert_eq!(conditions[0]["observedGeneration"], 1);
    eventually("the invalid policy served fail closed", || {
        proxy.authorizations.names() == set(&[POLICY, "demo/bad-cidr"])
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "istio-system");
    let lease = leases.get("istio-status-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("istiod-test-0"));

    // Fixing it clears the condition and serves the fixed policy.
    let seen_p = proxy.authorizations.responses();
    let fix = json!({"spec": {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]}});
    policies.patch("bad-cidr", &PatchParams::default(), &Patch::Merge(&fix)).await.unwrap();
    eventually("the fixed policy served", || {
        proxy.authorizations.changed_since(seen_p).0.contains("demo/bad-cidr")
    })
    .await;
    for _ in 0..400 {
        let object = policies.get("bad-cidr").await.unwrap();
        if object.data["status"]["conditions"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let object = policies.get("bad-cidr").await.unwrap();
    assert_eq!(object.data["status"]["conditions"], json!([]), "{:?}", object.data["status"]);

    // Un-enrolling the namespace: its workloads go, no restart.
    let patch = json!({"metadata": {"labels": {"istio.io/dataplane-mode": "none"}}});
    namespaces.patch("demo", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually("the server removed", || !proxy.addresses.names().contains(POD_SERVER)).await;
    assert_eq!(proxy.addresses.names(), set(&[SERVICE, API_SERVICE]));

    let metrics = get(monitoring, "/metrics").await.1;
    assert!(metrics.contains("pilot_total_xds_rejects_total{type=\"address\"}"), "{metrics}");
    assert!(
        metrics.contains("pilot_k8s_reg_events_total{kind=\"Pod\",event=\"delete\"} 1"),
        "{metrics}"
    );
    app.shutdown(Duration::from_secs(1)).await;
}
