//! istiod, the control plane.
//!
//! - [`source`]: where objects come from (Kubernetes watchers, or a local
//!   directory of YAML), as one stream of events.
//! - [`engine`]: applies those events and recomputes only what they touch,
//!   through [`translate`] (objects -> `istio.workload.Address` and
//!   `istio.security.Authorization`, plus status conditions).
//! - [`xds`]: the served resources and delta ADS.
//! - [`ca`]: the `istio.v1.auth.IstioCertificateService` CA.
//! - [`status`]: conditions written back under leader election.
//! - [`app`]: the process wiring them together, and its monitoring port.
#![forbid(unsafe_code)]

pub mod app;
pub mod ca;
pub mod engine;
pub mod source;
pub mod status;
pub mod translate;
pub mod xds;
