//! tonic over BoringSSL: a real gRPC call through `grpc::incoming` and
//! `grpc::connect`, hostname verification, and a silent client that does not
//! hold up others.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_identity::TrustBundle;
use mesh_identity::caclient::{CaClient, CaClientError, RequestMode, TokenSource};
use mesh_identity::control_plane::{self, ServingCertificate};
use mesh_identity::grpc::{self, ControlPlaneTarget, TlsConnectInfo};
use mesh_identity::tls::TlsSettings;
use mesh_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use mesh_proto::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_proto::ca::{IstioCertificateRequest, IstioCertificateResponse};
use mesh_test_support::{LeafSpec, TestCa};
use tokio::net::{TcpListener, TcpStream};

const ISTIOD_HOST: &str = "istiod.istio-system.svc";

/// Answers with the CSR and the caller's address, to prove the round trip,
/// and records what each request carried.
#[derive(Default, Clone)]
struct Echo {
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Debug, Clone)]
struct Seen {
    authorization: Option<String>,
    cluster_id: Option<String>,
    impersonated: Option<String>,
    validity: i64,
}

#[tonic::async_trait]
impl IstioCertificateService for Echo {
    async fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        let info =
            request.extensions().get::<TlsConnectInfo>().copied().expect("connect info present");
        let header =
            |name: &str| request.metadata().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (authorization, cluster_id) = (header("authorization"), header("clusterid"));
        let body = request.into_inner();
        let impersonated =
            body.metadata.as_ref().and_then(|m| m.fields.get("ImpersonatedIdentity")).and_then(
                |v| match &v.kind {
                    Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                },
            );
        let seen =
            Seen { authorization, cluster_id, impersonated, validity: body.validity_duration };
        self.seen.lock().unwrap().push(seen);
        if body.csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----") {
            return Err(tonic::Status::permission_denied("recorded"));
        }
        let csr = body.csr;
        Ok(tonic::Response::new(IstioCertificateResponse {
            cert_chain: vec![csr, info.remote_addr.ip().to_string()],
        }))
    }
}

struct Server {
    address: std::net::SocketAddr,
    echo: Echo,
    trust: Arc<TrustBundle>,
    _task: tokio::task::JoinHandle<()>,
}

