//! The certificate authority inside istiod.
//!
//! - [`CaService`] serves
//!   `istio.v1.auth.IstioCertificateService/CreateCertificate`. It
//!   authenticates the caller's bearer token ([`authn::Authenticator`]),
//!   lets trusted node agents impersonate workloads on their own node
//!   ([`node_authz`]), checks the CSR ([`csr`]) and signs a SPIFFE leaf
//!   ([`Authority`]). Every refusal has a [`RefusalReason`], which picks the
//!   gRPC code and the label of the refusal metric ([`CaMetrics`]).
//! - Root of trust: a self-signed root generated once and kept in a
//!   [`root::RootStore`], or a plug-in CA from a `cacerts` directory.
//! - Trust bundle publication: [`publish::BundlePublisher`].
//! - Transport: [`serve`] over BoringSSL TLS with istiod's own serving
//!   certificate ([`serving_certificate`]), port [`CA_PORT`].
//! - Backends: [`local`] (state directory, node tokens) and [`kube`]
//!   (TokenReview, Pods, Secret `istio-ca-secret`, ConfigMaps
//!   `istio-ca-root-cert`).

pub mod authn;
pub mod authn_cache;
mod authority;
mod config;
pub mod csr;
mod error;
pub mod kube;
mod leaf;
pub mod local;
mod metrics;
pub mod node_authz;
pub mod publish;
mod refusal;
pub mod root;
mod server;
mod service;
#[cfg(test)]
pub(crate) mod testing;

pub use authority::Authority;
pub use config::{
    CaConfig, DEFAULT_MAX_CSR_BYTES, DEFAULT_MAX_WORKLOAD_TTL, DEFAULT_WORKLOAD_TTL,
    ServiceAccountRef, TOKEN_AUDIENCE, TtlPolicy,
};
pub use error::CaError;
pub use metrics::CaMetrics;
pub use refusal::{Refusal, RefusalReason};
pub use server::{
    CA_PORT, HANDSHAKE_TIMEOUT, REQUEST_TIMEOUT, serve, server_tls, serving_certificate,
};
pub use service::{CaService, IMPERSONATED_IDENTITY};
