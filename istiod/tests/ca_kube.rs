//! The CA against a real kube-apiserver (from `KubeHarness`): TokenReview
//! authentication, node-agent impersonation checked against Pods, the root
//! in Secret `istio-ca-secret` and the trust bundle in every namespace's
//! `istio-ca-root-cert` ConfigMap. Requests go over real TLS gRPC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use istiod::ca::authn::Authenticator;
use istiod::ca::kube::{
    CA_SECRET, ConfigMapPublisher, KubePodDirectory, KubeTokenAuthenticator, SecretRootStore,
};
use istiod::ca::publish::{BundlePublisher, ROOT_CERT_KEY, ROOT_CONFIGMAP};
use istiod::ca::root::load_or_create_root;
use istiod::ca::{RefusalReason, TOKEN_AUDIENCE};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Namespace, Node, ObjectReference, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mesh_identity::{WorkloadCertificate, csr};
use mesh_model::Identity;
use mesh_test_support::KubeHarness;
use mesh_test_support::kube_objects::{app_pod, meta};
use support::TRUST_DOMAIN;
use tonic::Code;

const ISTIO_NS: &str = "istio-system";
const APP_NS: &str = "shop";

async fn harness() -> KubeHarness {
    match KubeHarness::start().await {
        Ok(h) => h,
        Err(e) => panic!("kube harness: {e}"),
    }
}

async fn namespace(client: &kube::Client, name: &str) {
    let ns = Namespace { metadata: meta(name, None), ..Namespace::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
}

async fn service_account(client: &kube::Client, ns: &str, name: &str) {
    let sa = ServiceAccount { metadata: meta(name, Some(ns)), ..ServiceAccount::default() };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
}

async fn node(client: &kube::Client, name: &str) {
    let node = Node { metadata: meta(name, None), ..Node::default() };
    Api::<Node>::all(client.clone()).create(&PostParams::default(), &node).await.unwrap();
}

/// A pod that never runs (no kubelet): only its spec matters. Without a
/// node it stays unscheduled until [`bind`].
async fn pod(client: &kube::Client, ns: &str, name: &str, sa: &str, node: Option<&str>) -> Pod {
    let pod = app_pod(ns, name, sa, node);
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod).await.unwrap()
}

/// Schedules `pod` onto `node`, as the scheduler would.
async fn bind(client: &kube::Client, pod: &Pod, node: &str) {
    let name = pod.metadata.name.clone().unwrap();
    let binding = Binding {
        metadata: meta(&name, pod.metadata.namespace.as_deref()),
        target: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    };
    let ns = pod.metadata.namespace.as_deref().unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
        .unwrap();
}

/// A projected-style token from the TokenRequest API, optionally bound to a pod.
async fn token(
    client: &kube::Client,
    ns: &str,
    sa: &str,
    audience: &str,
    bound_to: Option<&Pod>,
) -> String {
    let bound_object_ref = bound_to.map(|pod| BoundObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
    });
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            bound_object_ref,
            expiration_seconds: Some(3600),
        }),
        ..TokenRequest::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap()
}

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new(TRUST_DOMAIN, ns, sa).unwrap()
}

fn csr_for(identity: &Identity) -> String {
    csr::generate(identity).unwrap().csr_pem
}

