//! Forwarding to the upstream resolvers.
//!
//! The client's query goes out byte for byte over UDP (from the pod, with
//! the proxy's mark, so the pod's DNS capture lets it through), and the
//! upstream's answer comes back unchanged, so it keeps the client's id. An
//! answer with TC set is asked again over TCP. Upstreams are tried in
//! order, each with its own timeout. At most `max_in_flight` forwards run
//! at once (a semaphore; a query beyond that fails at once rather than
//! queueing), and answers are cached per their TTLs ([`super::cache`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::cache::{AnswerCache, CacheKey};
use super::metrics::{DnsMetrics, UpstreamLabels};
use crate::inpod::sockets::{PodSockets, unspecified};

/// Where forwarded queries leave from, with the UDP sockets that finished
/// an exchange kept for the next one (per upstream, at most
/// [`IDLE_SOCKETS`]): creating a socket in a pod costs a round trip to the
/// pod's socket thread. A kept socket may still receive a late datagram;
/// answers are matched by id and question, so that is ignored.
#[derive(Debug, Clone)]
pub struct UpstreamSockets {
    origin: Origin,
    idle: Arc<Mutex<HashMap<SocketAddr, Vec<UdpSocket>>>>,
}

#[derive(Debug, Clone)]
enum Origin {
    Host,
    Pod(PodSockets),
}

/// Idle UDP sockets kept per upstream.
pub const IDLE_SOCKETS: usize = 32;

impl UpstreamSockets {
    /// From ztunnel's own namespace (tests, benchmarks).
    pub fn host() -> Self {
        Self { origin: Origin::Host, idle: Arc::default() }
    }

    /// From the client pod's namespace, with the proxy's mark.
    pub fn pod(sockets: PodSockets) -> Self {
        Self { origin: Origin::Pod(sockets), idle: Arc::default() }
    }

    async fn udp(&self, target: SocketAddr) -> io::Result<UdpSocket> {
        let kept = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&target)
            .and_then(Vec::pop);
        if let Some(socket) = kept {
            return Ok(socket);
        }
        match &self.origin {
            Origin::Host => {
                let socket = UdpSocket::bind((unspecified(target), 0)).await?;
                socket.connect(target).await?;
                Ok(socket)
            }
            Origin::Pod(sockets) => sockets.connect_udp(target).await.map_err(io::Error::other),
        }
    }

    /// Keeps `socket` (connected to `target`) for another exchange.
    fn keep(&self, target: SocketAddr, socket: UdpSocket) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = idle.entry(target).or_default();
        if kept.len() < IDLE_SOCKETS {
            kept.push(socket);
        }
    }

    async fn tcp(&self, target: SocketAddr) -> io::Result<TcpStream> {
        match &self.origin {
            Origin::Host => TcpStream::connect(target).await,
            Origin::Pod(sockets) => sockets.connect(target, None).await.map_err(io::Error::other),
        }
    }
}

/// Why a forward got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolvers are configured")]
    NoUpstreams,
    #[error("too many forwarded queries in flight")]
    Overloaded,
    #[error("upstream {upstream}: {reason}")]
    Upstream { upstream: SocketAddr, reason: ExchangeError },
}

/// One exchange with one upstream that went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("answer does not parse: {0}")]
    Malformed(String),
}

impl ExchangeError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Io(_) => "io",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// An upstream's answer: the bytes to send back and the parsed message.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub bytes: Vec<u8>,
    pub message: Message,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    permits: Semaphore,
    cache: AnswerCache,
    metrics: Arc<DnsMetrics>,
}

/// The largest DNS message (TCP's two-byte length).
const MAX_MESSAGE: usize = 65_535;

impl Forwarder {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        max_in_flight: usize,
        cache: AnswerCache,
        metrics: Arc<DnsMetrics>,
    ) -> Self {
        Self { upstreams, timeout, permits: Semaphore::new(max_in_flight), cache, metrics }
    }

    /// Answers `query` (whose wire form is `raw`) from the cache or the
    /// first upstream that answers.
    pub async fn forward(
        &self,
        sockets: &UpstreamSockets,
        raw: &[u8],
        query: &Message,
    ) -> Result<Forwarded, ForwardError> {
        let key = CacheKey::of(query);
        if let Some(mut message) = key.as_ref().and_then(|k| self.cache.get(k)) {
            message.metadata.id = query.metadata.id;
            if let Ok(bytes) = message.to_vec() {
                return Ok(Forwarded { bytes, message, cached: true });
            }
        }
        let Ok(_permit) = self.permits.try_acquire() else {
            self.metrics.failed("overloaded");
            return Err(ForwardError::Overloaded);
        };
        let mut last = Err(ForwardError::NoUpstreams);
        for upstream in &self.upstreams {
            let started = Instant::now();
            let exchanged =
                match tokio::time::timeout(self.timeout, exchange(sockets, *upstream, raw, query))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(ExchangeError::Timeout(self.timeout)),
                };
            match exchanged {
                Ok((bytes, message)) => {
                    let code = UpstreamLabels {
                        response_code: format!("{:?}", message.metadata.response_code),
                    };
                    let elapsed = started.elapsed().as_secs_f64();
                    self.metrics.upstream_duration.get_or_create(&code).observe(elapsed);
                    if let Some(key) = key {
                        self.cache.insert(key, &message);
                    }
                    return Ok(Forwarded { bytes, message, cached: false });
                }
                Err(reason) => {
                    self.metrics.failed(reason.reason());
                    tracing::debug!(%upstream, error = %reason, "upstream DNS exchange failed");
                    last = Err(ForwardError::Upstream { upstream: *upstream, reason });
                }
            }
        }
        last
    }
}

