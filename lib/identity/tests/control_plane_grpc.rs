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

use std::sync::Arc;
use std::time::Duration;

use mesh_identity::TrustBundle;
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

/// Answers with the CSR and the caller's address, to prove the round trip.
struct Echo;

#[tonic::async_trait]
impl IstioCertificateService for Echo {
    async fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        let info = request
            .extensions()
            .get::<TlsConnectInfo>()
            .copied()
            .expect("connect info present");
        let csr = request.into_inner().csr;
        Ok(tonic::Response::new(IstioCertificateResponse {
            cert_chain: vec![csr, info.remote_addr.ip().to_string()],
        }))
    }
}

struct Server {
    address: std::net::SocketAddr,
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
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(IstioCertificateServiceServer::new(Echo))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    let trust = Arc::new(TrustBundle::from_pem(ca.root_pem().as_bytes()).unwrap());
    Server {
        address,
        trust,
        _task: task,
    }
}

fn client(
    server: &Server,
    hostname: &str,
    trust: Arc<TrustBundle>,
) -> IstioCertificateServiceClient<tonic::transport::Channel> {
    let target = ControlPlaneTarget {
        address: server.address,
        hostname: hostname.to_owned(),
        trust,
        connect_timeout: Duration::from_secs(2),
    };
    let ctx = control_plane::client_context(TlsSettings::default()).unwrap();
    IstioCertificateServiceClient::new(grpc::connect(target, ctx).unwrap())
}

fn request() -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr: "csr-bytes".into(),
        validity_duration: 3600,
        metadata: None,
    }
}

#[tokio::test]
async fn grpc_round_trip_over_boringssl() {
    let ca = TestCa::root("mesh").unwrap();
    let server = start_server(&ca, ISTIOD_HOST).await;
    let mut c = client(&server, ISTIOD_HOST, Arc::clone(&server.trust));
    let reply = c.create_certificate(request()).await.unwrap().into_inner();
    assert_eq!(
        reply.cert_chain,
        vec!["csr-bytes".to_owned(), "127.0.0.1".to_owned()]
    );
}

#[tokio::test]
async fn wrong_hostname_and_untrusted_root_are_refused() {
    let ca = TestCa::root("mesh").unwrap();
    let server = start_server(&ca, ISTIOD_HOST).await;

    let mut wrong_host = client(&server, "istiod.other.svc", Arc::clone(&server.trust));
    let status = wrong_host.create_certificate(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(
        format!("{status:?}").contains("not valid for host"),
        "{status:?}"
    );

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
