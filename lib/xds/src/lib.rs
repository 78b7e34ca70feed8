//! Delta xDS (incremental ADS) for the mesh.
//!
//! - [`server::Session`]: what istiod keeps per proxy connection and per
//!   type: the subscription (wildcard and/or named resources), the versions
//!   last sent, the nonce awaiting an ACK, and the last NACK. It turns the
//!   proxy's current view into a response holding only what changed, and
//!   records ACKs and NACKs. No I/O, so it is tested exhaustively in memory.
//! - [`client`]: the proxy side. [`client::TypeState`] tracks accepted
//!   versions per type for resumption (`initial_resource_versions`), and
//!   [`client::XdsClient`] runs the stream: subscribe, decode, hand updates
//!   to a handler, ACK or NACK with the reasons, reconnect with backoff, and
//!   keep the last good state when istiod is gone.
#![forbid(unsafe_code)]

pub mod client;
pub mod server;

/// The wildcard resource name: "everything of this type for me".
pub const WILDCARD: &str = "*";
