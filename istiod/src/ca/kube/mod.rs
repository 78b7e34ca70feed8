//! Kubernetes backends of the CA: TokenReview authentication, Pod-based
//! node directory, the root in Secret `istio-ca-secret`, and the trust
//! bundle in ConfigMap `istio-ca-root-cert` of every namespace.

mod configmap;
mod pods;
mod secret;
mod token_review;

pub use configmap::{ConfigMapController, ConfigMapPublisher};
pub use pods::KubePodDirectory;
pub use secret::{CA_SECRET, SecretRootStore};
pub use token_review::KubeTokenAuthenticator;
