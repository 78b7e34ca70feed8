//! The admin server against slow and oversized clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::time::Duration;

use mesh_telemetry::admin::{AdminState, serve_with};
use mesh_telemetry::http_server::ServeLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

async fn start(limits: ServeLimits) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve_with(listener, AdminState::default(), limits));
    address
}

/// Reads until the server closes; what it sent and when it closed.
async fn until_closed(tcp: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection within {within:?}");
    (String::from_utf8_lossy(&got).into_owned(), started.elapsed())
}

const LIMITS: ServeLimits = ServeLimits {
    header_read_timeout: Duration::from_millis(300),
    idle_timeout: Duration::from_millis(1500),
    max_header_bytes: 8192,
    max_headers: 16,
};

#[tokio::test]
async fn half_a_request_head_is_disconnected_after_the_header_timeout() {
    let address = start(LIMITS).await;
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let (_, took) = until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_millis(1400), "closed by the header timeout: {took:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let address = start(LIMITS).await;
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (got, took) = until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let address = start(LIMITS).await;
    let mut tcp = TcpStream::connect(address).await.unwrap();
    let mut request = b"GET /ready HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..40 {
        request.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    tcp.write_all(&request).await.unwrap();
    let (got, _) = until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(got.starts_with("HTTP/1.1 431"), "too many headers: {got:?}");

    let mut tcp = TcpStream::connect(address).await.unwrap();
    let big = format!("GET /ready HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = tcp.write_all(big.as_bytes()).await;
    let (got, _) = until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 431"), "a 64 KiB header: {got:?}");
}
