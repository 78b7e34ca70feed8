//! istiod's translation, served over delta ADS by istiod's `AdsService`,
//! received by ztunnel's xDS handlers into its state store: an enrolled pod
//! becomes a workload found by IP, its Service a VIP, an AuthorizationPolicy
//! a policy that denies; deleting the pod removes it from the proxy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use istiod::translate::crd::AuthorizationPolicy;
use istiod::translate::{Config, Snapshot, translate};
use istiod::xds::{AdsService, ConfigStore};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use mesh_proto::discovery::Node;
use mesh_proto::type_url;
use mesh_xds::client::{Subscription, XdsClient, XdsConfig};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use ztunnel::state::{AddressHandler, AuthorizationHandler, StateHandle};

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, uid: u-cart-1, labels: {app: cart}}
spec: {nodeName: node-a, serviceAccountName: cart, containers: [{name: app, image: x, ports: [{name: http, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.244.0.5, podIPs: [{ip: 10.244.0.5}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.20, clusterIPs: [10.96.0.20], selector: {app: cart}, ports: [{name: http, port: 80, targetPort: http}]}
"#;

const POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-legacy, namespace: shop}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [legacy]}}]}]
"#;

fn snapshot(with_pod: bool) -> Snapshot {
    let mut snap = Snapshot::default();
    for doc in serde_yaml_ng::Deserializer::from_str(OBJECTS) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        match value["kind"].as_str().unwrap() {
            "Namespace" => snap.add_namespace(serde_json::from_value::<Namespace>(value).unwrap()),
            "Pod" if with_pod => snap.add_pod(serde_json::from_value::<Pod>(value).unwrap()),
            "Pod" => {}
            "Service" => snap.add_service(serde_json::from_value::<Service>(value).unwrap()),
            other => panic!("unexpected kind {other}"),
        }
    }
    let policy: serde_json::Value = serde_yaml_ng::from_str(POLICY).unwrap();
    snap.add_authorization_policy(AuthorizationPolicy::from_json(policy).unwrap());
    snap
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn translated_config_reaches_ztunnel_state_and_follows_changes() {
    let config = Config::default();
    let store = ConfigStore::new();
    let output = translate(&config, &snapshot(true));
    assert!(output.statuses.is_empty(), "no conditions expected: {:?}", output.statuses);
    store.publish(&output);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdsService::new(Arc::clone(&store)).into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let state = StateHandle::default();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let node = Node {
        id: "ztunnel~10.244.0.1~ztunnel-a.istio-system~istio-system.svc.cluster.local".into(),
        ..Default::default()
    };
    let client = XdsClient::new(channel, XdsConfig::new(node))
        .with_type(type_url::ADDRESS, Subscription::wildcard(), AddressHandler::new(state.clone()))
        .with_type(
            type_url::AUTHORIZATION,
            Subscription::wildcard(),
            AuthorizationHandler::new(state.clone()),
        );
    let mut ready = client.ready();
    let client_task = tokio::spawn(client.run());
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .expect("ready")
        .unwrap();

    let pod_ip: IpAddr = "10.244.0.5".parse().unwrap();
    let vip: IpAddr = "10.96.0.20".parse().unwrap();
    eventually("pod, service and policy in ztunnel's state", || {
        let s = state.read();
        s.workload_by_ip("", pod_ip).is_some()
            && s.service_by_vip("", vip).is_some()
            && s.policy_count() == 1
    })
    .await;
    {
        let s = state.read();
        let cart = s.workload_by_ip("", pod_ip).unwrap();
        assert_eq!(cart.identity.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        assert_eq!(cart.node, "node-a");
        let service = s.service_by_vip("", vip).unwrap();
        assert_eq!(service.hostname, "cart.shop.svc.cluster.local");
        let endpoint = s.pick_endpoint(&service, 80, &cart).expect("an endpoint for port 80");
        assert_eq!(
            endpoint.address.to_string(),
            "10.244.0.5:8080",
            "named target port resolved per pod"
        );

        let legacy: mesh_model::Identity =
            "spiffe://cluster.local/ns/legacy/sa/default".parse().unwrap();
        let decision = s.authorize(&ztunnel::policy::ConnectionInfo {
            source_identity: Some(&legacy),
            source_ip: "10.244.1.9".parse().unwrap(),
            destination_ip: pod_ip,
            destination_port: 8080,
            destination_workload: &cart,
        });
        assert!(!decision.allowed, "the translated DENY policy applies: {decision:?}");
    }

    // The pod is deleted: istiod republishes and ztunnel drops it.
    store.publish(&translate(&config, &snapshot(false)));
    eventually("pod removed from ztunnel's state", || {
        state.read().workload_by_ip("", pod_ip).is_none()
    })
    .await;
    assert!(state.read().service_by_vip("", vip).is_some(), "the service stays");

    client_task.abort();
    server.abort();
}
