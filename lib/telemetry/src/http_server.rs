//! The accept loop and per-connection limits of the admin, metrics and
//! readiness servers (ztunnel's 15000/15020/15021, istiod's 15014).
//!
//! - Header read timeout: a client that does not finish a request head in
//!   time is disconnected. hyper starts the timer whenever it waits for a
//!   head, so it also ends a keep-alive connection idle between requests.
//! - Idle timeout: a connection on which nothing was read or written for
//!   that long is closed (a client that stops reading its response).
//! - Bounded heads: at most [`ServeLimits::max_header_bytes`] buffered and
//!   [`ServeLimits::max_headers`] headers; larger requests get 431.
//! - Accept errors (EMFILE, ENFILE, ENOBUFS...) back off, 5 ms doubling up
//!   to 1 s, and the loop keeps going; it never spins and never stops.
//!
//! upstream: istiod's monitoring server sets `ReadHeaderTimeout` and
//! `IdleTimeout`; the accept backoff is Go's `net/http` `Server.Serve`
//! rule for temporary accept errors (5 ms doubling, at most 1 s).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Limits of one HTTP/1.1 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Read buffer bound, so the largest request head (hyper's minimum is
    /// 8 KiB).
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// The delays between failed accepts.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// An accept failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        let next = self.delay.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.delay = Some(next);
        next
    }

    /// An accept succeeded: the next failure starts over.
    pub fn succeeded(&mut self) {
        self.delay = None;
    }
}

/// Accepts with `accept` forever, handing each connection to `serve`;
/// failures are logged and backed off (see [`AcceptBackoff`]).
pub async fn accept_loop<C, A, AF, S>(name: &str, mut accept: A, mut serve: S)
where
    A: FnMut() -> AF,
    AF: Future<Output = std::io::Result<C>>,
    S: FnMut(C),
{
    let mut backoff = AcceptBackoff::default();
    loop {
        match accept().await {
            Ok(conn) => {
                backoff.succeeded();
                serve(conn);
            }
            Err(e) => {
                let delay = backoff.failed();
                // Once per back-off step, not once per failure.
                tracing::warn!(server = name, error = %e, ?delay, "accept failed; backing off");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Runs `conn` until it ends or `io`'s activity has been quiet for
/// `idle` (then drops it, closing the socket). Returns `conn`'s result, or
/// `None` when it was closed for idleness.
pub async fn with_idle_timeout<F: Future>(
    activity: Arc<Activity>,
    idle: Duration,
    conn: F,
) -> Option<F::Output> {
    let watch = async {
        loop {
            let quiet = activity.quiet_for();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle.saturating_sub(quiet)).await;
        }
    };
    tokio::select! {
        out = conn => Some(out),
        () = watch => None,
    }
}

/// When a connection last read or wrote something.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// Milliseconds after `base`.
    last: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { base: Instant::now(), last: AtomicU64::new(0) })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }
}

/// An I/O object that records progress in an [`Activity`].
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let delays: Vec<u128> = (0..10).map(|_| b.failed().as_millis()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_accepts_back_off_instead_of_spinning() {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&calls);
        let looping = tokio::spawn(accept_loop(
            "test",
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async { Err::<(), _>(std::io::Error::from_raw_os_error(24)) } // EMFILE
            },
            |()| {},
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!looping.is_finished(), "the loop keeps going after errors");
        looping.abort();
        let calls = calls.load(Ordering::Relaxed);
        // 5 + 10 + 20 + 40 + 80 + 160 ms: about 7 attempts in 400 ms.
        assert!((3..=12).contains(&calls), "{calls} accepts in 400 ms");
    }
}
