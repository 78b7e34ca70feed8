//! ZDS requests that must not disturb a served pod: a repeated Add for the
//! same netns (as every snapshot after an agent reconnect sends) keeps the
//! pod's open connections.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use mesh_cni::zds::ZdsClient;
use mesh_cni::{Backend, CaptureConfig};
use ztunnel::app::App;

use super::pod_info;
use super::support::*;

/// Writes `bytes` on `stream` and reads the echo back.
fn echo(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(bytes)?;
    let mut buf = vec![0; bytes.len()];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_add_in_the_same_netns_keeps_the_pods_connections() {
    let (topology, pod, node_netns) = one_pod_node("zr");

    let dir = tempfile::tempdir().unwrap();
    let (istiod, serve_istiod, _) = istiod(dir.path(), &pod).await;
    let zds_socket = dir.path().join("ztunnel.sock");
    let app = App::start(app_config(dir.path(), istiod, &zds_socket)).await.unwrap();
    serve_istiod.send(()).unwrap();
    let ready = app.readiness_address();
    eventually_status(ready, "/healthz/ready", 200).await;

    let netns = pod.netns().unwrap();
    Backend::Iptables.apply(&netns, &CaptureConfig::default()).unwrap();
    let mut agent = ZdsClient::connect(&zds_socket).await.unwrap();
    agent.add("pod-uid-repeat", pod_info(), netns.file()).await.unwrap();
    eventually_status(ready, "/healthz/ready", 200).await;
    // An echo server in the pod, one thread per connection.
    let app_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080));
    let listener = netns.run(move || std::net::TcpListener::bind(app_addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });

    // A connection into the pod through its 15006, open across the Adds.
    let target = SocketAddr::from((pod.ip, 8080));
    let node = node_netns.clone();
    let mut held = tokio::task::spawn_blocking(move || {
        let mut stream = connect_from_node(&node, target).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(echo(&mut stream, b"before").unwrap(), b"before");
        stream
    })
    .await
    .unwrap();

    // The same Add again on this connection, then a reconnecting agent's
    // snapshot replaying it: neither touches the pod.
    agent.add("pod-uid-repeat", pod_info(), netns.file()).await.unwrap();
    drop(agent);
    let mut agent = ZdsClient::connect(&zds_socket).await.unwrap();
    agent.add("pod-uid-repeat", pod_info(), netns.file()).await.unwrap();
    agent.snapshot_sent().await.unwrap();

    let (still, held) = tokio::task::spawn_blocking(move || {
        let still = echo(&mut held, b"after");
        (still, held)
    })
    .await
    .unwrap();
    match still {
        Ok(bytes) => assert_eq!(bytes, b"after"),
        Err(e) => panic!("the repeated Add cut the pod's connection: {e} ({:?})", e.kind()),
    }
    let (_, body) = get(app.admin_address(), "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["pods"].as_array().unwrap().len(), 1, "{dump:#}");

    // Del still ends the pod and its connections.
    agent.del("pod-uid-repeat").await.unwrap();
    let ended = tokio::task::spawn_blocking(move || {
        let mut held = held;
        let mut buf = [0u8; 16];
        match held.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        }
    });
    assert!(ended.await.unwrap(), "Del closes the held connection");
    drop(agent);
    app.shutdown(Duration::from_millis(100)).await;
    drop(topology);
}
