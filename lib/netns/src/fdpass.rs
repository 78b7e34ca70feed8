//! Packets with file descriptors attached (SCM_RIGHTS) on unix sockets.
//!
//! The only `unsafe` in the crate is here: the kernel hands received
//! descriptors over as raw numbers and nix returns them as `RawFd`; they are
//! wrapped into `OwnedFd` at once so that they are closed exactly once.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The kernel's limit on descriptors in one SCM_RIGHTS message
/// (`SCM_MAX_FD`). The receive buffer has room for that many, so the
/// ancillary data is never cut short and every received descriptor is
/// adopted (and closed when dropped) rather than leaked.
pub const SCM_MAX_FD: usize = 253;

/// One received packet.
#[derive(Debug)]
pub struct Received {
    /// Bytes written into the caller's buffer; 0 means the peer closed.
    pub len: usize,
    /// The packet did not fit in the buffer (the rest is lost).
    pub truncated: bool,
    /// The ancillary data did not fit (not expected for SCM_RIGHTS, see
    /// [`SCM_MAX_FD`]; any descriptors in it were not adopted).
    pub fds_truncated: bool,
    pub fds: Vec<OwnedFd>,
}

/// Takes ownership of a descriptor the kernel just installed for us.
fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` comes straight from an SCM_RIGHTS control message of a
    // successful recvmsg: the kernel installed it in our table for this
    // call and nothing else knows or owns it yet.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sends one packet with `fds` attached.
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> =
        if raw.is_empty() { Vec::new() } else { vec![ControlMessage::ScmRights(&raw)] };
    let iov = [IoSlice::new(data)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)?;
    if sent == data.len() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, "short write of a packet"))
    }
}

/// Receives one packet into `buf`, with any descriptors attached to it.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg =
        recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    // Adopt every descriptor before looking at anything else, so none leak.
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(raw.into_iter().map(adopt));
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        fds_truncated: msg.flags.contains(MsgFlags::MSG_CTRUNC),
        fds,
    })
}
