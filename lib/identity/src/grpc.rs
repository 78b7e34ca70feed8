//! gRPC (tonic) over BoringSSL for the control plane.
//!
//! tonic's own TLS is rustls; ours is BoringSSL, so TLS is done here and
//! tonic sees plain byte streams: [`incoming`] turns a listener into a stream
//! of handshaken connections for `Server::serve_with_incoming`, and
//! [`connect`] gives a `Channel` whose connector dials TCP and handshakes.
//! Handshakes run in their own tasks with a deadline, so a slow or silent
//! client never holds up others.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use boring::ssl::SslContext;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_boring::SslStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{TrustBundle, control_plane};

/// How many handshaken connections may wait for the server to pick them up.
const ACCEPT_BACKLOG: usize = 64;

/// An accepted, handshaken control-plane connection.
#[derive(Debug)]
pub struct TlsConnection {
    stream: SslStream<TcpStream>,
    remote: SocketAddr,
}

/// What handlers can learn about the connection (request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsConnectInfo {
    pub remote_addr: SocketAddr,
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TlsConnectInfo { remote_addr: self.remote }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener`, handshakes each with `ctx` within
/// `handshake_timeout`, and yields the successful ones. Failed handshakes are
/// logged at debug level and dropped. The accept loop stops when the stream
/// is dropped.
pub fn incoming(
    listener: TcpListener,
    ctx: SslContext,
    handshake_timeout: Duration,
) -> ReceiverStream<Result<TlsConnection, std::io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    let ctx = Arc::new(ctx);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "control plane accept failed");
                    continue;
                }
            };
            let (tx, ctx) = (tx.clone(), Arc::clone(&ctx));
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(handshake_timeout, control_plane::accept(&ctx, tcp))
                    .await
                {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsConnection { stream, remote })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "control plane TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%remote, "control plane TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Where and how to reach istiod.
#[derive(Debug, Clone)]
pub struct ControlPlaneTarget {
    /// Address to dial.
    pub address: SocketAddr,
    /// Name the server certificate must be valid for, also sent as SNI.
    pub hostname: String,
    pub trust: Arc<TrustBundle>,
    pub connect_timeout: Duration,
}

/// The hostname and port do not form a valid URI authority.
#[derive(Debug, thiserror::Error)]
#[error("invalid istiod target {0}")]
pub struct InvalidTarget(String);

/// A lazily connecting gRPC channel to istiod over BoringSSL; it reconnects
/// (and re-verifies) whenever the connection drops.
pub fn connect(target: ControlPlaneTarget, ctx: SslContext) -> Result<Channel, InvalidTarget> {
    let ctx = Arc::new(ctx);
    // The scheme is http because tonic must not try TLS itself; the
    // connector below provides it.
    let uri = Uri::builder()
        .scheme("http")
        .authority(format!("{}:{}", target.hostname, target.address.port()))
        .path_and_query("/")
        .build()
        .map_err(|e| {
            InvalidTarget(format!("{}:{}: {e}", target.hostname, target.address.port()))
        })?;
    let timeout = target.connect_timeout;
    let connector = tower::service_fn(move |_: Uri| {
        let (ctx, target) = (Arc::clone(&ctx), target.clone());
        async move {
            let tcp =
                tokio::time::timeout(target.connect_timeout, TcpStream::connect(target.address))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to istiod")
                    })??;
            tcp.set_nodelay(true)?;
            let tls = control_plane::connect(&ctx, tcp, target.trust, &target.hostname)
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(Endpoint::from(uri).connect_timeout(timeout).connect_with_connector_lazy(connector))
}
