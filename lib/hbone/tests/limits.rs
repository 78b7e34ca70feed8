//! HBONE under hostile or broken peers: oversized header lists, peers that
//! never finish the handshake, never answer a PING or never answer a
//! CONNECT, idle connections on both sides, and the pool's eviction timer
//! and per-key dial state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use mesh_hbone::client::{ConnectError, Connection, Pool};
use mesh_hbone::server::{ConnectRequest, Inbound, Refusal, ServeError, serve_connection};
use mesh_hbone::{H2Settings, H2Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

struct ToTcp;

impl Inbound for ToTcp {
    type Upstream = TcpStream;

    async fn open(&self, request: ConnectRequest) -> Result<TcpStream, Refusal> {
        TcpStream::connect(request.target).await.map_err(|e| Refusal::Unavailable(e.to_string()))
    }

    async fn proxy(&self, mut upstream: TcpStream, mut tunnel: H2Stream) {
        let _ = tokio::io::copy_bidirectional(&mut upstream, &mut tunnel).await;
    }
}

async fn echo_server() -> SocketAddr {
    mesh_test_support::tcp_echo_server("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// A client end and the task serving the other end.
fn served(settings: H2Settings) -> (DuplexStream, JoinHandle<Result<(), ServeError>>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    (client, tokio::spawn(serve_connection(server, settings, Arc::new(ToTcp))))
}

fn quick() -> H2Settings {
    H2Settings {
        handshake_timeout: Duration::from_millis(300),
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        ..H2Settings::default()
    }
}

async fn connect_with_header(target: SocketAddr, pad: usize) -> Result<StatusCode, h2::Error> {
    let (io, _server) = served(H2Settings::default());
    let (send, driver) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(driver);
    let mut send = send.ready().await?;
    let mut request =
        Request::builder().method(Method::CONNECT).uri(target.to_string()).body(()).unwrap();
    let value = HeaderValue::from_str(&"a".repeat(pad)).unwrap();
    request.headers_mut().insert("x-pad", value);
    let (response, _body) = send.send_request(request, false)?;
    Ok(response.await?.status())
}

#[tokio::test]
async fn header_lists_over_64_kib_are_refused() {
    let echo = echo_server().await;
    let fits = connect_with_header(echo, 60 * 1024).await;
    assert_eq!(fits.unwrap(), StatusCode::OK, "60 KiB of headers is served");
    let oversized = connect_with_header(echo, 70 * 1024).await;
    assert!(
        !matches!(oversized, Ok(StatusCode::OK)),
        "a 70 KiB header list must be refused, got {oversized:?}"
    );
}

#[tokio::test]
async fn a_peer_that_never_speaks_is_dropped_at_the_handshake_timeout() {
    let (_silent, server) = served(quick());
    let outcome = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server gave up on its own")
        .unwrap();
    assert!(matches!(outcome, Err(ServeError::HandshakeTimeout(_))), "{outcome:?}");
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let (io, server) = served(quick());
    // The handshake is sent, then the client's connection is never polled
    // again: PINGs go unanswered, the socket stays open.
    let (_send, _unpolled) = h2::client::handshake(io).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server gave up on its own")
        .unwrap();
    assert!(matches!(outcome, Err(ServeError::Keepalive(_))), "{outcome:?}");
}

#[tokio::test]
async fn a_server_that_stops_answering_pings_is_dropped_by_the_client() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        let connection = h2::server::handshake(server_io).await.unwrap();
        // Never polled again.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(connection);
    });
    let connection = Connection::handshake(client_io, quick()).await.unwrap();
    for _ in 0..50 {
        if connection.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connection.is_closed(), "the keep-alive closed the connection");
    server.abort();
}

#[tokio::test]
async fn a_connect_without_response_times_out() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut connection = h2::server::handshake(server_io).await.unwrap();
        let mut held = Vec::new();
        while let Some(Ok(stream)) = connection.accept().await {
            held.push(stream);
        }
    });
    let connection = Connection::handshake(client_io, quick()).await.unwrap();
    let target: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let outcome =
        tokio::time::timeout(Duration::from_secs(5), connection.connect(target, HeaderMap::new()))
            .await
            .expect("bounded by the request timeout");
    assert!(matches!(outcome, Err(ConnectError::ResponseTimeout(_))), "{outcome:?}");
    server.abort();
}

#[tokio::test]
async fn a_server_connection_without_streams_is_closed_when_idle() {
    let echo = echo_server().await;
    let (io, server) = served(quick());
    let connection = Connection::handshake(io, H2Settings::default()).await.unwrap();
    let mut tunnel = connection.connect(echo, HeaderMap::new()).await.unwrap();
    // An open stream keeps it: well past the idle timeout it still echoes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    tunnel.write_all(b"busy").await.unwrap();
    let mut buf = [0u8; 4];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"busy");
    drop(tunnel);
    let outcome = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("an idle connection is closed")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[tokio::test(start_paused = true)]
async fn the_evictor_closes_idle_pooled_connections_and_forgets_their_keys() {
    let echo = echo_server().await;
    let pool = Arc::new(Pool::<u8>::new(H2Settings::default(), Duration::from_secs(60)));
    let evictor = pool.spawn_evictor(Duration::from_secs(10));
    let (io, server) = served(H2Settings::default());
    let dial = move || async move { Ok::<_, std::io::Error>(io) };
    let tunnel = pool.connect(1, dial, echo, HeaderMap::new()).await.unwrap();
    assert_eq!(pool.connection_count(&1), 1);
    drop(tunnel);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(pool.connection_count(&1), 1, "not idle long enough yet");
    tokio::time::sleep(Duration::from_secs(41)).await;
    assert_eq!(pool.connection_count(&1), 0, "evicted without anyone asking for key 1");
    assert_eq!(pool.key_count(), 0);
    // Evicting dropped the last handle: the connection itself closed, so
    // the server's task ended (how it saw the end does not matter).
    let outcome = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(outcome, Ok(Ok(_))), "{outcome:?}");
    evictor.abort();
}

#[tokio::test]
async fn failed_dials_leave_no_per_key_state() {
    let pool = Pool::<u32>::new(H2Settings::default(), Duration::from_secs(60));
    let target: SocketAddr = "10.0.0.1:80".parse().unwrap();
    for key in 0..100 {
        let dial = || async {
            Err::<DuplexStream, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        };
        let outcome = pool.connect(key, dial, target, HeaderMap::new()).await;
        assert!(matches!(outcome, Err(ConnectError::Dial(_))), "{outcome:?}");
    }
    assert_eq!(pool.key_count(), 0, "a key's dial lock goes with its last dial");
}
