//! A bounded cache in front of an [`Authenticator`]: a client that opens
//! many streams with one token costs one review, not one per stream.
//!
//! upstream: Kubernetes' cached token authenticator
//! (`k8s.io/apiserver/pkg/authentication/token/cache`) keys results by a
//! hash of the token, keeps successes for a TTL and failures for a shorter
//! one. Here:
//! - the key is the SHA-256 of the token; the token itself is never kept;
//! - an accepted token is remembered until the earlier of its own `exp`
//!   (read from the JWT payload, only to bound the cache: the review
//!   decided validity) and [`CacheLimits::max_ttl`];
//! - a token the reviewer rejected is remembered for
//!   [`CacheLimits::negative_ttl`]; an unavailable reviewer is never cached;
//! - at most [`CacheLimits::max_entries`]; when full, expired entries go
//!   first, then the ones closest to expiry.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::authn::{Authenticator, Caller};
use super::{Refusal, RefusalReason};

/// How long and how much the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Longest an accepted token is trusted without a new review.
    pub max_ttl: Duration,
    /// How long a rejected token is refused without a new review.
    pub negative_ttl: Duration,
    pub max_entries: usize,
}

impl Default for CacheLimits {
    /// upstream: kube-apiserver's webhook token cache keeps results 2 min
    /// (`--authentication-token-webhook-cache-ttl`); failures 10 s.
    fn default() -> Self {
        Self {
            max_ttl: Duration::from_secs(120),
            negative_ttl: Duration::from_secs(10),
            max_entries: 10_000,
        }
    }
}

type TokenHash = [u8; 32];

#[derive(Debug)]
struct Entry {
    result: Result<Caller, Refusal>,
    until: Instant,
}

/// Remembers `inner`'s verdicts by token hash.
pub struct CachingAuthenticator<A> {
    inner: A,
    limits: CacheLimits,
    entries: Mutex<HashMap<TokenHash, Entry>>,
}

impl<A> std::fmt::Debug for CachingAuthenticator<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingAuthenticator").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl<A: Authenticator> CachingAuthenticator<A> {
    pub fn new(inner: A, limits: CacheLimits) -> Self {
        Self { inner, limits, entries: Mutex::default() }
    }

    /// Number of remembered verdicts (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cached(&self, key: &TokenHash) -> Option<Result<Caller, Refusal>> {
        let mut entries = self.entries();
        match entries.get(key) {
            Some(entry) if entry.until > Instant::now() => Some(entry.result.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// How long `result` for `token` may be remembered; `None`: not at all.
    fn ttl(&self, token: &str, result: &Result<Caller, Refusal>) -> Option<Duration> {
        let ttl = match result {
            Ok(_) => match token_expiry(token) {
                Some(exp) => {
                    let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
                    left.min(self.limits.max_ttl)
                }
                None => self.limits.max_ttl,
            },
            Err(refusal) if refusal.reason() == RefusalReason::InvalidToken => {
                self.limits.negative_ttl
            }
            // The reviewer was unreachable: ask again next time.
            Err(_) => return None,
        };
        (!ttl.is_zero()).then_some(ttl)
    }

    fn remember(&self, key: TokenHash, result: Result<Caller, Refusal>, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.entries();
        if entries.len() >= self.limits.max_entries && !entries.contains_key(&key) {
            entries.retain(|_, e| e.until > now);
            while entries.len() >= self.limits.max_entries {
                let soonest = entries.iter().min_by_key(|(_, e)| e.until).map(|(k, _)| *k);
                match soonest {
                    Some(k) => entries.remove(&k),
                    None => break,
                };
            }
        }
        if self.limits.max_entries > 0 {
            entries.insert(key, Entry { result, until: now + ttl });
        }
    }

    async fn authenticate_cached(&self, token: &str) -> Result<Caller, Refusal> {
        let key = boring::sha::sha256(token.as_bytes());
        if let Some(result) = self.cached(&key) {
            return result;
        }
        let result = self.inner.authenticate(token).await;
        if let Some(ttl) = self.ttl(token, &result) {
            self.remember(key, result.clone(), ttl);
        }
        result
    }
}

impl<A: Authenticator> Authenticator for CachingAuthenticator<A> {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Refusal>> {
        self.authenticate_cached(token).boxed()
    }
}

/// The `exp` claim of a JWT, unverified; `None` when the token is not a
/// JWT or has none.
fn token_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let mut standard: String = payload
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !standard.len().is_multiple_of(4) {
        standard.push('=');
    }
    let bytes = boring::base64::decode_block(&standard).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

#[cfg(test)]
#[path = "authn_cache_tests.rs"]
mod tests;
