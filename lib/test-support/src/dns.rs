//! A small authoritative DNS server for tests and benchmarks: the upstream
//! resolver a DNS proxy forwards to. Serves UDP and TCP on the sockets it
//! is given (bind them wherever the test needs, e.g. in a namespace),
//! answers A and AAAA from a fixed table with NXDOMAIN for anything else,
//! and records every question it saw. Names listed in `truncate_over_udp`
//! get an empty answer with TC set over UDP (their real answer only over
//! TCP); names in `silent` are never answered (a dead upstream).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// What the server answers. Names are lowercase with the trailing dot.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// Name -> addresses and their TTL.
    pub records: HashMap<String, (Vec<IpAddr>, u32)>,
    /// The TTL [`Zone::with`] gives the records it adds.
    pub ttl: u32,
    pub truncate_over_udp: HashSet<String>,
    pub silent: HashSet<String>,
}

impl Zone {
    /// A zone with `name` -> `addresses` (a trailing dot is added), with
    /// the zone's current `ttl`.
    pub fn with(mut self, name: &str, addresses: &[IpAddr]) -> Self {
        self.records.insert(fqdn(name), (addresses.to_vec(), self.ttl));
        self
    }
}

fn fqdn(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') { lower } else { format!("{lower}.") }
}

/// One question the server received: name (lowercase, trailing dot) and
/// whether it came over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    pub record_type: RecordType,
    pub tcp: bool,
}

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct DnsUpstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for DnsUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl DnsUpstream {
    /// Serves `zone` on `udp` and `tcp` (std sockets, so they can be bound
    /// in another namespace); call within a Tokio runtime.
    pub fn serve(
        zone: Zone,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
    ) -> std::io::Result<Self> {
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let (udp, tcp) = (UdpSocket::from_std(udp)?, TcpListener::from_std(tcp)?);
        let zone = Arc::new(zone);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (z, s) = (Arc::clone(&zone), Arc::clone(&seen));
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0; 65_535];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                if let Some(reply) = answer(&z, &s, buf.get(..n).unwrap_or_default(), false) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let s = Arc::clone(&seen);
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let (z, s) = (Arc::clone(&zone), Arc::clone(&s));
                tokio::spawn(async move {
                    while let Ok(len) = stream.read_u16().await {
                        let mut query = vec![0; usize::from(len)];
                        if stream.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        let Some(reply) = answer(&z, &s, &query, true) else { return };
                        let Ok(len) = u16::try_from(reply.len()) else { return };
                        let mut framed = len.to_be_bytes().to_vec();
                        framed.extend_from_slice(&reply);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self { seen, tasks: vec![udp_task, tcp_task] })
    }

    /// Serves `zone` on a fresh UDP socket and TCP listener sharing one
    /// port on 127.0.0.1; returns the server and that address.
    pub fn local(zone: Zone) -> std::io::Result<(Self, std::net::SocketAddr)> {
        for _ in 0..20 {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
            let addr = tcp.local_addr()?;
            if let Ok(udp) = std::net::UdpSocket::bind(addr) {
                return Ok((Self::serve(zone, udp, tcp)?, addr));
            }
        }
        Err(std::io::Error::other("no port free for both UDP and TCP on 127.0.0.1"))
    }

    /// Every question received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many questions for `name` (any case, dot optional) arrived.
    pub fn count(&self, name: &str) -> usize {
        let name = fqdn(name);
        self.seen().iter().filter(|s| s.name == name).count()
    }
}

/// The reply to one raw query, or `None` to stay silent.
fn answer(zone: &Zone, seen: &Mutex<Vec<Seen>>, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let question = query.queries.first()?.clone();
    let name = question.name().to_ascii().to_ascii_lowercase();
    let record_type = question.query_type();
    seen.lock().unwrap_or_else(PoisonError::into_inner).push(Seen {
        name: name.clone(),
        record_type,
        tcp,
    });
    if zone.silent.contains(&name) {
        return None;
    }
    let mut reply = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    match zone.records.get(&name) {
        None => reply.metadata.response_code = ResponseCode::NXDomain,
        Some(_) if !tcp && zone.truncate_over_udp.contains(&name) => {
            reply.metadata.truncation = true;
        }
        Some((addresses, ttl)) => {
            let records = addresses.iter().filter_map(|ip| {
                let data = match (ip, record_type) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => return None,
                };
                Some(Record::from_rdata(question.name().clone(), *ttl, data))
            });
            reply.add_answers(records);
        }
    }
    reply.to_vec().ok()
}
