//! The source side: a connection an enrolled pod made, captured on its
//! 15001, goes to its original destination, over HBONE when the destination
//! is a mesh workload.
//!
//! Routing: a service VIP picks an endpoint (`pick_endpoint`), a workload IP
//! is that workload on the original port, anything else passes through
//! unchanged (plain TCP from the pod, marked so the pod's rules let it out).
//! HBONE: mTLS to `<endpoint ip>:15008` from the pod's namespace presenting
//! the pod's identity and expecting the destination's, one pooled HTTP/2
//! connection per (source identity, destination identity, source IP,
//! destination IP), and a CONNECT stream per connection with `forwarded` and
//! `baggage` headers.
//!
//! Waypoints: when the destination, as addressed (a service VIP: the
//! service's; a pod IP: the workload's), has a waypoint, the tunnel goes to
//! a waypoint pod instead (an endpoint of the waypoint's service, or the
//! workload or VIP at its address, on its HBONE port), expecting the
//! waypoint's identity, with the original destination as the CONNECT
//! target. The waypoint itself is never sent to itself.
//!
//! Not yet: double HBONE through network gateways; IPv6 capture (the pod
//! listeners are bound on IPv4 only).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use mesh_hbone::client::{ConnectError, Pool};
use mesh_hbone::headers::{Baggage, forwarded_for};
use mesh_identity::contexts::{ContextError, TlsContexts};
use mesh_identity::tls;
use mesh_identity::verify::PeerPolicy;
use mesh_model::{
    GatewayAddress, GatewayDestination, Identity, TunnelProtocol, Workload, WorkloadType,
};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::metrics::{ConnectionLabels, Reporter, ResponseFlag, SharedMetrics};
use super::selfcall::{SelfCall, is_local_address, is_ztunnel_port};
use crate::inpod::sockets::{PodSockets, SocketError};
use crate::state::{Destination, ProxyState, StateHandle, is_passthrough};

/// The HBONE port dialled on destination pods.
pub const HBONE_PORT: u16 = 15008;
/// How long a TCP connect from ztunnel may take (upstream: 10 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the TLS handshake of an HBONE connection may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What HBONE connections are shared by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The workload uid of the pod whose namespace the connection was
    /// dialled from, so that its connections can be dropped when it leaves.
    pub source_pod: String,
    pub source_identity: Identity,
    pub destination_identity: Identity,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
}

