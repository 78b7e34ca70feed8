//! istiod, the control plane.
//!
//! Built so far: the certificate authority ([`ca`]), which signs workload
//! certificates over `istio.v1.auth.IstioCertificateService`. Planned (see
//! `ARCHITECTURE.md`): watching Kubernetes or a local directory, translating
//! into `istio.workload.Address`, `istio.security.Authorization` and waypoint
//! resources, and serving them over delta ADS.
#![forbid(unsafe_code)]

pub mod ca;
pub mod translate;
