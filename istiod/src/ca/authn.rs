//! Who is calling: the bearer token in the request metadata, checked by an
//! [`Authenticator`] (Kubernetes TokenReview, or local node-agent tokens).

use futures::future::BoxFuture;
use mesh_model::Identity;
use tonic::metadata::MetadataMap;

use super::{Refusal, RefusalReason};

/// Longest bearer token we pass on to an authenticator. Projected service
/// account tokens are around 1 KiB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The pod a token is bound to (Kubernetes `authentication.kubernetes.io/pod-*`
/// extras).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's own workload identity.
    pub identity: Identity,
    /// The node the caller runs on, when the credential says so.
    pub node: Option<String>,
    /// The pod the credential is bound to, if any.
    pub pod: Option<PodRef>,
}

/// Checks a bearer token.
pub trait Authenticator: Send + Sync {
    /// The caller `token` belongs to; refusals are `InvalidToken` or
    /// `AuthenticatorUnavailable`.
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Refusal>>;
}

/// The token of `authorization: Bearer <token>`, shape-checked (not empty,
/// bounded, visible ASCII) before any authenticator sees it.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, Refusal> {
    let value = metadata
        .get("authorization")
        .ok_or_else(|| Refusal::new(RefusalReason::MissingToken, "no authorization metadata"))?;
    let value = value
        .to_str()
        .map_err(|_| Refusal::new(RefusalReason::InvalidToken, "authorization is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        Refusal::new(RefusalReason::InvalidToken, "authorization is not \"Bearer <token>\"")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::new(
            RefusalReason::InvalidToken,
            format!("authorization scheme {scheme:?}"),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Refusal::new(RefusalReason::MissingToken, "empty bearer token"));
    }
    if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::new(
            RefusalReason::InvalidToken,
            format!("malformed bearer token of {} bytes", token.len()),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn with(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", MetadataValue::try_from(value).unwrap());
        map
    }

    #[test]
    fn extracts_bearer_tokens() {
        assert_eq!(bearer_token(&with("Bearer abc.def")).unwrap(), "abc.def");
        assert_eq!(bearer_token(&with("bearer abc")).unwrap(), "abc");
    }

    #[test]
    fn refuses_missing_or_malformed() {
        let cases = [
            (MetadataMap::new(), RefusalReason::MissingToken),
            (with("Bearer "), RefusalReason::MissingToken),
            (with("Basic dXNlcjpwYXNz"), RefusalReason::InvalidToken),
            (with("abc"), RefusalReason::InvalidToken),
            (with("Bearer a b"), RefusalReason::InvalidToken),
            (
                with(&format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1))),
                RefusalReason::InvalidToken,
            ),
        ];
        for (map, want) in cases {
            assert_eq!(bearer_token(&map).unwrap_err().reason(), want, "{map:?}");
        }
    }
}
