//! istiod, the control plane.
//!
//! Built so far: the certificate authority ([`ca`]), which signs workload
//! certificates over `istio.v1.auth.IstioCertificateService`, and the
//! translation layer ([`translate`]), which turns Kubernetes and Istio
//! objects into `istio.workload.Address` and `istio.security.Authorization`
//! resources, and [`xds`], which serves the latest translation over delta
//! ADS. Planned (see `ARCHITECTURE.md`): watching Kubernetes or a local
//! directory, per-proxy scoping, waypoint resources, and the binary.
#![forbid(unsafe_code)]

pub mod app;
pub mod ca;
pub mod engine;
pub mod source;
pub mod status;
pub mod translate;
pub mod xds;
