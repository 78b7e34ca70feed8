//! Services: Kubernetes Services and ServiceEntry hosts.

use mesh_proto::workload as pb;

use crate::address::{GatewayAddress, NamespacedHostname, NetworkPrefix};
use crate::error::Resource;
use crate::workload::Port;
use crate::{ModelError, required};

mirror_enum! {
    /// A locality level endpoints are compared on, most significant first.
    LocalityScope from pb::load_balancing::Scope, field "LoadBalancing.routing_preference" {
        Unspecified = UnspecifiedScope,
        Region = Region,
        Zone = Zone,
        Subzone = Subzone,
        Node = Node,
        Cluster = Cluster,
        Network = Network,
    }
}

mirror_enum! {
    LoadBalancingMode from pb::load_balancing::Mode, field "LoadBalancing.mode" {
        Unspecified = UnspecifiedMode,
        /// Only endpoints that match every scope.
        Strict = Strict,
        /// Closest endpoints first, then further ones.
        Failover = Failover,
        /// Connect to the address the client asked for.
        Passthrough = Passthrough,
    }
}

mirror_enum! {
    HealthPolicy from pb::load_balancing::HealthPolicy, field "LoadBalancing.health_policy" {
        OnlyHealthy = OnlyHealthy,
        AllowAll = AllowAll,
    }
}

mirror_enum! {
    IpFamilies from pb::IpFamilies, field "Service.ip_families" {
        Automatic = Automatic,
        Ipv4Only = Ipv4Only,
        Ipv6Only = Ipv6Only,
        Dual = Dual,
    }
}

