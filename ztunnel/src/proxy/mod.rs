//! The data path: tunnels in and out of enrolled pods.
//!
//! - [`inbound`]: the destination side of HBONE. Each accepted mTLS
//!   connection gets an [`inbound::InboundTunnels`] that knows the peer's
//!   verified identity and address; per CONNECT stream it finds the target
//!   workload, enforces "only through the waypoint" or L4 policy, opens the
//!   application connection (from the client's address; for tunnels from
//!   the waypoint, the one in its `forwarded` header) and carries the bytes.
//! - [`outbound`]: the source side. A connection captured on a pod's 15001
//!   goes to its original destination: HBONE (mTLS to the destination pod's
//!   15008, pooled HTTP/2, CONNECT with `forwarded` and `baggage`) for mesh
//!   workloads, through the waypoint when the destination has one, plain
//!   TCP otherwise.
//! - [`connections`]: the registry of open inbound connections and the
//!   reconciler that closes those a policy change no longer allows.
//! - [`metrics`]: Istio's TCP metrics and the access log.
//! - [`selfcall`]: the rule that keeps ztunnel from connecting to its own
//!   listeners.

pub mod connections;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod selfcall;

pub use connections::{ConnectionRegistry, OpenConnection, Registration, run_reconciler};
pub use inbound::{InboundTunnels, Peer, Upstream};
pub use metrics::{ConnectionLabels, Reporter, ResponseFlag, SharedMetrics, TcpMetrics};
pub use outbound::{HbonePool, OutboundProxy, PoolKey};
