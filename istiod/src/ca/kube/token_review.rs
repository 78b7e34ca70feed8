//! Authenticating callers with the Kubernetes TokenReview API
//! (`authentication.k8s.io/v1`), audience `istio-ca`.
//!
//! The caller's identity is the token's service account
//! (`system:serviceaccount:<ns>:<sa>`). Pod-bound tokens also name the pod
//! (`authentication.kubernetes.io/pod-name`, `pod-uid`) and, since Kubernetes
//! 1.32, the node (`authentication.kubernetes.io/node-name`); the node
//! authorizer uses them.

use std::collections::BTreeMap;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use kube::api::{Api, PostParams};
use mesh_model::Identity;

use crate::ca::authn::{Authenticator, Caller, PodRef};
use crate::ca::{Refusal, RefusalReason, TOKEN_AUDIENCE};

const SA_PREFIX: &str = "system:serviceaccount:";
const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// Checks tokens with the API server.
#[derive(Clone)]
pub struct KubeTokenAuthenticator {
    client: kube::Client,
    trust_domain: String,
    audience: String,
}

impl std::fmt::Debug for KubeTokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTokenAuthenticator")
            .field("trust_domain", &self.trust_domain)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn invalid(detail: impl Into<String>) -> Refusal {
    Refusal::new(RefusalReason::InvalidToken, detail)
}

impl KubeTokenAuthenticator {
    /// Callers get identities in `trust_domain`; tokens must carry audience
    /// `istio-ca`.
    pub fn new(client: kube::Client, trust_domain: impl Into<String>) -> Self {
        Self { client, trust_domain: trust_domain.into(), audience: TOKEN_AUDIENCE.to_owned() }
    }

    async fn review(&self, token: &str) -> Result<Caller, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = api.create(&PostParams::default(), &review).await.map_err(|e| {
            Refusal::new(RefusalReason::AuthenticatorUnavailable, format!("TokenReview: {e}"))
        })?;
        let status = reviewed.status.ok_or_else(|| invalid("TokenReview returned no status"))?;
        if status.authenticated != Some(true) {
            return Err(invalid(format!(
                "TokenReview: not authenticated: {}",
                status.error.unwrap_or_default()
            )));
        }
        let audiences = status.audiences.unwrap_or_default();
        if !audiences.contains(&self.audience) {
            return Err(invalid(format!("token audiences {audiences:?} lack {:?}", self.audience)));
        }
        let user = status.user.ok_or_else(|| invalid("TokenReview returned no user"))?;
        caller_from_user(&user, &self.trust_domain)
    }
}

fn single<'a>(extra: &'a BTreeMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    match extra.get(key).map(Vec::as_slice) {
        Some([value]) if !value.is_empty() => Some(value.as_str()),
        _ => None,
    }
}

/// The caller described by a reviewed token's user.
fn caller_from_user(user: &UserInfo, trust_domain: &str) -> Result<Caller, Refusal> {
    let username = user.username.as_deref().unwrap_or_default();
    let (namespace, account) = username
        .strip_prefix(SA_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| invalid(format!("{username:?} is not a service account")))?;
    let identity = Identity::new(trust_domain, namespace, account)
        .map_err(|e| invalid(format!("{username:?}: {e}")))?;
    let empty = BTreeMap::new();
    let extra = user.extra.as_ref().unwrap_or(&empty);
    let pod = match (single(extra, EXTRA_POD_NAME), single(extra, EXTRA_POD_UID)) {
        (Some(name), Some(uid)) => Some(PodRef { name: name.to_owned(), uid: uid.to_owned() }),
        _ => None,
    };
    Ok(Caller { identity, node: single(extra, EXTRA_NODE_NAME).map(str::to_owned), pod })
}

impl Authenticator for KubeTokenAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Refusal>> {
        self.review(token).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, extra: &[(&str, &str)]) -> UserInfo {
        UserInfo {
            username: Some(name.to_owned()),
            extra: Some(
                extra.iter().map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()])).collect(),
            ),
            ..UserInfo::default()
        }
    }

    #[test]
    fn service_account_users_become_callers() {
        let caller = caller_from_user(
            &user(
                "system:serviceaccount:istio-system:ztunnel",
                &[
                    (EXTRA_POD_NAME, "ztunnel-x"),
                    (EXTRA_POD_UID, "u-1"),
                    (EXTRA_NODE_NAME, "node-1"),
                ],
            ),
            "cluster.local",
        )
        .unwrap();
        assert_eq!(
            caller.identity.to_string(),
            "spiffe://cluster.local/ns/istio-system/sa/ztunnel"
        );
        assert_eq!(caller.node.as_deref(), Some("node-1"));
        assert_eq!(caller.pod, Some(PodRef { name: "ztunnel-x".into(), uid: "u-1".into() }));
    }

    #[test]
    fn other_users_are_refused() {
        for name in ["admin", "system:node:n1", "system:serviceaccount:ns", ""] {
            let refusal = caller_from_user(&user(name, &[]), "cluster.local").unwrap_err();
            assert_eq!(refusal.reason(), RefusalReason::InvalidToken, "{name}");
        }
    }
}
