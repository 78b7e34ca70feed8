//! The destination side of HBONE.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_hbone::H2Stream;
use mesh_hbone::headers::parse_forwarded_for;
use mesh_hbone::server::{ConnectRequest, Inbound, Refusal};
use mesh_model::{GatewayDestination, Identity, Workload};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::connections::{ConnectionRegistry, OpenConnection, Registration};
use super::metrics::{ConnectionLabels, Reporter, ResponseFlag, SharedMetrics};
use super::selfcall::{SelfCall, is_ztunnel_port};
use crate::policy::ConnectionInfo;
use crate::state::{ProxyState, StateHandle};

/// The workload `uid` if `ip` is one of its addresses: the rule for what a
/// pod's inbound listeners deliver to. The pod's own workload, found by
/// uid, not whichever workload the state indexes at `ip`, so an entry
/// claiming the pod's address (a WorkloadEntry, say) is never served in
/// its place.
pub fn pod_workload_at(state: &ProxyState, uid: &str, ip: IpAddr) -> Option<Arc<Workload>> {
    state.workload_by_uid(uid).filter(|w| w.addresses.contains(&ip))
}

/// A refused stream: the status to answer, the flag to count it under,
/// and the destination when known.
#[derive(Debug)]
struct Rejected {
    refusal: Refusal,
    flag: ResponseFlag,
    destination: Option<Arc<Workload>>,
}

impl Rejected {
    fn new(refusal: Refusal, flag: ResponseFlag, destination: Option<Arc<Workload>>) -> Self {
        Self { refusal, flag, destination }
    }
}

/// Opens the connection to the application. In a pod this is a socket made
/// in the pod's network namespace, marked to skip redirection and bound to
/// the client's address (`IP_TRANSPARENT`) so the application sees the real
/// source; tests connect plainly.
pub trait Upstream: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn connect(
        &self,
        source: SocketAddr,
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The verified peer of one mTLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub identity: Identity,
    pub address: SocketAddr,
}

/// Serves the CONNECT streams of one accepted connection.
pub struct InboundTunnels<U> {
    state: StateHandle,
    network: String,
    peer: Peer,
    upstream: Arc<U>,
    metrics: SharedMetrics,
    /// When set, the only IP tunnels may target (see [`Self::only_to`]).
    local_ip: Option<IpAddr>,
    /// When set, the only workload tunnels may reach (see
    /// [`Self::for_workload`]).
    pod_uid: Option<String>,
    /// When set, streams admitted by L4 policy are tracked here and closed
    /// when policy stops allowing them (see [`Self::tracked`]).
    connections: Option<ConnectionRegistry>,
}

impl<U> std::fmt::Debug for InboundTunnels<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundTunnels")
            .field("peer", &self.peer)
            .field("network", &self.network)
            .finish()
    }
}

impl<U: Upstream> InboundTunnels<U> {
    pub fn new(
        state: StateHandle,
        network: impl Into<String>,
        peer: Peer,
        upstream: Arc<U>,
        metrics: SharedMetrics,
    ) -> Self {
        Self {
            state,
            network: network.into(),
            peer,
            upstream,
            metrics,
            local_ip: None,
            pod_uid: None,
            connections: None,
        }
    }

    /// Refuses (400) tunnels to any IP but `ip`: the address the client
    /// dialled. An in-pod listener serves one pod, and the application
    /// connection is made from that pod's namespace past its capture rules;
    /// without this a client could use the pod to reach other addresses.
    pub fn only_to(mut self, ip: IpAddr) -> Self {
        self.local_ip = Some(ip);
        self
    }

    /// Admits tunnels only to the workload `uid` (the pod whose namespace
    /// the listener is in), at one of its own addresses; a CONNECT to any
    /// other address, even one the state gives to another workload (say a
    /// WorkloadEntry squatting the pod's IP), is refused.
    pub fn for_workload(mut self, uid: impl Into<String>) -> Self {
        self.pod_uid = Some(uid.into());
        self
    }

