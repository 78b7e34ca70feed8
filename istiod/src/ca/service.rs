//! `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! Order of checks, cheapest and least revealing first: size, caller's token,
//! impersonation rights, then the CSR itself, then the lifetime. The
//! certificate names the authorized identity, never anything else from the
//! CSR; the CSR's one SAN must be that identity.

use std::sync::Arc;
use std::time::SystemTime;

use mesh_identity::grpc::TlsConnectInfo;
use mesh_model::Identity;
use mesh_proto::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_proto::ca::{IstioCertificateRequest, IstioCertificateResponse};
use prost_types::value::Kind;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::authn::{Authenticator, bearer_token};
use super::csr::check_csr;
use super::node_authz::{NodeAuthorizer, NodeDirectory};
use super::{Authority, CaConfig, CaMetrics, Refusal, RefusalReason};

/// The request metadata key a node agent sets to the SPIFFE ID it asks for.
pub use mesh_identity::caclient::IMPERSONATED_IDENTITY;
/// Room for the rest of the request above the CSR limit. Messages larger
/// than CSR limit + this are refused by tonic (`OutOfRange`) before the
/// handler runs.
const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// The CA's gRPC service.
pub struct CaService {
    config: Arc<CaConfig>,
    authority: watch::Receiver<Arc<Authority>>,
    authenticator: Arc<dyn Authenticator>,
    node_authorizer: Option<NodeAuthorizer>,
    metrics: CaMetrics,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("config", &self.config)
            .field("node_authorizer", &self.node_authorizer)
            .finish_non_exhaustive()
    }
}

impl CaService {
    /// A service signing with the current value of `authority` (swap it to
    /// rotate). Without a `directory` no caller may impersonate.
    pub fn new(
        config: CaConfig,
        authority: watch::Receiver<Arc<Authority>>,
        authenticator: Arc<dyn Authenticator>,
        directory: Option<Arc<dyn NodeDirectory>>,
        metrics: CaMetrics,
    ) -> Self {
        let node_authorizer = directory
            .map(|directory| NodeAuthorizer::new(config.trusted_node_agents.clone(), directory));
        metrics.set_root_expiry(authority.borrow().root_not_after());
        Self { config: Arc::new(config), authority, authenticator, node_authorizer, metrics }
    }

    /// The tonic server, with the decoding limit derived from the CSR limit.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        let limit = self.config.max_csr_bytes.saturating_add(MESSAGE_OVERHEAD);
        IstioCertificateServiceServer::new(self).max_decoding_message_size(limit)
    }

    async fn handle(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Vec<String>, Refusal> {
        let (metadata, _, body) = request.into_parts();
        if body.csr.len() > self.config.max_csr_bytes {
            return Err(Refusal::new(
                RefusalReason::CsrTooLarge,
                format!("CSR of {} bytes, limit {}", body.csr.len(), self.config.max_csr_bytes),
            ));
        }
        let caller = self.authenticator.authenticate(bearer_token(&metadata)?).await?;
        let trust_domain = self.config.trust_domain();
        let target = match impersonated_identity(body.metadata.as_ref(), trust_domain)? {
            Some(requested) if requested != caller.identity => {
                let authorizer = self.node_authorizer.as_ref().ok_or_else(|| {
                    Refusal::new(
                        RefusalReason::NotTrustedNodeAgent,
                        "impersonation is disabled (no node directory)",
                    )
                })?;
                authorizer.authorize(&caller, &requested).await?;
                requested
            }
            _ => caller.identity.clone(),
        };
        let csr = check_csr(&body.csr, trust_domain)?;
        if csr.identity() != &target {
            return Err(Refusal::new(
                RefusalReason::IdentityMismatch,
                format!(
                    "{} asked for {}, authorized for {target}",
                    caller.identity,
                    csr.identity()
                ),
            ));
        }
        let lifetime = self.config.ttl.resolve(body.validity_duration)?;
        let authority = Arc::clone(&self.authority.borrow());
        let chain = authority
            .issue_workload(csr.public_key(), &target, lifetime, SystemTime::now())
            .map_err(|e| Refusal::new(RefusalReason::SigningFailed, e.to_string()))?;
        tracing::info!(caller = %caller.identity, identity = %target, ?lifetime, "issued a workload certificate");
        Ok(chain)
    }
}

/// The identity a node agent asks for, from the request's metadata Struct.
fn impersonated_identity(
    metadata: Option<&prost_types::Struct>,
    trust_domain: &str,
) -> Result<Option<Identity>, Refusal> {
    let bad = |detail: String| Refusal::new(RefusalReason::BadImpersonatedIdentity, detail);
    let Some(value) = metadata.and_then(|m| m.fields.get(IMPERSONATED_IDENTITY)) else {
        return Ok(None);
    };
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Ok(None),
        Some(Kind::StringValue(s)) if s.is_empty() => Ok(None),
        Some(Kind::StringValue(s)) => {
            let identity: Identity = s.parse().map_err(|e| bad(format!("{s:?}: {e}")))?;
            if identity.trust_domain() == trust_domain {
                Ok(Some(identity))
            } else {
                Err(bad(format!("{s:?} is not in trust domain {trust_domain:?}")))
            }
        }
        Some(_) => Err(bad("ImpersonatedIdentity is not a string".to_owned())),
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.received();
        let peer = request
            .extensions()
            .get::<TlsConnectInfo>()
            .map(|info| info.remote_addr)
            .or_else(|| request.remote_addr());
        match self.handle(request).await {
            Ok(cert_chain) => {
                self.metrics.issued();
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(refusal) => {
                self.metrics.refused(refusal.reason());
                tracing::warn!(?peer, reason = %refusal.reason(), detail = refusal.detail(), "refused a certificate request");
                Err(refusal.to_status())
            }
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
