//! Sockets made inside one pod's network namespace.
//!
//! A socket belongs to the namespace it was created in, whatever thread
//! uses it later. [`PodSockets`] keeps one long-lived thread per pod that
//! has entered the pod's namespace and creates sockets on request (over a
//! channel); it never blocks on the network: listeners are bound there and
//! streams are created, marked and (for transparent ones) bound there, then
//! handed back as non-blocking std sockets and connected from tokio. The
//! thread ends when the last handle is dropped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;

use mesh_netns::Netns;
use mesh_netns::socket::{PROXY_MARK, bind_reusable, set_mark, set_transparent};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("starting the socket thread for {netns}: {source}")]
    Start {
        netns: String,
        #[source]
        source: mesh_netns::NetnsError,
    },
    #[error("the socket thread for {netns} has stopped")]
    Stopped { netns: String },
    #[error("binding {addr} in {netns}: {source}")]
    Bind {
        addr: SocketAddr,
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {target} from {netns}: {source}")]
    Connect {
        target: SocketAddr,
        netns: String,
        #[source]
        source: io::Error,
    },
}

/// A socket factory for one pod's namespace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PodSockets {
    jobs: mpsc::Sender<Job>,
    netns: String,
}

impl PodSockets {
    /// Starts the pod's socket thread in `netns`.
    pub fn start(netns: &Netns) -> Result<Self, SocketError> {
        let label = netns.path().display().to_string();
        let (jobs, queue) = mpsc::channel::<Job>();
        netns
            .spawn("pod-sockets", move || {
                while let Ok(job) = queue.recv() {
                    job();
                }
            })
            .map_err(|source| SocketError::Start { netns: label.clone(), source })?;
        Ok(Self { jobs, netns: label })
    }

    /// The namespace's label (its path), for errors and logs.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Runs `f` on the pod's thread, inside its namespace.
    async fn run<T, F>(&self, f: F) -> Result<T, SocketError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        let stopped = || SocketError::Stopped { netns: self.netns.clone() };
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }

    /// A listener on `addr` in the pod (`SO_REUSEADDR`, `SO_REUSEPORT`).
    pub async fn listen(&self, addr: SocketAddr) -> Result<TcpListener, SocketError> {
        let bind_error = |source| SocketError::Bind { addr, netns: self.netns.clone(), source };
        let listener = self.run(move || bind_reusable(addr)).await?.map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        TcpListener::from_std(listener).map_err(bind_error)
    }

    /// A UDP socket bound to `addr` in the pod (`SO_REUSEADDR`,
    /// `SO_REUSEPORT`, like the TCP listeners).
    pub async fn bind_udp(&self, addr: SocketAddr) -> Result<UdpSocket, SocketError> {
        let bind_error = |source| SocketError::Bind { addr, netns: self.netns.clone(), source };
        let socket = self.run(move || reusable_udp(addr)).await?.map_err(bind_error)?;
        UdpSocket::from_std(socket).map_err(bind_error)
    }

    /// A UDP socket in the pod with the proxy's mark (so the pod's DNS
    /// capture lets it through), connected to `target`.
    pub async fn connect_udp(&self, target: SocketAddr) -> Result<UdpSocket, SocketError> {
        let connect_error =
            |source| SocketError::Connect { target, netns: self.netns.clone(), source };
        let socket = self.run(move || marked_udp(target)).await?.map_err(connect_error)?;
        let socket = UdpSocket::from_std(socket).map_err(connect_error)?;
        socket.connect(target).await.map_err(connect_error)?;
        Ok(socket)
    }

    /// Whether `ip` is an address of the pod's namespace (loopback, its own
    /// addresses), as the kernel there sees it.
    pub async fn is_local(&self, ip: IpAddr) -> Result<bool, SocketError> {
        self.run(move || crate::proxy::selfcall::is_local_address(ip)).await
    }

    /// Connects to `target` from the pod with the proxy's mark (so the
    /// pod's capture rules let it through). With `source`, the socket is
    /// transparent and bound to that address (port chosen by the kernel),
    /// so the peer sees it as the source.
    pub async fn connect(
        &self,
        target: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<TcpStream, SocketError> {
        let connect_error =
            |source| SocketError::Connect { target, netns: self.netns.clone(), source };
        let std_stream = self.run(move || marked_socket(target, source)).await?;
        let socket = TcpSocket::from_std_stream(std_stream.map_err(connect_error)?);
        socket.connect(target).await.map_err(connect_error)
    }
}

/// An unconnected, non-blocking TCP socket for `target`'s family, marked,
/// and transparent and bound to `source` if given.
fn marked_socket(target: SocketAddr, source: Option<IpAddr>) -> io::Result<std::net::TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    set_mark(&socket, PROXY_MARK)?;
    if let Some(ip) = source {
        if target.is_ipv6() {
            socket.set_ip_transparent_v6(true)?;
        } else {
            set_transparent(&socket)?;
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// A UDP socket of `addr`'s family.
fn udp_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
}

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEADDR` and
/// `SO_REUSEPORT`.
fn reusable_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = udp_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A non-blocking, marked UDP socket for `target`'s family, bound to an
/// ephemeral port.
fn marked_udp(target: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = udp_socket(target)?;
    set_mark(&socket, PROXY_MARK)?;
    let any = SocketAddr::new(unspecified(target), 0);
    socket.bind(&any.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The unspecified address of `target`'s family.
pub(crate) fn unspecified(target: SocketAddr) -> IpAddr {
    if target.is_ipv6() {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    }
}
