//! Forwarding to the upstream resolvers.
//!
//! The client's query goes out byte for byte over UDP (from the pod, with
//! the proxy's mark, so the pod's DNS capture lets it through). Only a
//! response to this query is taken, and only its records about the
//! question ([`super::validate`]); a clean answer comes back unchanged (it
//! keeps the client's id), a trimmed one re-encoded. An answer with TC set
//! is asked again over TCP. Upstreams are tried in order, each with its own
//! timeout, and the whole forward with a total one, so a dead upstream
//! gives SERVFAIL within seconds (before the client's own retry). At most
//! `max_in_flight` forwards run at once (a semaphore; a query beyond that
//! fails at once rather than queueing). Answers are cached per their TTLs
//! ([`super::cache`]) in the asking pod's own cache, never shared with
//! another pod: each pod's queries leave from its own namespace, so what
//! one pod's upstream exchange brought in (or what that pod forged) is
//! only ever served to that pod.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::cache::{AnswerCache, CacheKey};
use super::metrics::{DnsMetrics, UpstreamLabels};
use super::validate::{self, Checked};
use crate::inpod::sockets::{PodSockets, unspecified};

/// One pod's side of forwarding: where its queries leave from, the UDP
/// sockets that finished an exchange kept for the next one (per upstream,
/// at most [`IDLE_SOCKETS`]; creating a socket in a pod costs a round trip
/// to the pod's socket thread), and the pod's own answer cache (made on
/// first use with the forwarder's bounds, dropped with the pod). A kept
/// socket may still receive a late datagram; answers are matched by id and
/// question, so that is ignored.
#[derive(Debug, Clone)]
pub struct UpstreamSockets {
    origin: Origin,
    idle: Arc<Mutex<HashMap<SocketAddr, Vec<UdpSocket>>>>,
    cache: Arc<OnceLock<AnswerCache>>,
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
        Self::from_origin(Origin::Host)
    }

    /// From the client pod's namespace, with the proxy's mark.
    pub fn pod(sockets: PodSockets) -> Self {
        Self::from_origin(Origin::Pod(sockets))
    }

    fn from_origin(origin: Origin) -> Self {
        Self { origin, idle: Arc::default(), cache: Arc::default() }
    }

    /// This pod's answer cache.
    fn cache(&self, bounds: CacheBounds) -> &AnswerCache {
        self.cache.get_or_init(|| AnswerCache::new(bounds.capacity, bounds.max_ttl))
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

/// The bounds of each pod's answer cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheBounds {
    /// Entries per pod.
    pub capacity: usize,
    /// A cached answer lives at most this long, whatever its TTL.
    pub max_ttl: Duration,
}

/// How long forwards may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// One upstream's exchange.
    pub upstream: Duration,
    /// The whole forward, over every upstream tried.
    pub total: Duration,
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
    timeouts: Timeouts,
    permits: Semaphore,
    cache: CacheBounds,
    metrics: Arc<DnsMetrics>,
}

/// The largest DNS message (TCP's two-byte length).
const MAX_MESSAGE: usize = 65_535;

