//! Addresses on networks, namespaced hostnames and gateway addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use mesh_proto::workload as pb;

use crate::ModelError;

/// Decodes a 4- or 16-byte network-order IP address.
pub fn ip_from_bytes(field: &'static str, bytes: &[u8]) -> Result<IpAddr, ModelError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    Err(ModelError::AddressLength { field, len: bytes.len() })
}

/// Decodes an address plus prefix length into a CIDR with host bits cleared.
/// Without a length the prefix covers exactly the one address.
pub fn prefix_from_bytes(
    field: &'static str,
    bytes: &[u8],
    length: Option<u32>,
) -> Result<IpNet, ModelError> {
    let ip = ip_from_bytes(field, bytes)?;
    let max = match ip {
        IpAddr::V4(_) => 32u8,
        IpAddr::V6(_) => 128u8,
    };
    let length = length.unwrap_or(u32::from(max));
    let prefix_len = u8::try_from(length)
        .ok()
        .filter(|l| *l <= max)
        .ok_or(ModelError::PrefixLength { field, length, max })?;
    IpNet::new(ip, prefix_len).map(|net| net.trunc()).map_err(|_| ModelError::PrefixLength {
        field,
        length,
        max,
    })
}

/// An IP address on a named network ("" is the default network).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkAddress {
    pub network: String,
    pub address: IpAddr,
}

impl fmt::Display for NetworkAddress {
    /// The xDS alias form, `<network>/<ip>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.address)
    }
}

impl TryFrom<pb::NetworkAddress> for NetworkAddress {
    type Error = ModelError;

    /// A single address; a prefix shorter than the full address is rejected.
    fn try_from(value: pb::NetworkAddress) -> Result<Self, Self::Error> {
        let field = "NetworkAddress.address";
        let prefix = prefix_from_bytes(field, &value.address, value.length)?;
        if prefix.prefix_len() != prefix.max_prefix_len() {
            return Err(ModelError::Invalid {
                field: "NetworkAddress.length",
                reason: format!("a single address was expected, got the range {prefix}"),
            });
        }
        Ok(Self { network: value.network, address: prefix.addr() })
    }
}

/// An IP prefix on a named network: a service VIP (a single address) or a
/// range (when the wire form carries a length).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkPrefix {
    pub network: String,
    pub prefix: IpNet,
}

impl TryFrom<pb::NetworkAddress> for NetworkPrefix {
    type Error = ModelError;

    fn try_from(value: pb::NetworkAddress) -> Result<Self, Self::Error> {
        let prefix = prefix_from_bytes("NetworkAddress.address", &value.address, value.length)?;
        Ok(Self { network: value.network, prefix })
    }
}

/// `<namespace>/<hostname>`: the key of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedHostname {
    pub namespace: String,
    pub hostname: String,
}

impl NamespacedHostname {
    /// Parses the `"<namespace>/<hostname>"` form used as a map key on the wire.
    pub fn parse(field: &'static str, value: &str) -> Result<Self, ModelError> {
        match value.split_once('/') {
            Some((ns, host)) if !ns.is_empty() && !host.is_empty() && !host.contains('/') => {
                Ok(Self { namespace: ns.to_owned(), hostname: host.to_owned() })
            }
            _ => Err(ModelError::NamespacedHostname { field, value: value.to_owned() }),
        }
    }
}

impl fmt::Display for NamespacedHostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.hostname)
    }
}

impl TryFrom<pb::NamespacedHostname> for NamespacedHostname {
    type Error = ModelError;

    fn try_from(value: pb::NamespacedHostname) -> Result<Self, Self::Error> {
        Ok(Self {
            namespace: crate::required("NamespacedHostname.namespace", value.namespace)?,
            hostname: crate::required("NamespacedHostname.hostname", value.hostname)?,
        })
    }
}

/// Where a waypoint or a network gateway is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GatewayDestination {
    Hostname(NamespacedHostname),
    Address(NetworkAddress),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayAddress {
    pub destination: GatewayDestination,
    /// The HBONE port of the gateway (15008 for Istio's).
    pub hbone_mtls_port: u16,
}

impl TryFrom<pb::GatewayAddress> for GatewayAddress {
    type Error = ModelError;

