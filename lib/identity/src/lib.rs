//! Workload identity for the data plane.
//!
//! - [`WorkloadCertificate`]: a SPIFFE leaf, its chain and private key,
//!   checked on construction (the leaf names exactly the expected identity
//!   and matches the key).
//! - [`TrustBundle`]: the roots peers must chain to. Several roots may be
//!   trusted at once, so a root rotation has an overlap period.
//! - [`csr`]: key and CSR generation for a CA request.
//! - [`tls`]: BoringSSL contexts for HBONE and the control plane: TLS 1.3 only
//!   by default, ALPN `h2`, no resumption, X25519MLKEM768 preferred, and
//!   SPIFFE peer verification ([`verify`]).
//! - [`contexts`]: per-identity server and client TLS contexts over the
//!   certificate manager, rebuilt when a certificate is renewed.
//! - [`caclient`]: asks istiod's CA to sign, and checks what comes back.
//! - [`control_plane`] and [`grpc`]: TLS to istiod (DNS-named server
//!   certificate, bearer-token clients) and tonic over BoringSSL.
//! - [`manager`] (`src/manager/`): the certificate manager: one certificate
//!   per workload identity, fetched from a [`manager::CertificateProvider`]
//!   (urgent requests ahead of prefetches, bounded concurrency), renewed at
//!   half life with jitter, retried with capped backoff while the old
//!   certificate stays valid, and published through `watch` channels.
#![forbid(unsafe_code)]

pub mod caclient;
mod certificate;
pub mod contexts;
pub mod control_plane;
pub mod csr;
mod error;
pub mod grpc;
pub mod manager;
pub mod tls;
pub mod verify;

pub use certificate::{TrustBundle, WorkloadCertificate};
pub use error::{CertificateError, PeerError};
pub use manager::{CertificateManager, CertificateProvider};
