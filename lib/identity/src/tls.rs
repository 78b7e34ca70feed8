//! BoringSSL TLS for HBONE and the control plane.
//!
//! Defaults follow the mesh's needs and Istio's choices: TLS 1.3 only (1.2
//! opt-in), ALPN `h2`, no session resumption (tickets and cache off, so every
//! connection proves its identity afresh), X25519MLKEM768 preferred with
//! X25519 as fallback, no SNI. Both ends verify the peer with
//! [`PeerPolicy`]: the chain must reach the trust bundle, and the leaf must
//! pass the SPIFFE checks of [`crate::verify`].

use std::sync::{Arc, Mutex, PoisonError};

use boring::pkey::{PKeyRef, Private};
use boring::ssl::{
    AlpnError, Ssl, SslAlert, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef,
    SslSessionCacheMode, SslVerifyError, SslVerifyMode, SslVersion,
};
use boring::x509::{X509, X509Ref};
use mesh_model::Identity;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_boring::SslStream;

use crate::verify::{PeerPolicy, leaf_identity};
use crate::{CertificateError, PeerError, TrustBundle, WorkloadCertificate};

/// ALPN protocol list, wire format: HTTP/2 only.
const ALPN_H2: &[u8] = b"\x02h2";

/// Key exchange groups offered and accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyExchange {
    /// X25519MLKEM768 first (post-quantum hybrid), X25519 as fallback.
    #[default]
    HybridPostQuantum,
    /// X25519 only.
    Classical,
}

impl KeyExchange {
    fn groups(self) -> &'static str {
        match self {
            Self::HybridPostQuantum => "X25519MLKEM768:X25519",
            Self::Classical => "X25519",
        }
    }
}

/// Knobs of a TLS context; the defaults are the secure ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// Also accept TLS 1.2 (for peers that cannot do 1.3).
    pub allow_tls12: bool,
    pub key_exchange: KeyExchange,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("building the TLS context: {0}")]
    Context(#[from] CertificateError),
    #[error("peer rejected: {0}")]
    Peer(PeerError),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("peer did not negotiate ALPN h2")]
    NoAlpn,
}

impl From<boring::error::ErrorStack> for TlsError {
    fn from(e: boring::error::ErrorStack) -> Self {
        Self::Context(CertificateError::Boring(e))
    }
}

/// A context builder with the protocol defaults of [`TlsSettings`] applied:
/// versions, groups, no tickets, no session cache.
pub(crate) fn protocol_defaults(settings: TlsSettings) -> Result<SslContextBuilder, TlsError> {
    let mut builder = SslContextBuilder::new(SslMethod::tls())?;
    let min = if settings.allow_tls12 { SslVersion::TLS1_2 } else { SslVersion::TLS1_3 };
    builder.set_min_proto_version(Some(min))?;
    builder.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    builder.set_curves_list(settings.key_exchange.groups())?;
    builder.set_options(SslOptions::NO_TICKET);
    builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    Ok(builder)
}

/// Presents `leaf` (with `intermediates`) signed by `key`.
pub(crate) fn present(
    builder: &mut SslContextBuilder,
    leaf: &X509Ref,
    intermediates: &[X509],
    key: &PKeyRef<Private>,
) -> Result<(), TlsError> {
    builder.set_certificate(leaf)?;
    for intermediate in intermediates {
        builder.add_extra_chain_cert(intermediate.clone())?;
    }
    builder.set_private_key(key)?;
    builder.check_private_key()?;
    Ok(())
}

/// Servers select `h2` and refuse clients that do not offer it.
pub(crate) fn select_h2(builder: &mut SslContextBuilder) {
    builder.set_alpn_select_callback(|_, offered| {
        boring::ssl::select_next_proto(ALPN_H2, offered).ok_or(AlpnError::ALERT_FATAL)
    });
}

/// Clients offer `h2` only.
pub(crate) fn offer_h2(builder: &mut SslContextBuilder) -> Result<(), TlsError> {
    builder.set_alpn_protos(ALPN_H2)?;
    Ok(())
}

fn base_context(
    cert: &WorkloadCertificate,
    settings: TlsSettings,
) -> Result<SslContextBuilder, TlsError> {
    let mut builder = protocol_defaults(settings)?;
    present(&mut builder, cert.leaf(), cert.intermediates(), cert.key())?;
    Ok(builder)
}

/// A server context presenting `cert`. Clients must offer ALPN `h2` and a
/// client certificate.
pub fn server_context(
    cert: &WorkloadCertificate,
    settings: TlsSettings,
) -> Result<SslContext, TlsError> {
    let mut builder = base_context(cert, settings)?;
    select_h2(&mut builder);
    Ok(builder.build())
}

