//! The CA end to end over real BoringSSL TLS on loopback, in local mode:
//! root persisted in a state directory, node-agent tokens, trust bundle file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod support;

use std::sync::Arc;

use istiod::ca::local::{
    FileBundlePublisher, FileRootStore, LocalNodeDirectory, LocalTokenAuthenticator,
};
use istiod::ca::publish::BundlePublisher;
use istiod::ca::root::load_or_create_root;
use istiod::ca::{DEFAULT_MAX_CSR_BYTES, RefusalReason, ServiceAccountRef};
use mesh_identity::caclient::{CaClient, RequestMode, TokenSource};
use mesh_identity::{TrustBundle, WorkloadCertificate, csr};
use mesh_model::Identity;
use support::{RunningCa, TRUST_DOMAIN};
use tonic::Code;

struct LocalCa {
    ca: RunningCa,
    state: tempfile::TempDir,
}

impl LocalCa {
    fn token(&self, node: &str) -> String {
        let path = LocalTokenAuthenticator::token_path(self.state.path(), node);
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    }
}

fn identity(ns: &str, sa: &str) -> Identity {
    Identity::new(TRUST_DOMAIN, ns, sa).unwrap()
}

/// Local mode: nodes n1, n2; default/app runs on n1.
async fn local_ca() -> LocalCa {
    let state = tempfile::tempdir().unwrap();
    let authority =
        load_or_create_root(&FileRootStore::new(state.path()), TRUST_DOMAIN).await.unwrap();
    FileBundlePublisher::in_state_dir(state.path())
        .publish(&authority.trust_bundle_pem().unwrap())
        .await
        .unwrap();
    let authenticator = LocalTokenAuthenticator::load_or_create(
        state.path(),
        &["n1", "n2"],
        identity("istio-system", "ztunnel"),
    )
    .unwrap();
    let directory = LocalNodeDirectory::new();
    directory.replace([("n1".to_owned(), ServiceAccountRef::new("default", "app"))]);
    let ca = support::start(authority, Arc::new(authenticator), Some(Arc::new(directory))).await;
    LocalCa { ca, state }
}

#[tokio::test]
async fn client_gets_a_certificate_over_tls() {
    let local = local_ca().await;
    let app = identity("default", "app");
    let request = csr::generate(&app).unwrap();
    let chain = local
        .ca
        .ask(Some(&local.token("n1")), request.csr_pem, Some(&app.to_string()))
        .await
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf and root");
    let cert = WorkloadCertificate::from_chain_pem(&app, request.key, &chain).unwrap();
    assert_eq!(cert.identity(), &app);
    assert_eq!(local.ca.metrics.issued_count(), 1);

    // The published bundle is the root the chain ends with.
    let published = std::fs::read(local.state.path().join("root-cert.pem")).unwrap();
    let bundle = TrustBundle::from_pem(&published).unwrap();
    assert_eq!(bundle.roots()[0].to_der().unwrap(), cert.roots().roots()[0].to_der().unwrap());
}

#[tokio::test]
async fn mesh_identity_ca_client_is_served() {
    let local = local_ca().await;
    let token_file = LocalTokenAuthenticator::token_path(local.state.path(), "n1");
    let client = CaClient::new(
        local.ca.channel(),
        TokenSource::File(token_file),
        "Kubernetes",
        RequestMode::Impersonate,
    );
    let app = identity("default", "app");
    let cert = client.sign(&app).await.unwrap();
    assert_eq!(cert.identity(), &app);
    // db is on no node of this agent.
    let err = client.sign(&identity("default", "db")).await.unwrap_err();
    assert!(
        matches!(&err, mesh_identity::caclient::CaClientError::Refused(s) if s.code() == Code::PermissionDenied),
        "{err}"
    );
}

#[tokio::test]
async fn refusals_keep_their_code_over_the_wire() {
    let local = local_ca().await;
    let app = identity("default", "app").to_string();
    let csr = || csr::generate(&identity("default", "app")).unwrap().csr_pem;
    let (n1, n2) = (local.token("n1"), local.token("n2"));
    let ca = &local.ca;
    ca.assert_refused(None, csr(), Some(&app), Code::Unauthenticated, RefusalReason::MissingToken)
        .await;
    ca.assert_refused(
        Some("not-a-token"),
        csr(),
        Some(&app),
        Code::Unauthenticated,
        RefusalReason::InvalidToken,
    )
    .await;
    ca.assert_refused(
        Some(&n2),
        csr(),
        Some(&app),
        Code::PermissionDenied,
        RefusalReason::WorkloadNotOnNode,
    )
    .await;
    ca.assert_refused(
        Some(&n1),
        "garbage".into(),
        Some(&app),
        Code::InvalidArgument,
        RefusalReason::CsrUnparsable,
    )
    .await;
    assert_eq!(ca.metrics.issued_count(), 0);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let local = local_ca().await;
    let n1 = local.token("n1");
    // Over the CSR limit but under the message limit: our refusal.
    local
        .ca
        .assert_refused(
            Some(&n1),
            "A".repeat(DEFAULT_MAX_CSR_BYTES + 1024),
            None,
            Code::ResourceExhausted,
            RefusalReason::CsrTooLarge,
        )
        .await;
    // Over the message limit: tonic refuses before decoding.
    let received = local.ca.metrics.received_count();
    let status = local.ca.ask(Some(&n1), "A".repeat(1024 * 1024), None).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(local.ca.metrics.received_count(), received, "never reached the handler");
}

#[tokio::test]
async fn restart_keeps_the_root() {
    let state = tempfile::tempdir().unwrap();
    let first = load_or_create_root(&FileRootStore::new(state.path()), TRUST_DOMAIN).await.unwrap();
    let second =
        load_or_create_root(&FileRootStore::new(state.path()), TRUST_DOMAIN).await.unwrap();
    assert_eq!(first.trust_bundle_pem().unwrap(), second.trust_bundle_pem().unwrap());
}

/// The node agent's whole path: certificate manager -> CA client -> TLS ->
/// istiod's CA, for a pod on its node, with the refusal surfacing as the
/// manager's error for a pod elsewhere.
#[tokio::test]
async fn certificate_manager_gets_pod_certificates_from_the_real_ca() {
    use mesh_identity::manager::{CertificateManager, Config};
    let local = local_ca().await;
    let token_file = LocalTokenAuthenticator::token_path(local.state.path(), "n1");
    let client = CaClient::new(
        local.ca.channel(),
        TokenSource::File(token_file),
        "Kubernetes",
        RequestMode::Impersonate,
    );
    let manager = CertificateManager::new(client, Config::default()).unwrap();

    let app = identity("default", "app");
    let mut updates = manager.subscribe(&app);
    manager.track(&app);
    let cert = manager.get(&app).await.unwrap();
    assert_eq!(cert.identity(), &app);
    updates.wait_for(|c| c.is_some()).await.unwrap();

    let err = manager.get(&identity("default", "db")).await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}
