//! In-pod mode: ztunnel's listeners live inside each enrolled pod's network
//! namespace (the CNI agent has installed rules there that send the pod's
//! outbound TCP to 15001 and plaintext inbound to 15006, and let 15008
//! through).
//!
//! - [`sockets`]: a socket factory per pod, a long-lived thread that has
//!   entered the pod's namespace.
//! - [`PodProxies`]: [`PodProxies::add`] binds 15001, 15006 and 15008 in
//!   the pod and serves them (and the DNS proxy on 15053, UDP and TCP,
//!   when [`PodProxies::with_dns`] gave it one; see `crate::dns`); [`PodProxies::remove`] stops the listeners
//!   and closes the pod's connections; [`PodProxies::stop_accepting`]
//!   closes every pod's listeners but keeps open connections (a drain).
//!
//! 15008 terminates mTLS with the pod's own certificate (one listener per
//! pod, so the pod's identity is the server identity), accepts any client
//! of the pod's trust domain and serves HBONE with
//! [`crate::proxy::InboundTunnels`], limited to tunnels whose target is the
//! address the client dialled (the pod's own); the application connection is made
//! from the pod, marked and bound (`IP_TRANSPARENT`) to the client's
//! address, so the application sees the real source. 15006 applies L4
//! policy to a plaintext (identity-less) client and closes denied
//! connections.
//!
//! Limits ([`InboundLimits`], [`PodProxies::with_limits`]): 15008's TLS
//! handshake (with fetching the pod's certificate) must end within the
//! handshake timeout; inbound connections of all pods of the node (15006
//! and 15008) share one cap, at which the inbound listeners stop accepting
//! until a connection closes; every accept loop backs off on resource
//! exhaustion (`mesh_hbone::accept`). 15006 has no handshake to bound: it
//! carries the application's own protocol, and server-first protocols
//! (SMTP, MySQL, ...) send nothing until the server speaks, so a
//! first-byte deadline would break them; what bounds an idle 15006 client
//! is the cap, and connecting to the application is bounded by the connect
//! timeout.
//!
//! Every port refuses connections that would come back into ztunnel
//! (`crate::proxy::selfcall`).
//!
//! Inbound connections admitted under L4 policy (both ports) are tracked in
//! the node's [`ConnectionRegistry`]; [`PodProxies::new`] starts its
//! reconciler, which closes those a state change no longer allows.

mod listeners;
pub mod sockets;

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mesh_hbone::H2Settings;
use mesh_hbone::accept::ConnectionLimit;
use mesh_identity::contexts::TlsContexts;
use mesh_model::Identity;
use mesh_netns::Netns;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

pub use listeners::ConnectionError;
use listeners::PodListeners;
pub(crate) use listeners::spawn_until;
use sockets::{PodSockets, SocketError};

use crate::dns::serve::PodDns;
use crate::dns::{Client, DNS_PORT, DnsServer, UpstreamSockets};
use crate::proxy::outbound::{HBONE_PORT, OutboundProxy};
use crate::proxy::{ConnectionRegistry, run_reconciler};

/// Outbound capture port inside each pod.
pub const OUTBOUND_PORT: u16 = 15001;
/// Plaintext inbound capture port inside each pod.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;

/// The workload behind an enrolled pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWorkload {
    /// Its uid in the proxy state (`cluster/group/kind/ns/name/section`).
    pub uid: String,
    pub identity: Identity,
}

#[derive(Debug, thiserror::Error)]
pub enum InpodError {
    #[error("pod {uid}: {source}")]
    Sockets {
        uid: String,
        #[source]
        source: SocketError,
    },
}

/// Bounds on what clients of a node's inbound listeners can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundLimits {
    /// How long 15008's TLS handshake may take, from the accept.
    pub handshake_timeout: Duration,
    /// Inbound connections (15006 and 15008, all pods of the node) open at
    /// once; at the cap the listeners stop accepting until one closes.
    pub max_connections: usize,
}

impl Default for InboundLimits {
    fn default() -> Self {
        Self { handshake_timeout: Duration::from_secs(10), max_connections: 10_000 }
    }
}

/// What all pods of a node share.
#[derive(Debug)]
pub(crate) struct NodeProxy {
    pub(crate) outbound: OutboundProxy,
    pub(crate) tls: Arc<TlsContexts>,
    pub(crate) h2: H2Settings,
    pub(crate) connections: ConnectionRegistry,
    pub(crate) limits: InboundLimits,
    /// The node-wide cap on inbound connections.
    pub(crate) inbound_cap: ConnectionLimit,
}

