//! Socket options a node proxy needs on sockets it owns inside pod
//! namespaces: the original destination of a redirected connection, the
//! mark that exempts its own traffic from redirection, transparent binding,
//! and listeners bound inside a namespace.

use std::io;
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
};
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, setsockopt, sockopt};

use crate::netns::{Netns, NetnsError};

/// The mark ztunnel puts on its own sockets (0x539); upstream's in-pod rules
/// never redirect packets carrying it.
pub const PROXY_MARK: u32 = 1337;

/// Where a connection captured by a `REDIRECT` rule was going before the
/// rule rewrote it (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6).
/// A dual-stack socket that accepted IPv4 (a v4-mapped local address) was
/// tracked as IPv4, so `SO_ORIGINAL_DST` applies to it.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let tracked_as_v4 = match stream.local_addr()? {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(local) => local.ip().to_ipv4_mapped().is_some(),
    };
    if tracked_as_v4 {
        let raw = getsockopt(&stream.as_fd(), sockopt::OriginalDst).map_err(io::Error::from)?;
        let ip = Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr));
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(raw.sin_port))))
    } else {
        let raw = getsockopt(&stream.as_fd(), sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
        let ip = Ipv6Addr::from(raw.sin6_addr.s6_addr);
        Ok(SocketAddr::V6(SocketAddrV6::new(
            ip,
            u16::from_be(raw.sin6_port),
            raw.sin6_flowinfo,
            raw.sin6_scope_id,
        )))
    }
}

/// Sets `SO_MARK` (needs CAP_NET_ADMIN).
pub fn set_mark<F: AsFd>(fd: &F, mark: u32) -> io::Result<()> {
    setsockopt(fd, sockopt::Mark, &mark).map_err(io::Error::from)
}

/// Sets `IP_TRANSPARENT`, which lets the socket bind or connect from
/// addresses the namespace does not own (needs CAP_NET_ADMIN).
pub fn set_transparent<F: AsFd>(fd: &F) -> io::Result<()> {
    setsockopt(fd, sockopt::IpTransparent, &true).map_err(io::Error::from)
}

/// Binds a TCP listener with `SO_REUSEADDR` and `SO_REUSEPORT` set, so a
/// second proxy instance can bind the same address during a hand-off.
pub fn bind_reusable(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl Netns {
    /// Binds a reusable TCP listener inside this namespace; the listener
    /// stays in it and can be served from any thread.
    pub fn bind_tcp(&self, addr: SocketAddr) -> Result<io::Result<TcpListener>, NetnsError> {
        self.run(move || bind_reusable(addr))
    }
}

/// A `SOCK_SEQPACKET` unix socket listening on `path`. A stale socket left
/// there by an earlier run is replaced; any other kind of file is an error
/// (`AddrInUse`), never deleted. The parent directory is created if needed.
pub fn seqpacket_listen(path: &std::path::Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "exists and is not a socket"));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
        }
        Err(e) => return Err(e),
    }
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(64)?;
    Ok(socket.into())
}

/// Accepts one connection on a listener made by [`seqpacket_listen`].
pub fn seqpacket_accept<F: AsFd>(listener: &F) -> io::Result<std::os::fd::OwnedFd> {
    let (socket, _) = socket2::SockRef::from(listener).accept()?;
    Ok(socket.into())
}

/// Connects a `SOCK_SEQPACKET` unix socket to `path`.
pub fn seqpacket_connect(path: &std::path::Path) -> io::Result<std::os::fd::OwnedFd> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None)?;
    socket.connect(&socket2::SockAddr::unix(path)?)?;
    Ok(socket.into())
}
