//! Two nodes with an in-process ztunnel each, pods, apps and counters.
//!
//! Pods: `client` (node a) and `server` (node b) are enrolled (capture
//! rules applied, listed in both nodes' state, their node's ztunnel serves
//! them); `legacy` (node a) and `outside` (node b) are plain pods outside
//! the mesh; `waypoint` (node b) is where a test runs a waypoint. The state
//! also has the service `server.default.svc` with VIP [`SERVICE_VIP`], port
//! 80 -> 8080 on the server pod, and the waypoint's workload and service
//! (port 15008); [`Mesh::use_waypoint`] puts the server pod behind it.
//! Each node's ztunnel serves the DNS proxy in its pods, forwarding to port
//! 53 of node a's address (where a DNS test runs its upstream resolver).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
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
use mesh_proto::workload as pb;
use mesh_test_support::{LeafSpec, TestCa};
use prometheus_client::registry::Registry;
use ztunnel::dns::{DnsConfig, DnsMetrics, DnsServer};
use ztunnel::inpod::{InboundLimits, PodProxies, PodWorkload};
use ztunnel::proxy::{HbonePool, OutboundProxy, TcpMetrics};
use ztunnel::state::StateHandle;

pub(crate) const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
pub(crate) const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
pub(crate) const APP_PORT: u16 = 8080;
pub(crate) const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub(crate) const SERVICE_HOST: &str = "server.default.svc.cluster.local";
pub(crate) const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/default/sa/waypoint";
pub(crate) const WAYPOINT_HOST: &str = "waypoint.default.svc.cluster.local";
const WAYPOINT_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

/// Issues certificates from one shared test root.
pub(crate) struct CaProvider(pub(crate) Arc<TestCa>);

impl CertificateProvider for CaProvider {
    async fn fetch(&self, identity: &Identity) -> Result<WorkloadCertificate, FetchError> {
        let issued = self
            .0
            .issue(&LeafSpec::workload(&identity.to_string()))
            .map_err(|e| FetchError::Unavailable(e.to_string()))?;
        Ok(WorkloadCertificate::from_chain_pem(identity, issued.key, &issued.chain_pem)?)
    }
}

pub(crate) fn uid(name: &str) -> String {
    format!("Kubernetes//Pod/default/{name}")
}

pub(crate) fn workload(pod: &PodHandle) -> pb::Workload {
    let name = pod.name.clone();
    pb::Workload {
        uid: uid(&name),
        namespace: "default".into(),
        addresses: vec![pod.ip.octets().to_vec()],
        service_account: name.clone(),
        workload_name: name.clone(),
        canonical_name: name.clone(),
        canonical_revision: "v1".into(),
        node: pod.node.clone(),
        tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
        name,
        ..Default::default()
    }
}

fn service(name: &str, host: &str, vip: Ipv4Addr, port: pb::Port) -> pb::address::Type {
    pb::address::Type::Service(pb::Service {
        name: name.into(),
        namespace: "default".into(),
        hostname: host.into(),
        addresses: vec![pb::NetworkAddress {
            network: String::new(),
            address: vip.octets().to_vec(),
            length: None,
        }],
        ports: vec![port],
        ..Default::default()
    })
}

pub(crate) fn port(service_port: u16, target_port: u16) -> pb::Port {
    pb::Port {
        service_port: u32::from(service_port),
        target_port: u32::from(target_port),
        app_protocol: 0,
    }
}

/// The server pod's workload, behind the waypoint or not.
pub(crate) fn server_workload(pod: &PodHandle, behind_waypoint: bool) -> pb::Workload {
    let mut server = workload(pod);
    server.services.insert(
        format!("default/{SERVICE_HOST}"),
        pb::PortList { ports: vec![port(80, APP_PORT)] },
    );
    if behind_waypoint {
        server.waypoint = Some(pb::GatewayAddress {
            destination: Some(pb::gateway_address::Destination::Hostname(pb::NamespacedHostname {
                namespace: "default".into(),
                hostname: WAYPOINT_HOST.into(),
            })),
            hbone_mtls_port: 15008,
        });
    }
    server
}

