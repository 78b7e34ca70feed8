//! ztunnel, the per-node zero-trust tunnel.
//!
//! Built so far:
//! - [`state`]: the proxy's store of workloads, services and L4 policies fed
//!   by delta xDS ([`state::AddressHandler`], [`state::AuthorizationHandler`]),
//!   with lookups by IP, VIP and uid, destination classification, waypoint
//!   choice, endpoint selection (health, locality, weighted round robin),
//!   the admin config dump, and a shared [`state::StateHandle`] whose
//!   [`state::StateHandle::changes`] watch bumps on every write.
//! - [`policy`]: L4 authorization with Istio's semantics (DENY, then ALLOW,
//!   dry-run reported but not enforced), for new and open connections.
//! - [`proxy`]: the HBONE inbound handler (waypoint-only or L4 policy per
//!   stream, application connection, byte accounting), the outbound proxy
//!   (original destination, service/workload/waypoint routing, HBONE over
//!   pooled mTLS HTTP/2 with `forwarded` and `baggage`, passthrough), and
//!   Istio's TCP metrics and access log. Policy changes reach open
//!   connections: [`proxy::ConnectionRegistry`] tracks each inbound
//!   connection admitted under L4 policy (HBONE streams and 15006) with
//!   the facts authorization needs and a close signal the proxy loop
//!   selects on; [`proxy::run_reconciler`] re-checks them with
//!   `still_allowed` on every state change and closes the denied ones (a
//!   destination that vanished too), with an access-log line
//!   (`error="policy changed"`) and
//!   `ztunnel_connections_closed_by_policy_total`.
//! - [`inpod`]: the in-pod data path. Per enrolled pod, a socket thread
//!   inside its network namespace and listeners there: 15001 (outbound),
//!   15008 (HBONE: mTLS with the pod's certificate, then the inbound
//!   handler, application connection from the pod with the client's address
//!   via `IP_TRANSPARENT`) and 15006 (plaintext inbound under L4 policy).
//!   Tested end to end on a two-node namespace topology
//!   (`tests/inpod_e2e/`), including a DENY closing an open connection
//!   and PeerAuthentication STRICT (the DENY `not_principals: [presence]`
//!   istiod synthesizes) rejecting plaintext on 15006 while mTLS passes.
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
//!   (`tests/app/`), including new connections of an enrolled pod after
//!   istiod becomes unreachable (ztunnel serves from its last good state).
//!
//! - [`dns`]: the DNS proxy on 15053 (UDP and TCP) in each pod: A/AAAA
//!   for Services (search-path short forms), headless services and
//!   ServiceEntry hosts (wildcards too) from the state, NXDOMAIN for
//!   unknown mesh names, everything else forwarded from the pod to the
//!   upstream resolvers (TCP retry on truncation, timeout, bounded
//!   concurrency, TTL cache), with `istio_dns_*` metrics.
#![forbid(unsafe_code)]

pub mod app;
pub mod dns;
pub mod inpod;
pub mod policy;
pub mod proxy;
pub mod state;
