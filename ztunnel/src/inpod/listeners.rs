//! The accept loops of one pod: outbound (15001), HBONE (15008) and
//! plaintext inbound (15006). Each connection gets its own task that ends
//! with the connection or when the pod is removed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_hbone::accept::{AcceptLoop, Permit};
use mesh_hbone::server::serve_connection;
use mesh_identity::tls;
use mesh_identity::verify::PeerPolicy;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::sockets::{PodSockets, SocketError};
use super::{NodeProxy, PodWorkload};
use crate::policy::ConnectionInfo;
use crate::proxy::inbound::pod_workload_at;
use crate::proxy::outbound::CONNECT_TIMEOUT;
use crate::proxy::selfcall::{SelfCall, is_ztunnel_port};
use crate::proxy::{
    ConnectionLabels, InboundTunnels, OpenConnection, Peer, ResponseFlag, Upstream,
    metrics::Reporter,
};

/// Runs `work` until it ends or the pod's stop signal fires (its sender is
/// dropped).
pub(crate) fn spawn_until<F>(mut stop: watch::Receiver<()>, work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.changed() => {}
            () = work => {}
        }
    });
}

/// Makes a pod-side connection end with a reset when the pod's removal cut
/// it, and with a normal close otherwise. It holds a duplicate of the
/// socket's descriptor with `SO_LINGER` 0 and a receiver of the pod's stop
/// signal: on drop, if the pod is still served, it restores the default
/// linger first. The duplicate is the last descriptor to close, so a
/// connection cut by the removal is reset, and the application cannot keep
/// writing on it once its traffic is no longer redirected. The receiver
/// also makes `PodProxies::remove_and_wait` wait for the connection's end.
pub(crate) struct ResetIfCut {
    fd: std::os::fd::OwnedFd,
    stop: watch::Receiver<()>,
}

impl ResetIfCut {
    pub(crate) fn arm(stream: &TcpStream, stop: watch::Receiver<()>) -> Option<Self> {
        use std::os::fd::AsFd;
        let armed = stream.as_fd().try_clone_to_owned().and_then(|fd| {
            socket2::SockRef::from(&fd).set_linger(Some(std::time::Duration::ZERO))?;
            Ok(fd)
        });
        match armed {
            Ok(fd) => Some(Self { fd, stop }),
            Err(e) => {
                tracing::debug!(error = %e, "cannot arm reset-on-cut for a connection");
                None
            }
        }
    }
}

impl Drop for ResetIfCut {
    fn drop(&mut self) {
        // `Ok(false)`: no stop signal, the sender still there.
        let cut = !matches!(self.stop.has_changed(), Ok(false));
        if !cut && let Err(e) = socket2::SockRef::from(&self.fd).set_linger(None) {
            tracing::debug!(error = %e, "restoring the default linger");
        }
    }
}

/// An application connection opened by ztunnel (inbound delivery), reset
/// if the pod's removal cuts it (see [`ResetIfCut`]).
pub(crate) struct AppStream {
    // Declared first: dropped before the guard, whose descriptor closes last.
    stream: TcpStream,
    _guard: Option<ResetIfCut>,
}

impl AppStream {
    fn new(stream: TcpStream, stop: watch::Receiver<()>) -> Self {
        let guard = ResetIfCut::arm(&stream, stop);
        Self { stream, _guard: guard }
    }
}