mirror_enum! {
    Visibility from pb::service::Visibility, field "Service.visibility" {
        Public = Public,
        /// Only visible to clients in the service's namespace.
        Namespace = Namespace,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancing {
    pub routing_preference: Vec<LocalityScope>,
    pub mode: LoadBalancingMode,
    pub health_policy: HealthPolicy,
}

impl TryFrom<pb::LoadBalancing> for LoadBalancing {
    type Error = ModelError;

    fn try_from(value: pb::LoadBalancing) -> Result<Self, Self::Error> {
        Ok(Self {
            routing_preference: value
                .routing_preference
                .into_iter()
                .map(LocalityScope::from_wire)
                .collect::<Result<_, _>>()?,
            mode: LoadBalancingMode::from_wire(value.mode)?,
            health_policy: HealthPolicy::from_wire(value.health_policy)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedWaypoint {
    pub destination: GatewayAddress,
    pub weight: u32,
}

/// A validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    /// Virtual IPs, or ranges for ServiceEntries with CIDR addresses.
    pub addresses: Vec<NetworkPrefix>,
    pub ports: Vec<Port>,
    pub subject_alt_names: Vec<String>,
    pub waypoint: Option<GatewayAddress>,
    pub load_balancing: Option<LoadBalancing>,
    pub ip_families: IpFamilies,
    pub canonical: bool,
    pub ingress_use_waypoint: bool,
    pub weighted_waypoints: Vec<WeightedWaypoint>,
    pub visibility: Visibility,
}

impl Service {
    /// The xDS resource name and map key, `<namespace>/<hostname>`.
    pub fn key(&self) -> NamespacedHostname {
        NamespacedHostname { namespace: self.namespace.clone(), hostname: self.hostname.clone() }
    }
}

impl TryFrom<pb::Service> for Service {
    type Error = ModelError;

    fn try_from(value: pb::Service) -> Result<Self, Self::Error> {
        let key = format!("{}/{}", value.namespace, value.hostname);
        convert_service(value).map_err(|e| e.within(Resource::Service(key)))
    }
}

fn convert_service(s: pb::Service) -> Result<Service, ModelError> {
    let ports = s.ports.into_iter().map(Port::try_from).collect::<Result<Vec<_>, _>>()?;
    let weighted_waypoints = s
        .weighted_waypoints
        .into_iter()
        .map(|w| {
            let destination = w
                .destination
                .ok_or(ModelError::Missing { field: "WeightedWaypoint.destination" })?
                .try_into()?;
            Ok(WeightedWaypoint { destination, weight: w.weight })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok(Service {
        name: required("Service.name", s.name)?,
        namespace: required("Service.namespace", s.namespace)?,
        hostname: required("Service.hostname", s.hostname)?,
        addresses: s
            .addresses
            .into_iter()
            .map(NetworkPrefix::try_from)
            .collect::<Result<_, _>>()?,
        ports,
        subject_alt_names: s.subject_alt_names,
        waypoint: s.waypoint.map(GatewayAddress::try_from).transpose()?,
        load_balancing: s.load_balancing.map(LoadBalancing::try_from).transpose()?,
        ip_families: IpFamilies::from_wire(s.ip_families)?,
        canonical: s.canonical,
        ingress_use_waypoint: s.ingress_use_waypoint,
        weighted_waypoints,
        visibility: Visibility::from_wire(s.visibility)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> pb::Service {
        pb::Service {
            name: "server".into(),
            namespace: "default".into(),
            hostname: "server.default.svc.cluster.local".into(),
            addresses: vec![pb::NetworkAddress {
                network: String::new(),
                address: vec![10, 96, 0, 10],
                length: None,
            }],
            ports: vec![pb::Port { service_port: 80, target_port: 8080, app_protocol: 0 }],
            load_balancing: Some(pb::LoadBalancing {
                routing_preference: vec![
                    pb::load_balancing::Scope::Zone as i32,
                    pb::load_balancing::Scope::Node as i32,
                ],
                mode: pb::load_balancing::Mode::Failover as i32,
                health_policy: 0,
            }),
            ..Default::default()
        }
    }

    fn reason(err: ModelError) -> ModelError {
        match err {
            ModelError::In { resource: Resource::Service(_), source } => *source,
            other => panic!("expected an error wrapped with its service, got {other:?}"),
        }
    }

    #[test]
    fn converts_a_service() {
        let s = Service::try_from(svc()).unwrap();
        assert_eq!(s.key().to_string(), "default/server.default.svc.cluster.local");
        assert_eq!(s.addresses[0].prefix.to_string(), "10.96.0.10/32");
        assert_eq!(s.ports[0].service_port, 80);
        let lb = s.load_balancing.unwrap();
        assert_eq!(lb.routing_preference, vec![LocalityScope::Zone, LocalityScope::Node]);
        assert_eq!(lb.mode, LoadBalancingMode::Failover);
    }

    #[test]
    fn rejects_bad_fields() {
        type Mutate = fn(&mut pb::Service);
        let cases: Vec<(Mutate, ModelError)> = vec![
            (|s| s.name.clear(), ModelError::Missing { field: "Service.name" }),
            (|s| s.hostname.clear(), ModelError::Missing { field: "Service.hostname" }),
            (
                |s| s.addresses[0].address = vec![1; 5],
                ModelError::AddressLength { field: "NetworkAddress.address", len: 5 },
            ),
            (
                |s| s.addresses[0].length = Some(40),
                ModelError::PrefixLength { field: "NetworkAddress.address", length: 40, max: 32 },
            ),
            (
                |s| s.ports[0].service_port = 0,
                ModelError::Port { field: "Port.service_port", value: 0 },
            ),
            (
                |s| s.ip_families = 4,
                ModelError::UnknownEnum { field: "Service.ip_families", value: 4 },
            ),
            (
                |s| s.visibility = 3,
                ModelError::UnknownEnum { field: "Service.visibility", value: 3 },
            ),
            (
                |s| s.load_balancing.iter_mut().for_each(|lb| lb.routing_preference.push(77)),
                ModelError::UnknownEnum { field: "LoadBalancing.routing_preference", value: 77 },
            ),
            (
                |s| s.load_balancing.iter_mut().for_each(|lb| lb.mode = 9),
                ModelError::UnknownEnum { field: "LoadBalancing.mode", value: 9 },
            ),
            (
                |s| {
                    s.weighted_waypoints
                        .push(pb::WeightedWaypoint { destination: None, weight: 10 })
                },
                ModelError::Missing { field: "WeightedWaypoint.destination" },
            ),
        ];
        for (mutate, want) in cases {
            let mut s = svc();
            mutate(&mut s);
            assert_eq!(reason(Service::try_from(s).unwrap_err()), want);
        }
    }

    #[test]
    fn errors_name_the_service() {
        let mut s = svc();
        s.ports[0].service_port = 0;
        assert_eq!(
            Service::try_from(s).unwrap_err().to_string(),
            "service \"default/server.default.svc.cluster.local\": Port.service_port: port 0 is outside 1-65535"
        );
    }

    #[test]
    fn cidr_addresses_keep_their_length() {
        let mut s = svc();
        s.addresses[0] = pb::NetworkAddress {
            network: "n".into(),
            address: vec![192, 168, 7, 9],
            length: Some(24),
        };
        assert_eq!(Service::try_from(s).unwrap().addresses[0].prefix.to_string(), "192.168.7.0/24");
    }
}