pub(crate) fn insert(state: &StateHandle, name: &str, address: pb::address::Type) {
    let address = mesh_model::Address::try_from(pb::Address { r#type: Some(address) }).unwrap();
    state.write(|s| s.insert_address(name, address)).unwrap();
}

/// One node's in-process ztunnel.
pub(crate) struct Node {
    pub(crate) proxies: PodProxies,
    pub(crate) pool: Arc<HbonePool>,
    pub(crate) state: StateHandle,
    registry: Registry,
}

impl Node {
    /// `dns_upstream`: where the node's DNS proxy forwards.
    fn new(
        ca: &Arc<TestCa>,
        pods: [&PodHandle; 3],
        dns_upstream: SocketAddr,
        limits: InboundLimits,
    ) -> Self {
        let [client, server, waypoint] = pods;
        let state = StateHandle::default();
        insert(&state, &uid("client"), pb::address::Type::Workload(workload(client)));
        let server = server_workload(server, false);
        insert(&state, &uid("server"), pb::address::Type::Workload(server));
        let vip = SERVICE_VIP;
        insert(
            &state,
            &format!("default/{SERVICE_HOST}"),
            service("server", SERVICE_HOST, vip, port(80, APP_PORT)),
        );
        let mut waypoint = workload(waypoint);
        waypoint.services.insert(
            format!("default/{WAYPOINT_HOST}"),
            pb::PortList { ports: vec![port(15008, 15008)] },
        );
        insert(&state, &uid("waypoint"), pb::address::Type::Workload(waypoint));
        let wp = service("waypoint", WAYPOINT_HOST, WAYPOINT_VIP, port(15008, 15008));
        insert(&state, &format!("default/{WAYPOINT_HOST}"), wp);
        let manager =
            CertificateManager::new(CaProvider(Arc::clone(ca)), manager::Config::default())
                .unwrap();
        let pool = Arc::new(Pool::new(H2Settings::default(), Duration::from_secs(300)));
        let metrics = Arc::new(TcpMetrics::default());
        let mut registry = Registry::with_prefix("istio");
        metrics.register(&mut registry);
        let outbound = OutboundProxy {
            state: state.clone(),
            network: String::new(),
            tls: Arc::new(TlsContexts::new(manager, TlsSettings::default())),
            pool: Arc::clone(&pool),
            metrics,
        };
        let dns_metrics = Arc::new(DnsMetrics::default());
        dns_metrics.register(&mut registry);
        let dns_config = DnsConfig {
            upstream_timeout: Duration::from_secs(2),
            ..DnsConfig::new(vec![dns_upstream])
        };
        let dns = Arc::new(DnsServer::new(state.clone(), dns_config, dns_metrics));
        let proxies =
            PodProxies::new(outbound, H2Settings::default()).with_limits(limits).with_dns(dns);
        Self { proxies, pool, state, registry }
    }

    async fn enroll(&self, pod: &PodHandle, spiffe: &str, backend: Backend) {
        self.enroll_with(pod, spiffe, backend, &CaptureConfig::default()).await;
    }

    /// Applies `capture` in the pod and starts its proxies.
    pub(crate) async fn enroll_with(
        &self,
        pod: &PodHandle,
        spiffe: &str,
        backend: Backend,
        capture: &CaptureConfig,
    ) {
        let netns = pod.netns().unwrap();
        backend.apply(&netns, capture).unwrap();
        let workload = PodWorkload { uid: uid(&pod.name), identity: spiffe.parse().unwrap() };
        self.proxies.add(&uid(&pod.name), workload, &netns).await.unwrap();
    }

    pub(crate) fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    /// The first line of `family` whose labels contain all of `labels`,
    /// waiting up to 5 s for it.
    pub(crate) async fn series(&self, family: &str, labels: &[&str]) -> String {
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

pub(crate) struct Mesh {
    pub(crate) topology: Topology,
    pub(crate) ca: Arc<TestCa>,
    pub(crate) waypoint: PodHandle,
    pub(crate) client: PodHandle,
    pub(crate) server: PodHandle,
    pub(crate) legacy: PodHandle,
    pub(crate) outside: PodHandle,
    pub(crate) a: Node,
    pub(crate) b: Node,
}

impl Mesh {
    /// The `ip netns` name of node `name`.
    pub(crate) fn node_netns(&self, name: &str) -> String {
        self.topology.node(name).unwrap().netns_name.clone()
    }

    /// Lists WORKLOAD_SELECTOR policies (`ns/name` keys) on the server
    /// pod's workload in `node`'s state.
    pub(crate) fn server_policies(&self, node: &Node, keys: &[&str]) {
        let mut server = server_workload(&self.server, false);
        server.authorization_policies = keys.iter().map(|k| (*k).to_owned()).collect();
        insert(&node.state, &uid("server"), pb::address::Type::Workload(server));
    }

    /// Puts the server pod behind the waypoint, on both nodes.
    pub(crate) fn use_waypoint(&self) {
        for node in [&self.a, &self.b] {
            let server = server_workload(&self.server, true);
            insert(&node.state, &uid("server"), pb::address::Type::Workload(server));
        }
    }
}

/// [`mesh_with`] the iptables backend.
pub(crate) async fn mesh(prefix: &str) -> Mesh {
    mesh_with(prefix, Backend::Iptables).await
}

/// Builds the topology and enrolls the client and server pods, their
/// capture rules installed with `backend`.
pub(crate) async fn mesh_with(prefix: &str, backend: Backend) -> Mesh {
    mesh_with_limits(prefix, backend, InboundLimits::default()).await
}

/// [`mesh_with`] both nodes' inbound listeners under `limits`.
pub(crate) async fn mesh_with_limits(
    prefix: &str,
    backend: Backend,
    limits: InboundLimits,
) -> Mesh {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let nodes = vec![NodeSpec { name: "a".into() }, NodeSpec { name: "b".into() }];
    let pod = |node: &str, name: &str| PodSpec {
        node: node.into(),
        namespace: "default".into(),
        name: name.into(),
    };
    let pods = vec![
        pod("a", "client"),
        pod("a", "legacy"),
        pod("b", "server"),
        pod("b", "outside"),
        pod("b", "waypoint"),
    ];
    let topology = Topology::build(prefix, &nodes, &pods).unwrap();
    let get = |name: &str| topology.pod("default", name).unwrap().clone();
    let (client, server, legacy, outside, waypoint) =
        (get("client"), get("server"), get("legacy"), get("outside"), get("waypoint"));
    let ca = Arc::new(TestCa::root("mesh e2e").unwrap());
    let dns_upstream = SocketAddr::from((topology.node("a").unwrap().ip, 53));
    let a = Node::new(&ca, [&client, &server, &waypoint], dns_upstream, limits);
    let b = Node::new(&ca, [&client, &server, &waypoint], dns_upstream, limits);
    a.enroll(&client, CLIENT_ID, backend).await;
    b.enroll(&server, SERVER_ID, backend).await;
    Mesh { topology, ca, waypoint, client, server, legacy, outside, a, b }
}

/// An app listening on `port` in `pod`: echoes one connection (until the
/// client's half-close) and reports its peer. The listener is returned to
/// check for connections that should not have arrived.
pub(crate) fn echo_once(
    pod: &PodHandle,
    port: u16,
) -> (TcpListener, std::thread::JoinHandle<SocketAddr>) {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = pod.netns().unwrap().run(move || TcpListener::bind(addr)).unwrap().unwrap();
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

/// An app listening on `port` in `pod` that echoes every connection (each
/// until the client's half-close) on its own thread.
pub(crate) fn echo_all(pod: &PodHandle, port: u16) {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = pod.netns().unwrap().run(move || TcpListener::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                conn.read_to_end(&mut buf).unwrap();
                conn.write_all(&buf).unwrap();
            });
        }
    });
}

/// A plain socket in `pod` connected to `target`: no proxy settings.
pub(crate) fn connect_from(pod: &PodHandle, target: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = pod
        .netns()
        .unwrap()
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(5)))
        .unwrap()?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Sends `payload` from `pod` to `target`, half-closes, returns the reply.
