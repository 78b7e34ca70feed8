//! Errors of certificate handling and peer verification.

use mesh_model::{Identity, IdentityError};

/// A certificate, key or bundle that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("parsing {what}: {source}")]
    Parse {
        what: &'static str,
        #[source]
        source: boring::error::ErrorStack,
    },
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("the leaf certificate: {0}")]
    Leaf(#[from] PeerError),
    #[error("the leaf is for {found}, expected {expected}")]
    WrongIdentity { expected: Box<Identity>, found: Box<Identity> },
    #[error("the private key does not match the leaf certificate")]
    KeyMismatch,
    #[error("BoringSSL: {0}")]
    Boring(#[from] boring::error::ErrorStack),
}

/// Why a peer's (or our own) leaf certificate is not an acceptable SPIFFE
/// workload certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("no certificate presented")]
    NoCertificate,
    #[error("certificate is not valid DER X.509: {0}")]
    Malformed(String),
    #[error("certificate must carry exactly one subject alternative name, found {0}")]
    SanCount(usize),
    #[error("the subject alternative name is not a URI")]
    SanNotUri,
    #[error("invalid SPIFFE ID in the URI SAN: {0}")]
    SpiffeId(#[from] IdentityError),
    #[error("leaf certificate is a CA")]
    LeafIsCa,
    #[error("trust domain {0:?} is not accepted")]
    TrustDomain(String),
    #[error("chain does not verify against the trust bundle: {0}")]
    Chain(String),
    #[error("server certificate is not valid for host {0:?}")]
    Hostname(String),
    #[error("peer is {found}, expected one of [{expected}]")]
    UnexpectedIdentity { found: Box<Identity>, expected: String },
}
