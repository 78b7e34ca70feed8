//! The destination side of HBONE over real BoringSSL mTLS: the peer's
//! verified identity drives L4 policy and the waypoint rule, allowed tunnels
//! reach the application, refusals come back as 401 / 503, and the TCP
//! metrics carry the peer's principal and `mutual_tls`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use mesh_hbone::H2Settings;
use mesh_hbone::client::{ConnectError, Connection};
use mesh_hbone::server::serve_connection;
use mesh_identity::tls::{self, TlsSettings};
use mesh_identity::verify::PeerPolicy;
use mesh_identity::{TrustBundle, WorkloadCertificate};
use mesh_model::Identity;
use mesh_proto::security as sec;
use mesh_proto::workload as pb;
use mesh_test_support::{LeafSpec, TestCa};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ztunnel::proxy::{
    ConnectionRegistry, InboundTunnels, Peer, TcpMetrics, Upstream, run_reconciler,
};
use ztunnel::state::StateHandle;

const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const WAYPOINT: &str = "spiffe://cluster.local/ns/default/sa/waypoint";
const SERVER_IP: [u8; 4] = [127, 0, 0, 1];
const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];
const WAYPOINT_HOST: &str = "waypoint.default.svc.cluster.local";

struct Plain;

impl Upstream for Plain {
    type Stream = TcpStream;

    async fn connect(&self, _source: SocketAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
        TcpStream::connect(target).await
    }
}

fn workload(name: &str, sa: &str, ip: [u8; 4]) -> pb::Workload {
    pb::Workload {
        uid: format!("Kubernetes//Pod/default/{name}"),
        name: name.into(),
        namespace: "default".into(),
        addresses: vec![ip.to_vec()],
        service_account: sa.into(),
        workload_name: name.into(),
        canonical_name: name.into(),
        canonical_revision: "v1".into(),
        tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
        ..Default::default()
    }
}

fn insert(state: &StateHandle, w: pb::Workload) {
    let uid = w.uid.clone();
    let address =
        mesh_model::Address::try_from(pb::Address { r#type: Some(pb::address::Type::Workload(w)) })
            .unwrap();
    state.write(|s| s.insert_address(&uid, address)).unwrap();
}

struct Node {
    ca: TestCa,
    trust: Arc<TrustBundle>,
    state: StateHandle,
    metrics: Arc<TcpMetrics>,
    registry: Registry,
    app: SocketAddr,
    connections: ConnectionRegistry,
}

async fn echo() -> SocketAddr {
    mesh_test_support::tcp_echo_server(SocketAddr::from((SERVER_IP, 0))).await.unwrap()
}

async fn node() -> Node {
    let ca = TestCa::root("mesh").unwrap();
    let trust = Arc::new(TrustBundle::from_pem(ca.root_pem().as_bytes()).unwrap());
    let state = StateHandle::default();
    insert(&state, workload("server", "server", SERVER_IP));
    insert(&state, workload("client", "client", CLIENT_IP));
    let metrics = Arc::new(TcpMetrics::default());
    let mut registry = Registry::with_prefix("istio");
    metrics.register(&mut registry);
    let connections = ConnectionRegistry::default();
    Node { ca, trust, state, metrics, registry, app: echo().await, connections }
}

fn cert(ca: &TestCa, id: &str) -> WorkloadCertificate {
    let issued = ca.issue(&LeafSpec::workload(id)).unwrap();
    WorkloadCertificate::from_chain_pem(&id.parse().unwrap(), issued.key, &issued.chain_pem)
        .unwrap()
}

/// A client presenting `client_id` tunnels to `target` through the node.
async fn tunnel(
    node: &Node,
    client_id: &str,
    target: SocketAddr,
) -> Result<mesh_hbone::H2Stream, ConnectError> {
    tunnel_with(node, client_id, target, None, None).await
}

/// [`tunnel`] from the client identity to a listener serving only `pod`.
async fn tunnel_only_to(
    node: &Node,
    pod: [u8; 4],
    target: SocketAddr,
) -> Result<mesh_hbone::H2Stream, ConnectError> {
    tunnel_with(node, CLIENT, target, Some(IpAddr::from(pod)), None).await
}

/// [`tunnel`] to a listener serving the workload `uid` (as a pod's is).
async fn tunnel_for(
    node: &Node,
    uid: &str,
    target: SocketAddr,
) -> Result<mesh_hbone::H2Stream, ConnectError> {
    tunnel_with(node, CLIENT, target, None, Some(uid.to_owned())).await
}

async fn tunnel_with(
    node: &Node,
    client_id: &str,
    target: SocketAddr,
    only_to: Option<IpAddr>,
    pod: Option<String>,
) -> Result<mesh_hbone::H2Stream, ConnectError> {
    let (a, b) = tokio::io::duplex(1 << 20);
    let server_ctx = tls::server_context(&cert(&node.ca, SERVER), TlsSettings::default()).unwrap();
    let (trust, state, metrics) =
        (Arc::clone(&node.trust), node.state.clone(), Arc::clone(&node.metrics));
    let connections = node.connections.clone();
    tokio::spawn(async move {
        let (stream, identity) = tls::accept(
            &server_ctx,
            b,
            trust,
            PeerPolicy::TrustDomains(vec!["cluster.local".into()]),
        )
        .await
        .unwrap();
        let peer = Peer { identity, address: SocketAddr::from((CLIENT_IP, 40000)) };
        let mut inbound =
            InboundTunnels::new(state, "", peer, Arc::new(Plain), metrics).tracked(connections);
        if let Some(ip) = only_to {
            inbound = inbound.only_to(ip);
        }
        if let Some(uid) = pod {
            inbound = inbound.for_workload(uid);
        }
        let _ = serve_connection(stream, H2Settings::default(), Arc::new(inbound)).await;
    });
    let client_ctx =
        tls::client_context(&cert(&node.ca, client_id), TlsSettings::default()).unwrap();
    let server_id: Identity = SERVER.parse().unwrap();
    let tls_stream = tls::connect(
        &client_ctx,
        a,
        Arc::clone(&node.trust),
        PeerPolicy::Identities(vec![server_id]),
    )
    .await
    .unwrap();
    let connection = Connection::handshake(tls_stream, H2Settings::default()).await.unwrap();
    connection.connect(target, HeaderMap::new()).await
}

fn metrics_text(node: &Node) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &node.registry).unwrap();
    out
}

