//! A stand-in waypoint: terminates HBONE with the waypoint's certificate,
//! records what it was asked for, and relays each tunnel over a new HBONE
//! connection to the target pod's 15008 (passing `forwarded` on), as
//! Istio's waypoint does at L4.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use mesh_hbone::client::Connection;
use mesh_hbone::server::{ConnectRequest, Inbound, Refusal, serve_connection};
use mesh_hbone::{H2Settings, H2Stream};
use mesh_identity::CertificateManager;
use mesh_identity::contexts::TlsContexts;
use mesh_identity::manager;
use mesh_identity::tls::{self, TlsSettings};
use mesh_identity::verify::PeerPolicy;
use mesh_model::Identity;
use mesh_netns::PodHandle;
use ztunnel::inpod::sockets::PodSockets;

use crate::harness::{CaProvider, Mesh, SERVER_ID, WAYPOINT_ID};

/// One tunnel the waypoint served.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) client: Identity,
    pub(crate) target: SocketAddr,
    pub(crate) forwarded: Option<String>,
}

struct Relay {
    sockets: PodSockets,
    tls: Arc<TlsContexts>,
    client: Identity,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Inbound for Relay {
    type Upstream = (H2Stream, Connection);

    async fn open(&self, request: ConnectRequest) -> Result<Self::Upstream, Refusal> {
        let forwarded = request.headers.get("forwarded").cloned();
        self.seen.lock().unwrap().push(Seen {
            client: self.client.clone(),
            target: request.target,
            forwarded: forwarded.as_ref().map(|v| v.to_str().unwrap().to_owned()),
        });
        let unavailable = |e: String| Refusal::Unavailable(e);
        let me: Identity = WAYPOINT_ID.parse().unwrap();
        let contexts = self.tls.for_identity(&me).await.map_err(|e| unavailable(e.to_string()))?;
        let hbone = SocketAddr::new(request.target.ip(), 15008);
        let tcp =
            self.sockets.connect(hbone, None).await.map_err(|e| unavailable(e.to_string()))?;
        let server: Identity = SERVER_ID.parse().unwrap();
        let stream = tls::connect(
            &contexts.client,
            tcp,
            contexts.trust,
            PeerPolicy::Identities(vec![server]),
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
        let connection = Connection::handshake(stream, H2Settings::default())
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut headers = HeaderMap::new();
        if let Some(forwarded) = forwarded {
            headers.insert("forwarded", forwarded);
        }
        let tunnel = connection.connect(request.target, headers).await.map_err(|e| match e {
            mesh_hbone::client::ConnectError::Denied => Refusal::Denied(e.to_string()),
            other => unavailable(other.to_string()),
        })?;
        Ok((tunnel, connection))
    }

    async fn proxy(&self, upstream: Self::Upstream, mut tunnel: H2Stream) {
        let (mut upstream, _connection) = upstream;
        let _ = tokio::io::copy_bidirectional(&mut tunnel, &mut upstream).await;
    }
}

/// Starts the waypoint in `mesh.waypoint`'s namespace on 15008; returns the
/// log of tunnels it served.
pub(crate) async fn start(mesh: &Mesh) -> Arc<Mutex<Vec<Seen>>> {
    let pod: &PodHandle = &mesh.waypoint;
    let sockets = PodSockets::start(&pod.netns().unwrap()).unwrap();
    let listener = sockets.listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 15008))).await.unwrap();
    let provider = CaProvider(Arc::clone(&mesh.ca));
    let manager = CertificateManager::new(provider, manager::Config::default()).unwrap();
    let tls = Arc::new(TlsContexts::new(manager, TlsSettings::default()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (sockets, tls, seen) = (sockets.clone(), Arc::clone(&tls), Arc::clone(&seen));
            tokio::spawn(async move {
                let me: Identity = WAYPOINT_ID.parse().unwrap();
                let contexts = tls.for_identity(&me).await.unwrap();
                let domains = PeerPolicy::TrustDomains(vec!["cluster.local".into()]);
                let (stream, client) =
                    tls::accept(&contexts.server, tcp, contexts.trust, domains).await.unwrap();
                let relay = Relay { sockets, tls, client, seen };
                let _ = serve_connection(stream, H2Settings::default(), Arc::new(relay)).await;
            });
        }
    });
    log
}
