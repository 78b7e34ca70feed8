//! Errors of setting up and running the CA (not request refusals; those are
//! [`super::Refusal`]).

use std::path::PathBuf;

/// Something the CA could not load, create, store or publish.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BoringSSL, {context}: {source}")]
    Boring {
        context: &'static str,
        #[source]
        source: boring::error::ErrorStack,
    },
    #[error("CA material unusable: {0}")]
    InvalidCa(String),
    #[error("{path} is readable by group or others (mode {mode:o}); it must be 0600")]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "CA state in {dir} is incomplete: {present} exists but {missing} does not; restore it or remove both"
    )]
    IncompleteState { dir: PathBuf, present: &'static str, missing: &'static str },
    #[error("Kubernetes API, {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("CA configuration: {0}")]
    Config(String),
    #[error("TLS for the CA server: {0}")]
    Tls(#[from] mesh_identity::tls::TlsError),
    #[error("istiod serving certificate: {0}")]
    ServingCertificate(#[from] mesh_identity::CertificateError),
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl CaError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    pub(crate) fn boring(context: &'static str) -> impl FnOnce(boring::error::ErrorStack) -> Self {
        move |source| Self::Boring { context, source }
    }

    pub(crate) fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Self::Kube { context, source: Box::new(source) }
    }
}
