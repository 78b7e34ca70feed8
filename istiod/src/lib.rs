//! istiod, the control plane.
//!
//! Not built yet: this crate reserves its place in the crate graph (see
//! `ARCHITECTURE.md`). It will watch Kubernetes or a local directory,
//! translate into `istio.workload.Address`, `istio.security.Authorization`
//! and waypoint resources, serve them over delta ADS and sign workload
//! certificates.
#![forbid(unsafe_code)]