    fn try_from(value: pb::GatewayAddress) -> Result<Self, Self::Error> {
        use pb::gateway_address::Destination;
        let destination = match value.destination {
            Some(Destination::Hostname(h)) => GatewayDestination::Hostname(h.try_into()?),
            Some(Destination::Address(a)) => GatewayDestination::Address(a.try_into()?),
            None => {
                return Err(ModelError::Missing { field: "GatewayAddress.destination" });
            }
        };
        let hbone_mtls_port = port("GatewayAddress.hbone_mtls_port", value.hbone_mtls_port)?;
        Ok(Self { destination, hbone_mtls_port })
    }
}

/// A TCP port in 1-65535.
pub(crate) fn port(field: &'static str, value: u32) -> Result<u16, ModelError> {
    u16::try_from(value).ok().filter(|p| *p != 0).ok_or(ModelError::Port { field, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v4_and_v6_and_rejects_other_lengths() {
        assert_eq!(
            ip_from_bytes("f", &[10, 0, 0, 1]).unwrap(),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_from_bytes("f", &v6.octets()).unwrap(), IpAddr::V6(v6));
        for len in [0, 1, 3, 5, 15, 17, 32] {
            assert_eq!(
                ip_from_bytes("f", &vec![1; len]),
                Err(ModelError::AddressLength { field: "f", len })
            );
        }
    }

    #[test]
    fn prefixes_default_to_the_host_and_clear_host_bits() {
        assert_eq!(
            prefix_from_bytes("f", &[10, 1, 2, 3], None).unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            prefix_from_bytes("f", &[10, 1, 2, 3], Some(16)).unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(prefix_from_bytes("f", &[0; 16], Some(0)).unwrap().to_string(), "::/0");
        assert_eq!(
            prefix_from_bytes("f", &[10, 1, 2, 3], Some(33)),
            Err(ModelError::PrefixLength { field: "f", length: 33, max: 32 })
        );
        assert_eq!(
            prefix_from_bytes("f", &[0; 16], Some(1000)),
            Err(ModelError::PrefixLength { field: "f", length: 1000, max: 128 })
        );
    }

    #[test]
    fn network_address_is_a_single_ip() {
        let ok = NetworkAddress::try_from(pb::NetworkAddress {
            network: "n1".into(),
            address: vec![10, 0, 0, 9],
            length: None,
        })
        .unwrap();
        assert_eq!(ok.to_string(), "n1/10.0.0.9");
        let range = pb::NetworkAddress {
            network: String::new(),
            address: vec![10, 0, 0, 0],
            length: Some(8),
        };
        assert!(matches!(NetworkAddress::try_from(range), Err(ModelError::Invalid { .. })));
    }

    #[test]
    fn namespaced_hostname_needs_both_parts() {
        let ok = NamespacedHostname::parse("k", "ns/svc.ns.svc.cluster.local").unwrap();
        assert_eq!(ok.namespace, "ns");
        assert_eq!(ok.to_string(), "ns/svc.ns.svc.cluster.local");
        for bad in ["", "ns", "/host", "ns/", "a/b/c"] {
            assert!(NamespacedHostname::parse("k", bad).is_err(), "{bad:?}");
        }
        let empty = pb::NamespacedHostname { namespace: "ns".into(), hostname: String::new() };
        assert_eq!(
            NamespacedHostname::try_from(empty),
            Err(ModelError::Missing { field: "NamespacedHostname.hostname" })
        );
    }

    #[test]
    fn gateway_address_needs_a_destination_and_a_port() {
        use pb::gateway_address::Destination;
        let host = pb::NamespacedHostname {
            namespace: "ns".into(),
            hostname: "wp.ns.svc.cluster.local".into(),
        };
        let ok = GatewayAddress::try_from(pb::GatewayAddress {
            destination: Some(Destination::Hostname(host.clone())),
            hbone_mtls_port: 15008,
        })
        .unwrap();
        assert_eq!(ok.hbone_mtls_port, 15008);
        let no_dest = pb::GatewayAddress { destination: None, hbone_mtls_port: 15008 };
        assert_eq!(
            GatewayAddress::try_from(no_dest),
            Err(ModelError::Missing { field: "GatewayAddress.destination" })
        );
        for bad_port in [0, 65536, u32::MAX] {
            let g = pb::GatewayAddress {
                destination: Some(Destination::Hostname(host.clone())),
                hbone_mtls_port: bad_port,
            };
            assert_eq!(
                GatewayAddress::try_from(g),
                Err(ModelError::Port { field: "GatewayAddress.hbone_mtls_port", value: bad_port })
            );
        }
    }
}
