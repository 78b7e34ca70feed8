//! Client of istiod's CA (`istio.v1.auth.IstioCertificateService`).
//!
//! Each request generates a fresh P-256 key and CSR, authenticates with the
//! caller's service-account token (`authorization: Bearer ...`, re-read from
//! its source on every call because projected tokens rotate) and the
//! `clusterid` header, and, for a node agent asking on a pod's behalf, names
//! the pod's identity in `metadata.ImpersonatedIdentity`. The returned chain is
//! checked before use: the leaf must name the requested identity, match the
//! key and chain to the returned root.

use std::path::PathBuf;
use std::time::Duration;

use mesh_model::Identity;
use mesh_proto::ca::IstioCertificateRequest;
use mesh_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use prost_types::value::Kind;
use prost_types::{Struct, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::{CertificateError, WorkloadCertificate, csr};

/// Metadata key naming the identity a trusted node agent asks for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A projected service-account token file, re-read for every request.
    File(PathBuf),
    /// A fixed token (tests, local mode).
    Static(String),
}

impl TokenSource {
    async fn read(&self) -> Result<String, CaClientError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::File(path) => tokio::fs::read_to_string(path)
                .await
                .map(|t| t.trim().to_owned())
                .map_err(|e| CaClientError::Token(format!("{}: {e}", path.display()))),
        }
    }
}

/// Whether requests are for the caller's own identity or on behalf of pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestMode {
    /// The caller asks for its own identity.
    OwnIdentity,
    /// A node agent asks for identities of pods on its node.
    Impersonate,
}

#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("reading the CA token: {0}")]
    Token(String),
    #[error("the CA token is not a valid header value")]
    TokenHeader,
    #[error("preparing the CSR: {0}")]
    Csr(#[source] CertificateError),
    #[error("the CA refused: {0}")]
    Refused(#[from] tonic::Status),
    #[error("the CA returned an unusable certificate: {0}")]
    BadResponse(#[source] CertificateError),
}

impl CaClientError {
    /// A short, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Token(_) | Self::TokenHeader => "token",
            Self::Csr(_) => "csr",
            Self::Refused(status) if status.code() == tonic::Code::Unavailable => "unavailable",
            Self::Refused(status) if status.code() == tonic::Code::DeadlineExceeded => "timeout",
            Self::Refused(_) => "refused",
            Self::BadResponse(_) => "bad_response",
        }
    }
}

/// Asks istiod's CA for workload certificates.
#[derive(Debug, Clone)]
pub struct CaClient {
    client: IstioCertificateServiceClient<Channel>,
    token: TokenSource,
    cluster_id: String,
    mode: RequestMode,
    /// Requested lifetime; the CA may shorten it.
    ttl: Duration,
    timeout: Duration,
}

impl CaClient {
    pub fn new(
        channel: Channel,
        token: TokenSource,
        cluster_id: impl Into<String>,
        mode: RequestMode,
    ) -> Self {
        Self {
            client: IstioCertificateServiceClient::new(channel),
            token,
            cluster_id: cluster_id.into(),
            mode,
            ttl: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }

    /// Requested certificate lifetime (default 24h).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Deadline of one CA call (default 10s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Generates a key and CSR for `identity`, has it signed and checks the result.
    pub async fn sign(&self, identity: &Identity) -> Result<WorkloadCertificate, CaClientError> {
        let request = csr::generate(identity).map_err(CaClientError::Csr)?;
        let metadata = match self.mode {
            RequestMode::OwnIdentity => None,
            RequestMode::Impersonate => Some(Struct {
                fields: [(
                    IMPERSONATED_IDENTITY.to_owned(),
                    Value { kind: Some(Kind::StringValue(identity.to_string())) },
                )]
                .into(),
            }),
        };
        let body = IstioCertificateRequest {
            csr: request.csr_pem,
            validity_duration: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            metadata,
        };
        let mut call = tonic::Request::new(body);
        call.set_timeout(self.timeout);
        let token = self.token.read().await?;
        let bearer: MetadataValue<_> =
            format!("Bearer {token}").parse().map_err(|_| CaClientError::TokenHeader)?;
        call.metadata_mut().insert("authorization", bearer);
        if let Ok(cluster) = self.cluster_id.parse() {
            call.metadata_mut().insert("clusterid", cluster);
        }
        let response = self.client.clone().create_certificate(call).await?.into_inner();
        WorkloadCertificate::from_chain_pem(identity, request.key, &response.cert_chain)
            .map_err(CaClientError::BadResponse)
    }
}

impl From<CaClientError> for crate::manager::FetchError {
    fn from(e: CaClientError) -> Self {
        use crate::manager::FetchError;
        match e {
            CaClientError::Refused(status) => match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
                    FetchError::Unavailable(status.to_string())
                }
                _ => FetchError::Refused(status.to_string()),
            },
            CaClientError::Token(reason) => {
                FetchError::Unavailable(format!("reading the CA token: {reason}"))
            }
            CaClientError::TokenHeader => {
                FetchError::Refused("the CA token is not a valid header value".to_owned())
            }
            CaClientError::Csr(e) | CaClientError::BadResponse(e) => FetchError::Certificate(e),
        }
    }
}

impl crate::manager::CertificateProvider for CaClient {
    async fn fetch(
        &self,
        identity: &Identity,
    ) -> Result<WorkloadCertificate, crate::manager::FetchError> {
        Ok(self.sign(identity).await?)
    }
}
