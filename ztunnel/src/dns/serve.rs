//! Serving the DNS proxy on one pod's listeners (15053, UDP and TCP; the
//! sockets come from `crate::inpod`, or from a test or benchmark). Each UDP
//! query and each TCP connection gets its own task, ended with the pod (the
//! `stop` signal), so a forward waiting on a slow upstream never holds up
//! another query.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use super::{Client, DnsServer, Transport};
use crate::inpod::spawn_until;

/// A TCP client idle this long between queries is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);

/// The largest UDP query read (larger datagrams are cut, then fail to
/// parse and are counted as malformed).
const MAX_UDP_QUERY: usize = 4096;

/// One pod's DNS listeners.
#[derive(Debug)]
pub struct PodDns {
    pub server: Arc<DnsServer>,
    pub client: Client,
    /// Query tasks end when this signal's sender is dropped.
    pub stop: watch::Receiver<()>,
}

impl PodDns {
    /// Answers the datagrams arriving on `socket` until dropped.
    pub async fn udp(self: Arc<Self>, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let mut buf = vec![0; MAX_UDP_QUERY];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(e) => {
                    tracing::warn!(pod = %self.client.workload_uid, error = %e, "DNS receive failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let packet = buf.get(..n).unwrap_or_default().to_vec();
            let (me, socket) = (Arc::clone(&self), Arc::clone(&socket));
            spawn_until(self.stop.clone(), async move {
                let reply = me.server.handle(&me.client, &packet, Transport::Udp).await;
                if let Some(reply) = reply
                    && let Err(e) = socket.send_to(&reply, peer).await
                {
                    tracing::debug!(pod = %me.client.workload_uid, %peer, error = %e, "DNS reply not sent");
                }
            });
        }
    }

    /// Serves the connections accepted on `listener` until dropped.
    pub async fn tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let me = Arc::clone(&self);
                    spawn_until(self.stop.clone(), async move { me.serve_tcp(stream, peer).await });
                }
                Err(e) => {
                    tracing::warn!(pod = %self.client.workload_uid, error = %e, "DNS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Length-prefixed queries, answered in order, until the client closes,
    /// idles, or sends something that is not a query.
    async fn serve_tcp(&self, mut stream: TcpStream, peer: SocketAddr) {
        loop {
            let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
                return;
            };
            let mut query = vec![0; usize::from(len)];
            if !matches!(
                tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await,
                Ok(Ok(_))
            ) {
                return;
            }
            let Some(reply) = self.server.handle(&self.client, &query, Transport::Tcp).await else {
                return;
            };
            let Ok(len) = u16::try_from(reply.len()) else { return };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&reply);
            if let Err(e) = stream.write_all(&framed).await {
                tracing::debug!(pod = %self.client.workload_uid, %peer, error = %e, "DNS reply not sent");
                return;
            }
        }
    }
}