/// One enrolled pod: dropping `stop` ends its listeners and connections.
#[derive(Debug)]
struct Pod {
    /// Every task of the pod holds a receiver: a send (or dropping this)
    /// ends them, and `closed()` says when the last one is gone.
    stop: watch::Sender<()>,
    /// Dropping it closes the pod's listeners but not its connections.
    accepting: Option<watch::Sender<()>>,
    /// The workload uid its pooled HBONE connections are keyed by.
    workload_uid: String,
}

/// Runs `work` until it ends or `signal`'s sender is dropped.
async fn until_changed(mut signal: watch::Receiver<()>, work: impl Future<Output = ()>) {
    tokio::select! {
        _ = signal.changed() => {}
        () = work => {}
    }
}

/// The DNS proxy's sockets in a pod: UDP and TCP on 127.0.0.1:15053, and
/// on [::1]:15053 when the pod has IPv6 loopback. On loopback because
/// REDIRECT in OUTPUT sends the pod's queries there, and UDP replies must
/// leave from that address for conntrack to restore the resolver's
/// address as their source.
async fn bind_dns(sockets: &PodSockets) -> Result<Vec<(UdpSocket, TcpListener)>, SocketError> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, DNS_PORT));
    let mut out = vec![(sockets.bind_udp(v4).await?, sockets.listen(v4).await?)];
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, DNS_PORT));
    match (sockets.bind_udp(v6).await, sockets.listen(v6).await) {
        (Ok(udp), Ok(tcp)) => out.push((udp, tcp)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(netns = sockets.netns(), error = %e, "no IPv6 DNS listener");
        }
    }
    Ok(out)
}

/// The in-pod proxies of one node, by pod uid.
#[derive(Debug)]
pub struct PodProxies {
    node: Arc<NodeProxy>,
    pods: Mutex<HashMap<String, Pod>>,
    /// The DNS proxy, served on 15053 in every pod when set.
    dns: Option<Arc<DnsServer>>,
    /// The policy reconciler, stopped when this is dropped.
    reconciler: Option<tokio::task::AbortHandle>,
}

impl Drop for PodProxies {
    fn drop(&mut self) {
        if let Some(reconciler) = &self.reconciler {
            reconciler.abort();
        }
    }
}