#[tokio::test]
async fn allowed_tunnel_reaches_the_app_and_is_measured() {
    let node = node().await;
    let mut stream = tunnel(&node, CLIENT, node.app).await.unwrap();
    stream.write_all(b"hello mesh").await.unwrap();
    let mut buf = [0u8; 10];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello mesh");
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();

    let text = metrics_text(&node);
    let opened = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .expect("opened series");
    assert!(opened.contains("connection_security_policy=\"mutual_tls\""), "{opened}");
    assert!(opened.contains(&format!("source_principal=\"{CLIENT}\"")), "{opened}");
    assert!(opened.contains("source_workload=\"client\""), "{opened}");
    assert!(opened.contains("destination_workload=\"server\""), "{opened}");
    assert!(opened.contains("reporter=\"destination\""), "{opened}");
    assert!(opened.ends_with(" 1"), "{opened}");
    // The close is recorded when both directions finished.
    for _ in 0..100 {
        if metrics_text(&node).contains("istio_tcp_connections_closed_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = metrics_text(&node);
    let received = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_received_bytes_total{"))
        .expect("bytes series");
    assert!(received.ends_with(" 10"), "{received}");
}

/// DENY for the client's principal, namespace-wide.
fn deny_client() -> mesh_model::Authorization {
    let principal = sec::StringMatch {
        match_type: Some(sec::string_match::MatchType::Exact(
            "cluster.local/ns/default/sa/client".into(),
        )),
    };
    let policy = sec::Authorization {
        name: "deny-client".into(),
        namespace: "default".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Deny as i32,
        rules: vec![sec::Rule {
            clauses: vec![sec::Clause {
                matches: vec![sec::Match { principals: vec![principal], ..Default::default() }],
            }],
        }],
        ..Default::default()
    };
    mesh_model::Authorization::try_from(policy).unwrap()
}

#[tokio::test]
async fn deny_policy_refuses_with_401() {
    let node = node().await;
    node.state.write(|s| s.insert_policy(deny_client()));
    assert!(matches!(tunnel(&node, CLIENT, node.app).await, Err(ConnectError::Denied)));
    // Another identity is not affected by the policy.
    let other = "spiffe://cluster.local/ns/default/sa/other";
    assert!(tunnel(&node, other, node.app).await.is_ok());
}

#[tokio::test]
async fn unknown_target_is_unavailable() {
    let node = node().await;
    let nowhere = SocketAddr::new(IpAddr::from([127, 0, 0, 9]), node.app.port());
    assert!(matches!(tunnel(&node, CLIENT, nowhere).await, Err(ConnectError::Unavailable)));
}

#[tokio::test]
async fn a_workload_behind_a_waypoint_only_accepts_the_waypoint() {
    let node = node().await;
    let mut server = workload("server", "server", SERVER_IP);
    server.waypoint = Some(pb::GatewayAddress {
        destination: Some(pb::gateway_address::Destination::Hostname(pb::NamespacedHostname {
            namespace: "default".into(),
            hostname: WAYPOINT_HOST.into(),
        })),
        hbone_mtls_port: 15008,
    });
    insert(&node.state, server);
    let mut waypoint = workload("waypoint", "waypoint", [127, 0, 0, 3]);
    waypoint.services.insert(format!("default/{WAYPOINT_HOST}"), pb::PortList::default());
    insert(&node.state, waypoint);

    assert!(
        matches!(tunnel(&node, CLIENT, node.app).await, Err(ConnectError::Denied)),
        "direct traffic refused"
    );
    assert!(tunnel(&node, WAYPOINT, node.app).await.is_ok(), "the waypoint gets through");
}

#[tokio::test]
async fn a_pod_listener_refuses_targets_other_than_its_pod() {
    let node = node().await;
    let other = SocketAddr::new(IpAddr::from(CLIENT_IP), node.app.port());
    let refused = tunnel_only_to(&node, SERVER_IP, other).await;
    assert!(
        matches!(refused, Err(ConnectError::Status(s)) if s == http::StatusCode::BAD_REQUEST),
        "{refused:?}"
    );
    assert!(tunnel_only_to(&node, SERVER_IP, node.app).await.is_ok(), "its own pod is fine");
}

async fn echoes(stream: &mut mesh_hbone::H2Stream) -> bool {
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buf)).await;
    matches!(read, Ok(Ok(_))) && &buf == b"ping"
}

#[tokio::test]
async fn a_deny_policy_closes_open_tunnels_of_its_principal_only() {
    let node = node().await;
    let reconciler = tokio::spawn(run_reconciler(node.connections.clone(), node.state.clone()));
    let mut denied = tunnel(&node, CLIENT, node.app).await.unwrap();
    let other = "spiffe://cluster.local/ns/default/sa/other";
    let mut kept = tunnel(&node, other, node.app).await.unwrap();
    assert!(echoes(&mut denied).await);
    assert!(echoes(&mut kept).await);
    assert_eq!(node.connections.len(), 2);

    node.state.write(|s| s.insert_policy(deny_client()));

    // The denied tunnel ends (EOF or reset) without the client closing it.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(2), denied.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the denied tunnel is still open");
    assert!(echoes(&mut kept).await, "the other identity's tunnel was closed");
    assert_eq!(node.connections.closed_by_policy().get(), 1);
    for _ in 0..100 {
        if node.connections.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.connections.len(), 1);
    // New tunnels of the principal are refused.
    assert!(matches!(tunnel(&node, CLIENT, node.app).await, Err(ConnectError::Denied)));
    reconciler.abort();
}

#[tokio::test]
async fn a_connect_to_one_of_ztunnels_ports_is_refused_and_counted() {
    let node = node().await;
    let ports = [15001, 15006, 15008, 15053, 15000, 15020, 15021];
    for port in ports {
        let target = SocketAddr::new(IpAddr::from(SERVER_IP), port);
        let refused = tunnel_only_to(&node, SERVER_IP, target).await;
        assert!(
            matches!(refused, Err(ConnectError::Status(s)) if s == http::StatusCode::BAD_REQUEST),
            "{target}: {refused:?}"
        );
    }
    let text = metrics_text(&node);
    let failed = text
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_connections_failed_total{")
                && l.contains("response_flags=\"DENY\"")
        })
        .unwrap_or_else(|| panic!("no failed series in:\n{text}"));
    assert!(failed.contains(&format!("source_principal=\"{CLIENT}\"")), "{failed}");
    assert!(failed.ends_with(&format!(" {}", ports.len())), "{failed}");
    assert!(!text.contains("istio_tcp_connections_opened_total{"), "nothing was opened");
}

