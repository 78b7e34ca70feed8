//! ztunnel, the per-node zero-trust tunnel.
//!
//! Built so far:
//! - [`state`]: the proxy's store of workloads, services and L4 policies fed
//!   by delta xDS ([`state::AddressHandler`], [`state::AuthorizationHandler`]),
//!   with lookups by IP, VIP and uid, destination classification, waypoint
//!   choice, endpoint selection (health, locality, weighted round robin),
//!   the admin config dump, and a shared [`state::StateHandle`].
//! - [`policy`]: L4 authorization with Istio's semantics (DENY, then ALLOW,
//!   dry-run reported but not enforced), for new and open connections.
//! - [`proxy`]: the HBONE inbound handler (waypoint-only or L4 policy per
//!   stream, application connection, byte accounting), the outbound proxy
//!   (original destination, service/workload/waypoint routing, HBONE over
//!   pooled mTLS HTTP/2 with `forwarded` and `baggage`, passthrough), and
//!   Istio's TCP metrics and access log.
//! - [`inpod`]: the in-pod data path. Per enrolled pod, a socket thread
//!   inside its network namespace and listeners there: 15001 (outbound),
//!   15008 (HBONE: mTLS with the pod's certificate, then the inbound
//!   handler, application connection from the pod with the client's address
//!   via `IP_TRANSPARENT`) and 15006 (plaintext inbound under L4 policy).
//!   Tested end to end on a two-node namespace topology
//!   (`tests/inpod_e2e/`).
//!
//! - [`app`]: the node proxy as a process. [`app::Config`] from upstream's
//!   environment variables (`CA_ADDRESS`, `XDS_ADDRESS`, `TRUST_DOMAIN`,
//!   ...); [`app::App::start`] loads the trust bundle, connects to istiod
//!   over TLS, asks its CA for pods' certificates (impersonating them with
//!   the node's token), feeds the state from delta xDS, enrolls and removes
//!   pods as the CNI agent says over ZDS (Add/Keep/Del/SnapshotSent), and
//!   serves admin (`/config_dump`, `/logging`, 15000), metrics (15020) and
//!   readiness (`/healthz/ready`, 15021: xDS synced and every enrolled pod
//!   certified); [`app::App::shutdown`] drains. `src/main.rs` is the binary
//!   (SIGTERM/SIGINT -> 30 s drain). Tested against istiod's CA and ADS
//!   (`tests/app/`).
//!
//! Planned: the DNS proxy (15053).
#![forbid(unsafe_code)]

pub mod app;
pub mod inpod;
pub mod policy;
pub mod proxy;
pub mod state;