pub(crate) async fn roundtrip(
    pod: &PodHandle,
    target: SocketAddr,
    payload: impl AsRef<[u8]> + Send + 'static,
) -> Vec<u8> {
    let pod = pod.clone();
    tokio::task::spawn_blocking(move || {
        let mut stream = connect_from(&pod, target).unwrap();
        stream.write_all(payload.as_ref()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).unwrap();
        buf
    })
    .await
    .unwrap()
}

/// Sends `payload` from `pod` to `target` and reads until the connection
/// ends; returns what came back. A reset counts as the end (the far side
/// closed with our bytes unread); a read timeout fails.
pub(crate) async fn until_closed(
    pod: &PodHandle,
    target: SocketAddr,
    payload: &'static [u8],
) -> Vec<u8> {
    let pod = pod.clone();
    tokio::task::spawn_blocking(move || {
        let mut stream = connect_from(&pod, target).unwrap();
        let _ = stream.write_all(payload);
        let mut buf = Vec::new();
        match stream.read_to_end(&mut buf) {
            Ok(_) => buf,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => buf,
            Err(e) => panic!("expected the connection to be closed, got {e}"),
        }
    })
    .await
    .unwrap()
}

/// Waits for an [`echo_once`] app's peer.
pub(crate) async fn peer_of(app: std::thread::JoinHandle<SocketAddr>) -> SocketAddr {
    tokio::task::spawn_blocking(move || app.join().unwrap()).await.unwrap()
}

/// Adds a counting rule (no target) for TCP to `dst:port` to the FORWARD
/// chain of the node namespace `node_netns`.
pub(crate) fn count_forwarded(node_netns: &str, dst: Ipv4Addr, port: u16) {
    let status = Command::new("ip")
        .args(["netns", "exec", node_netns, "iptables", "-I", "FORWARD", "-p", "tcp", "-d"])
        .arg(dst.to_string())
        .args(["--dport", &port.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Packets counted by the [`count_forwarded`] rule for `dst:port`.
pub(crate) fn forwarded_packets(node_netns: &str, dst: Ipv4Addr, port: u16) -> u64 {
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

/// Opens a connection from `pod` to `target` and sends `hello` (no
/// half-close: it stays open).
pub(crate) async fn open(pod: &PodHandle, target: SocketAddr, hello: &'static [u8]) -> TcpStream {
    let pod = pod.clone();
    tokio::task::spawn_blocking(move || {
        let mut stream = connect_from(&pod, target).unwrap();
        stream.write_all(hello).unwrap();
        stream
    })
    .await
    .unwrap()
}

/// Reads `stream` to its end and asserts it was closed (EOF without data
/// or a reset), not timed out (`connect_from` sets a 10 s read timeout).
pub(crate) async fn assert_closed(mut stream: TcpStream) {
    let got = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).map(|_| buf)
    })
    .await
    .unwrap();
    match got {
        Ok(buf) => assert!(buf.is_empty(), "closed without data: {buf:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "closed, not timed out: {e}"),
    }
}
