//! ztunnel, the per-node zero-trust tunnel.
//!
//! Built so far, as pure synchronous modules without sockets:
//! - [`state`]: the proxy's store of workloads, services and L4 policies fed
//!   by delta xDS ([`state::AddressHandler`], [`state::AuthorizationHandler`]),
//!   with lookups by IP, VIP and uid, destination classification, waypoint
//!   choice, endpoint selection (health, locality, weighted round robin),
//!   the admin config dump, and a shared [`state::StateHandle`].
//! - [`policy`]: L4 authorization with Istio's semantics (DENY, then ALLOW,
//!   dry-run reported but not enforced), for new and open connections.
//!
//! - [`proxy`]: the HBONE inbound handler (waypoint-only or L4 policy per
//!   stream, application connection, byte accounting) and Istio's TCP
//!   metrics and access log.
//!
//! Planned: the capture listeners (15001, 15006, 15008, 15053) inside each
//! enrolled pod's network namespace, the ZDS endpoint for the CNI agent, and
//! the proxies that use the modules above.
#![forbid(unsafe_code)]

pub mod policy;
pub mod proxy;
pub mod state;