/// A client context presenting `cert`, offering ALPN `h2`.
pub fn client_context(
    cert: &WorkloadCertificate,
    settings: TlsSettings,
) -> Result<SslContext, TlsError> {
    let mut builder = base_context(cert, settings)?;
    offer_h2(&mut builder)?;
    Ok(builder.build())
}

/// Why the verify callback refused, read back after a failed handshake.
pub(crate) type RejectionSlot = Arc<Mutex<Option<PeerError>>>;

/// Installs the SPIFFE verification on one connection.
fn require_peer(ssl: &mut Ssl, bundle: Arc<TrustBundle>, policy: PeerPolicy) -> RejectionSlot {
    install_verifier(ssl, bundle, move |leaf| {
        let der = leaf.to_der().map_err(|e| PeerError::Malformed(e.to_string()))?;
        policy.check(&leaf_identity(&der)?)
    })
}

/// Installs peer verification on one connection: the chain must reach
/// `bundle`, then `check` judges the leaf. The reason for a refusal is kept
/// in the returned slot.
pub(crate) fn install_verifier<F>(
    ssl: &mut Ssl,
    bundle: Arc<TrustBundle>,
    check: F,
) -> RejectionSlot
where
    F: Fn(&X509Ref) -> Result<(), PeerError> + Send + Sync + 'static,
{
    let slot: RejectionSlot = Arc::default();
    let record = Arc::clone(&slot);
    let mode = SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    ssl.set_custom_verify_callback(mode, move |ssl| {
        verify_chain(ssl, &bundle).and_then(|leaf| check(&leaf)).map_err(|reason| {
            let alert = match &reason {
                PeerError::Chain(r) if r.contains("expired") => SslAlert::CERTIFICATE_EXPIRED,
                PeerError::Chain(_) => SslAlert::UNKNOWN_CA,
                _ => SslAlert::BAD_CERTIFICATE,
            };
            tracing::debug!(%reason, "rejecting TLS peer");
            *record.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            SslVerifyError::Invalid(alert)
        })
    });
    slot
}

/// Verifies the peer's chain up to `bundle` and returns its leaf.
fn verify_chain(ssl: &mut SslRef, bundle: &TrustBundle) -> Result<X509, PeerError> {
    let leaf = ssl.peer_certificate().ok_or(PeerError::NoCertificate)?;
    match ssl.peer_cert_chain() {
        Some(chain) => bundle.verify_chain(&leaf, chain)?,
        None => {
            let empty = boring::stack::Stack::new().map_err(|e| PeerError::Chain(e.to_string()))?;
            bundle.verify_chain(&leaf, &empty)?;
        }
    }
    Ok(leaf)
}

pub(crate) fn handshake_error<S>(
    slot: &RejectionSlot,
    err: &tokio_boring::HandshakeError<S>,
) -> TlsError {
    match slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
        Some(reason) => TlsError::Peer(reason),
        None => TlsError::Handshake(err.to_string()),
    }
}

/// The verified identity of the peer of an established connection.
pub fn peer_identity<S>(stream: &SslStream<S>) -> Result<Identity, PeerError> {
    let leaf = stream.ssl().peer_certificate().ok_or(PeerError::NoCertificate)?;
    leaf_identity(&leaf.to_der().map_err(|e| PeerError::Malformed(e.to_string()))?)
}

pub(crate) fn require_h2<S>(stream: &SslStream<S>) -> Result<(), TlsError> {
    match stream.ssl().selected_alpn_protocol() {
        Some(b"h2") => Ok(()),
        _ => Err(TlsError::NoAlpn),
    }
}

/// Client handshake: the server must chain to `bundle` and satisfy `policy`.
pub async fn connect<S>(
    ctx: &SslContext,
    stream: S,
    bundle: Arc<TrustBundle>,
    policy: PeerPolicy,
) -> Result<SslStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ssl = Ssl::new(ctx)?;
    let slot = require_peer(&mut ssl, bundle, policy);
    let stream = tokio_boring::SslStreamBuilder::new(ssl, stream)
        .connect()
        .await
        .map_err(|e| handshake_error(&slot, &e))?;
    require_h2(&stream)?;
    Ok(stream)
}

/// Server handshake: the client must present a certificate chaining to
/// `bundle` and satisfying `policy`. Returns the stream and the client's
/// identity.
pub async fn accept<S>(
    ctx: &SslContext,
    stream: S,
    bundle: Arc<TrustBundle>,
    policy: PeerPolicy,
) -> Result<(SslStream<S>, Identity), TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ssl = Ssl::new(ctx)?;
    let slot = require_peer(&mut ssl, bundle, policy);
    let stream = tokio_boring::SslStreamBuilder::new(ssl, stream)
        .accept()
        .await
        .map_err(|e| handshake_error(&slot, &e))?;
    require_h2(&stream)?;
    let peer = peer_identity(&stream).map_err(TlsError::Peer)?;
    Ok((stream, peer))
}
