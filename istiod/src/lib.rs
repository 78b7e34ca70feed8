//! istiod, the control plane.
//!
//! Built so far: the certificate authority ([`ca`]), which signs workload
//! certificates over `istio.v1.auth.IstioCertificateService`, and the
//! translation layer ([`translate`]), which turns Kubernetes and Istio
//! objects into `istio.workload.Address` and `istio.security.Authorization`
//! resources. Planned (see `ARCHITECTURE.md`): watching Kubernetes or a local
//! directory, waypoint resources, and serving them over delta ADS.
#![forbid(unsafe_code)]

pub mod ca;
pub mod translate;
