//! TLS contexts per workload identity, built from the certificate manager's
//! current certificates.
//!
//! One node proxy terminates and originates mTLS for many identities. There
//! is no SNI on HBONE: the proxy knows the destination workload (from the
//! original destination address) before the handshake, so it picks the
//! context of that workload's identity and starts the handshake with it.
//! Contexts are cached per certificate: when the manager publishes a renewed
//! certificate, the next lookup builds a new context, new connections use it,
//! and established connections keep the one they were made with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use boring::ssl::SslContext;
use mesh_model::Identity;

use crate::manager::{self, CertificateManager};
use crate::tls::{self, TlsError, TlsSettings};
use crate::{TrustBundle, WorkloadCertificate};

/// Everything a listener or dialler needs for one identity.
#[derive(Clone)]
pub struct IdentityTls {
    pub certificate: Arc<WorkloadCertificate>,
    pub server: SslContext,
    pub client: SslContext,
    /// The roots that came with the certificate.
    pub trust: Arc<TrustBundle>,
}

impl std::fmt::Debug for IdentityTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityTls")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Certificate(#[from] manager::Error),
    #[error("building TLS contexts for {identity}: {source}")]
    Build {
        identity: Box<Identity>,
        #[source]
        source: TlsError,
    },
}

/// Per-identity TLS contexts over a [`CertificateManager`].
pub struct TlsContexts {
    manager: CertificateManager,
    settings: TlsSettings,
    cache: Mutex<HashMap<Identity, IdentityTls>>,
}

impl std::fmt::Debug for TlsContexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContexts").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl TlsContexts {
    pub fn new(manager: CertificateManager, settings: TlsSettings) -> Self {
        Self { manager, settings, cache: Mutex::default() }
    }

    /// Contexts presenting `identity`'s current certificate, fetching it
    /// urgently if none is held.
    pub async fn for_identity(&self, identity: &Identity) -> Result<IdentityTls, ContextError> {
        let certificate = self.manager.get(identity).await?;
        if let Some(cached) = self.cached(identity, &certificate) {
            return Ok(cached);
        }
        let build_error =
            |source| ContextError::Build { identity: Box::new(identity.clone()), source };
        let built = IdentityTls {
            server: tls::server_context(&certificate, self.settings).map_err(build_error)?,
            client: tls::client_context(&certificate, self.settings).map_err(build_error)?,
            trust: Arc::new(
                TrustBundle::new(certificate.roots().roots().to_vec())
                    .map_err(|e| build_error(TlsError::Context(e)))?,
            ),
            certificate,
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(identity.clone(), built.clone());
        Ok(built)
    }

    fn cached(
        &self,
        identity: &Identity,
        current: &Arc<WorkloadCertificate>,
    ) -> Option<IdentityTls> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(identity).filter(|c| Arc::ptr_eq(&c.certificate, current)).cloned()
    }

    /// Drops the contexts of an identity that left the node.
    pub fn forget(&self, identity: &Identity) {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).remove(identity);
    }
}