impl tokio::io::AsyncRead for AppStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for AppStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Why an inbound connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("TLS contexts for the pod: {0}")]
    Certificate(#[from] mesh_identity::contexts::ContextError),
    #[error("TLS handshake: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("no TLS handshake within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    #[error(transparent)]
    SelfCall(#[from] SelfCall),
    #[error("connecting to the application at {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("serving HBONE: {0}")]
    Hbone(#[from] mesh_hbone::server::ServeError),
    #[error("reading the original destination: {0}")]
    OriginalDestination(#[source] io::Error),
    #[error("reading the local address: {0}")]
    LocalAddress(#[source] io::Error),
    #[error("{0} is not an address of this pod's workload")]
    NoWorkload(SocketAddr),
    #[error("denied: {0}")]
    Denied(String),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("copying: {0}")]
    Copy(#[source] io::Error),
    #[error("policy changed: {0}")]
    PolicyChanged(String),
}

/// Opens application connections from inside the pod, marked and bound to
/// the client's address.
#[derive(Debug)]
struct PodUpstream {
    sockets: PodSockets,
    stop: watch::Receiver<()>,
}

impl Upstream for PodUpstream {
    type Stream = AppStream;

    async fn connect(&self, source: SocketAddr, target: SocketAddr) -> io::Result<AppStream> {
        let stream =
            self.sockets.connect(target, Some(source.ip())).await.map_err(io::Error::other)?;
        Ok(AppStream::new(stream, self.stop.clone()))
    }
}

/// One pod's listeners, accepted until the pod goes away.
pub(super) struct PodListeners {
    pub(super) node: Arc<NodeProxy>,
    pub(super) pod: PodWorkload,
    pub(super) sockets: PodSockets,
    pub(super) stop: watch::Receiver<()>,
}

impl PodListeners {
    pub(super) async fn outbound(self: Arc<Self>, listener: TcpListener) {
        let accept = AcceptLoop::new(listener, "outbound");
        self.accept_loop(accept, |me, stream, _| async move {
            if let Err(e) = me.node.outbound.handle(&me.sockets, &me.pod.uid, stream).await {
                tracing::info!(pod = %me.pod.uid, error = %e, "outbound connection failed");
            }
        })
        .await;
    }

    pub(super) async fn hbone(self: Arc<Self>, listener: TcpListener) {
        let accept = AcceptLoop::new(listener, "hbone").with_limit(self.node.inbound_cap.clone());
        self.accept_loop(accept, |me, stream, peer| async move {
            if let Err(e) = me.serve_hbone(stream, peer).await {
                tracing::info!(pod = %me.pod.uid, %peer, error = %e, "HBONE connection failed");
            }
        })
        .await;
    }

    pub(super) async fn plaintext(self: Arc<Self>, listener: TcpListener) {
        let accept =
            AcceptLoop::new(listener, "plaintext").with_limit(self.node.inbound_cap.clone());
        self.accept_loop(accept, |me, stream, peer| async move {
            if let Err(e) = me.serve_plaintext(stream, peer).await {
                tracing::info!(pod = %me.pod.uid, %peer, error = %e, "plaintext inbound closed");
            }
        })
        .await;
    }

    /// Accepts until the pod goes away; each connection's task holds its
    /// slot of the node's cap (if the loop has one) until it ends.
    async fn accept_loop<F, Fut>(self: Arc<Self>, mut accept: AcceptLoop<TcpListener>, handle: F)
    where
        F: Fn(Arc<Self>, TcpStream, SocketAddr) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            let ((stream, peer), permit): (_, Permit) = accept.next().await;
            let guard = ResetIfCut::arm(&stream, self.stop.clone());
            let work = handle(Arc::clone(&self), stream, peer);
            spawn_until(self.stop.clone(), async move {
                let _slot = permit;
                let _guard = guard;
                work.await;
            });
        }
    }

    async fn serve_hbone(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), ConnectionError> {
        let node = &self.node;
        let local = stream.local_addr().map_err(ConnectionError::LocalAddress)?;
        let timeout = node.limits.handshake_timeout;
        let handshake = async {
            let contexts = node.tls.for_identity(&self.pod.identity).await?;
            let trust_domains = vec![self.pod.identity.trust_domain().to_owned()];
            let accepted = tls::accept(
                &contexts.server,
                stream,
                contexts.trust,
                PeerPolicy::TrustDomains(trust_domains),
            )
            .await?;
            Ok::<_, ConnectionError>(accepted)
        };
        let (tls_stream, identity) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout(timeout))??;
        let upstream =
            Arc::new(PodUpstream { sockets: self.sockets.clone(), stop: self.stop.clone() });
        let inbound = InboundTunnels::new(
            node.outbound.state.clone(),
            node.outbound.network.clone(),
            Peer { identity, address: peer },
            upstream,
            Arc::clone(&node.outbound.metrics),
        )
        .only_to(local.ip())
        .for_workload(self.pod.uid.clone())
        .tracked(node.connections.clone());
        Ok(serve_connection(tls_stream, node.h2, Arc::new(inbound)).await?)
    }

    /// Plaintext to a captured pod: policy without an identity; denied
    /// connections, and any whose original destination is not this pod
    /// (REDIRECT in the pod's PREROUTING would capture packets for any
    /// address that reach it), are closed.
    async fn serve_plaintext(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), ConnectionError> {
        let std_stream = stream.into_std().map_err(ConnectionError::OriginalDestination)?;
        let original = mesh_netns::socket::original_destination(&std_stream)
            .map_err(ConnectionError::OriginalDestination)?;
        let mut client =
            TcpStream::from_std(std_stream).map_err(ConnectionError::OriginalDestination)?;
        let state = &self.node.outbound.state;
        let network = &self.node.outbound.network;
        let metrics = &self.node.outbound.metrics;
        let source = state.read().workload_by_ip(network, peer.ip());
        let failed = |flag, destination: Option<&mesh_model::Workload>| {
            let labels = ConnectionLabels::failed(
                Reporter::Destination,
                source.as_deref(),
                None,
                destination,
                flag,
            );
            metrics.failed(&labels);
        };
        // Delivering to one of ztunnel's ports would re-enter ztunnel.
        if is_ztunnel_port(original.port()) {
            failed(ResponseFlag::Deny, None);
            return Err(SelfCall(original).into());
        }
        let admitted_at = state.generation();
        let destination = pod_workload_at(&state.read(), &self.pod.uid, original.ip())
            .ok_or(ConnectionError::NoWorkload(original))?;
        let decision = state.read().authorize(&ConnectionInfo {
            source_identity: None,
            source_ip: peer.ip(),
            destination_ip: original.ip(),
            destination_port: original.port(),
            destination_workload: &destination,
        });
        if !decision.allowed {
            failed(ResponseFlag::Deny, Some(&destination));
            return Err(ConnectionError::Denied(decision.reason.to_string()));
        }
        let connect = self.sockets.connect(original, Some(peer.ip()));
        let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => {
                failed(ResponseFlag::Connect, Some(&destination));
                return Err(e.into());
            }
            Err(_) => {
                failed(ResponseFlag::Connect, Some(&destination));
                return Err(ConnectionError::ConnectTimeout(original));
            }
        };
        let mut upstream = AppStream::new(upstream, self.stop.clone());
        let labels =
            ConnectionLabels::new(Reporter::Destination, source.as_deref(), None, &destination);
        metrics.opened(&labels);
        let facts = OpenConnection {
            source_identity: None,
            source_ip: peer.ip(),
            destination: original,
            destination_uid: destination.uid.clone(),
        };
        let mut registration = self.node.connections.register(facts, state, admitted_at);
        let copied = tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                r.map_err(ConnectionError::Copy)
            }
            reason = registration.closed() => Err(ConnectionError::PolicyChanged(reason)),
        };
        drop(registration);
        let (received, sent) = copied.as_ref().map_or((0, 0), |c| *c);
        metrics.closed(&labels, received, sent);
        copied.map(drop)
    }
}
