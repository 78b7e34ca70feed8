//! ztunnel never connects to itself.
//!
//! A connection whose destination is one of ztunnel's own ports on an
//! address the connecting namespace serves would come straight back into
//! ztunnel (15001 and 15006 deliver to the original destination from the
//! pod, past its capture rules; 15008 delivers to the pod's own address),
//! and each round costs descriptors until the process runs out. upstream:
//! ztunnel refuses these as `Error::SelfCall` ("attempted recursive call
//! to ourselves"): HBONE targets on any of its `illegal_ports`, outbound
//! destinations on them over loopback. Here the outbound rule covers every
//! address the pod's or ztunnel's own namespace holds, as the kernel sees
//! it, not only loopback.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// Every port ztunnel listens on: outbound capture, plaintext inbound,
/// HBONE, DNS (in each pod), admin, metrics, readiness.
pub const ZTUNNEL_PORTS: [u16; 7] = [15001, 15006, 15008, 15053, 15000, 15020, 15021];

pub fn is_ztunnel_port(port: u16) -> bool {
    ZTUNNEL_PORTS.contains(&port)
}

/// Whether `ip` is an address of the network namespace of the calling
/// thread: the kernel lets a socket bind only to its own addresses
/// (`EADDRNOTAVAIL` otherwise). Loopback and the unspecified address always
/// are. Any other failure counts as local, so the check fails closed.
pub fn is_local_address(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    match try_bind(ip) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => false,
        Err(e) => {
            tracing::debug!(%ip, error = %e, "cannot tell whether the address is local; assuming it is");
            true
        }
    }
}

fn try_bind(ip: IpAddr) -> io::Result<()> {
    let addr = SocketAddr::new(ip, 0);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&addr.into())
}

/// Why a connection was refused as a self-call (for errors and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is one of ztunnel's own listeners; refusing a recursive call to ourselves")]
pub struct SelfCall(pub SocketAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_local_addresses() {
        for port in [15001, 15006, 15008, 15053, 15000, 15020, 15021] {
            assert!(is_ztunnel_port(port), "{port}");
        }
        assert!(!is_ztunnel_port(8080));
        assert!(!is_ztunnel_port(15012), "istiod's port is not ours");
        assert!(is_local_address("127.0.0.1".parse().unwrap()));
        assert!(is_local_address("127.3.2.1".parse().unwrap()), "all of 127/8");
        assert!(is_local_address("0.0.0.0".parse().unwrap()));
        // TEST-NET-3 is never assigned to a host.
        assert!(!is_local_address("203.0.113.7".parse().unwrap()));
    }
}
