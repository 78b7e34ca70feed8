//! [`NodeDirectory`] over the Kubernetes API: the caller's pod and the pods
//! scheduled on a node, read live (only trusted node agents get this far, and
//! only once per impersonated certificate).

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use mesh_model::Identity;

use crate::ca::authn::PodRef;
use crate::ca::node_authz::NodeDirectory;
use crate::ca::{Refusal, RefusalReason};

/// Pods per page when listing a node's pods.
const PAGE: u32 = 500;

/// Answers placement questions from Pods.
#[derive(Clone)]
pub struct KubePodDirectory {
    client: kube::Client,
}

impl std::fmt::Debug for KubePodDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePodDirectory").finish_non_exhaustive()
    }
}

fn unavailable(e: &kube::Error) -> Refusal {
    Refusal::new(RefusalReason::AuthorizerUnavailable, format!("pod lookup: {e}"))
}

fn unknown(detail: String) -> Refusal {
    Refusal::new(RefusalReason::CallerNodeUnknown, detail)
}

/// Node names are DNS subdomains; anything else never matches (and never
/// reaches a field selector).
fn plain_node_name(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 253
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn is_terminated(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

impl KubePodDirectory {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    async fn pod_node(&self, caller: &Identity, pod_ref: &PodRef) -> Result<String, Refusal> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), caller.namespace());
        let pod = api
            .get_opt(&pod_ref.name)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| unknown(format!("caller pod {} not found", pod_ref.name)))?;
        if pod.metadata.uid.as_deref() != Some(pod_ref.uid.as_str()) {
            return Err(unknown(format!(
                "caller pod {} has UID {:?}, token names {}",
                pod_ref.name, pod.metadata.uid, pod_ref.uid
            )));
        }
        let spec = pod.spec.unwrap_or_default();
        if spec.service_account_name.as_deref() != Some(caller.service_account()) {
            return Err(unknown(format!(
                "caller pod {} runs as {:?}, not {}",
                pod_ref.name,
                spec.service_account_name,
                caller.service_account()
            )));
        }
        spec.node_name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| unknown(format!("caller pod {} is not scheduled", pod_ref.name)))
    }

    async fn any_on_node(&self, node: &str, workload: &Identity) -> Result<bool, Refusal> {
        if !plain_node_name(node) {
            return Ok(false);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), workload.namespace());
        let mut params = ListParams::default().fields(&format!("spec.nodeName={node}")).limit(PAGE);
        loop {
            let page = api.list(&params).await.map_err(|e| unavailable(&e))?;
            let found = page.items.iter().any(|pod| {
                !is_terminated(pod)
                    && pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref())
                        == Some(workload.service_account())
            });
            if found {
                return Ok(true);
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(false),
            }
        }
    }
}

impl NodeDirectory for KubePodDirectory {
    fn caller_pod_node<'a>(
        &'a self,
        caller: &'a Identity,
        pod: &'a PodRef,
    ) -> BoxFuture<'a, Result<String, Refusal>> {
        self.pod_node(caller, pod).boxed()
    }

    fn runs_on<'a>(
        &'a self,
        node: &'a str,
        workload: &'a Identity,
    ) -> BoxFuture<'a, Result<bool, Refusal>> {
        self.any_on_node(node, workload).boxed()
    }
}
