//! istiod (CA in local mode and ADS on one TLS port) and small HTTP and
//! namespace helpers for the app tests.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use istiod::ca::local::{LocalNodeDirectory, LocalTokenAuthenticator};
use istiod::ca::root::load_or_create_root;
use istiod::ca::{
    CaConfig, CaMetrics, CaService, ServiceAccountRef, server_tls, serving_certificate,
};
use istiod::translate::Output;
use istiod::xds::{AdsService, ConfigStore};
use mesh_model::Identity;
use mesh_netns::{NodeSpec, PodHandle, PodSpec, Topology, require_root};
use mesh_proto::workload as pb;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::service::interceptor::InterceptedService;

pub(crate) const TRUST_DOMAIN: &str = "cluster.local";
pub(crate) const ISTIOD_HOST: &str = "istiod.istio-system.svc";

/// Node `a` with the one pod `default/app` (the test's prefix starts with
/// `tag`): the topology (keep it: dropping it removes the namespaces), the
/// pod and the node's network namespace name. Fails without root.
pub(crate) fn one_pod_node(tag: &str) -> (Topology, PodHandle, String) {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let prefix = format!("{tag}{}", std::process::id() % 100_000);
    let nodes = [NodeSpec { name: "a".into() }];
    let pods = [PodSpec { node: "a".into(), namespace: "default".into(), name: "app".into() }];
    let topology = Topology::build(&prefix, &nodes, &pods).unwrap();
    let pod = topology.pod("default", "app").unwrap().clone();
    let node_netns = topology.node("a").unwrap().netns_name.clone();
    (topology, pod, node_netns)
}

pub(crate) fn workload(pod: &PodHandle) -> pb::Address {
    pb::Address {
        r#type: Some(pb::address::Type::Workload(pb::Workload {
            uid: format!("Kubernetes//Pod/default/{}", pod.name),
            name: pod.name.clone(),
            namespace: "default".into(),
            addresses: vec![pod.ip.octets().to_vec()],
            service_account: "app".into(),
            node: "node-a".into(),
            tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
            ..Default::default()
        })),
    }
}

/// The `authorization` header of the last ADS stream.
pub(crate) type SeenToken = Arc<Mutex<Option<String>>>;

/// CA and ADS on one TLS port; returns its address, the switch that
/// starts serving (until then connections wait in the backlog) and what
/// the ADS streams sent as `authorization`.
pub(crate) async fn istiod(
    state_dir: &Path,
    pod: &PodHandle,
) -> (SocketAddr, oneshot::Sender<()>, SeenToken) {
    let authority =
        load_or_create_root(&istiod::ca::local::FileRootStore::new(state_dir), TRUST_DOMAIN)
            .await
            .unwrap();
    std::fs::write(state_dir.join("root-cert.pem"), authority.trust_bundle_pem().unwrap()).unwrap();
    let ztunnel_id = Identity::new(TRUST_DOMAIN, "istio-system", "ztunnel").unwrap();
    let authenticator =
        LocalTokenAuthenticator::load_or_create(state_dir, &["node-a"], ztunnel_id).unwrap();
    let directory = LocalNodeDirectory::new();
    directory.replace([("node-a".to_owned(), ServiceAccountRef::new("default", "app"))]);
    let cert =
        serving_certificate(&authority, &[ISTIOD_HOST.to_owned()], Duration::from_secs(3600))
            .unwrap();
    let tls = server_tls(&cert).unwrap();
    let (_tx, rx) = watch::channel(Arc::new(authority));
    let ca = CaService::new(
        CaConfig::new(TRUST_DOMAIN, "istio-system").unwrap(),
        rx,
        Arc::new(authenticator),
        Some(Arc::new(directory)),
        CaMetrics::default(),
    );
    let store = ConfigStore::new();
    store.publish(&Output { addresses: vec![workload(pod)], ..Default::default() });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = SeenToken::default();
    let ads = {
        let seen = Arc::clone(&seen);
        InterceptedService::new(
            AdsService::new(store).into_server(),
            move |request: tonic::Request<()>| {
                let auth = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
                *seen.lock().unwrap() = auth.map(str::to_owned);
                Ok(request)
            },
        )
    };
    let (start, started) = oneshot::channel();
    tokio::spawn(async move {
        let _ = started.await;
        let incoming = mesh_identity::grpc::incoming(listener, tls, Duration::from_secs(5));
        tonic::transport::Server::builder()
            .add_service(ca.into_server())
            .add_service(ads)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (address, start, seen)
}

/// `GET path` over HTTP/1.1: status and body.
pub(crate) async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    mesh_test_support::http_get(address, path).await.unwrap()
}

pub(crate) async fn eventually_status(address: SocketAddr, path: &str, want: u16) {
    for _ in 0..200 {
        if get(address, path).await.0 == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never answered {want}: last {:?}", get(address, path).await);
}

/// A TCP connect to `target` from the node's namespace.
pub(crate) fn connect_from_node(
    node_netns: &str,
    target: SocketAddr,
) -> std::io::Result<TcpStream> {
    mesh_netns::Netns::named(node_netns)
        .unwrap()
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(2)))
        .unwrap()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The app's config against istiod dialled at `istiod`, with its ZDS
/// socket at `zds_socket` and every HTTP port chosen by the OS.
pub(crate) fn app_config(
    state_dir: &Path,
    istiod: SocketAddr,
    zds_socket: &Path,
) -> ztunnel::app::Config {
    let token = LocalTokenAuthenticator::token_path(state_dir, "node-a");
    let vars: std::collections::HashMap<String, String> = [
        ("CA_ADDRESS", format!("{ISTIOD_HOST}:15012")),
        ("XDS_ADDRESS", format!("{ISTIOD_HOST}:15012")),
        ("ISTIOD_DIAL_ADDRESS", istiod.to_string()),
        ("NODE_NAME", "node-a".into()),
        ("POD_NAME", "ztunnel-a".into()),
        ("POD_NAMESPACE", "istio-system".into()),
        ("INSTANCE_IP", "10.0.0.1".into()),
        ("ROOT_CERT_PATH", state_dir.join("root-cert.pem").display().to_string()),
        ("TOKEN_PATH", token.display().to_string()),
        ("ZDS_SOCKET_PATH", zds_socket.display().to_string()),
        ("ADMIN_ADDRESS", "127.0.0.1:0".into()),
        ("METRICS_ADDRESS", "127.0.0.1:0".into()),
        ("READINESS_ADDRESS", "127.0.0.1:0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    ztunnel::app::Config::from_map(&vars).unwrap()
}

/// A TCP relay to `to`; aborting the returned task closes its listener
/// and every relayed connection (the tasks of its `JoinSet`).
pub(crate) async fn relay(to: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (address, task)
}