const SERVER_UID: &str = "Kubernetes//Pod/default/server";

#[tokio::test]
async fn a_pod_listener_admits_only_tunnels_to_its_own_workload() {
    let node = node().await;
    // Another workload (a WorkloadEntry, say) claims the server pod's IP.
    let mut squatter = workload("squatter", "attacker", SERVER_IP);
    squatter.uid = "Kubernetes/networking.istio.io/WorkloadEntry/default/squatter".into();
    insert(&node.state, squatter);

    let mut stream = tunnel_for(&node, SERVER_UID, node.app).await.unwrap();
    assert!(echoes(&mut stream).await, "the pod's own tunnel is served");
    let text = metrics_text(&node);
    let opened = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .expect("opened series");
    assert!(opened.contains("destination_workload=\"server\""), "served as the pod: {opened}");
    assert!(!opened.contains("squatter"), "{opened}");

    // A tunnel addressed to another workload's IP is refused by the pod's
    // listener, whatever the state says is there.
    let elsewhere = SocketAddr::new(IpAddr::from(CLIENT_IP), node.app.port());
    let refused = tunnel_for(&node, SERVER_UID, elsewhere).await;
    assert!(
        matches!(refused, Err(ConnectError::Status(s)) if s == http::StatusCode::BAD_REQUEST),
        "{refused:?}"
    );
}
