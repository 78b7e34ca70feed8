//! ztunnel serves from its last good state while istiod is unreachable.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mesh_cni::zds::ZdsClient;
use mesh_cni::{Backend, CaptureConfig};
use ztunnel::app::App;

use super::pod_info;
use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_pod_carries_new_connections_after_istiod_stops() {
    let (topology, pod, node_netns) = one_pod_node("zo");

    let dir = tempfile::tempdir().unwrap();
    let (istiod, serve_istiod, _) = istiod(dir.path(), &pod).await;
    let (via_relay, relay) = relay(istiod).await;
    let zds_socket = dir.path().join("ztunnel.sock");
    let app = App::start(app_config(dir.path(), via_relay, &zds_socket)).await.unwrap();
    serve_istiod.send(()).unwrap();
    let ready = app.readiness_address();
    eventually_status(ready, "/healthz/ready", 200).await;

    let netns = pod.netns().unwrap();
    Backend::Iptables.apply(&netns, &CaptureConfig::default()).unwrap();
    let mut agent = ZdsClient::connect(&zds_socket).await.unwrap();
    agent.add("pod-uid-offline", pod_info(), netns.file()).await.unwrap();
    eventually_status(ready, "/healthz/ready", 200).await;
    let app_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080));
    let listener = netns.run(move || std::net::TcpListener::bind(app_addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut buf = Vec::new();
            let _ = conn.read_to_end(&mut buf);
            let _ = conn.write_all(&buf);
        }
    });

    // istiod goes away: its listener and the open CA/xDS connections close.
    relay.abort();
    let _ = relay.await;
    assert!(tokio::net::TcpStream::connect(via_relay).await.is_err(), "istiod is unreachable");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A new plaintext connection to the pod goes through its 15006, which
    // needs the pod's workload from the state istiod sent earlier.
    let target = SocketAddr::from((pod.ip, 8080));
    let node = node_netns.clone();
    let echoed = tokio::task::spawn_blocking(move || {
        let mut stream = connect_from_node(&node, target).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(b"istiod is gone").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).unwrap();
        buf
    })
    .await
    .unwrap();
    assert_eq!(echoed, b"istiod is gone");
    let opened = "istio_tcp_connections_opened_total";
    let (_, metrics) = get(app.metrics_address(), "/metrics").await;
    let line = metrics.lines().find(|l| l.starts_with(opened)).unwrap_or_default();
    assert!(line.contains("destination_workload_namespace=\"default\""), "{metrics}");
    assert!(metrics.contains("ztunnel_connections_closed_by_policy_total 0"), "{metrics}");
    drop(agent);
    app.shutdown(Duration::from_millis(100)).await;
    drop(topology);
}
