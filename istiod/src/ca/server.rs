//! Serving the CA: gRPC over BoringSSL TLS (port 15012 in production), with
//! istiod's own serving certificate (DNS SANs such as
//! `istiod.<ns>.svc`) signed by the CA itself. Callers authenticate with
//! bearer tokens, so no client certificate is requested. TLS and tonic
//! plumbing come from `mesh_identity::{control_plane, grpc}`.

use std::future::Future;
use std::time::{Duration, SystemTime};

use boring::ec::{EcGroup, EcKey};
use boring::nid::Nid;
use boring::pkey::PKey;
use boring::ssl::SslContext;
use boring::x509::X509;
use mesh_identity::control_plane::{self, ServingCertificate};
use mesh_identity::grpc;
use mesh_identity::tls::TlsSettings;
use tokio::net::TcpListener;

use super::{Authority, CaError, CaService};

/// istiod's TLS port for xDS and the CA.
pub const CA_PORT: u16 = 15012;
/// A client must finish its TLS handshake within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request (including its TokenReview and pod lookups) must finish within
/// this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh P-256 key and a certificate for `dns_names` signed by `authority`.
pub fn serving_certificate(
    authority: &Authority,
    dns_names: &[String],
    lifetime: Duration,
) -> Result<ServingCertificate, CaError> {
    let group =
        EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(CaError::boring("P-256 group"))?;
    let key = EcKey::generate(&group)
        .and_then(PKey::from_ec_key)
        .map_err(CaError::boring("generating the serving key"))?;
    let chain_pem = authority.issue_server(&key, dns_names, lifetime, SystemTime::now())?;
    let chain = chain_pem
        .iter()
        .map(|pem| X509::from_pem(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CaError::boring("parsing the serving chain"))?;
    Ok(ServingCertificate::new(chain, key)?)
}

/// The TLS context istiod serves with (TLS 1.3, h2, no client certificate).
pub fn server_tls(cert: &ServingCertificate) -> Result<SslContext, CaError> {
    Ok(control_plane::server_context(cert, TlsSettings::default())?)
}

/// Serves `service` on `listener` over TLS until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: SslContext,
    service: CaService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CaError> {
    let incoming = grpc::incoming(listener, tls, HANDSHAKE_TIMEOUT);
    tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
