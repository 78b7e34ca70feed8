//! Impersonation: a trusted node agent (ztunnel) asks for the certificate of
//! a workload on its node.
//!
//! Allowed only when all hold, as in upstream istiod's node authorizer:
//! the caller's service account is a trusted node agent; the caller's node is
//! known (from its credential, or from the pod its token is bound to, whose
//! UID and service account must still match); and a pod running the
//! requested service account is scheduled on that node.

use std::sync::Arc;

use futures::future::BoxFuture;
use mesh_model::Identity;

use super::authn::{Caller, PodRef};
use super::config::ServiceAccountRef;
use super::{Refusal, RefusalReason};

/// Which workloads run where. Kubernetes answers from Pods; local mode from
/// its own configuration.
pub trait NodeDirectory: Send + Sync {
    /// The node of the pod a caller's credential is bound to, after checking
    /// that the pod still exists with that UID and runs as the caller's
    /// service account. Refusals: `CallerNodeUnknown`, `AuthorizerUnavailable`.
    fn caller_pod_node<'a>(
        &'a self,
        caller: &'a Identity,
        pod: &'a PodRef,
    ) -> BoxFuture<'a, Result<String, Refusal>>;

    /// Whether a pod running as `workload`'s service account is on `node`.
    /// Refusal: `AuthorizerUnavailable`.
    fn runs_on<'a>(
        &'a self,
        node: &'a str,
        workload: &'a Identity,
    ) -> BoxFuture<'a, Result<bool, Refusal>>;
}

/// Decides impersonation requests.
#[derive(Clone)]
pub struct NodeAuthorizer {
    trusted: Vec<ServiceAccountRef>,
    directory: Arc<dyn NodeDirectory>,
}

impl std::fmt::Debug for NodeAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAuthorizer").field("trusted", &self.trusted).finish_non_exhaustive()
    }
}

impl NodeAuthorizer {
    pub fn new(trusted: Vec<ServiceAccountRef>, directory: Arc<dyn NodeDirectory>) -> Self {
        Self { trusted, directory }
    }

    /// Allows `caller` to obtain a certificate for `requested`, or says why not.
    pub async fn authorize(&self, caller: &Caller, requested: &Identity) -> Result<(), Refusal> {
        if !self.trusted.iter().any(|sa| sa.is(&caller.identity)) {
            return Err(Refusal::new(
                RefusalReason::NotTrustedNodeAgent,
                format!("{} may not impersonate", caller.identity),
            ));
        }
        let node = match (&caller.node, &caller.pod) {
            (Some(node), _) => node.clone(),
            (None, Some(pod)) => self.directory.caller_pod_node(&caller.identity, pod).await?,
            (None, None) => {
                return Err(Refusal::new(
                    RefusalReason::CallerNodeUnknown,
                    format!("{}'s token is bound to no pod or node", caller.identity),
                ));
            }
        };
        if self.directory.runs_on(&node, requested).await? {
            tracing::debug!(caller = %caller.identity, %requested, %node, "impersonation allowed");
            Ok(())
        } else {
            Err(Refusal::new(
                RefusalReason::WorkloadNotOnNode,
                format!("no pod of {requested} on node {node}"),
            ))
        }
    }
}
