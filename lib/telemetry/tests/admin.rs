//! The admin server over real HTTP/1.1 on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::Arc;

use mesh_telemetry::admin::{AdminState, serve};
use mesh_telemetry::logging;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn endpoints_answer() {
    let mut registry = Registry::with_prefix("istio");
    let counter = Counter::<u64>::default();
    registry.register("requests", "Requests seen", counter.clone());
    counter.inc_by(3);
    let (ready_tx, ready_rx) = watch::channel(false);
    let state = AdminState {
        registry: Some(Arc::new(registry)),
        ready: Some(ready_rx),
        config_dump: Some(Arc::new(|| serde_json::json!({"workloads": [{"uid": "a"}]}))),
        logging: Some(logging::detached("info").unwrap()),
        debug: Some(Arc::new(|name, query| {
            (name == "echo").then(|| serde_json::json!({ "query": query }))
        })),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, state));

    let (status, body) = get(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("istio_requests_total 3"), "{body}");

    assert_eq!(get(addr, "GET", "/healthz/ready").await.0, 503);
    ready_tx.send(true).unwrap();
    assert_eq!(get(addr, "GET", "/healthz/ready").await.0, 200);

    let (status, body) = get(addr, "GET", "/config_dump").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["workloads"][0]["uid"],
        "a"
    );

    assert_eq!(get(addr, "GET", "/logging").await.1.trim(), "info");
    let (status, body) = get(addr, "POST", "/logging?level=info%2Caccess%3Ddebug").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(addr, "GET", "/logging").await.1.trim(), "access=debug,info");
    assert_eq!(get(addr, "POST", "/logging?level=[[[").await.0, 400);
    assert_eq!(get(addr, "POST", "/logging").await.0, 400);

    let (status, body) = get(addr, "GET", "/debug/echo?proxyID=a").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["query"], "proxyID=a");
    assert_eq!(get(addr, "GET", "/debug/other").await.0, 404);

    assert_eq!(get(addr, "DELETE", "/metrics").await.0, 405);
    assert_eq!(get(addr, "GET", "/nope").await.0, 404);
}
