//! The DNS proxy (15053, UDP and TCP, inside each enrolled pod's
//! namespace; the CNI's rules redirect the pod's port 53 there).
//!
//! - [`names`]: which names the mesh answers (Kubernetes Services with the
//!   search-path short forms, headless services, ServiceEntry hosts and
//!   wildcards) and which it owns but do not exist (NXDOMAIN).
//! - [`DnsServer::handle`]: one raw query in, a raw response (or nothing,
//!   for a malformed query) out. A and AAAA for mesh names are answered
//!   from the state with a short TTL ([`DnsConfig::ttl`]); a family the
//!   name has no address of gets NOERROR with no answers; everything else
//!   goes to [`forward`], whose answers are checked against the question
//!   ([`validate`]) and otherwise pass through unchanged.
//! - Without upstream resolvers there is no cluster DNS either (local
//!   mode runs ztunnel so): the mesh is then the only authority for the
//!   cluster domain, and a name under it that the mesh does not know gets
//!   NXDOMAIN at once instead of a SERVFAIL, so a resolver walking its
//!   search list (`server.shop.<ns>.svc.cluster.local`, ...) moves on in
//!   microseconds.
//! - [`forward`]: the upstream resolvers (UDP, TCP when truncated), with
//!   per-upstream and total timeouts, bounded concurrency and a
//!   TTL-honouring [`cache`] per pod.
//! - [`metrics`]: `istio_dns_requests_total` and friends.
//!
//! - [`serve`]: the UDP and TCP loops of one pod's listeners, which
//!   `crate::inpod` binds through the pod's socket factory like the other
//!   in-pod listeners; each query is handled in its own task, so a slow
//!   upstream never holds up the answers for mesh names.

pub mod cache;
pub mod forward;
pub mod metrics;
pub mod names;
mod response;
pub mod serve;
pub mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

pub use forward::{CacheBounds, Forwarder, Timeouts, UpstreamSockets};
pub use metrics::DnsMetrics;
use metrics::RequestLabels;
use names::Lookup;

use crate::state::StateHandle;

/// The DNS proxy's port inside each pod.
pub const DNS_PORT: u16 = 15053;

/// How the DNS proxy answers and forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Resolvers for names the mesh does not answer, tried in order. None
    /// means there is no cluster DNS either: names under the cluster
    /// domain that the mesh does not know do not exist (NXDOMAIN).
    pub upstreams: Vec<SocketAddr>,
    /// The cluster domain (`cluster.local`), lowercase, no trailing dot.
    pub cluster_domain: String,
    /// TTL of the mesh's own answers, in seconds (upstream uses 30).
    pub ttl: u32,
    /// How long one upstream gets to answer.
    pub upstream_timeout: Duration,
    /// How long a forward gets over all upstreams; then SERVFAIL. Below
    /// the 5 s a glibc client waits before asking again.
    pub forward_timeout: Duration,
    /// Forwards in flight at most; queries beyond get SERVFAIL at once.
    pub max_in_flight: usize,
    /// Forwarded answers cached at most, per pod (each pod has its own
    /// cache: an answer one pod's query brought in is never served to
    /// another).
    pub cache_capacity: usize,
    /// A cached answer lives at most this long, whatever its TTL.
    pub cache_max_ttl: Duration,
}

impl DnsConfig {
    /// Defaults with `upstreams` and the cluster domain `cluster.local`.
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            upstreams,
            cluster_domain: "cluster.local".into(),
            ttl: 30,
            upstream_timeout: Duration::from_secs(2),
            forward_timeout: Duration::from_secs(3),
            max_in_flight: 1024,
            cache_capacity: 512,
            cache_max_ttl: Duration::from_secs(300),
        }
    }
}

