//! What can go wrong getting a certificate: [`FetchError`] from one CA
//! request, [`Error`] from the manager to its callers.

use std::sync::Arc;
use std::time::Duration;

use mesh_model::Identity;

use crate::CertificateError;

/// Why one CA request did not yield a usable certificate. The provider
/// returns the first three; the manager adds the rest when it checks the
/// answer or the request itself fails.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The CA could not be reached or said it is unavailable; worth retrying.
    #[error("the CA is unavailable: {0}")]
    Unavailable(String),
    /// The CA answered and refused to sign.
    #[error("the CA refused to sign: {0}")]
    Refused(String),
    /// Building the request or reading the answer failed.
    #[error("the CA's certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// No answer within `Config::fetch_timeout`.
    #[error("the CA did not answer within {0:?}")]
    Timeout(Duration),
    /// The CA signed a certificate for another identity.
    #[error("the CA issued a certificate for {found}, requested {requested}")]
    WrongIdentity { requested: Box<Identity>, found: Box<Identity> },
    /// The certificate had already expired when it arrived.
    #[error("the CA issued a certificate that has already expired")]
    Expired,
    /// The request task ended without an answer (the provider panicked).
    #[error("the CA request failed: {0}")]
    Crashed(String),
}

impl FetchError {
    /// A low-cardinality name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Refused(_) => "refused",
            Self::Certificate(_) => "invalid_certificate",
            Self::Timeout(_) => "timeout",
            Self::WrongIdentity { .. } => "wrong_identity",
            Self::Expired => "expired",
            Self::Crashed(_) => "crashed",
        }
    }
}

/// Why [`CertificateManager`](super::CertificateManager) could not hand out
/// a certificate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The CA request made for this caller failed (and no valid certificate
    /// was held). Shared by every caller that waited on that request.
    #[error("certificate manager: fetching the certificate of {identity}: {source}")]
    Fetch {
        identity: Box<Identity>,
        #[source]
        source: Arc<FetchError>,
    },
    /// `forget` was called while the caller was waiting.
    #[error("certificate manager: {0} was forgotten while waiting for its certificate")]
    Forgotten(Box<Identity>),
    /// The manager's task has stopped (every handle was dropped).
    #[error("certificate manager: shut down")]
    Shutdown,
    /// `CertificateManager::new` was called outside a tokio runtime.
    #[error("certificate manager: needs a tokio runtime to start: {0}")]
    NoRuntime(String),
}
