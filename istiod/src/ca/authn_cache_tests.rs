use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mesh_model::Identity;

use super::*;

/// Accepts `good*` tokens, rejects the rest, and counts reviews.
#[derive(Default)]
struct Counting {
    reviews: Arc<AtomicUsize>,
    unavailable: bool,
}

impl Authenticator for Counting {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Refusal>> {
        self.reviews.fetch_add(1, Ordering::SeqCst);
        let result = if self.unavailable {
            Err(Refusal::new(RefusalReason::AuthenticatorUnavailable, "down"))
        } else if token.starts_with("good") {
            Ok(Caller {
                identity: Identity::new("cluster.local", "ns", "sa").unwrap(),
                node: None,
                pod: None,
            })
        } else {
            Err(Refusal::new(RefusalReason::InvalidToken, "no"))
        };
        async move { result }.boxed()
    }
}

fn b64url(bytes: &[u8]) -> String {
    boring::base64::encode_block(bytes)
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect()
}

/// A JWT-shaped `good` token expiring `secs` from now.
fn jwt_expiring_in(secs: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({ "exp": now + secs, "sub": "x" });
    format!("good.{}.sig", b64url(claims.to_string().as_bytes()))
}

#[tokio::test(start_paused = true)]
async fn a_second_stream_with_the_same_token_is_not_reviewed_again() {
    let inner = Counting::default();
    let reviews = Arc::clone(&inner.reviews);
    let cache = CachingAuthenticator::new(inner, CacheLimits::default());
    let token = jwt_expiring_in(3600);
    cache.authenticate(&token).await.unwrap();
    cache.authenticate(&token).await.unwrap();
    assert_eq!(reviews.load(Ordering::SeqCst), 1);
    // Another token is its own review.
    cache.authenticate("good-other").await.unwrap();
    assert_eq!(reviews.load(Ordering::SeqCst), 2);
    // After the max TTL, the token is reviewed again.
    tokio::time::advance(CacheLimits::default().max_ttl + Duration::from_secs(1)).await;
    cache.authenticate(&token).await.unwrap();
    assert_eq!(reviews.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn an_accepted_token_is_cached_no_longer_than_its_expiry() {
    let inner = Counting::default();
    let reviews = Arc::clone(&inner.reviews);
    let cache = CachingAuthenticator::new(inner, CacheLimits::default());
    let token = jwt_expiring_in(5);
    cache.authenticate(&token).await.unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    cache.authenticate(&token).await.unwrap();
    assert_eq!(reviews.load(Ordering::SeqCst), 2, "reviewed again after exp");
}

#[tokio::test(start_paused = true)]
async fn rejections_are_cached_briefly_and_outages_not_at_all() {
    let inner = Counting::default();
    let reviews = Arc::clone(&inner.reviews);
    let cache = CachingAuthenticator::new(inner, CacheLimits::default());
    assert!(cache.authenticate("bad").await.is_err());
    assert!(cache.authenticate("bad").await.is_err());
    assert_eq!(reviews.load(Ordering::SeqCst), 1);
    tokio::time::advance(CacheLimits::default().negative_ttl + Duration::from_secs(1)).await;
    assert!(cache.authenticate("bad").await.is_err());
    assert_eq!(reviews.load(Ordering::SeqCst), 2);

    let down = Counting { unavailable: true, ..Counting::default() };
    let reviews = Arc::clone(&down.reviews);
    let cache = CachingAuthenticator::new(down, CacheLimits::default());
    for _ in 0..3 {
        let refusal = cache.authenticate("good").await.unwrap_err();
        assert_eq!(refusal.reason(), RefusalReason::AuthenticatorUnavailable);
    }
    assert_eq!(reviews.load(Ordering::SeqCst), 3);
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded() {
    let limits = CacheLimits { max_entries: 8, ..CacheLimits::default() };
    let cache = CachingAuthenticator::new(Counting::default(), limits);
    for i in 0..100 {
        cache.authenticate(&format!("good-{i}")).await.unwrap();
        assert!(cache.len() <= 8, "{}", cache.len());
    }
    assert_eq!(cache.len(), 8);
}

#[test]
fn expiry_is_read_from_the_jwt_payload() {
    let token = jwt_expiring_in(100);
    let exp = token_expiry(&token).unwrap();
    let left = exp.duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(90) && left <= Duration::from_secs(100), "{left:?}");
    assert_eq!(token_expiry("opaque-token"), None);
    assert_eq!(token_expiry("a.!!!.c"), None);
}
