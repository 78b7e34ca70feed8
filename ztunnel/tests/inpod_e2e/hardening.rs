//! A hostile enrolled pod and hostile peers against the in-pod listeners:
//! calls to ztunnel's own ports are refused and cost no descriptors, a
//! silent TLS client on 15008 is closed at the handshake timeout, the
//! node's inbound cap holds the next connection until one closes, and a
//! flood of idle 15008 connections is shed while mesh traffic flows.
#![allow(clippy::print_stderr, reason = "the soak reports its figures")]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use tokio::time::Instant;

use mesh_cni::Backend;
use ztunnel::inpod::InboundLimits;

use crate::harness::*;
use crate::prefix;

/// Descriptors this process holds (ztunnel runs in it).
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// This process's resident set, in KiB (`VmRSS`).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits up to 10 s for the descriptor count to come back to `limit`.
async fn settles_at_most(limit: usize) -> usize {
    let mut now = fd_count();
    for _ in 0..200 {
        if now <= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = fd_count();
    }
    now
}

fn counter_value(line: &str) -> u64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_calls_are_refused_counted_and_cost_no_descriptors() {
    let mesh = mesh(&prefix("hs")).await;
    let own = mesh.client.ip;
    let targets = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, 15001)),
        SocketAddr::from((own, 15001)),
        SocketAddr::from((own, 15006)),
        // A mesh pod elsewhere: an HBONE CONNECT to one of ztunnel's ports.
        SocketAddr::from((mesh.server.ip, 15001)),
    ];
    // Warm up the client's certificate and pooled connection first.
    echo_all(&mesh.server, APP_PORT);
    let app = SocketAddr::from((mesh.server.ip, APP_PORT));
    assert_eq!(roundtrip(&mesh.client, app, b"warm").await, b"warm");
    let baseline = fd_count();
    const ROUNDS: usize = 20;
    for _ in 0..ROUNDS {
        for target in targets {
            let started = Instant::now();
            let got = until_closed(&mesh.client, target, b"loop?").await;
            assert!(got.is_empty(), "{target}: no data from a refused self-call");
            assert!(started.elapsed() < Duration::from_secs(3), "{target}: refused quickly");
        }
    }
    // The pod's own 15008 is not captured: it reaches ztunnel's HBONE
    // listener directly, which answers junk with a TLS alert and closes;
    // nothing loops.
    let hbone = SocketAddr::from((own, 15008));
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let _alert = until_closed(&mesh.client, hbone, b"loop?").await;
        assert!(started.elapsed() < Duration::from_secs(3), "{hbone}: closed quickly");
    }
    let line = mesh
        .a
        .series(
            "istio_tcp_connections_failed_total",
            &["response_flags=\"DENY\"", "source_workload=\"client\""],
        )
        .await;
    // Some are refused on 15001 (reporter source), a connection reaching
    // 15006 directly on 15006 (reporter destination): all are DENY.
    let _ = line;
    let denied: u64 = mesh
        .a
        .metrics()
        .lines()
        .filter(|l| {
            l.starts_with("istio_tcp_connections_failed_total{")
                && l.contains("response_flags=\"DENY\"")
        })
        .map(counter_value)
        .sum();
    assert_eq!(denied, (ROUNDS * targets.len()) as u64, "{}", mesh.a.metrics());
    let after = settles_at_most(baseline + 16).await;
    assert!(after <= baseline + 16, "descriptors grew from {baseline} to {after}");
    // The mesh still works.
    assert_eq!(roundtrip(&mesh.client, app, b"still here").await, b"still here");
}

/// Connects from `pod` and reads until the far side closes; returns how
/// long that took. Panics on a read timeout (10 s) or data.
async fn silent_until_closed(pod: &mesh_netns::PodHandle, target: SocketAddr) -> Duration {
    let pod = pod.clone();
    tokio::task::spawn_blocking(move || {
        let mut stream = connect_from(&pod, target).unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        match stream.read_to_end(&mut buf) {
            Ok(_) => assert!(buf.is_empty(), "nothing is sent to a silent client"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "closed, not timed out"),
        }
        started.elapsed()
    })
    .await
    .unwrap()
}

