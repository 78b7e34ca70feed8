//! Kubernetes backends of the CA.
