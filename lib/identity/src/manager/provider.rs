//! Where certificates come from.

use std::future::Future;
use std::sync::Arc;

use mesh_model::Identity;

use super::FetchError;
use crate::WorkloadCertificate;

/// A certificate authority client: signs a fresh certificate for an
/// identity. The gRPC `IstioCertificateService` client implements it (with a
/// key and CSR from [`crate::csr::generate`]); tests use a scripted fake.
///
/// The manager calls `fetch` at most once at a time per identity, bounds
/// the number of calls in flight, puts its own timeout around each call and
/// checks the answer (identity, expiry), so an implementation only has to
/// make the request.
pub trait CertificateProvider: Send + Sync + 'static {
    fn fetch(
        &self,
        identity: &Identity,
    ) -> impl Future<Output = Result<WorkloadCertificate, FetchError>> + Send;
}

impl<P: CertificateProvider> CertificateProvider for Arc<P> {
    fn fetch(
        &self,
        identity: &Identity,
    ) -> impl Future<Output = Result<WorkloadCertificate, FetchError>> + Send {
        P::fetch(self, identity)
    }
}