#[tokio::test]
async fn tokens_and_impersonation_are_checked_against_the_api_server() {
    let harness = harness().await;
    let client = harness.client();
    for ns in [ISTIO_NS, APP_NS] {
        namespace(&client, ns).await;
    }
    service_account(&client, ISTIO_NS, "ztunnel").await;
    for sa in ["app", "db", "intruder"] {
        service_account(&client, APP_NS, sa).await;
    }
    node(&client, "node-a").await;
    let ztunnel_a = pod(&client, ISTIO_NS, "ztunnel-a", "ztunnel", Some("node-a")).await;
    // ztunnel-b gets its token before it is scheduled, so the token names
    // its pod but no node (as tokens from Kubernetes < 1.32 do); its node
    // is then found through the pod.
    let ztunnel_b = pod(&client, ISTIO_NS, "ztunnel-b", "ztunnel", None).await;
    let app_1 = pod(&client, APP_NS, "app-1", "app", Some("node-a")).await;
    pod(&client, APP_NS, "db-1", "db", Some("node-b")).await;
    let intruder_1 = pod(&client, APP_NS, "intruder-1", "intruder", Some("node-a")).await;

    let app_token = token(&client, APP_NS, "app", TOKEN_AUDIENCE, Some(&app_1)).await;
    let wrong_audience = token(&client, APP_NS, "app", "kubernetes", Some(&app_1)).await;
    let za_token = token(&client, ISTIO_NS, "ztunnel", TOKEN_AUDIENCE, Some(&ztunnel_a)).await;
    let zb_token = token(&client, ISTIO_NS, "ztunnel", TOKEN_AUDIENCE, Some(&ztunnel_b)).await;
    bind(&client, &ztunnel_b, "node-b").await;
    let unbound_ztunnel = token(&client, ISTIO_NS, "ztunnel", TOKEN_AUDIENCE, None).await;
    let intruder_token =
        token(&client, APP_NS, "intruder", TOKEN_AUDIENCE, Some(&intruder_1)).await;

    let authenticator = KubeTokenAuthenticator::new(client.clone(), TRUST_DOMAIN);
    // The two ways to find a caller's node are both exercised below.
    let za = authenticator.authenticate(&za_token).await.unwrap();
    assert_eq!(za.node.as_deref(), Some("node-a"), "node-name extra on a pod-bound token");
    let zb = authenticator.authenticate(&zb_token).await.unwrap();
    assert_eq!(zb.node, None);
    assert_eq!(zb.pod.as_ref().map(|p| p.name.as_str()), Some("ztunnel-b"));

    let authority =
        load_or_create_root(&SecretRootStore::new(client.clone(), ISTIO_NS), TRUST_DOMAIN)
            .await
            .unwrap();
    let ca = support::start(
        authority,
        Arc::new(authenticator),
        Some(Arc::new(KubePodDirectory::new(client.clone()))),
    )
    .await;

    let (app, db) = (id(APP_NS, "app"), id(APP_NS, "db"));

    // Own identity.
    let request = csr::generate(&app).unwrap();
    let chain = ca.ask(Some(&app_token), request.csr_pem, None).await.unwrap();
    WorkloadCertificate::from_chain_pem(&app, request.key, &chain).unwrap();

    // Another identity.
    ca.assert_refused(
        Some(&app_token),
        csr_for(&db),
        None,
        Code::PermissionDenied,
        RefusalReason::IdentityMismatch,
    )
    .await;

    // Bad tokens.
    for bad in ["garbage", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", wrong_audience.as_str()] {
        ca.assert_refused(
            Some(bad),
            csr_for(&app),
            None,
            Code::Unauthenticated,
            RefusalReason::InvalidToken,
        )
        .await;
    }
    ca.assert_refused(
        None,
        csr_for(&app),
        None,
        Code::Unauthenticated,
        RefusalReason::MissingToken,
    )
    .await;

    // ztunnel on node-a (node from the token) for a pod on node-a.
    let request = csr::generate(&app).unwrap();
    let chain = ca.ask(Some(&za_token), request.csr_pem, Some(&app.to_string())).await.unwrap();
    WorkloadCertificate::from_chain_pem(&app, request.key, &chain).unwrap();

    // ztunnel on node-a for a pod on node-b.
    ca.assert_refused(
        Some(&za_token),
        csr_for(&db),
        Some(&db.to_string()),
        Code::PermissionDenied,
        RefusalReason::WorkloadNotOnNode,
    )
    .await;

    // ztunnel on node-b (node from its pod) for a pod on node-b, and not node-a's.
    let request = csr::generate(&db).unwrap();
    let chain = ca.ask(Some(&zb_token), request.csr_pem, Some(&db.to_string())).await.unwrap();
    WorkloadCertificate::from_chain_pem(&db, request.key, &chain).unwrap();
    ca.assert_refused(
        Some(&zb_token),
        csr_for(&app),
        Some(&app.to_string()),
        Code::PermissionDenied,
        RefusalReason::WorkloadNotOnNode,
    )
    .await;

    // A token bound to no pod says nothing about the node.
    ca.assert_refused(
        Some(&unbound_ztunnel),
        csr_for(&app),
        Some(&app.to_string()),
        Code::PermissionDenied,
        RefusalReason::CallerNodeUnknown,
    )
    .await;

    // Not a node agent, even though it runs on node-a next to app.
    ca.assert_refused(
        Some(&intruder_token),
        csr_for(&app),
        Some(&app.to_string()),
        Code::PermissionDenied,
        RefusalReason::NotTrustedNodeAgent,
    )
    .await;

    assert_eq!(ca.metrics.issued_count(), 3);
}

