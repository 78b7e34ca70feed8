//! ZDS (`istio.workload.zds`): the CNI agent hands pods to the node proxy.
//!
//! A `SOCK_SEQPACKET` unix socket, one protobuf message per packet. The
//! proxy listens ([`server`]) and greets each connection with
//! `ZdsHello{V1}`; the agent ([`agent`]) sends `WorkloadRequest`s (an Add
//! carries the pod's netns fd as SCM_RIGHTS) and waits for an `Ack` to
//! each, whose non-empty `error` is a refusal.

pub mod agent;
pub mod codec;
pub mod server;

pub use agent::ZdsClient;
pub use codec::{MAX_PACKET, Request, WorkloadInfo};
pub use server::{Responder, ZdsEvent, ZdsRequest, ZdsServer};

/// Where ztunnel listens by default.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/ztunnel/ztunnel.sock";

#[derive(Debug, thiserror::Error)]
pub enum ZdsError {
    #[error("{op} {path}: {source}")]
    Socket {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("zds socket i/o: {0}")]
    Io(#[source] std::io::Error),
    #[error("zds peer closed the connection")]
    Closed,
    #[error("zds packet larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("undecodable zds message: {0}")]
    Decode(#[source] prost::DecodeError),
    #[error("malformed zds message: {0}")]
    Malformed(&'static str),
    #[error("unsupported zds version {0} (want V1)")]
    Version(i32),
    #[error("no answer from the proxy within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the proxy refused the request: {0}")]
    Rejected(String),
    #[error("the connection is unusable after an earlier failure; reconnect")]
    Broken,
    #[error("zds worker thread failed: {0}")]
    Worker(String),
}

impl ZdsError {
    /// A read or write timed out (SO_RCVTIMEO / SO_SNDTIMEO).
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, Self::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    }
}