async fn start_server(ca: &TestCa, dns_name: &str) -> Server {
    let spec = LeafSpec {
        uri_sans: vec![],
        dns_sans: vec![dns_name.to_owned()],
        ..LeafSpec::workload("unused")
    };
    let issued = ca.issue(&spec).unwrap();
    let chain_pem: String = issued.chain_pem[..issued.chain_pem.len() - 1].concat();
    let key_pem = issued.key.private_key_to_pem_pkcs8().unwrap();
    let cert = ServingCertificate::from_pem(chain_pem.as_bytes(), &key_pem).unwrap();
    let ctx = control_plane::server_context(&cert, TlsSettings::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = grpc::incoming(listener, ctx, Duration::from_secs(2));
    let echo = Echo::default();
    let service = echo.clone();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(IstioCertificateServiceServer::new(service))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    let trust = Arc::new(TrustBundle::from_pem(ca.root_pem().as_bytes()).unwrap());
    Server { address, echo, trust, _task: task }
}

fn channel(server: &Server, hostname: &str, trust: Arc<TrustBundle>) -> tonic::transport::Channel {
    let target = ControlPlaneTarget {
        address: server.address,
        hostname: hostname.to_owned(),
        trust,
        connect_timeout: Duration::from_secs(2),
    };
    let ctx = control_plane::client_context(TlsSettings::default()).unwrap();
    grpc::connect(target, ctx).unwrap()
}

fn client(
    server: &Server,
    hostname: &str,
    trust: Arc<TrustBundle>,
) -> IstioCertificateServiceClient<tonic::transport::Channel> {
    IstioCertificateServiceClient::new(channel(server, hostname, trust))
}

fn request() -> IstioCertificateRequest {
    IstioCertificateRequest { csr: "csr-bytes".into(), validity_duration: 3600, metadata: None }
}

#[tokio::test]
async fn grpc_round_trip_over_boringssl() {
    let ca = TestCa::root("mesh").unwrap();
    let server = start_server(&ca, ISTIOD_HOST).await;
    let mut c = client(&server, ISTIOD_HOST, Arc::clone(&server.trust));
    let reply = c.create_certificate(request()).await.unwrap().into_inner();
    assert_eq!(reply.cert_chain, vec!["csr-bytes".to_owned(), "127.0.0.1".to_owned()]);
}

#[tokio::test]
async fn wrong_hostname_and_untrusted_root_are_refused() {
    let ca = TestCa::root("mesh").unwrap();
    let server = start_server(&ca, ISTIOD_HOST).await;

    let mut wrong_host = client(&server, "istiod.other.svc", Arc::clone(&server.trust));
    let status = wrong_host.create_certificate(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(format!("{status:?}").contains("not valid for host"), "{status:?}");

    let stranger = TestCa::root("other").unwrap();
    let foreign = Arc::new(TrustBundle::from_pem(stranger.root_pem().as_bytes()).unwrap());
    let mut untrusting = client(&server, ISTIOD_HOST, foreign);
    let status = untrusting.create_certificate(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
}

#[tokio::test]
async fn a_silent_client_does_not_block_others() {
    let ca = TestCa::root("mesh").unwrap();
    let server = start_server(&ca, ISTIOD_HOST).await;
    // Opens TCP and never speaks TLS.
    let _silent = TcpStream::connect(server.address).await.unwrap();
    let mut c = client(&server, ISTIOD_HOST, Arc::clone(&server.trust));
    let reply = tokio::time::timeout(Duration::from_secs(1), c.create_certificate(request())).await;
    assert!(reply.expect("not held up by the silent client").is_ok());
}

#[tokio::test]
async fn ca_client_sends_token_cluster_and_impersonated_identity() {
    let ca = TestCa::root("mesh").unwrap();
    let server = start_server(&ca, ISTIOD_HOST).await;
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "projected-jwt\n").unwrap();
    let pod: mesh_model::Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();

    let node_agent = CaClient::new(
        channel(&server, ISTIOD_HOST, Arc::clone(&server.trust)),
        TokenSource::File(token_file.path().to_owned()),
        "Kubernetes",
        RequestMode::Impersonate,
    )
    .with_ttl(Duration::from_secs(7200));
    let err = node_agent.sign(&pod).await.unwrap_err();
    assert!(
        matches!(&err, CaClientError::Refused(s) if s.code() == tonic::Code::PermissionDenied),
        "{err}"
    );
    assert_eq!(err.reason(), "refused");

    let own = CaClient::new(
        channel(&server, ISTIOD_HOST, Arc::clone(&server.trust)),
        TokenSource::Static("static-jwt".into()),
        "Kubernetes",
        RequestMode::OwnIdentity,
    );
    own.sign(&pod).await.unwrap_err();

    let seen = server.echo.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer projected-jwt"));
    assert_eq!(seen[0].cluster_id.as_deref(), Some("Kubernetes"));
    assert_eq!(seen[0].impersonated.as_deref(), Some("spiffe://cluster.local/ns/shop/sa/cart"));
    assert_eq!(seen[0].validity, 7200);
    assert_eq!(seen[1].authorization.as_deref(), Some("Bearer static-jwt"));
    assert_eq!(seen[1].impersonated, None);
    assert_eq!(seen[1].validity, 24 * 3600);
}

#[tokio::test]
async fn ca_client_reports_an_unreadable_token() {
    let ca = TestCa::root("mesh").unwrap();
    let server = start_server(&ca, ISTIOD_HOST).await;
    let client = CaClient::new(
        channel(&server, ISTIOD_HOST, Arc::clone(&server.trust)),
        TokenSource::File("/nonexistent/istio-token".into()),
        "Kubernetes",
        RequestMode::OwnIdentity,
    );
    let pod: mesh_model::Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
    let err = client.sign(&pod).await.unwrap_err();
    assert_eq!(err.reason(), "token");
    assert!(server.echo.seen.lock().unwrap().is_empty(), "nothing is sent without a token");
}
