//! The data path: tunnels in and out of enrolled pods.
//!
//! - [`inbound`]: the destination side of HBONE. Each accepted mTLS
//!   connection gets an [`inbound::InboundTunnels`] that knows the peer's
//!   verified identity and address; per CONNECT stream it finds the target
//!   workload, enforces "only through the waypoint" or L4 policy, opens the
//!   application connection and carries the bytes.
//! - [`metrics`]: Istio's TCP metrics and the access log.

pub mod inbound;
pub mod metrics;

pub use inbound::{InboundTunnels, Peer, Upstream};
pub use metrics::{ConnectionLabels, TcpMetrics};
