//! HBONE end to end in memory: CONNECT tunnels to a real loopback TCP echo
//! server, large transfers both ways under flow control, half-close, every
//! refusal status, junk that must not disturb other connections, and pooling.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method, Request, StatusCode};
use mesh_hbone::client::{ConnectError, Connection, Pool};
use mesh_hbone::server::{ConnectRequest, Inbound, Refusal, ServeError, serve_connection};
use mesh_hbone::{H2Settings, H2Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

/// Opens TCP to the target; port 1 is "denied by policy".
struct ToTcp;

const DENIED_PORT: u16 = 1;

impl Inbound for ToTcp {
    type Upstream = TcpStream;

    async fn open(&self, request: ConnectRequest) -> Result<TcpStream, Refusal> {
        if request.target.port() == DENIED_PORT {
            return Err(Refusal::Denied("policy".into()));
        }
        TcpStream::connect(request.target).await.map_err(|e| Refusal::Unavailable(e.to_string()))
    }

    async fn proxy(&self, mut upstream: TcpStream, mut tunnel: H2Stream) {
        let _ = tokio::io::copy_bidirectional(&mut upstream, &mut tunnel).await;
    }
}

async fn echo_server() -> SocketAddr {
    mesh_test_support::tcp_echo_server("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn hbone_server(settings: H2Settings) -> DuplexStream {
    let (client, server) = tokio::io::duplex(1 << 20);
    tokio::spawn(serve_connection(server, settings, Arc::new(ToTcp)));
    client
}

#[tokio::test]
async fn large_transfer_both_ways_with_half_close() {
    let echo = echo_server().await;
    let settings = H2Settings {
        stream_window: 64 * 1024,
        connection_window: 128 * 1024,
        ..H2Settings::default()
    };
    let connection = Connection::handshake(hbone_server(settings), settings).await.unwrap();
    let tunnel = connection.connect(echo, HeaderMap::new()).await.unwrap();
    let (mut read, mut write) = tokio::io::split(tunnel);

    let payload: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&payload).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut echoed))
        .await
        .expect("no flow-control stall")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(echoed.len(), expected.len());
    assert!(echoed == expected, "bytes arrive intact and in order");
}

#[tokio::test]
async fn refusals_map_to_statuses() {
    let echo = echo_server().await;
    let connection =
        Connection::handshake(hbone_server(H2Settings::default()), H2Settings::default())
            .await
            .unwrap();

    let denied = SocketAddr::new(echo.ip(), DENIED_PORT);
    assert!(matches!(
        connection.connect(denied, HeaderMap::new()).await,
        Err(ConnectError::Denied)
    ));

    let closed_port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    assert!(matches!(
        connection.connect(closed_port, HeaderMap::new()).await,
        Err(ConnectError::Unavailable)
    ));

    // The connection still works after refusals.
    let mut ok = connection.connect(echo, HeaderMap::new()).await.unwrap();
    ok.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    ok.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

async fn raw_status(request: Request<()>) -> StatusCode {
    let (send, driver) = h2::client::handshake(hbone_server(H2Settings::default())).await.unwrap();
    tokio::spawn(driver);
    let mut send = send.ready().await.unwrap();
    let (response, _body) = send.send_request(request, true).unwrap();
    response.await.unwrap().status()
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let get = Request::builder().method(Method::GET).uri("http://10.0.0.1:80/").body(()).unwrap();
    assert_eq!(raw_status(get).await, StatusCode::BAD_REQUEST);
    let hostname =
        Request::builder().method(Method::CONNECT).uri("example.com:80").body(()).unwrap();
    assert_eq!(raw_status(hostname).await, StatusCode::BAD_REQUEST);
    let port_zero = Request::builder().method(Method::CONNECT).uri("10.0.0.1:0").body(()).unwrap();
    assert_eq!(raw_status(port_zero).await, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn junk_ends_only_its_own_connection() {
    let echo = echo_server().await;
    let (mut junk, server_side) = tokio::io::duplex(4096);
    let junk_server =
        tokio::spawn(serve_connection(server_side, H2Settings::default(), Arc::new(ToTcp)));
    let good = Connection::handshake(hbone_server(H2Settings::default()), H2Settings::default())
        .await
        .unwrap();

    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), junk_server)
        .await
        .expect("junk is rejected promptly")
        .unwrap();
    assert!(matches!(outcome, Err(ServeError::Handshake(_))), "{outcome:?}");

    let mut tunnel = good.connect(echo, HeaderMap::new()).await.unwrap();
    tunnel.write_all(b"still fine").await.unwrap();
    let mut buf = [0u8; 10];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still fine");
}

#[tokio::test]
async fn pool_caps_streams_per_connection_and_dials_once_per_need() {
    let echo = echo_server().await;
    let settings = H2Settings { max_streams: 100, ..H2Settings::default() };
    let pool: Arc<Pool<&'static str>> = Arc::new(Pool::new(settings, Duration::from_secs(300)));
    let dials = Arc::new(AtomicUsize::new(0));
    let mut tunnels = Vec::new();
    for _ in 0..150 {
        let dials = Arc::clone(&dials);
        let dial = move || async move {
            dials.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(hbone_server(settings))
        };
        tunnels.push(pool.connect("src->dst", dial, echo, HeaderMap::new()).await.unwrap());
    }
    assert_eq!(
        dials.load(Ordering::SeqCst),
        2,
        "150 streams at 100 per connection need two connections"
    );
    assert_eq!(pool.connection_count(&"src->dst"), 2);
    drop(tunnels);

    // Streams were released: the next tunnel reuses a connection.
    let dial = || async { Ok::<_, std::io::Error>(hbone_server(settings)) };
    let _again = pool.connect("src->dst", dial, echo, HeaderMap::new()).await.unwrap();
    assert_eq!(pool.connection_count(&"src->dst"), 2);
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_released() {
    let echo = echo_server().await;
    let settings = H2Settings::default();
    let pool: Pool<u8> = Pool::new(settings, Duration::from_secs(60));
    let dial = || async { Ok::<_, std::io::Error>(hbone_server(settings)) };
    let tunnel = pool.connect(7, dial, echo, HeaderMap::new()).await.unwrap();
    drop(tunnel);
    tokio::time::advance(Duration::from_secs(61)).await;
    let dials = AtomicUsize::new(0);
    let dial = || async {
        dials.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(hbone_server(settings))
    };
    let _fresh = pool.connect(7, dial, echo, HeaderMap::new()).await.unwrap();
    assert_eq!(
        dials.load(Ordering::SeqCst),
        1,
        "the idle connection was dropped and a new one dialled"
    );
    assert_eq!(pool.connection_count(&7), 1);
}
