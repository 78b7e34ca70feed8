//! TLS between proxies and istiod (port 15012, xDS and CA).
//!
//! istiod presents an ordinary serving certificate whose DNS SANs name its
//! Service (`istiod.<ns>.svc`, ...), signed by the mesh CA. Proxies verify the
//! chain against the mesh trust bundle and the hostname they dialled; they
//! authenticate themselves with a bearer token in gRPC metadata, so istiod
//! does not request client certificates. Protocol defaults are those of
//! [`TlsSettings`]: TLS 1.3, ALPN h2, no resumption, hybrid PQ groups.

use std::sync::Arc;

use boring::pkey::{PKey, Private};
use boring::ssl::{Ssl, SslContext};
use boring::x509::X509;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_boring::SslStream;

use crate::tls::{TlsError, TlsSettings};
use crate::{CertificateError, PeerError, TrustBundle, tls};

/// A serving certificate chain (leaf first) and its key.
pub struct ServingCertificate {
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subjects: Vec<String> =
            self.chain.iter().map(|c| format!("{:?}", c.subject_name())).collect();
        f.debug_struct("ServingCertificate").field("chain", &subjects).finish_non_exhaustive()
    }
}

impl ServingCertificate {
    pub fn new(chain: Vec<X509>, key: PKey<Private>) -> Result<Self, CertificateError> {
        let leaf = chain.first().ok_or(CertificateError::Empty("serving certificate chain"))?;
        if !leaf.public_key()?.public_eq(&key) {
            return Err(CertificateError::KeyMismatch);
        }
        Ok(Self { chain, key })
    }

    /// Parses a PEM chain (leaf first) and a PEM private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertificateError> {
        let chain = X509::stack_from_pem(chain_pem).map_err(|source| CertificateError::Parse {
            what: "serving certificate PEM",
            source,
        })?;
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|source| CertificateError::Parse { what: "serving key PEM", source })?;
        Self::new(chain, key)
    }
}

/// istiod's side: presents `cert`, selects h2, requests no client certificate.
pub fn server_context(
    cert: &ServingCertificate,
    settings: TlsSettings,
) -> Result<SslContext, TlsError> {
    let mut builder = tls::protocol_defaults(settings)?;
    let (leaf, intermediates) =
        cert.chain.split_first().ok_or(CertificateError::Empty("serving certificate chain"))?;
    tls::present(&mut builder, leaf, intermediates, &cert.key)?;
    tls::select_h2(&mut builder);
    Ok(builder.build())
}

/// A proxy's side: offers h2, presents no certificate.
pub fn client_context(settings: TlsSettings) -> Result<SslContext, TlsError> {
    let mut builder = tls::protocol_defaults(settings)?;
    tls::offer_h2(&mut builder)?;
    Ok(builder.build())
}

/// Connects to istiod: the server chain must reach `bundle` and its leaf must
/// be valid for `hostname` (a DNS SAN). SNI is set to `hostname`.
pub async fn connect<S>(
    ctx: &SslContext,
    stream: S,
    bundle: Arc<TrustBundle>,
    hostname: &str,
) -> Result<SslStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ssl = Ssl::new(ctx)?;
    ssl.set_hostname(hostname)?;
    let expected = hostname.to_owned();
    let slot =
        tls::install_verifier(&mut ssl, bundle, move |leaf| match leaf.check_host(&expected) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(PeerError::Hostname(expected.clone())),
        });
    let stream = tokio_boring::SslStreamBuilder::new(ssl, stream)
        .connect()
        .await
        .map_err(|e| tls::handshake_error(&slot, &e))?;
    tls::require_h2(&stream)?;
    Ok(stream)
}

/// istiod's side of a handshake (no client certificate requested).
pub async fn accept<S>(ctx: &SslContext, stream: S) -> Result<SslStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ssl = Ssl::new(ctx)?;
    let stream = tokio_boring::SslStreamBuilder::new(ssl, stream)
        .accept()
        .await
        .map_err(|e| TlsError::Handshake(e.to_string()))?;
    tls::require_h2(&stream)?;
    Ok(stream)
}
