//! The in-pod data path end to end on two simulated nodes (see
//! `harness.rs`): pods talk with no proxy settings; the capture rules send
//! their traffic through their node's in-pod ztunnel, HBONE over mTLS to
//! the destination pod's 15008, the destination node's ztunnel, and into
//! the app, which sees the client pod's own address. Needs root: fails
//! (never skips) without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod cni_agent;
mod dns;
mod hardening;
mod harness;
mod policy_change;
mod waypoint;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use harness::*;
use mesh_proto::security as sec;
use ztunnel::proxy::PoolKey;

/// A namespace-name prefix unique to this test: tests run in parallel, so
/// a per-process counter keeps two tests from ever sharing one.
pub(crate) fn prefix(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}{}x{n}", std::process::id() % 100_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pod_reaches_server_pod_over_hbone_with_its_own_address() {
    let mesh = mesh(&prefix("ie")).await;
    let node_b = mesh.node_netns("b");
    count_forwarded(&node_b, mesh.server.ip, APP_PORT);
    count_forwarded(&node_b, mesh.server.ip, 15008);
    let (_listener, app) = echo_once(&mesh.server, APP_PORT);

    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let echoed = roundtrip(&mesh.client, target, b"hello through the mesh").await;
    assert_eq!(echoed, b"hello through the mesh", "bytes round-trip");
    let peer = peer_of(app).await;
    assert_eq!(peer.ip(), IpAddr::V4(mesh.client.ip), "the app sees the client pod's address");

    let opened = "istio_tcp_connections_opened_total";
    let inbound = mesh.b.series(opened, &["reporter=\"destination\""]).await;
    assert!(inbound.contains("connection_security_policy=\"mutual_tls\""), "{inbound}");
    assert!(inbound.contains(&format!("source_principal=\"{CLIENT_ID}\"")), "{inbound}");
    assert!(inbound.contains("source_workload=\"client\""), "{inbound}");
    assert!(inbound.contains("destination_workload=\"server\""), "{inbound}");
    assert!(inbound.ends_with(" 1"), "{inbound}");
    let outbound = mesh.a.series(opened, &["reporter=\"source\""]).await;
    assert!(outbound.contains(&format!("source_principal=\"{CLIENT_ID}\"")), "{outbound}");
    assert!(outbound.contains(&format!("destination_principal=\"{SERVER_ID}\"")), "{outbound}");
    assert!(outbound.contains("connection_security_policy=\"mutual_tls\""), "{outbound}");
    let received =
        mesh.b.series("istio_tcp_received_bytes_total", &["reporter=\"destination\""]).await;
    assert!(received.ends_with(" 22"), "{received}");

    // Between the nodes the traffic was the HBONE port, never the app's.
    assert_eq!(forwarded_packets(&node_b, mesh.server.ip, APP_PORT), 0);
    assert!(forwarded_packets(&node_b, mesh.server.ip, 15008) > 0);

    // Removing the client pod closes its listeners: its outbound traffic is
    // still captured, and now refused.
    assert!(mesh.a.proxies.remove(&uid("client")));
    assert!(mesh.a.proxies.pods().is_empty());
    let mut refused = false;
    for _ in 0..40 {
        match connect_from(&mesh.client, target) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(refused, "15001 is closed after remove");
    assert!(mesh.b.proxies.remove(&uid("server")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_share_one_hbone_connection() {
    let mesh = mesh(&prefix("ic")).await;
    echo_all(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let mut sessions = tokio::task::JoinSet::new();
    for i in 0..16u8 {
        // 256 KiB each: more than the HTTP/2 default windows, less than ours.
        let payload: Vec<u8> = (0..256 * 1024u32).map(|j| (j % 251) as u8 ^ i).collect();
        let client = mesh.client.clone();
        sessions.spawn(async move { roundtrip(&client, target, payload.clone()).await == payload });
    }
    while let Some(same) = sessions.join_next().await {
        assert!(same.unwrap(), "every session gets its own bytes back");
    }
    let key = client_to_server_key(&mesh);
    assert_eq!(mesh.a.pool.connection_count(&key), 1);
    let opened =
        mesh.b.series("istio_tcp_connections_opened_total", &["reporter=\"destination\""]).await;
    assert!(opened.ends_with(" 16"), "{opened}");
}

/// The pool key of node a's HBONE connections from the client pod to the
/// server pod.
fn client_to_server_key(mesh: &Mesh) -> PoolKey {
    PoolKey {
        source_pod: uid("client"),
        source_identity: CLIENT_ID.parse().unwrap(),
        destination_identity: SERVER_ID.parse().unwrap(),
        source_ip: IpAddr::V4(mesh.client.ip),
        destination_ip: IpAddr::V4(mesh.server.ip),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_pod_closes_its_open_connections() {
    let mesh = mesh(&prefix("ir")).await;
    let (_listener, _app) = echo_once(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let stream = open(&mesh.client, target, b"still open").await;
    // The tunnel is up end to end once node b has counted it.
    mesh.b.series("istio_tcp_connections_opened_total", &["reporter=\"destination\""]).await;

    let key = client_to_server_key(&mesh);
    assert_eq!(mesh.a.pool.connection_count(&key), 1, "one pooled HBONE connection");

    assert!(mesh.a.proxies.remove(&uid("client")));
    assert_eq!(mesh.a.pool.connection_count(&key), 0, "the pod's pooled connections are dropped");
    assert_closed(stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_resets_the_pods_connections_before_it_is_acknowledged() {
    let mesh = mesh(&prefix("iw")).await;
    let (_listener, _app) = echo_once(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let stream = open(&mesh.client, target, b"quiet now").await;
    mesh.b.series("istio_tcp_connections_opened_total", &["reporter=\"destination\""]).await;

    // What ztunnel does before acking DelWorkload: once this returns, the
    // application's connection is reset, not half-closed, so it cannot
    // write on it after the capture rules are gone.
    let removed = mesh.a.proxies.remove_and_wait(&uid("client"), Duration::from_secs(2)).await;
    assert!(removed);
    let mut stream = stream;
    let got = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).map(|_| buf)
    })
    .await
    .unwrap();
    let e = got.expect_err("the application saw a normal close, not a reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_server_pod_resets_the_connections_delivered_to_it() {
    let mesh = mesh(&prefix("iv")).await;
    // The server application reads until its connection ends and reports how.
    let addr = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, APP_PORT));
    let listener = mesh
        .server
        .netns()
        .unwrap()
        .run(move || std::net::TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    let app = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).map(|_| buf)
    });
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let _client = open(&mesh.client, target, b"to be cut").await;
    mesh.b.series("istio_tcp_connections_opened_total", &["reporter=\"destination\""]).await;

    let removed = mesh.b.proxies.remove_and_wait(&uid("server"), Duration::from_secs(2)).await;
    assert!(removed);
    let ended = tokio::task::spawn_blocking(move || app.join().unwrap()).await.unwrap();
    let e = ended.expect_err("the server application saw a normal close, not a reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_accepting_refuses_new_connections_and_keeps_open_ones() {
    let mesh = mesh(&prefix("ix")).await;
    let (_listener, _app) = echo_once(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let mut stream = open(&mesh.client, target, b"drain ").await;
    mesh.b.series("istio_tcp_connections_opened_total", &["reporter=\"destination\""]).await;

    // The drain starts on node a: its pod's listeners close.
    mesh.a.proxies.stop_accepting();
    let mut refused = false;
    for _ in 0..40 {
        match connect_from(&mesh.client, target) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(refused, "no new connection after stop_accepting");

    // The open one still carries bytes both ways.
    let echoed = tokio::task::spawn_blocking(move || {
        stream.write_all(b"me").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).unwrap();
        buf
    })
    .await
    .unwrap();
    assert_eq!(echoed, b"drain me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_vip_is_load_balanced_to_the_server_pod() {
    let mesh = mesh(&prefix("is")).await;
    let (_listener, app) = echo_once(&mesh.server, APP_PORT);
    let vip = SocketAddr::from((SERVICE_VIP, 80));
    assert_eq!(roundtrip(&mesh.client, vip, b"via the VIP").await, b"via the VIP");
    assert_eq!(peer_of(app).await.ip(), IpAddr::V4(mesh.client.ip));
    let inbound =
        mesh.b.series("istio_tcp_connections_opened_total", &["reporter=\"destination\""]).await;
    assert!(inbound.contains(&format!("source_principal=\"{CLIENT_ID}\"")), "{inbound}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_destination_passes_through_in_plain_tcp() {
    let mesh = mesh(&prefix("ip")).await;
    let node_b = mesh.node_netns("b");
    count_forwarded(&node_b, mesh.outside.ip, 9090);
    let (_listener, app) = echo_once(&mesh.outside, 9090);
    let target = SocketAddr::from((mesh.outside.ip, 9090));
    assert_eq!(roundtrip(&mesh.client, target, b"plain").await, b"plain");
    assert_eq!(peer_of(app).await.ip(), IpAddr::V4(mesh.client.ip));
    assert!(forwarded_packets(&node_b, mesh.outside.ip, 9090) > 0, "sent as is");
    assert!(!mesh.a.metrics().contains("istio_tcp_connections_opened_total{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_is_captured_on_15006_and_keeps_its_address() {
    let mesh = mesh(&prefix("it")).await;
    let (_listener, app) = echo_once(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    assert_eq!(roundtrip(&mesh.legacy, target, b"no mesh here").await, b"no mesh here");
    assert_eq!(peer_of(app).await.ip(), IpAddr::V4(mesh.legacy.ip));
    let inbound =
        mesh.b.series("istio_tcp_connections_opened_total", &["reporter=\"destination\""]).await;
    assert!(inbound.contains("connection_security_policy=\"unknown\""), "{inbound}");
    assert!(inbound.contains("source_principal=\"unknown\""), "{inbound}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_to_a_pod_behind_a_waypoint_goes_through_the_waypoint() {
    let mesh = mesh(&prefix("iw")).await;
    mesh.use_waypoint();
    let seen = waypoint::start(&mesh).await;
    let (_listener, app) = echo_once(&mesh.server, APP_PORT);

    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    assert_eq!(roundtrip(&mesh.client, target, b"via waypoint").await, b"via waypoint");
    assert_eq!(
        peer_of(app).await.ip(),
        IpAddr::V4(mesh.client.ip),
        "the app sees the client, from the waypoint's forwarded header"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].client.to_string(), CLIENT_ID);
    assert_eq!(seen[0].target, target, "CONNECT to the original destination");
    assert_eq!(seen[0].forwarded.as_deref(), Some(format!("for={}", mesh.client.ip).as_str()));
    let opened = "istio_tcp_connections_opened_total";
    let inbound = mesh.b.series(opened, &["reporter=\"destination\""]).await;
    assert!(inbound.contains(&format!("source_principal=\"{WAYPOINT_ID}\"")), "{inbound}");
    assert!(inbound.contains("source_workload=\"client\""), "{inbound}");
    let outbound = mesh.a.series(opened, &["reporter=\"source\""]).await;
    assert!(outbound.contains(&format!("destination_principal=\"{WAYPOINT_ID}\"")), "{outbound}");
}

fn deny_client() -> mesh_model::Authorization {
    let principal = sec::StringMatch {
        match_type: Some(sec::string_match::MatchType::Exact(
            "cluster.local/ns/default/sa/client".into(),
        )),
    };
    deny(sec::Match { principals: vec![principal], ..Default::default() })
}

/// A namespace-wide DENY policy with one match.
fn deny(m: sec::Match) -> mesh_model::Authorization {
    let policy = sec::Authorization {
        name: "deny-client".into(),
        namespace: "default".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Deny as i32,
        rules: vec![sec::Rule { clauses: vec![sec::Clause { matches: vec![m] }] }],
        ..Default::default()
    };
    mesh_model::Authorization::try_from(policy).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_client_is_closed_without_data() {
    let mesh = mesh(&prefix("id")).await;
    mesh.b.state.write(|s| s.insert_policy(deny_client()));
    let node_b = mesh.node_netns("b");
    count_forwarded(&node_b, mesh.server.ip, APP_PORT);
    count_forwarded(&node_b, mesh.server.ip, 15008);
    let (listener, _app) = echo_once(&mesh.server, APP_PORT);

    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let got = until_closed(&mesh.client, target, b"let me in").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_plaintext_client_is_closed_on_15006() {
    let mesh = mesh(&prefix("iq")).await;
    let legacy = sec::Address { address: mesh.legacy.ip.octets().to_vec(), length: 32 };
    mesh.b.state.write(|s| {
        s.insert_policy(deny(sec::Match { source_ips: vec![legacy], ..Default::default() }))
    });
    let (listener, _app) = echo_once(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    assert!(until_closed(&mesh.legacy, target, b"hello?").await.is_empty(), "closed, no data");
    listener.set_nonblocking(true).unwrap();
    assert_eq!(listener.accept().map(drop).unwrap_err().kind(), ErrorKind::WouldBlock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nftables_backend_carries_the_same_path() {
    let mesh = mesh_with(&prefix("in"), mesh_cni::Backend::Nftables).await;
    let (_listener, app) = echo_once(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    assert_eq!(roundtrip(&mesh.client, target, b"over nft").await, b"over nft");
    assert_eq!(peer_of(app).await.ip(), IpAddr::V4(mesh.client.ip));
    let inbound =
        mesh.b.series("istio_tcp_connections_opened_total", &["reporter=\"destination\""]).await;
    assert!(inbound.contains("connection_security_policy=\"mutual_tls\""), "{inbound}");
    assert!(inbound.contains(&format!("source_principal=\"{CLIENT_ID}\"")), "{inbound}");
}
