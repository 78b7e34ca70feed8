//! The proxy's side of ZDS: listen, greet, turn each request into a
//! [`ZdsEvent`] for the proxy to act on, and send back its answer.
//!
//! Socket I/O is blocking, on one thread for accepting and one per
//! connection (the agent is a single local client); events cross to async
//! code over a tokio channel and answers come back on a oneshot.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::ZdsError;
use super::codec::{self, Request, WorkloadInfo};

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// What the agent asked for.
#[derive(Debug)]
pub enum ZdsRequest {
    /// Serve a pod; `netns` is its network namespace.
    Add { uid: String, info: WorkloadInfo, netns: OwnedFd },
    /// Keep serving a pod (replayed during a resync).
    Keep { uid: String },
    /// Stop serving a pod.
    Del { uid: String },
    /// The agent's snapshot is complete.
    SnapshotSent,
    /// An agent connected (after the hello); its snapshot (Adds and Keeps,
    /// then `SnapshotSent`) follows. Not a request: the answer goes nowhere.
    Connected,
}

/// Sends the answer to one request; dropping it unanswered sends an error.
#[derive(Debug)]
pub struct Responder(oneshot::Sender<Result<(), String>>);

impl Responder {
    /// `Ok(())` acks; `Err(text)` refuses with `text`.
    pub fn ack(self, result: Result<(), String>) {
        // The connection may be gone already; nothing to tell then.
        let _ = self.0.send(result);
    }
}

/// One request and the way to answer it.
#[derive(Debug)]
pub struct ZdsEvent {
    pub request: ZdsRequest,
    pub responder: Responder,
}

impl ZdsEvent {
    pub fn ack(self, result: Result<(), String>) {
        self.responder.ack(result);
    }
}

/// A listening ZDS socket. Dropping it stops accepting, closes open
/// connections (within a fraction of a second) and removes the socket file.
#[derive(Debug)]
pub struct ZdsServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl ZdsServer {
    /// Listens on `path` and returns the server and its stream of events;
    /// at most `queue` events wait unconsumed before connections stall.
    pub fn bind(
        path: impl AsRef<Path>,
        queue: usize,
    ) -> Result<(Self, mpsc::Receiver<ZdsEvent>), ZdsError> {
        let path = path.as_ref().to_owned();
        let socket_err = |op, source| ZdsError::Socket { op, path: path.clone(), source };
        let listener = mesh_netns::socket::seqpacket_listen(&path)
            .map_err(|e| socket_err("listening on", e))?;
        socket2::SockRef::from(&listener)
            .set_read_timeout(Some(POLL))
            .map_err(|e| socket_err("setting a timeout on", e))?;
        let (events, rx) = mpsc::channel(queue.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let stop = stop.clone();
            let path = path.clone();
            std::thread::Builder::new()
                .name("zds-accept".to_owned())
                .spawn(move || accept_loop(&listener, &path, &events, &stop))
                .map_err(|e| socket_err("spawning the accept thread for", e))?
        };
        Ok((Self { path, stop, accept: Some(accept) }, rx))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ZdsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "removing the zds socket");
        }
    }
}

fn accept_loop(
    listener: &OwnedFd,
    path: &Path,
    events: &mpsc::Sender<ZdsEvent>,
    stop: &Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match mesh_netns::socket::seqpacket_accept(listener) {
            Ok(conn) => {
                let events = events.clone();
                let stop = stop.clone();
                let spawned = std::thread::Builder::new()
                    .name("zds-conn".to_owned())
                    .spawn(move || serve_connection(&conn, &events, &stop));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot serve a zds connection");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "zds accept failed; stopping");
                return;
            }
        }
    }
}

fn serve_connection(conn: &OwnedFd, events: &mpsc::Sender<ZdsEvent>, stop: &AtomicBool) {
    let setup = socket2::SockRef::from(conn)
        .set_read_timeout(Some(POLL))
        .and_then(|()| codec::send_packet(conn.as_fd(), &codec::encode_hello(), &[]));
    if let Err(e) = setup {
        tracing::warn!(error = %e, "zds hello failed; closing");
        return;
    }
    tracing::debug!("zds client connected");
    let (tx, _unanswered) = oneshot::channel();
    let connected = ZdsEvent { request: ZdsRequest::Connected, responder: Responder(tx) };
    if events.blocking_send(connected).is_err() {
        tracing::info!("zds events are no longer consumed; closing the connection");
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let answer = match codec::recv_packet(conn) {
            Ok(packet) => handle_packet(packet, events),
            Err(ZdsError::Closed) => {
                tracing::debug!("zds client disconnected");
                return;
            }
            Err(e) if e.is_timeout() => continue,
            Err(e @ (ZdsError::TooLarge { .. } | ZdsError::Malformed(_))) => {
                tracing::warn!(error = %e, "bad zds packet");
                Some(Err(e.to_string()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "zds connection failed; closing");
                return;
            }
        };
        let Some(answer) = answer else {
            tracing::info!("zds events are no longer consumed; closing the connection");
            return;
        };
        if let Err(e) = codec::send_packet(conn.as_fd(), &codec::encode_ack(&answer), &[]) {
            tracing::warn!(error = %e, "sending a zds ack failed; closing");
            return;
        }
    }
}

/// Turns a packet into an event, waits for the proxy's answer and returns
/// it; `None` when nobody consumes events any more.
fn handle_packet(
    packet: codec::Packet,
    events: &mpsc::Sender<ZdsEvent>,
) -> Option<Result<(), String>> {
    let request = match to_request(packet) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(error = %e, "rejecting a zds request");
            return Some(Err(e.to_string()));
        }
    };
    let (tx, rx) = oneshot::channel();
    events.blocking_send(ZdsEvent { request, responder: Responder(tx) }).ok()?;
    Some(rx.blocking_recv().unwrap_or_else(|_| Err("request dropped unanswered".to_owned())))
}

fn to_request(packet: codec::Packet) -> Result<ZdsRequest, ZdsError> {
    let request = Request::decode(&packet.bytes)?;
    let mut fds = packet.fds.into_iter();
    let (first, extra) = (fds.next(), fds.next());
    if extra.is_some() {
        return Err(ZdsError::Malformed("more than one file descriptor"));
    }
    Ok(match (request, first) {
        (Request::Add { uid, info }, Some(netns)) => ZdsRequest::Add { uid, info, netns },
        (Request::Add { .. }, None) => {
            return Err(ZdsError::Malformed("AddWorkload without a netns file descriptor"));
        }
        (_, Some(_)) => {
            return Err(ZdsError::Malformed("file descriptor on a request that takes none"));
        }
        (Request::Keep { uid }, None) => ZdsRequest::Keep { uid },
        (Request::Del { uid }, None) => ZdsRequest::Del { uid },
        (Request::SnapshotSent, None) => ZdsRequest::SnapshotSent,
    })
}
