//! The ztunnel binary's wiring end to end: istiod's CA (local mode, a node
//! token for `node-a`) and ADS on one loopback TLS port, a one-node,
//! one-pod namespace topology, and [`App`] started from a config map. The
//! CNI agent's side of ZDS enrolls and removes the pod. Needs root: fails
//! (never skips) without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod offline;
mod support;
mod zds;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use istiod::ca::local::LocalTokenAuthenticator;
use mesh_cni::zds::{WorkloadInfo, ZdsClient};
use mesh_cni::{Backend, CaptureConfig};
use mesh_netns::PodHandle;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ztunnel::app::App;

const POD_UID: &str = "pod-uid-app";

fn pod_info() -> WorkloadInfo {
    WorkloadInfo { name: "app".into(), namespace: "default".into(), service_account: "app".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_enrolls_a_pod_from_zds_with_istiod_certificates_and_config() {
    let (topology, pod, node_netns) = one_pod_node("za");

    let dir = tempfile::tempdir().unwrap();
    let (istiod, serve_istiod, seen_token) = istiod(dir.path(), &pod).await;
    let token = LocalTokenAuthenticator::token_path(dir.path(), "node-a");
    let zds_socket = dir.path().join("ztunnel.sock");
    let config = app_config(dir.path(), istiod, &zds_socket);
    let app = App::start(config).await.unwrap();
    let ready = app.readiness_address();

    // istiod does not answer yet: not ready (over several readiness polls).
    for _ in 0..3 {
        assert_eq!(get(ready, "/healthz/ready").await.0, 503, "not ready before xDS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve_istiod.send(()).unwrap();
    eventually_status(ready, "/healthz/ready", 200).await;
    let node_token = std::fs::read_to_string(&token).unwrap();
    let sent = seen_token.lock().unwrap().clone();
    assert_eq!(sent, Some(format!("Bearer {}", node_token.trim())), "xDS carries the node token");

    // The agent hands the pod over with its namespace.
    let mut agent = ZdsClient::connect(&zds_socket).await.unwrap();
    let netns = pod.netns().unwrap();
    agent.add(POD_UID, pod_info(), netns.file()).await.unwrap();
    eventually_status(ready, "/healthz/ready", 200).await;

    // The dump lists istiod's workload and the pod's certificate.
    let (status, body) = get(app.admin_address(), "/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let uids: Vec<&str> =
        dump["workloads"].as_array().unwrap().iter().filter_map(|w| w["uid"].as_str()).collect();
    assert!(uids.contains(&"Kubernetes//Pod/default/app"), "{dump:#}");
    let certs = dump["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{dump:#}");
    assert_eq!(certs[0]["identity"], "spiffe://cluster.local/ns/default/sa/app");
    assert_eq!(certs[0]["state"], "available");
    assert!(certs[0]["remaining_seconds"].as_u64().unwrap() > 0);
    let (status, metrics) = get(app.metrics_address(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("istio_mesh_identity_ca_requests_total"), "{metrics}");
    assert!(metrics.contains("istio_mesh_identity_certificate_expiry_seconds"), "{metrics}");

    // The pod's HBONE port accepts from the node.
    let hbone = SocketAddr::from((pod.ip, 15008));
    let node = node_netns.clone();
    let accepted = tokio::task::spawn_blocking(move || connect_from_node(&node, hbone));
    accepted.await.unwrap().expect("15008 in the pod accepts a TCP connection");

    // A resync that replays the pod keeps it.
    agent.keep(POD_UID).await.unwrap();
    agent.snapshot_sent().await.unwrap();
    let (_, body) = get(app.admin_address(), "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["pods"][0]["uid"], POD_UID, "{dump:#}");
    assert_eq!(dump["pods"][0]["workload"], "Kubernetes//Pod/default/app");

    // A reconnecting agent whose snapshot lacks the pod removes it; a new
    // Add brings it back.
    drop(agent);
    let mut agent = ZdsClient::connect(&zds_socket).await.unwrap();
    agent.snapshot_sent().await.unwrap();
    let (_, body) = get(app.admin_address(), "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(dump["pods"].as_array().unwrap().is_empty(), "{dump:#}");
    agent.add(POD_UID, pod_info(), netns.file()).await.unwrap();
    eventually_status(ready, "/healthz/ready", 200).await;
    let node = node_netns.clone();
    let accepted = tokio::task::spawn_blocking(move || connect_from_node(&node, hbone));
    accepted.await.unwrap().expect("15008 accepts again after the new Add");

    // That Add came after this connection's snapshot; a reconnect whose
    // snapshot does not replay it removes the pod too.
    drop(agent);
    let mut agent = ZdsClient::connect(&zds_socket).await.unwrap();
    agent.snapshot_sent().await.unwrap();
    let (_, body) = get(app.admin_address(), "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(dump["pods"].as_array().unwrap().is_empty(), "{dump:#}");
    agent.add(POD_UID, pod_info(), netns.file()).await.unwrap();
    eventually_status(ready, "/healthz/ready", 200).await;

    // Del removes the pod: its listeners close.
    agent.del(POD_UID).await.unwrap();
    let mut refused = false;
    for _ in 0..40 {
        let node = node_netns.clone();
        match tokio::task::spawn_blocking(move || connect_from_node(&node, hbone)).await.unwrap() {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(refused, "15008 is closed after Del");
    let (_, body) = get(app.admin_address(), "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(dump["pods"].as_array().unwrap().is_empty(), "{dump:#}");

    // Drain: a pod with capture rules and an open plaintext connection
    // through its 15006; shutdown closes the listeners, waits out the
    // deadline for that connection, then closes it.
    Backend::Iptables.apply(&netns, &CaptureConfig::default()).unwrap();
    agent.add(POD_UID, pod_info(), netns.file()).await.unwrap();
    let app_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080));
    let app_listener = netns.run(move || std::net::TcpListener::bind(app_addr)).unwrap().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = app_listener.accept().unwrap();
        let mut buf = Vec::new();
        let _ = conn.read_to_end(&mut buf);
        buf
    });
    let node = node_netns.clone();
    let target = SocketAddr::from((pod.ip, 8080));
    let mut held = tokio::task::spawn_blocking(move || {
        let mut stream = connect_from_node(&node, target).unwrap();
        stream.write_all(b"in flight").unwrap();
        stream
    })
    .await
    .unwrap();
    // Opened once the proxy has connected to the app.
    let opened = "istio_tcp_connections_opened_total";
    for _ in 0..100 {
        let (_, metrics) = get(app.metrics_address(), "/metrics").await;
        if metrics.lines().any(|l| l.starts_with(opened) && l.ends_with(" 1")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let drain = Duration::from_millis(500);
    let started = tokio::time::Instant::now();
    let drained = tokio::time::timeout(drain + Duration::from_secs(1), app.shutdown(drain))
        .await
        .expect("shutdown within the drain deadline");
    let took = started.elapsed();
    assert!(!drained, "the open connection was still open at the deadline");
    assert!(took >= drain && took < drain + Duration::from_secs(1), "{took:?}");
    assert!(!zds_socket.exists(), "the ZDS socket is removed");
    let ended = tokio::task::spawn_blocking(move || {
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        match held.read_to_end(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        }
    });
    assert!(ended.await.unwrap(), "the held connection is closed after the drain");
    assert_eq!(server.join().unwrap(), b"in flight", "the app got the bytes");
    drop(agent);
    drop(topology);
}

/// The binary refuses a bad variable or a missing root certificate with a
/// message naming it and a non-zero exit.
#[test]
fn binary_startup_errors_name_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |vars: &[(&str, String)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ztunnel"));
        cmd.env_clear();
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[("INSTANCE_IP", "ten".into())]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INSTANCE_IP"), "{stderr}");

    let missing = dir.path().join("missing-root.pem");
    let out = run(&[
        ("ROOT_CERT_PATH", missing.display().to_string()),
        ("ZDS_SOCKET_PATH", dir.path().join("z.sock").display().to_string()),
        ("ADMIN_ADDRESS", "127.0.0.1:0".into()),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing-root.pem"), "{stderr}");
}

/// The binary itself: starts from the environment against istiod, becomes
/// ready, and exits cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_becomes_ready_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pod = PodHandle {
        node: "a".into(),
        namespace: "default".into(),
        name: "app".into(),
        ip: Ipv4Addr::new(10, 0, 0, 9),
        netns_name: String::new(),
    };
    let (istiod, serve_istiod, _) = istiod(dir.path(), &pod).await;
    serve_istiod.send(()).unwrap();
    let token = LocalTokenAuthenticator::token_path(dir.path(), "node-a");
    let ready = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztunnel"))
        .env_clear()
        .env("CA_ADDRESS", format!("{ISTIOD_HOST}:15012"))
        .env("XDS_ADDRESS", format!("{ISTIOD_HOST}:15012"))
        .env("ISTIOD_DIAL_ADDRESS", istiod.to_string())
        .env("ROOT_CERT_PATH", dir.path().join("root-cert.pem"))
        .env("TOKEN_PATH", token)
        .env("ZDS_SOCKET_PATH", dir.path().join("ztunnel.sock"))
        .env("ADMIN_ADDRESS", "127.0.0.1:0")
        .env("METRICS_ADDRESS", "127.0.0.1:0")
        .env("READINESS_ADDRESS", ready.to_string())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(ready).await {
            let request = "GET /healthz/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            tcp.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            let _ = tcp.read_to_string(&mut response).await;
            if response.starts_with("HTTP/1.1 200") {
                up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "the binary became ready");
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within 5 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!dir.path().join("ztunnel.sock").exists(), "the ZDS socket is removed");
}
