//! Publishing the trust bundle (the roots, PEM) to workloads: a file in local
//! mode ([`super::local::FileBundlePublisher`]), ConfigMap
//! `istio-ca-root-cert` in every namespace on Kubernetes
//! ([`super::kube::ConfigMapPublisher`]).

use futures::future::BoxFuture;

use super::CaError;

/// The ConfigMap (and its key) holding the trust bundle in every namespace.
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
/// The key, also the file name in local mode.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";

/// Hands the current trust bundle to whoever distributes it.
pub trait BundlePublisher: Send + Sync {
    /// Publishes `bundle_pem`, replacing what was published before.
    fn publish<'a>(&'a self, bundle_pem: &'a str) -> BoxFuture<'a, Result<(), CaError>>;
}