impl PodProxies {
    /// `outbound` carries the state, network, TLS contexts, pool and
    /// metrics shared by every pod of the node. Called within a Tokio
    /// runtime, it starts the policy reconciler on it.
    pub fn new(outbound: OutboundProxy, h2: H2Settings) -> Self {
        let tls = Arc::clone(&outbound.tls);
        let connections = ConnectionRegistry::default();
        let reconciler = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let task = run_reconciler(connections.clone(), outbound.state.clone());
            runtime.spawn(task).abort_handle()
        });
        let limits = InboundLimits::default();
        let inbound_cap = ConnectionLimit::new(limits.max_connections);
        let node = Arc::new(NodeProxy { outbound, tls, h2, connections, limits, inbound_cap });
        Self { node, pods: Mutex::default(), dns: None, reconciler }
    }

    /// Applies `limits` to pods added from now on (call before adding any).
    pub fn with_limits(mut self, limits: InboundLimits) -> Self {
        if let Some(node) = Arc::get_mut(&mut self.node) {
            node.limits = limits;
            node.inbound_cap = ConnectionLimit::new(limits.max_connections);
        } else {
            tracing::warn!("inbound limits set after pods were added; ignored");
        }
        self
    }

    /// Inbound connections holding a slot of the node's cap now.
    pub fn inbound_connections(&self) -> usize {
        self.node.inbound_cap.in_use()
    }

    /// Also serves `dns` on 15053 (UDP and TCP) in every pod added from
    /// now on.
    pub fn with_dns(mut self, dns: Arc<DnsServer>) -> Self {
        self.dns = Some(dns);
        self
    }

    /// The node's open inbound connections under L4 policy.
    pub fn connections(&self) -> &ConnectionRegistry {
        &self.node.connections
    }

    /// Starts proxying for the pod `uid` whose namespace is `netns`: binds
    /// 15001, 15006 and 15008 there (and 15053 on loopback, UDP and TCP,
    /// with a DNS proxy; see `bind_dns`) and serves them. Adding a pod again replaces its
    /// listeners.
    pub async fn add(&self, uid: &str, pod: PodWorkload, netns: &Netns) -> Result<(), InpodError> {
        let sockets_error = |source| InpodError::Sockets { uid: uid.to_owned(), source };
        let sockets = PodSockets::start(netns).map_err(sockets_error)?;
        let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let outbound = sockets.listen(any(OUTBOUND_PORT)).await.map_err(sockets_error)?;
        let hbone = sockets.listen(any(HBONE_PORT)).await.map_err(sockets_error)?;
        let plaintext = sockets.listen(any(INBOUND_PLAINTEXT_PORT)).await.map_err(sockets_error)?;
        let dns_sockets = match &self.dns {
            Some(_) => bind_dns(&sockets).await.map_err(sockets_error)?,
            None => Vec::new(),
        };
        let (stop_tx, stop) = watch::channel(());
        let (accepting_tx, accepting) = watch::channel(());
        // Fetch the pod's certificate now rather than on its first
        // connection (upstream prefetches identities of the node's pods).
        let workload_uid = pod.uid.clone();
        let (tls, identity, pod_uid) =
            (Arc::clone(&self.node.tls), pod.identity.clone(), uid.to_owned());
        spawn_until(stop.clone(), async move {
            if let Err(e) = tls.for_identity(&identity).await {
                tracing::warn!(pod = pod_uid, %identity, error = %e, "prefetching the certificate");
            }
        });
        if let Some(server) = &self.dns {
            let client = Client {
                workload_uid: pod.uid.clone(),
                namespace: pod.identity.namespace().to_owned(),
                sockets: UpstreamSockets::pod(sockets.clone()),
            };
            let dns = Arc::new(PodDns { server: Arc::clone(server), client, stop: stop.clone() });
            for (udp, tcp) in dns_sockets {
                let udp = Arc::clone(&dns).udp(udp);
                spawn_until(stop.clone(), until_changed(accepting.clone(), udp));
                let tcp = Arc::clone(&dns).tcp(tcp);
                spawn_until(stop.clone(), until_changed(accepting.clone(), tcp));
            }
        }
        let listeners = Arc::new(PodListeners {
            node: Arc::clone(&self.node),
            pod,
            sockets,
            stop: stop.clone(),
        });
        let out = Arc::clone(&listeners).outbound(outbound);
        spawn_until(stop.clone(), until_changed(accepting.clone(), out));
        let hbone = Arc::clone(&listeners).hbone(hbone);
        spawn_until(stop.clone(), until_changed(accepting.clone(), hbone));
        spawn_until(stop, until_changed(accepting, listeners.plaintext(plaintext)));
        tracing::info!(pod = uid, netns = %netns.path().display(), "pod enrolled");
        self.pods.lock().unwrap_or_else(PoisonError::into_inner).insert(
            uid.to_owned(),
            Pod { stop: stop_tx, accepting: Some(accepting_tx), workload_uid },
        );
        Ok(())
    }

    /// Stops proxying for `uid`: its listeners close, its connections are
    /// dropped, and its pooled HBONE connections are forgotten (each closes
    /// as its last stream ends). Returns whether the pod was known.
    pub fn remove(&self, uid: &str) -> bool {
        self.take(uid).is_some()
    }

    /// As [`Self::remove`], then waits (up to `grace`) until every task of
    /// the pod has ended, so that each application connection it carried
    /// is closed (reset, when cut short) before the caller acknowledges the
    /// removal and the CNI agent takes the capture rules away. Without the
    /// wait, an application could still write on a connection whose
    /// redirect is gone, and those bytes would leave the pod in plaintext.
    pub async fn remove_and_wait(&self, uid: &str, grace: Duration) -> bool {
        let Some(pod) = self.take(uid) else { return false };
        pod.stop.send_replace(());
        if tokio::time::timeout(grace, pod.stop.closed()).await.is_err() {
            tracing::warn!(pod = uid, ?grace, "pod tasks still running after the removal grace");
        }
        true
    }

    fn take(&self, uid: &str) -> Option<Pod> {
        let removed = self.pods.lock().unwrap_or_else(PoisonError::into_inner).remove(uid);
        let pod = removed?;
        let pooled = self.node.outbound.pool.retain(|key| key.source_pod != pod.workload_uid);
        tracing::info!(pod = uid, pooled, "pod removed");
        Some(pod)
    }

    /// Closes every pod's listeners and keeps their open connections (the
    /// start of a drain); [`Self::remove`] then ends those.
    pub fn stop_accepting(&self) {
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        for pod in pods.values_mut() {
            pod.accepting = None;
        }
    }

    /// Uids of the enrolled pods.
    pub fn pods(&self) -> Vec<String> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }
}