/// One query to one upstream: UDP, then TCP if the answer was truncated.
async fn exchange(
    sockets: &UpstreamSockets,
    upstream: SocketAddr,
    raw: &[u8],
    query: &Message,
) -> Result<(Vec<u8>, Message), ExchangeError> {
    let socket = sockets.udp(upstream).await?;
    socket.send(raw).await?;
    let mut buf = vec![0; MAX_MESSAGE];
    let answer = loop {
        let n = socket.recv(&mut buf).await?;
        let bytes = buf.get(..n).unwrap_or_default();
        // Anything but the answer to this query (a stray or spoofed
        // datagram) is ignored; the timeout bounds the wait.
        if let Ok(message) = Message::from_vec(bytes)
            && answers(&message, query)
        {
            break (bytes.to_vec(), message);
        }
    };
    // Only a socket whose exchange completed is kept; one that timed out
    // is dropped with the future.
    sockets.keep(upstream, socket);
    if !answer.1.metadata.truncation {
        return Ok(answer);
    }
    exchange_tcp(sockets, upstream, raw, query).await
}

/// One query over TCP (two-byte length prefix each way).
async fn exchange_tcp(
    sockets: &UpstreamSockets,
    upstream: SocketAddr,
    raw: &[u8],
    query: &Message,
) -> Result<(Vec<u8>, Message), ExchangeError> {
    let mut stream = sockets.tcp(upstream).await?;
    let len = u16::try_from(raw.len())
        .map_err(|_| ExchangeError::Malformed(format!("query of {} bytes", raw.len())))?;
    let mut framed = Vec::with_capacity(raw.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(raw);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut bytes = vec![0; usize::from(len)];
    stream.read_exact(&mut bytes).await?;
    let message = Message::from_vec(&bytes).map_err(|e| ExchangeError::Malformed(e.to_string()))?;
    if !answers(&message, query) {
        return Err(ExchangeError::Malformed("the answer is for another query".into()));
    }
    Ok((bytes, message))
}

/// Whether `message` is a response to `query` (same id and question).
fn answers(message: &Message, query: &Message) -> bool {
    message.metadata.id == query.metadata.id
        && message.metadata.message_type == hickory_proto::op::MessageType::Response
        && message.queries == query.queries
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use mesh_test_support::dns::{DnsUpstream, Zone};

    use super::*;

    fn idle(sockets: &UpstreamSockets, target: SocketAddr) -> usize {
        sockets.idle.lock().unwrap_or_else(PoisonError::into_inner).get(&target).map_or(0, Vec::len)
    }

    #[tokio::test]
    async fn a_socket_is_kept_after_an_answer_and_dropped_after_a_timeout() {
        let mut zone = Zone::default().with("a.example.", &[IpAddr::from([192, 0, 2, 1])]);
        zone.silent.insert("dead.example.".into());
        let (_upstream, addr) = DnsUpstream::local(zone).unwrap();
        let cache = AnswerCache::new(0, Duration::from_secs(1));
        let forwarder =
            Forwarder::new(vec![addr], Duration::from_millis(200), 8, cache, Arc::default());
        let sockets = UpstreamSockets::host();
        for id in [1, 2] {
            let mut query = Message::new(id, MessageType::Query, OpCode::Query);
            query.add_query(Query::query(Name::from_ascii("a.example.").unwrap(), RecordType::A));
            let raw = query.to_vec().unwrap();
            let answer = forwarder.forward(&sockets, &raw, &query).await.unwrap();
            assert_eq!(answer.message.metadata.id, id);
            assert_eq!(idle(&sockets, addr), 1, "one socket, reused");
        }
        let mut query = Message::new(3, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(Name::from_ascii("dead.example.").unwrap(), RecordType::A));
        let raw = query.to_vec().unwrap();
        assert!(forwarder.forward(&sockets, &raw, &query).await.is_err());
        assert_eq!(idle(&sockets, addr), 0, "the socket that timed out is gone");
    }
}
