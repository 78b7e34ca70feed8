//! Accept loops that survive floods and resource exhaustion.
//!
//! [`AcceptLoop::next`] never returns an error: a failed `accept` either
//! concerns one connection that is already gone (aborted or reset before
//! it was accepted, an interrupted call), which is retried at once, or the
//! process or kernel is out of something (EMFILE, ENFILE, ENOBUFS, ENOMEM,
//! or anything unexpected), which is retried after a delay that doubles
//! from 10 ms up to 1 s and resets on the next success. A loop therefore
//! neither spins on a full descriptor table nor stops for good; it logs
//! the first error of a streak and a summary when it recovers, not every
//! attempt.
//!
//! With a [`ConnectionLimit`], each accepted connection takes a slot that
//! its [`Permit`] frees when dropped; when every slot is taken the loop
//! stops accepting until one is freed (at most the one connection just
//! accepted waits, the rest stay in the kernel's backlog), which pushes
//! back on clients instead of spending descriptors and memory on them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Something that accepts connections (a listener, or a fake in tests).
pub trait Acceptor: Send {
    type Conn: Send;

    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Acceptor for TcpListener {
    type Conn = (TcpStream, SocketAddr);

    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send {
        TcpListener::accept(self)
    }
}

/// Capped exponential delay between failed accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// 10 ms doubling to 1 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The delay before the next attempt after a failure.
    pub fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Whether a failed accept concerned only a connection that is already
/// gone, so the next accept can follow at once.
pub fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// A cap on connections open at once, shared by any number of loops.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self { slots: Arc::new(Semaphore::new(max)), max }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections holding a slot now.
    pub fn in_use(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> Permit {
        // The semaphore is never closed, so acquiring only waits.
        Permit { _slot: Arc::clone(&self.slots).acquire_owned().await.ok() }
    }
}

/// A connection's slot under a [`ConnectionLimit`]; dropping it frees the
/// slot.
#[derive(Debug)]
pub struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Permit {
    /// A permit of no limit.
    pub fn unlimited() -> Self {
        Self { _slot: None }
    }
}

/// An accept loop over `A`: see the module docs.
#[derive(Debug)]
pub struct AcceptLoop<A> {
    acceptor: A,
    name: &'static str,
    backoff: Backoff,
    limit: Option<ConnectionLimit>,
}

impl<A: Acceptor> AcceptLoop<A> {
    /// `name` says which listener in logs.
    pub fn new(acceptor: A, name: &'static str) -> Self {
        Self { acceptor, name, backoff: Backoff::default(), limit: None }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Connections this loop accepts take a slot of `limit`.
    pub fn with_limit(mut self, limit: ConnectionLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The next connection and its slot; waits (without accepting more)
    /// while the limit is full, and retries failed accepts forever.
    pub async fn next(&mut self) -> (A::Conn, Permit) {
        let mut failures: u64 = 0;
        let conn = loop {
            match self.acceptor.accept().await {
                Ok(conn) => break conn,
                Err(e) if is_per_connection(&e) => {
                    tracing::debug!(listener = self.name, error = %e, "accept: connection gone");
                }
                Err(e) => {
                    failures += 1;
                    let delay = self.backoff.failed();
                    if failures == 1 {
                        tracing::warn!(
                            listener = self.name,
                            error = %e,
                            retry_in = ?delay,
                            "accept failed; backing off"
                        );
                    } else {
                        tracing::debug!(listener = self.name, error = %e, retry_in = ?delay, "accept failed");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        };
        if failures > 0 {
            tracing::warn!(listener = self.name, failures, "accept recovered");
        }
        self.backoff.reset();
        let permit = match &self.limit {
            Some(limit) => {
                if limit.slots.available_permits() == 0 {
                    tracing::debug!(
                        listener = self.name,
                        max = limit.max,
                        "connection limit reached; accepting paused"
                    );
                }
                limit.acquire().await
            }
            None => Permit::unlimited(),
        };
        (conn, permit)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Hands out scripted results; `Ok(n)` is connection `n`. Records the
    /// (paused) time of every attempt.
    struct Script {
        results: VecDeque<io::Result<u32>>,
        attempts: Vec<tokio::time::Instant>,
    }

    impl Acceptor for Script {
        type Conn = u32;

        fn accept(&mut self) -> impl Future<Output = io::Result<u32>> + Send {
            self.attempts.push(tokio::time::Instant::now());
            let next = self.results.pop_front();
            async move {
                match next {
                    Some(result) => result,
                    None => std::future::pending().await,
                }
            }
        }
    }

    // Linux errno values, as the kernel reports them from accept(2).
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;

    #[tokio::test(start_paused = true)]
    async fn exhaustion_backs_off_doubling_to_a_cap_and_resets_on_success() {
        let mut results: VecDeque<io::Result<u32>> = VecDeque::new();
        for errno in [EMFILE, ENFILE, ENOBUFS, ENOMEM, EMFILE, EMFILE, EMFILE, EMFILE, EMFILE] {
            results.push_back(Err(io::Error::from_raw_os_error(errno)));
        }
        results.push_back(Ok(1));
        results.push_back(Err(io::Error::from_raw_os_error(EMFILE)));
        results.push_back(Ok(2));
        let script = Script { results, attempts: Vec::new() };
        let mut accept = AcceptLoop::new(script, "test");
        let start = tokio::time::Instant::now();
        assert_eq!(accept.next().await.0, 1, "the loop outlives the errors");
        assert_eq!(accept.next().await.0, 2);
        let gaps: Vec<u128> = accept
            .acceptor
            .attempts
            .windows(2)
            .map(|w| w.get(1).zip(w.first()).map_or(0, |(b, a)| (*b - *a).as_millis()))
            .collect();
        // 10 ms doubling, capped at 1 s; after a success it starts over.
        assert_eq!(gaps, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 0, 10]);
        assert_eq!(start.elapsed(), Duration::from_millis(3280));
    }

    #[tokio::test(start_paused = true)]
    async fn per_connection_errors_are_retried_at_once() {
        let results = VecDeque::from([
            Err(io::Error::from(io::ErrorKind::ConnectionAborted)),
            Err(io::Error::from(io::ErrorKind::ConnectionReset)),
            Ok(7),
        ]);
        let mut accept = AcceptLoop::new(Script { results, attempts: Vec::new() }, "test");
        let start = tokio::time::Instant::now();
        assert_eq!(accept.next().await.0, 7);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_full_limit_pauses_accepting_until_a_slot_frees() {
        let results = VecDeque::from([Ok(1), Ok(2), Ok(3)]);
        let limit = ConnectionLimit::new(2);
        let mut accept = AcceptLoop::new(Script { results, attempts: Vec::new() }, "test")
            .with_limit(limit.clone());
        let (_, first) = accept.next().await;
        let (_, second) = accept.next().await;
        assert_eq!(limit.in_use(), 2);
        let third = tokio::spawn(async move { accept.next().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "the third waits while two are open");
        drop(first);
        let (conn, _third) = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("served once a slot frees")
            .expect("task");
        assert_eq!(conn, 3);
        assert_eq!(limit.in_use(), 2);
        drop(second);
        assert_eq!(limit.in_use(), 1);
    }
}