/// Polls until `check` holds for the ConfigMap in `ns`, or fails.
async fn wait_for_configmap(
    client: &kube::Client,
    ns: &str,
    check: impl Fn(Option<&ConfigMap>) -> bool,
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for _ in 0..200 {
        let cm = api.get_opt(ROOT_CONFIGMAP).await.unwrap();
        if check(cm.as_ref()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ConfigMap {ns}/{ROOT_CONFIGMAP} never reached the expected state");
}

fn holds(bundle: &str) -> impl Fn(Option<&ConfigMap>) -> bool + '_ {
    move |cm| {
        cm.and_then(|cm| cm.data.as_ref()).and_then(|d| d.get(ROOT_CERT_KEY)).map(String::as_str)
            == Some(bundle)
    }
}

#[tokio::test]
async fn root_lives_in_a_secret_and_the_bundle_in_every_namespace() {
    let harness = harness().await;
    let client = harness.client();
    namespace(&client, ISTIO_NS).await;
    namespace(&client, APP_NS).await;

    // First start generates and stores; a restart (or a second replica)
    // loads the same root.
    let store = SecretRootStore::new(client.clone(), ISTIO_NS);
    let first = load_or_create_root(&store, TRUST_DOMAIN).await.unwrap();
    let second = load_or_create_root(&SecretRootStore::new(client.clone(), ISTIO_NS), TRUST_DOMAIN)
        .await
        .unwrap();
    let bundle = first.trust_bundle_pem().unwrap();
    assert_eq!(bundle, second.trust_bundle_pem().unwrap());
    let secret = Api::<Secret>::namespaced(client.clone(), ISTIO_NS).get(CA_SECRET).await.unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["ca-cert.pem"].0, bundle.as_bytes());
    assert!(String::from_utf8_lossy(&data["ca-key.pem"].0).contains("PRIVATE KEY"));

    let (publisher, controller) = ConfigMapPublisher::new(client.clone());
    let task = tokio::spawn(controller.run());
    publisher.publish(&bundle).await.unwrap();
    for ns in [ISTIO_NS, APP_NS, "default"] {
        wait_for_configmap(&client, ns, holds(&bundle)).await;
    }

    // A namespace created later gets it too.
    namespace(&client, "late").await;
    wait_for_configmap(&client, "late", holds(&bundle)).await;

    // Edits and deletions are undone.
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), APP_NS);
    let edit = ConfigMap {
        metadata: meta(ROOT_CONFIGMAP, Some(APP_NS)),
        data: Some(BTreeMap::from([(ROOT_CERT_KEY.to_owned(), "tampered".to_owned())])),
        ..ConfigMap::default()
    };
    api.patch(ROOT_CONFIGMAP, &PatchParams::apply("someone-else").force(), &Patch::Apply(&edit))
        .await
        .unwrap();
    wait_for_configmap(&client, APP_NS, holds(&bundle)).await;
    api.delete(ROOT_CONFIGMAP, &DeleteParams::default()).await.unwrap();
    wait_for_configmap(&client, APP_NS, holds(&bundle)).await;

    // A new bundle (e.g. a second root during rotation) reaches everyone.
    let rotated = format!("{bundle}{bundle}");
    publisher.publish(&rotated).await.unwrap();
    for ns in [ISTIO_NS, APP_NS, "late"] {
        wait_for_configmap(&client, ns, holds(&rotated)).await;
    }

    drop(publisher);
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
}