/// The node's HBONE connection pool.
pub type HbonePool = Pool<PoolKey>;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("reading the original destination: {0}")]
    OriginalDestination(#[source] io::Error),
    #[error("source workload {uid} is not known")]
    UnknownSource { uid: String },
    #[error("service {service} has no endpoint for port {port}")]
    NoEndpoint { service: String, port: u16 },
    #[error("waypoint {waypoint} has no usable endpoint")]
    NoWaypoint { waypoint: String },
    #[error("TLS contexts for the source: {0}")]
    Certificate(#[from] ContextError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    SelfCall(#[from] SelfCall),
    #[error("connecting to {target} timed out after {timeout:?}")]
    ConnectTimeout { target: SocketAddr, timeout: Duration },
    #[error("HBONE tunnel to {target}: {source}")]
    Tunnel {
        target: SocketAddr,
        #[source]
        source: ConnectError,
    },
    #[error("copying: {0}")]
    Copy(#[source] io::Error),
}

/// Where one captured connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// Plain TCP to this address.
    Direct(SocketAddr),
    /// HBONE to `peer` (the destination or its waypoint) at `peer_addr`,
    /// CONNECT to `target`.
    Hbone { peer: Arc<Workload>, peer_addr: SocketAddr, target: SocketAddr },
}

/// Shared by the outbound listeners of all pods of a node.
#[derive(Debug)]
pub struct OutboundProxy {
    pub state: StateHandle,
    pub network: String,
    pub tls: Arc<TlsContexts>,
    pub pool: Arc<HbonePool>,
    pub metrics: SharedMetrics,
}

impl OutboundProxy {
    /// Proxies one connection accepted on the pod's outbound port, for the
    /// pod whose workload uid is `source_uid`, until both sides close.
    pub async fn handle(
        &self,
        sockets: &PodSockets,
        source_uid: &str,
        client: TcpStream,
    ) -> Result<(), OutboundError> {
        let std_client = client.into_std().map_err(OutboundError::OriginalDestination)?;
        let original = mesh_netns::socket::original_destination(&std_client)
            .map_err(OutboundError::OriginalDestination)?;
        let client_addr = std_client.peer_addr().map_err(OutboundError::OriginalDestination)?;
        let mut client =
            TcpStream::from_std(std_client).map_err(OutboundError::OriginalDestination)?;
        let source = self
            .state
            .read()
            .workload_by_uid(source_uid)
            .ok_or_else(|| OutboundError::UnknownSource { uid: source_uid.to_owned() })?;
        let route = route(&self.state.read(), &self.network, &source, original)?;
        if let Some(refused) = self_call(sockets, original, &route).await {
            self.failed(&source, None, ResponseFlag::Deny);
            tracing::info!(
                target: "access",
                direction = "outbound",
                src.addr = %client_addr,
                src.identity = %source.identity,
                dst.addr = %original,
                error = %refused,
                "connection failed"
            );
            return Err(refused.into());
        }
        match route {
            Route::Direct(target) => {
                let connect = sockets.connect(target, None);
                let mut upstream =
                    tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| {
                        OutboundError::ConnectTimeout { target, timeout: CONNECT_TIMEOUT }
                    })??;
                let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                copied.map(drop).map_err(OutboundError::Copy)
            }
            Route::Hbone { peer: workload, peer_addr, target } => {
                let started = Instant::now();
                let mut tunnel = self
                    .tunnel(sockets, &source, &workload, peer_addr, target, client_addr.ip())
                    .await
                    .inspect_err(|_| {
                        self.failed(&source, Some(&workload), ResponseFlag::Connect)
                    })?;
                let labels = ConnectionLabels::new(
                    Reporter::Source,
                    Some(&source),
                    Some(&source.identity),
                    &workload,
                );
                self.metrics.opened(&labels);
                let copied = tokio::io::copy_bidirectional(&mut client, &mut tunnel).await;
                let (sent, received) = copied.as_ref().map_or((0, 0), |c| *c);
                self.metrics.closed(&labels, sent, received);
                tracing::info!(
                    target: "access",
                    direction = "outbound",
                    src.addr = %client_addr,
                    src.identity = %source.identity,
                    dst.addr = %original,
                    dst.hbone_addr = %target,
                    dst.workload = %workload.name,
                    dst.identity = %workload.identity,
                    bytes_sent = sent,
                    bytes_recv = received,
                    duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "connection complete"
                );
                copied.map(drop).map_err(OutboundError::Copy)
            }
        }
    }

    /// Counts a connection from `source` that failed before it opened.
    fn failed(&self, source: &Workload, destination: Option<&Workload>, flag: ResponseFlag) {
        let labels = ConnectionLabels::failed(
            Reporter::Source,
            Some(source),
            Some(&source.identity),
            destination,
            flag,
        );
        self.metrics.failed(&labels);
    }

    async fn tunnel(
        &self,
        sockets: &PodSockets,
        source: &Workload,
        destination: &Workload,
        peer_addr: SocketAddr,
        target: SocketAddr,
        client_ip: IpAddr,
    ) -> Result<mesh_hbone::H2Stream, OutboundError> {
        let contexts = self.tls.for_identity(&source.identity).await?;
        let key = PoolKey {
            source_pod: source.uid.clone(),
            source_identity: source.identity.clone(),
            destination_identity: destination.identity.clone(),
            source_ip: client_ip,
            destination_ip: peer_addr.ip(),
        };
        let expected = destination.identity.clone();
        let sockets = sockets.clone();
        let dial = move || async move {
            let timed_out = |what: &str, after: Duration| {
                io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out after {after:?}"))
            };
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, sockets.connect(peer_addr, None))
                .await
                .map_err(|_| timed_out("TCP connect", CONNECT_TIMEOUT))?
                .map_err(io::Error::other)?;
            let handshake = tls::connect(
                &contexts.client,
                tcp,
                contexts.trust,
                PeerPolicy::Identities(vec![expected]),
            );
            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake)
                .await
                .map_err(|_| timed_out("TLS handshake", TLS_HANDSHAKE_TIMEOUT))?
                .map_err(io::Error::other)
        };
        self.pool
            .connect(key, dial, target, headers(source, client_ip))
            .await
            .map_err(|source| OutboundError::Tunnel { target, source })
    }
}

