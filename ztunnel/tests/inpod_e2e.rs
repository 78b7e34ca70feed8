//! The in-pod data path end to end on two simulated nodes: a client pod on
//! node a talks to a server pod on node b with no proxy settings; the
//! capture rules send it through node a's in-pod ztunnel, HBONE over mTLS
//! to the server pod's 15008, node b's ztunnel, and into the server app,
//! which sees the client pod's own address. Needs root: fails (never
//! skips) without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mesh_cni::{Backend, CaptureConfig};
use mesh_hbone::H2Settings;
use mesh_hbone::client::Pool;
use mesh_identity::contexts::TlsContexts;
use mesh_identity::manager::{self, CertificateProvider, FetchError};
use mesh_identity::tls::TlsSettings;
use mesh_identity::{CertificateManager, WorkloadCertificate};
use mesh_model::Identity;
use mesh_netns::{NodeSpec, PodHandle, PodSpec, Topology, require_root};
use mesh_proto::security as sec;
use mesh_proto::workload as pb;
use mesh_test_support::{LeafSpec, TestCa};
use prometheus_client::registry::Registry;
use ztunnel::inpod::{PodProxies, PodWorkload};
use ztunnel::proxy::{OutboundProxy, TcpMetrics};
use ztunnel::state::StateHandle;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const APP_PORT: u16 = 8080;

/// Issues certificates from one shared test root.
struct CaProvider(Arc<TestCa>);

impl CertificateProvider for CaProvider {
    async fn fetch(&self, identity: &Identity) -> Result<WorkloadCertificate, FetchError> {
        let issued = self
            .0
            .issue(&LeafSpec::workload(&identity.to_string()))
            .map_err(|e| FetchError::Unavailable(e.to_string()))?;
        Ok(WorkloadCertificate::from_chain_pem(identity, issued.key, &issued.chain_pem)?)
    }
}

fn uid(name: &str) -> String {
    format!("Kubernetes//Pod/default/{name}")
}

fn workload(name: &str, ip: Ipv4Addr, node: &str) -> pb::Workload {
    pb::Workload {
        uid: uid(name),
        name: name.into(),
        namespace: "default".into(),
        addresses: vec![ip.octets().to_vec()],
        service_account: name.into(),
        workload_name: name.into(),
        canonical_name: name.into(),
        canonical_revision: "v1".into(),
        node: node.into(),
        tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
        ..Default::default()
    }
}

/// One node's in-process ztunnel.
struct Node {
    proxies: PodProxies,
    state: StateHandle,
    registry: Registry,
}

impl Node {
    fn new(ca: &Arc<TestCa>, client: &PodHandle, server: &PodHandle) -> Self {
        let state = StateHandle::default();
        for w in [
            workload("client", client.ip, &client.node),
            workload("server", server.ip, &server.node),
        ] {
            let uid = w.uid.clone();
            let address = mesh_model::Address::try_from(pb::Address {
                r#type: Some(pb::address::Type::Workload(w)),
            })
            .unwrap();
            state.write(|s| s.insert_address(&uid, address)).unwrap();
        }
        let manager =
            CertificateManager::new(CaProvider(Arc::clone(ca)), manager::Config::default())
                .unwrap();
        let metrics = Arc::new(TcpMetrics::default());
        let mut registry = Registry::with_prefix("istio");
        metrics.register(&mut registry);
        let outbound = OutboundProxy {
            state: state.clone(),
            network: String::new(),
            tls: Arc::new(TlsContexts::new(manager, TlsSettings::default())),
            pool: Arc::new(Pool::new(H2Settings::default(), Duration::from_secs(300))),
            metrics,
        };
        Self { proxies: PodProxies::new(outbound, H2Settings::default()), state, registry }
    }

    async fn enroll(&self, pod: &PodHandle, spiffe: &str) {
        let netns = pod.netns().unwrap();
        Backend::Iptables.apply(&netns, &CaptureConfig::default()).unwrap();
        let workload = PodWorkload { uid: uid(&pod.name), identity: spiffe.parse().unwrap() };
        self.proxies.add(&uid(&pod.name), workload, &netns).await.unwrap();
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    /// The first line of `family` whose labels contain all of `labels`.
    async fn series(&self, family: &str, labels: &[String]) -> String {
        for _ in 0..100 {
            let text = self.metrics();
            let found = text.lines().find(|l| {
                l.starts_with(&format!("{family}{{")) && labels.iter().all(|x| l.contains(x))
            });
            if let Some(line) = found {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {family} series with {labels:?} in:\n{}", self.metrics());
    }
}

struct Mesh {
    topology: Topology,
    client: PodHandle,
    server: PodHandle,
    a: Node,
    b: Node,
}

async fn mesh(prefix: &str) -> Mesh {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let nodes = vec![NodeSpec { name: "a".into() }, NodeSpec { name: "b".into() }];
    let pods = vec![
        PodSpec { node: "a".into(), namespace: "default".into(), name: "client".into() },
        PodSpec { node: "b".into(), namespace: "default".into(), name: "server".into() },
    ];
    let topology = Topology::build(prefix, &nodes, &pods).unwrap();
    let client = topology.pod("default", "client").unwrap().clone();
    let server = topology.pod("default", "server").unwrap().clone();
    let ca = Arc::new(TestCa::root("mesh e2e").unwrap());
    let a = Node::new(&ca, &client, &server);
    let b = Node::new(&ca, &client, &server);
    a.enroll(&client, CLIENT_ID).await;
    b.enroll(&server, SERVER_ID).await;
    Mesh { topology, client, server, a, b }
}

/// The server app: listens on 8080 in the server pod, echoes one
/// connection and reports its peer.
fn server_app(server: &PodHandle) -> (TcpListener, std::thread::JoinHandle<SocketAddr>) {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, APP_PORT));
    let listener = server.netns().unwrap().run(move || TcpListener::bind(addr)).unwrap().unwrap();
    let accepting = listener.try_clone().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut conn, peer) = accepting.accept().unwrap();
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
        peer
    });
    (listener, handle)
}