fn quick_limits(max_connections: usize) -> InboundLimits {
    InboundLimits { handshake_timeout: Duration::from_secs(1), max_connections }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_client_on_15008_is_closed_at_the_handshake_timeout() {
    let mesh = mesh_with_limits(&prefix("ht"), Backend::Iptables, quick_limits(100)).await;
    let waited = silent_until_closed(&mesh.legacy, SocketAddr::from((mesh.server.ip, 15008))).await;
    assert!(
        waited >= Duration::from_millis(900),
        "closed after the timeout, not before: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "closed by the timeout: {waited:?}");
    assert_eq!(mesh.b.proxies.inbound_connections(), 0, "its slot was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_cap_holds_the_next_connection_until_one_closes() {
    let mesh = mesh_with_limits(&prefix("hc"), Backend::Iptables, quick_limits(3)).await;
    echo_all(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let mut open_ones = Vec::new();
    for _ in 0..3 {
        open_ones.push(open(&mesh.legacy, target, b"held").await);
    }
    for _ in 0..100 {
        if mesh.b.proxies.inbound_connections() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mesh.b.proxies.inbound_connections(), 3);
    let legacy = mesh.legacy.clone();
    let fourth = tokio::task::spawn_blocking(move || {
        let mut stream = connect_from(&legacy, target).unwrap();
        stream.write_all(b"fourth").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).unwrap();
        buf
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!fourth.is_finished(), "the fourth waits while three are open");
    assert_eq!(mesh.b.proxies.inbound_connections(), 3);
    drop(open_ones.pop());
    let echoed = tokio::time::timeout(Duration::from_secs(10), fourth)
        .await
        .expect("served once one closed")
        .unwrap();
    assert_eq!(echoed, b"fourth");
}

/// The bounded soak: `SOAK_CONNECTIONS` (default 300) idle TCP connections
/// to a pod's 15008 from a pod of another node, closed by the (1 s)
/// handshake timeout while mesh traffic keeps flowing; descriptors and
/// RSS before, during and after are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_15008_are_shed_while_mesh_traffic_flows() {
    let n: usize =
        std::env::var("SOAK_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let _ = ztunnel::app::rlimit::raise_nofile_limit();
    let mesh = mesh_with_limits(&prefix("hk"), Backend::Iptables, quick_limits(10_000)).await;
    echo_all(&mesh.server, APP_PORT);
    let app = SocketAddr::from((mesh.server.ip, APP_PORT));
    assert_eq!(roundtrip(&mesh.client, app, b"warm").await, b"warm");
    let (fd_before, rss_before) = (fd_count(), rss_kib());

    let hbone = SocketAddr::from((mesh.server.ip, 15008));
    let legacy = mesh.legacy.clone();
    let flood = tokio::task::spawn_blocking(move || {
        let netns = legacy.netns().unwrap();
        let streams: Vec<TcpStream> = (0..n)
            .map(|_| {
                netns
                    .run(move || TcpStream::connect_timeout(&hbone, Duration::from_secs(5)))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        streams
    });
    // Mesh traffic flows while the flood connects.
    let started = Instant::now();
    let mut served = 0;
    while !flood.is_finished() || served < 10 {
        let payload = format!("mesh {served}");
        assert_eq!(roundtrip(&mesh.client, app, payload.clone()).await, payload.as_bytes());
        served += 1;
    }
    let streams = flood.await.unwrap();
    let (fd_during, rss_during) = (fd_count(), rss_kib());
    // Every idle connection is closed by ztunnel.
    let closed = tokio::task::spawn_blocking(move || {
        streams
            .into_iter()
            .map(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut buf = [0u8; 1];
                match s.read(&mut buf) {
                    Ok(0) => true,
                    Err(e) => e.kind() == ErrorKind::ConnectionReset,
                    Ok(_) => false,
                }
            })
            .filter(|closed| *closed)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(closed, n, "every idle connection was closed by the handshake timeout");
    assert_eq!(roundtrip(&mesh.client, app, b"after").await, b"after");
    let fd_after = settles_at_most(fd_before + 16).await;
    let rss_after = rss_kib();
    eprintln!(
        "soak: {n} idle connections to 15008 in {:?}, {served} mesh round trips meanwhile; \
         fds before/during/after {fd_before}/{fd_during}/{fd_after}; \
         VmRSS KiB before/during/after {rss_before}/{rss_during}/{rss_after}",
        started.elapsed()
    );
    assert!(fd_during >= fd_before + n, "the flood was held open: {fd_during}");
    assert!(fd_after <= fd_before + 16, "descriptors back: {fd_before} -> {fd_after}");
    assert!(
        mesh.b.proxies.inbound_connections() <= 1,
        "only the mesh's pooled HBONE connection still holds a slot"
    );
}
