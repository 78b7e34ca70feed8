//! One HTTP/2 CONNECT stream as a byte stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest chunk handed to h2 at once; bounds per-write buffering.
const MAX_CHUNK: usize = 64 * 1024;

/// Keeps a count of open streams while alive (used by the client pool).
pub(crate) type StreamGuard = Box<dyn Send + Sync>;

/// A tunnel: bytes written go out as DATA frames, DATA frames received are
/// read. Shutting down the write side sends END_STREAM (half-close); the read
/// side reports EOF at the peer's END_STREAM.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received but not yet read.
    pending: Bytes,
    write_closed: bool,
    _guard: Option<StreamGuard>,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("pending", &self.pending.len())
            .field("write_closed", &self.write_closed)
            .finish_non_exhaustive()
    }
}

impl H2Stream {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        guard: Option<StreamGuard>,
    ) -> Self {
        Self { send, recv, pending: Bytes::new(), write_closed: false, _guard: guard }
    }
}

fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    match e.reason() {
        Some(h2::Reason::NO_ERROR) | Some(h2::Reason::CANCEL) => {
            io::Error::new(io::ErrorKind::BrokenPipe, e)
        }
        _ => io::Error::other(e),
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => self.pending = data,
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        if let Some(chunk) = self.pending.get(..n) {
            buf.put_slice(chunk);
        }
        self.pending.advance(n);
        // Open the window by what the reader consumed, so memory held per
        // stream stays bounded by the window.
        self.recv.flow_control().release_capacity(n).map_err(h2_to_io)?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "tunnel write side closed",
            )));
        }
        let wanted = buf.len().min(MAX_CHUNK);
        self.send.reserve_capacity(wanted);
        loop {
            // Check what is already granted before waiting: poll_capacity
            // only reports increases, so waiting first could hang.
            let granted = self.send.capacity();
            if granted > 0 {
                let n = granted.min(wanted);
                let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                self.send.send_data(chunk, false).map_err(h2_to_io)?;
                return Poll::Ready(Ok(n));
            }
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "tunnel closed by peer",
                    )));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes frames as the connection task gets to them.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            self.write_closed = true;
            self.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