/// The client app: a plain socket in the client pod, no proxy settings.
fn client_connect(client: &PodHandle, target: SocketAddr) -> TcpStream {
    let stream = client
        .netns()
        .unwrap()
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Adds a counting rule (no target) to node `node`'s FORWARD chain.
fn count_forwarded(node_netns: &str, dst: Ipv4Addr, port: u16) {
    let status = Command::new("ip")
        .args(["netns", "exec", node_netns, "iptables", "-I", "FORWARD", "-p", "tcp", "-d"])
        .arg(dst.to_string())
        .args(["--dport", &port.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Packets counted by the rule for `dst:port` in `node_netns`'s FORWARD.
fn forwarded_packets(node_netns: &str, dst: Ipv4Addr, port: u16) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", node_netns, "iptables", "-nvxL", "FORWARD"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let wanted = format!("dpt:{port}");
    text.lines()
        .find(|l| l.contains(&dst.to_string()) && l.split_whitespace().any(|w| w == wanted))
        .unwrap_or_else(|| panic!("no counter for {dst}:{port} in:\n{text}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pod_reaches_server_pod_over_hbone_with_its_own_address() {
    let mesh = mesh(&format!("ie{}", std::process::id() % 100_000)).await;
    let node_b = mesh.topology.node("b").unwrap().netns_name.clone();
    count_forwarded(&node_b, mesh.server.ip, APP_PORT);
    count_forwarded(&node_b, mesh.server.ip, 15008);
    let (_listener, app) = server_app(&mesh.server);

    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let client = mesh.client.clone();
    let echoed = tokio::task::spawn_blocking(move || {
        let mut stream = client_connect(&client, target);
        stream.write_all(b"hello through the mesh").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).unwrap();
        buf
    })
    .await
    .unwrap();
    assert_eq!(echoed, b"hello through the mesh", "bytes round-trip");

    let peer = tokio::task::spawn_blocking(move || app.join().unwrap()).await.unwrap();
    assert_eq!(peer.ip(), IpAddr::V4(mesh.client.ip), "the app sees the client pod's address");

    let inbound = mesh
        .b
        .series(
            "istio_tcp_connections_opened_total",
            &["reporter=\"destination\"".to_owned(), "destination_workload=\"server\"".to_owned()],
        )
        .await;
    assert!(inbound.contains("connection_security_policy=\"mutual_tls\""), "{inbound}");
    assert!(inbound.contains(&format!("source_principal=\"{CLIENT_ID}\"")), "{inbound}");
    assert!(inbound.contains("source_workload=\"client\""), "{inbound}");
    assert!(inbound.ends_with(" 1"), "{inbound}");
    let outbound = mesh
        .a
        .series("istio_tcp_connections_opened_total", &["reporter=\"source\"".to_owned()])
        .await;
    assert!(outbound.contains(&format!("destination_principal=\"{SERVER_ID}\"")), "{outbound}");
    assert!(outbound.contains("connection_security_policy=\"mutual_tls\""), "{outbound}");
    let received = mesh
        .b
        .series("istio_tcp_received_bytes_total", &["reporter=\"destination\"".to_owned()])
        .await;
    assert!(received.ends_with(" 22"), "{received}");

    // Between the nodes the traffic was the HBONE port, never the app's.
    assert_eq!(forwarded_packets(&node_b, mesh.server.ip, APP_PORT), 0);
    assert!(forwarded_packets(&node_b, mesh.server.ip, 15008) > 0);

    // Removing the pods closes their listeners.
    assert!(mesh.a.proxies.remove(&uid("client")));
    assert!(mesh.b.proxies.remove(&uid("server")));
    assert!(mesh.a.proxies.pods().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_client_is_closed_without_data() {
    let mesh = mesh(&format!("id{}", std::process::id() % 100_000)).await;
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
    let policy = mesh_model::Authorization::try_from(policy).unwrap();
    mesh.b.state.write(|s| s.insert_policy(policy));
    let node_b = mesh.topology.node("b").unwrap().netns_name.clone();
    count_forwarded(&node_b, mesh.server.ip, APP_PORT);
    count_forwarded(&node_b, mesh.server.ip, 15008);
    let (listener, _app) = server_app(&mesh.server);

    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let client = mesh.client.clone();
    let got = tokio::task::spawn_blocking(move || {
        let mut stream = client_connect(&client, target);
        let _ = stream.write_all(b"let me in");
        let mut buf = Vec::new();
        match stream.read_to_end(&mut buf) {
            Ok(_) => buf,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => buf,
            Err(e) => panic!("expected the connection to be closed, got {e}"),
        }
    })
    .await
    .unwrap();
    assert!(got.is_empty(), "no data for a denied client: {got:?}");
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().map(drop).unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "the app never saw the connection"
    );
    // The tunnel reached node b's ztunnel, which refused it.
    assert!(forwarded_packets(&node_b, mesh.server.ip, 15008) > 0);
    assert_eq!(forwarded_packets(&node_b, mesh.server.ip, APP_PORT), 0);
    let refused = mesh.b.metrics();
    assert!(!refused.contains("istio_tcp_connections_opened_total{"), "{refused}");
}