    /// Tracks streams admitted under L4 policy in `registry`, whose
    /// reconciler closes them once policy no longer allows them.
    pub fn tracked(mut self, registry: ConnectionRegistry) -> Self {
        self.connections = Some(registry);
        self
    }

    /// Identities allowed to send traffic to a workload behind `waypoint`:
    /// those of the waypoint's own workloads.
    fn waypoint_identities(&self, waypoint: &GatewayDestination) -> Vec<Identity> {
        let state = self.state.read();
        match waypoint {
            GatewayDestination::Address(address) => state
                .workload_by_ip(&address.network, address.address)
                .map(|w| vec![w.identity.clone()])
                .unwrap_or_default(),
            GatewayDestination::Hostname(host) => state.endpoint_identities(host),
        }
    }

    /// Decides on one stream: the target must be a known workload; if it has
    /// a waypoint only the waypoint may reach it; otherwise L4 policy
    /// applies. Returns the destination and whether the peer is its
    /// waypoint.
    fn admit(&self, target: SocketAddr) -> Result<(Arc<Workload>, bool), Rejected> {
        // upstream: HBONE targets on ztunnel's own ports are refused
        // (`Error::SelfCall`): delivering there would re-enter ztunnel.
        if is_ztunnel_port(target.port()) {
            let refusal = Refusal::BadRequest(SelfCall(target).to_string());
            return Err(Rejected::new(refusal, ResponseFlag::Deny, None));
        }
        if let Some(local) = self.local_ip.filter(|ip| *ip != target.ip()) {
            let refusal =
                Refusal::BadRequest(format!("target {target} is not this pod's address {local}"));
            return Err(Rejected::new(refusal, ResponseFlag::Deny, None));
        }
        let destination = match &self.pod_uid {
            Some(uid) => {
                pod_workload_at(&self.state.read(), uid, target.ip()).ok_or_else(|| {
                    let refusal = Refusal::BadRequest(format!(
                        "target {target} is not an address of this pod's workload {uid}"
                    ));
                    Rejected::new(refusal, ResponseFlag::Deny, None)
                })?
            }
            None => {
                self.state.read().workload_by_ip(&self.network, target.ip()).ok_or_else(|| {
                    let refusal = Refusal::Unavailable(format!("no workload at {target}"));
                    Rejected::new(refusal, ResponseFlag::Connect, None)
                })?
            }
        };
        if let Some(waypoint) = &destination.waypoint {
            let allowed = self.waypoint_identities(&waypoint.destination);
            if allowed.contains(&self.peer.identity) {
                return Ok((destination, true));
            }
            let refusal = Refusal::Denied(format!(
                "{} has a waypoint; {} must go through it",
                destination.uid, self.peer.identity
            ));
            return Err(Rejected::new(refusal, ResponseFlag::Deny, Some(destination)));
        }
        let decision = self.state.read().authorize(&ConnectionInfo {
            source_identity: Some(&self.peer.identity),
            source_ip: self.peer.address.ip(),
            destination_ip: target.ip(),
            destination_port: target.port(),
            destination_workload: &destination,
        });
        if decision.allowed {
            Ok((destination, false))
        } else {
            let refusal = Refusal::Denied(decision.reason.to_string());
            Err(Rejected::new(refusal, ResponseFlag::Deny, Some(destination)))
        }
    }

    /// Counts a stream that was refused or could not be opened.
    fn count_failed(&self, flag: ResponseFlag, destination: Option<&Workload>) {
        let source = self.state.read().workload_by_ip(&self.network, self.peer.address.ip());
        let labels = ConnectionLabels::failed(
            Reporter::Destination,
            source.as_deref(),
            Some(&self.peer.identity),
            destination,
            flag,
        );
        self.metrics.failed(&labels);
    }
}

