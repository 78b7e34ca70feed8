//! HTTP/2 keep-alive: a PING every interval; a PONG that takes longer than
//! the timeout (or a connection that can no longer carry one) ends the
//! connection.

use std::time::Duration;

/// Why the keep-alive gave up on a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeepaliveError {
    #[error("no PONG within {0:?}")]
    Timeout(Duration),
    #[error("PING failed: {0}")]
    Failed(String),
}

/// Pings until the peer stops answering in time; returns why. Never
/// returns while the peer answers.
pub(crate) async fn run(
    mut ping_pong: h2::PingPong,
    interval: Duration,
    timeout: Duration,
) -> KeepaliveError {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return KeepaliveError::Failed(e.to_string()),
            Err(_) => return KeepaliveError::Timeout(timeout),
        }
    }
}

/// Resolves with the keep-alive's failure, or never when there is no
/// keep-alive (h2 hands out one `PingPong` per connection).
pub(crate) async fn failure(
    ping_pong: Option<h2::PingPong>,
    interval: Duration,
    timeout: Duration,
) -> KeepaliveError {
    match ping_pong {
        Some(p) => run(p, interval, timeout).await,
        None => std::future::pending().await,
    }
}
