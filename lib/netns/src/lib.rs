//! Network namespaces for the mesh.
//!
//! - [`Netns`]: a handle on a namespace and [`Netns::run`], which runs a
//!   closure on a thread that has entered it. Sockets keep the namespace they
//!   were created in, so a listener bound there can be handed back and
//!   served from anywhere: this is how a node proxy listens inside each
//!   pod's namespace.
//! - [`Topology`]: simulated nodes and pods, each a namespace, joined by veth
//!   pairs and a bridge, with routes between pod CIDRs; used by end-to-end
//!   tests and by local mode. Everything it creates is removed on drop.
//! - [`socket`]: `SO_ORIGINAL_DST`, `SO_MARK`, `IP_TRANSPARENT`, reusable
//!   listeners, and `SOCK_SEQPACKET` unix sockets; [`fdpass`]: packets
//!   carrying file descriptors (SCM_RIGHTS).
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); [`require_root`] says so
//! plainly instead of failing half way.
// `unsafe` is denied, and allowed in one module: `fdpass`, where received
// descriptors become `OwnedFd`s.
#![deny(unsafe_code)]

pub mod fdpass;
mod netns;
pub mod socket;
mod topology;

pub use netns::{Netns, NetnsError, require_root};
pub use topology::{NodeHandle, NodeSpec, PodHandle, PodSpec, Topology, TopologyError};
