//! The connecting side of HBONE: CONNECT streams over HTTP/2 connections,
//! shared through a pool.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::{H2Settings, H2Stream};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("dialling the peer: {0}")]
    Dial(#[source] std::io::Error),
    #[error("HTTP/2 handshake: {0}")]
    Handshake(#[source] h2::Error),
    #[error("HTTP/2 handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    #[error("no CONNECT response within {0:?}")]
    ResponseTimeout(Duration),
    #[error("HTTP/2: {0}")]
    H2(#[source] h2::Error),
    #[error("invalid CONNECT request: {0}")]
    Request(String),
    /// 401: the destination's policy refused us.
    #[error("denied by the destination (401)")]
    Denied,
    /// 503: the destination has no such target or could not reach it.
    #[error("destination unavailable (503)")]
    Unavailable,
    #[error("unexpected status {0}")]
    Status(StatusCode),
}

/// Counts a stream as active on its connection while alive.
struct ActiveStream {
    active: Arc<AtomicUsize>,
    last_used: Arc<AtomicU64>,
    epoch: Instant,
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.last_used.store(millis_since(self.epoch), Ordering::Release);
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One HTTP/2 connection to a peer's HBONE port.
#[derive(Debug)]
pub struct Connection {
    send: h2::client::SendRequest<Bytes>,
    active: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
    last_used: Arc<AtomicU64>,
    epoch: Instant,
    max_streams: usize,
    request_timeout: Duration,
}

impl Connection {
    /// HTTP/2 handshake on `io` (already TLS-wrapped), bounded by the
    /// settings' handshake timeout; the connection is then driven by a
    /// background task, with a keep-alive PING, until the peer or the last
    /// user closes it or a PONG is late.
    pub async fn handshake<IO>(io: IO, settings: H2Settings) -> Result<Self, ConnectError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = h2::client::Builder::new()
            .initial_window_size(settings.stream_window)
            .initial_connection_window_size(settings.connection_window)
            .max_frame_size(settings.max_frame_size)
            .max_header_list_size(settings.max_header_list_size)
            .handshake::<_, Bytes>(io);
        let (send, mut driver) = tokio::time::timeout(settings.handshake_timeout, handshake)
            .await
            .map_err(|_| ConnectError::HandshakeTimeout(settings.handshake_timeout))?
            .map_err(ConnectError::Handshake)?;
        let closed = Arc::new(AtomicBool::new(false));
        let on_close = Arc::clone(&closed);
        let ping_pong = driver.ping_pong();
        tokio::spawn(async move {
            let keepalive = crate::keepalive::failure(
                ping_pong,
                settings.keepalive_interval,
                settings.keepalive_timeout,
            );
            tokio::select! {
                ended = &mut driver => if let Err(e) = ended {
                    tracing::debug!(error = %e, "HBONE connection ended");
                },
                failure = keepalive => {
                    tracing::debug!(%failure, "HBONE keep-alive failed; closing the connection");
                }
            }
            on_close.store(true, Ordering::Release);
        });
        let epoch = Instant::now();
        Ok(Self {
            send,
            active: Arc::default(),
            closed,
            last_used: Arc::default(),
            epoch,
            max_streams: usize::try_from(settings.max_streams).unwrap_or(usize::MAX),
            request_timeout: settings.request_timeout,
        })
    }

    /// Opens a tunnel to `target` with extra request `headers`.
    pub async fn connect(
        &self,
        target: SocketAddr,
        headers: HeaderMap,
    ) -> Result<H2Stream, ConnectError> {
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .uri(target.to_string())
            .body(())
            .map_err(|e| ConnectError::Request(e.to_string()))?;
        *request.headers_mut() = headers;
        self.active.fetch_add(1, Ordering::AcqRel);
        let guard = ActiveStream {
            active: Arc::clone(&self.active),
            last_used: Arc::clone(&self.last_used),
            epoch: self.epoch,
        };
        let exchange = async {
            let mut send = self.send.clone().ready().await.map_err(ConnectError::H2)?;
            let (response, stream) = send.send_request(request, false).map_err(ConnectError::H2)?;
            let response = response.await.map_err(ConnectError::H2)?;
            Ok::<_, ConnectError>((response, stream))
        };
        let (response, stream) = tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| ConnectError::ResponseTimeout(self.request_timeout))??;
        match response.status() {
            StatusCode::OK => {
                Ok(H2Stream::new(stream, response.into_body(), Some(Box::new(guard))))
            }
            StatusCode::UNAUTHORIZED => Err(ConnectError::Denied),
            StatusCode::SERVICE_UNAVAILABLE => Err(ConnectError::Unavailable),
            other => Err(ConnectError::Status(other)),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn active_streams(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    fn has_room(&self) -> bool {
        !self.is_closed() && self.active_streams() < self.max_streams
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.active_streams() == 0).then(|| {
            let last = self.last_used.load(Ordering::Acquire);
            Duration::from_millis(millis_since(self.epoch).saturating_sub(last))
        })
    }
}

/// Connections shared per key (upstream: source identity, destination
/// identities, destination IP), at most `max_streams` streams each; new
/// connections are dialled one at a time per key. Idle connections are
/// dropped when next looked at and by [`Pool::evict_idle`] (run on a timer
/// by [`Pool::spawn_evictor`]); per-key dial state lives only while a dial
/// is in progress or awaited.
pub struct Pool<K> {
    settings: H2Settings,
    idle_timeout: Duration,
    connections: Mutex<HashMap<K, Vec<Arc<Connection>>>>,
    dialing: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> std::fmt::Debug for Pool<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> Pool<K> {
    pub fn new(settings: H2Settings, idle_timeout: Duration) -> Self {
        Self { settings, idle_timeout, connections: Mutex::default(), dialing: Mutex::default() }
    }

    /// Opens a tunnel to `target` over a pooled connection for `key`,
    /// dialling a new one with `dial` when none has room. `dial` should
    /// bound its own steps (TCP connect, TLS); the HTTP/2 handshake and the
    /// CONNECT response are bounded here by the pool's settings.
    pub async fn connect<F, Fut, IO>(
        &self,
        key: K,
        dial: F,
        target: SocketAddr,
        headers: HeaderMap,
    ) -> Result<H2Stream, ConnectError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::io::Result<IO>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Some(connection) = self.pick(&key) {
            return connection.connect(target, headers).await;
        }
        let dial_lock = {
            let mut dialing = self.dialing.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(dialing.entry(key.clone()).or_default())
        };
        let dialled = async {
            let _dialling = dial_lock.lock().await;
            // Someone else may have dialled while we waited.
            if let Some(connection) = self.pick(&key) {
                return Ok(connection);
            }
            let io = dial().await.map_err(ConnectError::Dial)?;
            let connection = Arc::new(Connection::handshake(io, self.settings).await?);
            self.connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key.clone())
                .or_default()
                .push(Arc::clone(&connection));
            Ok(connection)
        }
        .await;
        self.release_dial_state(&key, dial_lock);
        dialled?.connect(target, headers).await
    }

    /// Forgets `key`'s dial lock unless someone else is waiting on it.
    fn release_dial_state(&self, key: &K, ours: Arc<tokio::sync::Mutex<()>>) {
        let mut dialing = self.dialing.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours: nobody else holds it.
        let unused = dialing
            .get(key)
            .is_some_and(|held| Arc::ptr_eq(held, &ours) && Arc::strong_count(&ours) == 2);
        if unused {
            dialing.remove(key);
        }
    }

    fn is_stale(&self, c: &Connection) -> bool {
        c.is_closed() || c.idle_for().is_some_and(|idle| idle >= self.idle_timeout)
    }

    /// The least busy live connection with room; drops closed and idle ones.
    fn pick(&self, key: &K) -> Option<Arc<Connection>> {
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        let list = connections.get_mut(key)?;
        list.retain(|c| !self.is_stale(c));
        let best = list.iter().filter(|c| c.has_room()).min_by_key(|c| c.active_streams()).cloned();
        if list.is_empty() {
            connections.remove(key);
        }
        best
    }

    /// Drops every closed connection and every one idle (no streams) for
    /// the idle timeout, and the keys left without connections; dropping a
    /// connection's last handle closes it. Returns how many were dropped.
    pub fn evict_idle(&self) -> usize {
        let mut dropped = 0;
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        connections.retain(|_, list| {
            let before = list.len();
            list.retain(|c| !self.is_stale(c));
            dropped += before - list.len();
            !list.is_empty()
        });
        drop(connections);
        let mut dialing = self.dialing.lock().unwrap_or_else(PoisonError::into_inner);
        dialing.retain(|_, lock| Arc::strong_count(lock) > 1);
        dropped
    }

    /// Runs [`Self::evict_idle`] every `period` until the pool is dropped.
    pub fn spawn_evictor(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()>
    where
        K: Send + Sync + 'static,
    {
        let pool: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(pool) = pool.upgrade() else { return };
                let dropped = pool.evict_idle();
                if dropped > 0 {
                    tracing::debug!(dropped, "evicted idle HBONE connections");
                }
            }
        })
    }

    /// Forgets every connection whose key fails `keep`; returns how many
    /// were dropped. Streams already open on them carry on; each connection
    /// closes once its last stream ends.
    pub fn retain(&self, keep: impl Fn(&K) -> bool) -> usize {
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        let mut dropped = 0;
        connections.retain(|key, list| {
            let kept = keep(key);
            if !kept {
                dropped += list.len();
            }
            kept
        });
        dropped
    }

    /// Live connections for `key` (for tests and debug endpoints).
    pub fn connection_count(&self, key: &K) -> usize {
        let connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        connections.get(key).map_or(0, |l| l.iter().filter(|c| !c.is_closed()).count())
    }

    /// Keys with any state (connections or dial locks), for tests and
    /// debug endpoints: stays bounded by the keys in use.
    pub fn key_count(&self) -> usize {
        let connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner).len();
        connections + self.dialing.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
