//! HBONE: TCP carried in HTTP/2 CONNECT streams over mutual TLS (port 15008).
//!
//! - [`H2Stream`]: one CONNECT stream as a tokio byte stream, honouring HTTP/2
//!   flow control in both directions and propagating half-close.
//! - [`server`]: accepts CONNECT on an (already TLS-terminated) connection;
//!   an [`server::Inbound`] decides per stream: open the target (200) or
//!   refuse with 400 / 401 / 503.
//! - [`client`]: CONNECT over one HTTP/2 connection, and a [`client::Pool`]
//!   that shares connections per key with a cap on streams per connection.
//! - [`headers`]: the metadata headers upstream sets (`forwarded`,
//!   `baggage`, `traceparent`) and their parsers.
//! - [`accept`]: accept loops that back off on resource exhaustion
//!   (EMFILE, ENFILE, ENOBUFS, ENOMEM) instead of spinning or stopping, and
//!   an optional cap on concurrent connections that stops accepting while
//!   full (the kernel's backlog then pushes back on clients).
//!
//! TLS is the caller's business (see `mesh-identity`); everything here works
//! on any `AsyncRead + AsyncWrite`, which keeps tests in memory.
#![forbid(unsafe_code)]

pub mod accept;
pub mod client;
pub mod headers;
mod keepalive;
pub mod server;
mod stream;

use std::time::Duration;

pub use stream::H2Stream;

/// HTTP/2 window, concurrency, size and time limits shared by both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Settings {
    /// Per-stream receive window (bytes in flight per tunnel).
    pub stream_window: u32,
    /// Whole-connection receive window.
    pub connection_window: u32,
    /// Largest DATA frame we accept.
    pub max_frame_size: u32,
    /// Streams per connection (server: advertised limit; client: pool cap).
    pub max_streams: u32,
    /// Largest header list accepted (`SETTINGS_MAX_HEADER_LIST_SIZE`); a
    /// request over it is refused (431) without being buffered further.
    pub max_header_list_size: u32,
    /// How long the HTTP/2 preface and SETTINGS exchange may take.
    pub handshake_timeout: Duration,
    /// A keep-alive PING is sent this often on every connection...
    pub keepalive_interval: Duration,
    /// ...and the connection is closed when its PONG takes longer.
    pub keepalive_timeout: Duration,
    /// Server: a connection without open streams for this long is closed
    /// (GOAWAY). The client side evicts idle pooled connections instead.
    pub idle_timeout: Duration,
    /// Client: how long a CONNECT may wait for its response headers.
    pub request_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        // Sized for throughput on fast links: a 4 MiB stream window keeps a
        // single tunnel from stalling on a 1 Gbit/s path with ~30 ms RTT,
        // the connection window lets several tunnels run at once (upstream
        // ztunnel: 4 MiB / 16 MiB).
        Self {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 256 * 1024,
            // upstream: POOL_MAX_STREAMS_PER_CONNECTION defaults to 100.
            max_streams: 100,
            // upstream: ztunnel's HBONE server accepts at most 64 KiB of
            // headers (h2's default is 16 MiB); CONNECT carries a handful.
            max_header_list_size: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            // upstream: ztunnel pings every 10 s and gives up after 20 s.
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            // upstream: POOL_UNUSED_RELEASE_TIMEOUT defaults to 5 minutes.
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
        }
    }
}