/// Whether a connection to `original` (routed as `route`) would reach one
/// of ztunnel's own listeners: the original or direct destination is one
/// of its ports on an address of the pod's or ztunnel's namespace, or an
/// HBONE tunnel targets one of its ports (the destination refuses those).
async fn self_call(sockets: &PodSockets, original: SocketAddr, route: &Route) -> Option<SelfCall> {
    let local = |target: SocketAddr| async move {
        if !is_ztunnel_port(target.port()) {
            return false;
        }
        let ip = target.ip();
        // Unanswerable means local: fail closed.
        is_local_address(ip) || sockets.is_local(ip).await.unwrap_or(true)
    };
    if local(original).await {
        return Some(SelfCall(original));
    }
    match *route {
        Route::Direct(target) => local(target).await.then_some(SelfCall(target)),
        Route::Hbone { target, .. } => is_ztunnel_port(target.port()).then_some(SelfCall(target)),
    }
}

/// Where a connection from `source` to `original` goes.
fn route(
    state: &ProxyState,
    network: &str,
    source: &Workload,
    original: SocketAddr,
) -> Result<Route, OutboundError> {
    // Ownership and exportTo are decided for the caller: a ServiceEntry
    // exported only to its own namespace is seen from there and nowhere else.
    let destination =
        state.resolve_destination_for(network, original, Some(source.namespace.as_str()));
    if let Some(gateway) = state.waypoint_for(&destination) {
        let (peer, peer_addr) = waypoint_endpoint(state, &gateway, source)?;
        if peer.uid != source.uid {
            return Ok(Route::Hbone { peer, peer_addr, target: original });
        }
    }
    let (workload, target) = match destination {
        Destination::Unknown => return Ok(Route::Direct(original)),
        Destination::Service { service, .. } if is_passthrough(&service) => {
            return Ok(Route::Direct(original));
        }
        Destination::Service { service, port } => {
            let endpoint = state.pick_endpoint(&service, port, source).ok_or_else(|| {
                OutboundError::NoEndpoint { service: service.key().to_string(), port }
            })?;
            (endpoint.workload, endpoint.address)
        }
        Destination::Workload { workload } => (workload, original),
    };
    Ok(match workload.tunnel_protocol {
        TunnelProtocol::Hbone => {
            let peer_addr = SocketAddr::new(target.ip(), HBONE_PORT);
            Route::Hbone { peer: workload, peer_addr, target }
        }
        TunnelProtocol::None | TunnelProtocol::LegacyIstioMtls => Route::Direct(target),
    })
}

/// The waypoint pod to tunnel to and its HBONE address: a workload at the
/// gateway's address, else an endpoint of the service at that address or
/// of that name, picked for the gateway's HBONE port.
fn waypoint_endpoint(
    state: &ProxyState,
    gateway: &GatewayAddress,
    source: &Workload,
) -> Result<(Arc<Workload>, SocketAddr), OutboundError> {
    let port = gateway.hbone_mtls_port;
    let service = match &gateway.destination {
        GatewayDestination::Address(address) => {
            if let Some(w) = state.workload_by_ip(&address.network, address.address) {
                return Ok((w, SocketAddr::new(address.address, port)));
            }
            state.service_by_vip(&address.network, address.address)
        }
        GatewayDestination::Hostname(host) => state.service_by_key(host),
    };
    let no_waypoint = || OutboundError::NoWaypoint {
        waypoint: match &gateway.destination {
            GatewayDestination::Address(a) => a.to_string(),
            GatewayDestination::Hostname(h) => h.to_string(),
        },
    };
    let endpoint =
        service.and_then(|s| state.pick_endpoint(&s, port, source)).ok_or_else(no_waypoint)?;
    Ok((endpoint.workload, SocketAddr::new(endpoint.address.ip(), port)))
}

/// `forwarded` and `baggage` for a tunnel from `source`.
fn headers(source: &Workload, client_ip: IpAddr) -> HeaderMap {
    let baggage = Baggage {
        cluster: source.cluster_id.clone(),
        namespace: source.namespace.clone(),
        workload_kind: match source.workload_type {
            WorkloadType::Deployment => "deployment",
            WorkloadType::CronJob => "cronjob",
            WorkloadType::Pod => "pod",
            WorkloadType::Job => "job",
        }
        .to_owned(),
        workload_name: source.workload_name.clone(),
        service: source.canonical_name.clone(),
        version: source.canonical_revision.clone(),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [("forwarded", forwarded_for(client_ip)), ("baggage", baggage.encode())] {
        match HeaderValue::from_str(&value) {
            Ok(v) => {
                headers.insert(name, v);
            }
            Err(_) => tracing::debug!(name, value, "header value not sendable; skipped"),
        }
    }
    headers
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
