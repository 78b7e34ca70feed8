//! The agent's side of ZDS: connect to the proxy, hand pods over, wait for
//! each Ack. Reconnecting after a failure is the caller's business: after
//! an I/O error or a timeout the client refuses further requests.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::ZdsError;
use super::codec::{self, Request, WorkloadInfo};

/// How long to wait for the hello and for each Ack by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the proxy's ZDS socket.
#[derive(Debug)]
pub struct ZdsClient {
    sock: Arc<OwnedFd>,
    path: PathBuf,
    timeout: Duration,
    broken: bool,
}

impl ZdsClient {
    /// Connects and waits for the proxy's hello.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, ZdsError> {
        Self::connect_with_timeout(path, DEFAULT_TIMEOUT).await
    }

    pub async fn connect_with_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<Self, ZdsError> {
        let path = path.as_ref().to_owned();
        let p = path.clone();
        let sock = blocking(move || {
            let socket_err = |op, source| ZdsError::Socket { op, path: p.clone(), source };
            let sock = mesh_netns::socket::seqpacket_connect(&p)
                .map_err(|e| socket_err("connecting to", e))?;
            let opts = socket2::SockRef::from(&sock);
            opts.set_read_timeout(Some(timeout))
                .and_then(|()| opts.set_write_timeout(Some(timeout)))
                .map_err(|e| socket_err("setting timeouts on", e))?;
            let hello = codec::recv_packet(&sock).map_err(|e| timed_out(e, timeout))?;
            codec::decode_hello(&hello.bytes)?;
            Ok(sock)
        })
        .await?;
        Ok(Self { sock: Arc::new(sock), path, timeout, broken: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the connection is unusable: broken by an earlier failure,
    /// closed by the proxy (a restarted proxy closes it), or holding an
    /// unsolicited packet. Never blocks.
    pub fn is_closed(&self) -> bool {
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::AsRawFd as _;
        if self.broken {
            return true;
        }
        let mut byte = [0u8; 1];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        match recv(self.sock.as_raw_fd(), &mut byte, flags) {
            // Nothing to read: the normal idle state.
            Err(nix::errno::Errno::EAGAIN) => false,
            // EOF, an error, or a packet nobody asked for.
            Ok(_) | Err(_) => true,
        }
    }

    /// Hands a pod over with its network namespace.
    pub async fn add(
        &mut self,
        uid: &str,
        info: WorkloadInfo,
        netns: &File,
    ) -> Result<(), ZdsError> {
        let fd = netns.try_clone().map_err(ZdsError::Io)?;
        self.request(Request::Add { uid: uid.to_owned(), info }, Some(fd.into())).await
    }

    /// Tells the proxy to keep a pod it already serves (during a resync).
    pub async fn keep(&mut self, uid: &str) -> Result<(), ZdsError> {
        self.request(Request::Keep { uid: uid.to_owned() }, None).await
    }

    /// Tells the proxy to stop serving a pod.
    pub async fn del(&mut self, uid: &str) -> Result<(), ZdsError> {
        self.request(Request::Del { uid: uid.to_owned() }, None).await
    }

    /// Ends the replay of the agent's snapshot.
    pub async fn snapshot_sent(&mut self) -> Result<(), ZdsError> {
        self.request(Request::SnapshotSent, None).await
    }

    async fn request(&mut self, request: Request, fd: Option<OwnedFd>) -> Result<(), ZdsError> {
        if self.broken {
            return Err(ZdsError::Broken);
        }
        let sock = self.sock.clone();
        let timeout = self.timeout;
        let bytes = request.encode();
        let result = blocking(move || {
            let fds: Vec<_> = fd.iter().map(AsFd::as_fd).collect();
            codec::send_packet(sock.as_fd(), &bytes, &fds)
                .map_err(|e| timed_out(ZdsError::Io(e), timeout))?;
            let reply = codec::recv_packet(&*sock).map_err(|e| timed_out(e, timeout))?;
            codec::decode_ack(&reply.bytes)
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(ZdsError::Rejected(refusal)),
            Err(e) => {
                // The next packet on this connection may be this request's
                // late answer: the connection cannot be trusted any more.
                self.broken = true;
                tracing::warn!(request = request.kind(), error = %e, "zds request failed");
                Err(e)
            }
        }
    }
}

fn timed_out(e: ZdsError, timeout: Duration) -> ZdsError {
    if e.is_timeout() { ZdsError::Timeout(timeout) } else { e }
}

/// Runs blocking socket work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, ZdsError>
where
    F: FnOnce() -> Result<T, ZdsError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| ZdsError::Worker(e.to_string()))?
}
