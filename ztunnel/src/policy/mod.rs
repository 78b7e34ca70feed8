//! L4 authorization with Istio's semantics (upstream ztunnel's
//! `assert_rbac` and `rbac.rs`).
//!
//! Which policies apply to a destination workload: GLOBAL ones, NAMESPACE
//! ones of the workload's namespace, and WORKLOAD_SELECTOR ones the workload
//! lists (`ProxyState::policies_for`). Then, over the enforced (non-dry-run)
//! ones: any matching DENY denies; with no ALLOW policy the connection is
//! allowed; otherwise it is allowed only if some ALLOW matches. Before all
//! that, a bound policy that is missing or was rejected denies (fail closed;
//! upstream skips it, see `crate::state::BoundPolicies`).
//!
//! Dry-run policies never change the outcome. Each is evaluated and reported
//! in [`Decision::dry_run_findings`], and [`Decision::shadow_allowed`] says
//! what the outcome would be if they were enforced too; a difference is
//! logged at info level.
//!
//! Matching (see `matching.rs`) mirrors upstream exactly, including the
//! principal form and how a plaintext (identity-less) source behaves.

mod eval;
mod matching;

use std::fmt;
use std::net::IpAddr;

use mesh_model::{Action, Identity, Workload};

pub use matching::{matches_connection, principal_matches};

/// What authorization looks at for one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo<'a> {
    /// The peer's verified identity; `None` for plaintext.
    pub source_identity: Option<&'a Identity>,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub destination_workload: &'a Workload,
}

/// Why a connection was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A DENY policy (by key) matched.
    Denied { policy: String },
    /// ALLOW policies apply and none matched.
    NotAllowed,
    /// This ALLOW policy (by key) matched.
    Allowed { policy: String },
    /// No ALLOW policy applies (and no DENY matched).
    NoAllowPolicies,
    /// A policy bound to the workload (by key) is missing or was rejected:
    /// denied, as nothing is known of what it allows.
    Unavailable { policy: String, why: String },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied { policy } => write!(f, "denied by policy {policy}"),
            Self::NotAllowed => write!(f, "no ALLOW policy matched"),
            Self::Allowed { policy } => write!(f, "allowed by policy {policy}"),
            Self::NoAllowPolicies => write!(f, "no ALLOW policy applies"),
            Self::Unavailable { policy, why } => write!(f, "policy {policy} {why}"),
        }
    }
}

/// A dry-run policy's would-be effect on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunFinding {
    /// `<namespace>/<name>`.
    pub policy: String,
    pub action: Action,
    pub matched: bool,
}

/// The outcome of authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// One entry per applicable dry-run policy, in key order.
    pub dry_run_findings: Vec<DryRunFinding>,
    /// The outcome if the dry-run policies were enforced as well.
    pub shadow_allowed: bool,
}
