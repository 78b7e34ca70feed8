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
//!
//! TLS is the caller's business (see `mesh-identity`); everything here works
//! on any `AsyncRead + AsyncWrite`, which keeps tests in memory.
#![forbid(unsafe_code)]

pub mod client;
pub mod headers;
pub mod server;
mod stream;

pub use stream::H2Stream;

/// HTTP/2 window and concurrency settings shared by both ends.
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
}

impl Default for H2Settings {
    fn default() -> Self {
        // Sized for throughput on fast links: a 4 MiB stream window keeps a
        // single tunnel from stalling on a 1 Gbit/s path with ~30 ms RTT,
        // the connection window lets several tunnels run at once.
        Self {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 256 * 1024,
            max_streams: 100,
        }
    }
}