impl Forwarder {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeouts: Timeouts,
        max_in_flight: usize,
        cache: CacheBounds,
        metrics: Arc<DnsMetrics>,
    ) -> Self {
        Self { upstreams, timeouts, permits: Semaphore::new(max_in_flight), cache, metrics }
    }

    /// Whether there is anywhere to forward to.
    pub fn has_upstreams(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// Answers `query` (whose wire form is `raw`) from the asking pod's
    /// cache or the first upstream that answers, within the total timeout.
    pub async fn forward(
        &self,
        sockets: &UpstreamSockets,
        raw: &[u8],
        query: &Message,
    ) -> Result<Forwarded, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let key = CacheKey::of(query);
        let cache = sockets.cache(self.cache);
        if let Some(mut message) = key.as_ref().and_then(|k| cache.get(k)) {
            message.metadata.id = query.metadata.id;
            if let Ok(bytes) = message.to_vec() {
                return Ok(Forwarded { bytes, message, cached: true });
            }
        }
        let Ok(_permit) = self.permits.try_acquire() else {
            self.metrics.failed("overloaded");
            return Err(ForwardError::Overloaded);
        };
        let deadline = Instant::now() + self.timeouts.total;
        let mut last = Err(ForwardError::NoUpstreams);
        for upstream in &self.upstreams {
            let started = Instant::now();
            let budget = self.timeouts.upstream.min(deadline.saturating_duration_since(started));
            if budget.is_zero() {
                break;
            }
            let exchanged = match tokio::time::timeout(
                budget,
                exchange(sockets, *upstream, raw, query),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(ExchangeError::Timeout(budget)),
            };
            match exchanged {
                Ok((bytes, message)) => {
                    let code = UpstreamLabels {
                        response_code: format!("{:?}", message.metadata.response_code),
                    };
                    let elapsed = started.elapsed().as_secs_f64();
                    self.metrics.upstream_duration.get_or_create(&code).observe(elapsed);
                    if let Some(key) = key {
                        cache.insert(key, &message);
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
        // Anything but the answer to this query (a stray or forged
        // datagram) is ignored; the timeout bounds the wait.
        let Ok(message) = Message::from_vec(bytes) else { continue };
        match validate::check(message, query) {
            Ok(checked) => break encoded(bytes, checked)?,
            Err(mismatch) => {
                tracing::debug!(%upstream, %mismatch, "a datagram that is not the answer ignored");
            }
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

/// The bytes to pass on for a checked answer: the upstream's own, unless
/// records had to be dropped.
fn encoded(bytes: &[u8], checked: Checked) -> Result<(Vec<u8>, Message), ExchangeError> {
    if !checked.trimmed {
        return Ok((bytes.to_vec(), checked.message));
    }
    let bytes = checked.message.to_vec().map_err(|e| ExchangeError::Malformed(e.to_string()))?;
    Ok((bytes, checked.message))
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
    let checked = validate::check(message, query)
        .map_err(|m| ExchangeError::Malformed(format!("not the answer to the query: {m}")))?;
    encoded(&bytes, checked)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use std::net::Ipv4Addr;

    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
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
        let cache = CacheBounds { capacity: 0, max_ttl: Duration::from_secs(1) };
        let timeouts =
            Timeouts { upstream: Duration::from_millis(200), total: Duration::from_secs(1) };
        let forwarder = Forwarder::new(vec![addr], timeouts, 8, cache, Arc::default());
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

    fn query(id: u16, name: &str) -> Message {
        let mut q = Message::new(id, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        q
    }

    fn answer(to: &Message, owner: &str, last: u8) -> Message {
        let mut m = to.clone();
        m.metadata.message_type = MessageType::Response;
        let rdata = RData::A(A(Ipv4Addr::new(192, 0, 2, last)));
        m.add_answer(Record::from_rdata(Name::from_ascii(owner).unwrap(), 60, rdata));
        m
    }

    /// An "upstream" that, before its real answer, sends what a forger
    /// would: another id, another question, and the real answer carrying an
    /// address for another name.
    #[tokio::test]
    async fn forged_datagrams_are_ignored_and_foreign_records_dropped() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        let forger = tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            let (n, peer) = upstream.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut wrong_id = answer(&q, "www.example.org.", 66);
            wrong_id.metadata.id = q.metadata.id.wrapping_add(1);
            let wrong_question =
                answer(&query(q.metadata.id, "bank.example."), "bank.example.", 66);
            let mut real = answer(&q, "www.example.org.", 1);
            real.add_answer(Record::from_rdata(
                Name::from_ascii("bank.example.").unwrap(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 66))),
            ));
            for m in [wrong_id, wrong_question, real] {
                upstream.send_to(&m.to_vec().unwrap(), peer).await.unwrap();
            }
        });
        let cache = CacheBounds { capacity: 8, max_ttl: Duration::from_secs(60) };
        let timeouts = Timeouts { upstream: Duration::from_secs(2), total: Duration::from_secs(3) };
        let forwarder = Forwarder::new(vec![addr], timeouts, 8, cache, Arc::default());
        let q = query(4242, "www.example.org.");
        let sockets = UpstreamSockets::host();
        let got = forwarder.forward(&sockets, &q.to_vec().unwrap(), &q).await.unwrap();
        forger.await.unwrap();
        let on_wire = Message::from_vec(&got.bytes).unwrap();
        for m in [&got.message, &on_wire] {
            assert_eq!(m.metadata.id, 4242);
            let rdata: Vec<&RData> = m.answers.iter().map(|r| &r.data).collect();
            assert_eq!(rdata, [&RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))], "{m:?}");
        }
        // What is cached is the checked answer.
        let again = forwarder.forward(&sockets, &q.to_vec().unwrap(), &q).await.unwrap();
        assert!(again.cached);
        assert_eq!(again.message.answers.len(), 1);
    }
}