/// A resolv.conf that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading DNS upstreams from {path}: {source}")]
pub struct ResolvConfError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// The `nameserver` addresses of a resolv.conf (port 53). Lines that do not
/// parse (and scoped IPv6 addresses) are skipped.
pub fn upstreams_from_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, ResolvConfError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ResolvConfError { path: path.display().to_string(), source })?;
    Ok(parse_resolv_conf(&text))
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            let ip: std::net::IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Which transport a query came over (it bounds the response's size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Who asked: the pod the query came from.
#[derive(Debug, Clone)]
pub struct Client {
    /// The pod's workload uid in the state.
    pub workload_uid: String,
    /// The pod's namespace if its workload is not in the state (yet).
    pub namespace: String,
    /// Where its forwarded queries leave from.
    pub sockets: UpstreamSockets,
}

/// The node's DNS proxy: shared by all its pods. See the module docs.
#[derive(Debug)]
pub struct DnsServer {
    state: StateHandle,
    config: DnsConfig,
    forwarder: Forwarder,
    metrics: Arc<DnsMetrics>,
}

impl DnsServer {
    pub fn new(state: StateHandle, config: DnsConfig, metrics: Arc<DnsMetrics>) -> Self {
        let cache = CacheBounds { capacity: config.cache_capacity, max_ttl: config.cache_max_ttl };
        let timeouts =
            Timeouts { upstream: config.upstream_timeout, total: config.forward_timeout };
        let forwarder = Forwarder::new(
            config.upstreams.clone(),
            timeouts,
            config.max_in_flight,
            cache,
            Arc::clone(&metrics),
        );
        let config =
            DnsConfig { cluster_domain: config.cluster_domain.to_ascii_lowercase(), ..config };
        Self { state, config, forwarder, metrics }
    }

    pub fn metrics(&self) -> &Arc<DnsMetrics> {
        &self.metrics
    }

    /// Answers one raw query from `client` that came over `transport`.
    /// `None`: the packet is not a DNS query and is dropped (counted in
    /// `istio_dns_malformed_requests_total`).
    pub async fn handle(
        &self,
        client: &Client,
        packet: &[u8],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let query = match Message::from_vec(packet) {
            Ok(q) if q.metadata.message_type == MessageType::Query => q,
            Ok(_) | Err(_) => {
                self.metrics.malformed.inc();
                tracing::debug!(pod = %client.workload_uid, bytes = packet.len(), "malformed DNS query dropped");
                return None;
            }
        };
        let (workload, namespace) = {
            let state = self.state.read();
            match state.workload_by_uid(&client.workload_uid) {
                Some(w) => (w.workload_name.clone(), w.namespace.clone()),
                None => (String::new(), client.namespace.clone()),
            }
        };
        let (response, answered_by) = self.respond(client, &namespace, packet, &query).await;
        let labels = RequestLabels {
            source_workload: workload,
            source_workload_namespace: namespace,
            request_protocol: match transport {
                Transport::Udp => "udp".into(),
                Transport::Tcp => "tcp".into(),
            },
            answered_by: answered_by.into(),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        let bytes = response::fit(response, &query, transport);
        if bytes.is_none() {
            tracing::warn!(pod = %client.workload_uid, "a DNS response could not be encoded");
        }
        bytes
    }

    /// The response and who answered (`mesh`, `upstream` or `error`).
    async fn respond(
        &self,
        client: &Client,
        namespace: &str,
        packet: &[u8],
        query: &Message,
    ) -> (response::Response, &'static str) {
        use response::Response;
        let id = client.workload_uid.as_str();
        if query.metadata.op_code != OpCode::Query {
            return (Response::Built(response::error(query, ResponseCode::NotImp)), "error");
        }
        let [question] = query.queries.as_slice() else {
            return (Response::Built(response::error(query, ResponseCode::FormErr)), "error");
        };
        let name = question.name().to_ascii().to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        let qtype = question.query_type();
        let lookup = if question.query_class() == DNSClass::IN {
            names::lookup(&self.state.read(), &self.config.cluster_domain, namespace, name)
        } else {
            Lookup::Forward
        };
        match lookup {
            Lookup::Found(addresses) if matches!(qtype, RecordType::A | RecordType::AAAA) => {
                tracing::debug!(pod = id, name, %qtype, ?addresses, "DNS query answered by the mesh");
                let built = response::addresses(query, &addresses, qtype, self.config.ttl);
                (Response::Built(built), "mesh")
            }
            Lookup::NxDomain => {
                tracing::debug!(pod = id, name, %qtype, "DNS query: no such mesh name");
                (Response::Built(response::error(query, ResponseCode::NXDomain)), "mesh")
            }
            // No cluster DNS: nobody but the mesh knows the cluster domain.
            // (upstream: ztunnel forwards the names it does not know to
            // kube-dns; where there is none, the answer is the mesh's.)
            lookup
                if !self.forwarder.has_upstreams()
                    && question.query_class() == DNSClass::IN
                    && names::in_domain(&self.config.cluster_domain, name) =>
            {
                let found = matches!(lookup, Lookup::Found(_));
                tracing::debug!(pod = id, name, %qtype, found, "DNS query: cluster name, no cluster DNS");
                let code = if found { ResponseCode::NoError } else { ResponseCode::NXDomain };
                let mut built = response::error(query, code);
                built.metadata.authoritative = true;
                (Response::Built(built), "mesh")
            }
            Lookup::Found(_) | Lookup::Forward => {
                match self.forwarder.forward(&client.sockets, packet, query).await {
                    Ok(forwarded) => {
                        tracing::debug!(
                            pod = id, name, %qtype, cached = forwarded.cached,
                            code = ?forwarded.message.metadata.response_code,
                            "DNS query forwarded"
                        );
                        (Response::Forwarded(forwarded), "upstream")
                    }
                    Err(e) => {
                        tracing::debug!(pod = id, name, %qtype, error = %e, "DNS forward failed");
                        (Response::Built(response::error(query, ResponseCode::ServFail)), "error")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
