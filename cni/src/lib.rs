//! Building blocks of the CNI node agent.
//!
//! - [`rules`]: the in-pod redirection rule set (upstream Istio's in-pod
//!   REDIRECT rules, our chain names), rendered as `iptables-restore` input.
//! - [`iptables`] and [`nftables`]: applying and removing it inside a pod's
//!   namespace, with `iptables-restore` or natively with `nft -f` (table
//!   `inet mesh`); [`Backend`] picks one.
//! - [`routes`]: the policy routing (`fwmark 0x111 -> table 100`, local
//!   default route) that delivers replies to ztunnel's transparent sockets
//!   in the pod; applied and removed with the rules by both backends.
//! - [`zds`]: the ZDS hand-off of pods (and their netns fds) to the node
//!   proxy, both the proxy's server and the agent's client.
//! - [`agent`]: the node agent that keeps the node's enrolled pods captured
//!   and handed to ztunnel; [`plugin`]: the chained CNI plugin that reports
//!   each pod sandbox to it ([`report`]: their socket protocol).
#![forbid(unsafe_code)]

pub mod agent;
mod exec;
pub mod iptables;
pub mod nftables;
pub mod plugin;
#[cfg(feature = "kube")]
mod plugin_kube;
pub mod report;
pub mod routes;
pub mod rules;
pub mod zds;

use mesh_netns::Netns;

pub use exec::CommandError;
pub use rules::{CaptureConfig, DNS_CAPTURE_ANNOTATION, IpFamily, RuleSet};

/// Which tool installs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// `iptables-restore` (whichever backend the host's iptables uses).
    #[default]
    Iptables,
    /// Native nftables, table `inet mesh`.
    Nftables,
}

impl Backend {
    /// Installs (or refreshes) the capture rules and the policy routing
    /// ([`routes`]) in `netns`. Idempotent.
    pub fn apply(self, netns: &Netns, cfg: &CaptureConfig) -> Result<(), CommandError> {
        match self {
            Self::Iptables => IpFamily::wanted(cfg).iter().try_for_each(|family| {
                iptables::apply(netns, &RuleSet::for_family(cfg, *family))
            })?,
            Self::Nftables => nftables::apply(netns, cfg)?,
        }
        routes::apply(netns, cfg)
    }

    /// Removes every trace of the capture rules and the policy routing
    /// (for `cfg`'s marks) from `netns`.
    pub fn remove(self, netns: &Netns, cfg: &CaptureConfig) -> Result<(), CommandError> {
        match self {
            Self::Iptables => iptables::remove(netns)?,
            Self::Nftables => nftables::remove(netns)?,
        }
        routes::remove(netns, cfg)
    }

    /// Whether any of our rules are installed in `netns`.
    pub fn installed(self, netns: &Netns) -> Result<bool, CommandError> {
        match self {
            Self::Iptables => iptables::installed(netns),
            Self::Nftables => nftables::save(netns).map(|s| nftables::has_trace(&s)),
        }
    }
}