/// What `open` hands to `proxy`.
#[derive(Debug)]
pub struct OpenTunnel<S> {
    upstream: S,
    labels: ConnectionLabels,
    started: Instant,
    /// Carries the connection's addresses and identities for its log lines.
    span: tracing::Span,
    /// Present when the stream is tracked for policy changes.
    registration: Option<Registration>,
}

impl<U: Upstream> InboundTunnels<U> {
    /// The access-log span of one stream: the fields every line repeats.
    fn access_span(&self, target: SocketAddr) -> tracing::Span {
        tracing::info_span!(
            target: "access",
            "inbound",
            direction = "inbound",
            src.addr = %self.peer.address,
            src.identity = %self.peer.identity,
            dst.addr = %target,
            dst.workload = tracing::field::Empty,
            dst.namespace = tracing::field::Empty,
        )
    }
}

impl<U: Upstream> Inbound for InboundTunnels<U> {
    type Upstream = OpenTunnel<U::Stream>;

    async fn open(&self, request: ConnectRequest) -> Result<Self::Upstream, Refusal> {
        let span = self.access_span(request.target);
        let admitted_at = self.state.generation();
        let (destination, from_waypoint) = self.admit(request.target).map_err(|rejected| {
            let error = &rejected.refusal;
            tracing::info!(target: "access", parent: &span, %error, "connection refused");
            self.count_failed(rejected.flag, rejected.destination.as_deref());
            rejected.refusal
        })?;
        // From the destination's own waypoint (same trust domain, verified
        // identity) the original client is trusted from `forwarded`, as
        // upstream does; otherwise it is the connection's peer.
        let client_ip = from_waypoint
            .then(|| request.headers.get("forwarded"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(parse_forwarded_for)
            .unwrap_or_else(|| self.peer.address.ip());
        let source = self.state.read().workload_by_ip(&self.network, client_ip);
        let client = SocketAddr::new(client_ip, 0);
        let upstream = self.upstream.connect(client, request.target).await.map_err(|e| {
            self.count_failed(ResponseFlag::Connect, Some(&destination));
            Refusal::Unavailable(format!("connecting to {}: {e}", request.target))
        })?;
        let labels = ConnectionLabels::new(
            Reporter::Destination,
            source.as_deref(),
            Some(&self.peer.identity),
            &destination,
        );
        self.metrics.opened(&labels);
        span.record("dst.workload", destination.name.as_str());
        span.record("dst.namespace", destination.namespace.as_str());
        tracing::info!(target: "access", parent: &span, "connection opened");
        let registration = self.connections.as_ref().filter(|_| !from_waypoint).map(|r| {
            let facts = OpenConnection {
                source_identity: Some(self.peer.identity.clone()),
                source_ip: self.peer.address.ip(),
                destination: request.target,
                destination_uid: destination.uid.clone(),
            };
            r.register(facts, &self.state, admitted_at)
        });
        Ok(OpenTunnel { upstream, labels, started: Instant::now(), span, registration })
    }

    async fn proxy(&self, mut open: Self::Upstream, mut tunnel: H2Stream) {
        let copy = tokio::io::copy_bidirectional(&mut tunnel, &mut open.upstream);
        let result = match open.registration.as_mut() {
            Some(registration) => tokio::select! {
                r = copy => r.map_err(|e| e.to_string()),
                reason = registration.closed() => Err(format!("policy changed: {reason}")),
            },
            None => copy.await.map_err(|e| e.to_string()),
        };
        drop(open.registration.take());
        let (received, sent, error) = match result {
            Ok((from_client, to_client)) => (from_client, to_client, None),
            Err(e) => (0, 0, Some(e)),
        };
        self.metrics.closed(&open.labels, received, sent);
        tracing::info!(
            target: "access",
            parent: &open.span,
            bytes_recv = received,
            bytes_sent = sent,
            duration_ms = u64::try_from(open.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error = error.as_deref().unwrap_or(""),
            "connection complete"
        );
    }
}
