//! Building blocks of the CNI node agent.
//!
//! - [`rules`]: the in-pod redirection rule set (upstream Istio's in-pod
//!   REDIRECT rules, our chain names), rendered as `iptables-restore` input.
//! - [`iptables`]: applying and removing it inside a pod's namespace.
//! - [`zds`]: the ZDS hand-off of pods (and their netns fds) to the node
//!   proxy, both the proxy's server and the agent's client.
#![forbid(unsafe_code)]

pub mod iptables;
pub mod rules;
pub mod zds;

pub use rules::{CaptureConfig, RuleSet};
