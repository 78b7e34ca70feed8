//! The accepting side of HBONE.
//!
//! Each CONNECT stream is handled in its own task: the [`Inbound`] first
//! opens the target (so a refusal can still be answered with a status), then
//! the tunnel is answered 200 and handed over. A malformed request gets 400
//! and affects no other stream; a connection that does not speak HTTP/2
//! ends with an error for that connection only.
//!
//! Limits (see [`H2Settings`]): the preface and SETTINGS exchange must end
//! within the handshake timeout, header lists over the limit are refused
//! (431), at most `max_streams` streams are open at once, a keep-alive PING
//! whose PONG is late closes the connection, and a connection without
//! streams for the idle timeout is closed with GOAWAY.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

pub use crate::keepalive::KeepaliveError;
use crate::{H2Settings, H2Stream};

/// A CONNECT request that passed the protocol checks.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The target from `:authority`, `ip:port`.
    pub target: SocketAddr,
    pub headers: HeaderMap,
}

/// Why a tunnel is not opened; each maps to the status upstream uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: the request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 401: policy does not allow this peer to reach this target.
    #[error("denied: {0}")]
    Denied(String),
    /// 503: no such target here, or it refused the connection.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Denied(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Decides on and serves each tunnel of a connection.
pub trait Inbound: Send + Sync + 'static {
    /// What `open` connects to, handed to `proxy` once the tunnel is up.
    type Upstream: Send + 'static;

    /// Checks policy and opens the target.
    fn open(
        &self,
        request: ConnectRequest,
    ) -> impl Future<Output = Result<Self::Upstream, Refusal>> + Send;

    /// Carries bytes between the tunnel and the upstream until both close.
    fn proxy(&self, upstream: Self::Upstream, tunnel: H2Stream) -> impl Future<Output = ()> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[source] h2::Error),
    #[error("HTTP/2 handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    #[error("HTTP/2 connection failed: {0}")]
    Connection(#[source] h2::Error),
    #[error("HTTP/2 keep-alive: {0}")]
    Keepalive(#[source] KeepaliveError),
}

/// Counts a stream as open while alive.
struct OpenStream(Arc<watch::Sender<usize>>);

impl OpenStream {
    fn new(open: &Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(Arc::clone(open))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Serves HBONE on one connection until the peer closes it, its keep-alive
/// fails, or it stays without streams for the idle timeout.
pub async fn serve_connection<IO, I>(
    io: IO,
    settings: H2Settings,
    inbound: Arc<I>,
) -> Result<(), ServeError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Inbound,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_frame_size(settings.max_frame_size)
        .max_concurrent_streams(settings.max_streams)
        .max_header_list_size(settings.max_header_list_size)
        .handshake::<_, Bytes>(io);
    let mut connection = tokio::time::timeout(settings.handshake_timeout, handshake)
        .await
        .map_err(|_| ServeError::HandshakeTimeout(settings.handshake_timeout))?
        .map_err(ServeError::Handshake)?;
    let keepalive = crate::keepalive::failure(
        connection.ping_pong(),
        settings.keepalive_interval,
        settings.keepalive_timeout,
    );
    tokio::pin!(keepalive);
    let open = Arc::new(watch::Sender::new(0usize));
    let mut open_changes = open.subscribe();
    let mut closing = false;
    loop {
        let busy = closing || *open_changes.borrow_and_update() > 0;
        let idle = async move {
            if busy {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(settings.idle_timeout).await;
        };
        tokio::select! {
            next = connection.accept() => {
                let Some(next) = next else { return Ok(()) };
                let (request, respond) = match next {
                    Ok(stream) => stream,
                    // After our GOAWAY the peer may close first.
                    Err(_) if closing => return Ok(()),
                    Err(e) => return Err(ServeError::Connection(e)),
                };
                let inbound = Arc::clone(&inbound);
                let guard = OpenStream::new(&open);
                tokio::spawn(async move {
                    let _open = guard;
                    handle_stream(request, respond, inbound.as_ref()).await;
                });
            }
            failure = &mut keepalive => {
                tracing::debug!(%failure, "HBONE keep-alive failed; closing the connection");
                connection.abrupt_shutdown(h2::Reason::NO_ERROR);
                // Flush the GOAWAY if the peer still reads; a dead peer
                // must not hold the connection, so this is bounded too.
                let drain = async { while connection.accept().await.is_some() {} };
                let _ = tokio::time::timeout(settings.keepalive_timeout, drain).await;
                return Err(ServeError::Keepalive(failure));
            }
            () = idle => {
                tracing::debug!(timeout = ?settings.idle_timeout, "HBONE connection idle; closing");
                connection.graceful_shutdown();
                closing = true;
            }
            _ = open_changes.changed() => {}
        }
    }
}

/// Checks the request line: method CONNECT and an `ip:port` authority.
pub fn parse_connect<B>(request: &Request<B>) -> Result<ConnectRequest, Refusal> {
    if request.method() != Method::CONNECT {
        return Err(Refusal::BadRequest(format!("method {} is not CONNECT", request.method())));
    }
    let authority = request
        .uri()
        .authority()
        .ok_or_else(|| Refusal::BadRequest("CONNECT without :authority".to_owned()))?;
    let target = authority.as_str().parse::<SocketAddr>().map_err(|_| {
        Refusal::BadRequest(format!("authority {:?} is not ip:port", authority.as_str()))
    })?;
    if target.port() == 0 {
        return Err(Refusal::BadRequest("port 0".to_owned()));
    }
    Ok(ConnectRequest { target, headers: request.headers().clone() })
}

async fn handle_stream<I: Inbound>(
    request: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    inbound: &I,
) {
    let decision = match parse_connect(&request) {
        Ok(connect) => inbound.open(connect).await,
        Err(refusal) => Err(refusal),
    };
    let upstream = match decision {
        Ok(upstream) => upstream,
        Err(refusal) => {
            tracing::debug!(%refusal, "refusing HBONE stream");
            let response = Response::builder().status(refusal.status()).body(());
            if let Ok(response) = response {
                let _ = respond.send_response(response, true);
            }
            return;
        }
    };
    let response = match Response::builder().status(StatusCode::OK).body(()) {
        Ok(r) => r,
        Err(_) => return,
    };
    let send = match respond.send_response(response, false) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!(error = %e, "HBONE stream reset before 200 was sent");
            return;
        }
    };
    inbound.proxy(upstream, H2Stream::new(send, request.into_body(), None)).await;
}
