//! Workloads: pods, WorkloadEntries and ServiceEntry endpoints.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_proto::workload as pb;

use crate::address::{GatewayAddress, NamespacedHostname, ip_from_bytes, port};
use crate::error::Resource;
use crate::{Identity, ModelError, required};

/// Trust domain assumed when a workload does not name one.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Service account assumed when a workload does not name one.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

mirror_enum! {
    /// How traffic to the workload is tunnelled.
    TunnelProtocol from pb::TunnelProtocol, field "Workload.tunnel_protocol" {
        /// Plain TCP: the workload is outside the mesh's data plane.
        None = None,
        Hbone = Hbone,
        /// Sidecar-era Istio mTLS.
        LegacyIstioMtls = LegacyIstioMtls,
    }
}

mirror_enum! {
    WorkloadType from pb::WorkloadType, field "Workload.workload_type" {
        Deployment = Deployment,
        CronJob = Cronjob,
        Pod = Pod,
        Job = Job,
    }
}

mirror_enum! {
    WorkloadStatus from pb::WorkloadStatus, field "Workload.status" {
        Healthy = Healthy,
        Unhealthy = Unhealthy,
    }
}

mirror_enum! {
    NetworkMode from pb::NetworkMode, field "Workload.network_mode" {
        Standard = Standard,
        HostNetwork = HostNetwork,
    }
}

mirror_enum! {
    AppProtocol from pb::AppProtocol, field "Port.app_protocol" {
        Unknown = Unknown,
        Http11 = Http11,
        Http2 = Http2,
        Grpc = Grpc,
        Tcp = Tcp,
        Tls = Tls,
    }
}

mirror_enum! {
    ApplicationTunnelProtocol from pb::application_tunnel::Protocol, field "ApplicationTunnel.protocol" {
        None = None,
        /// PROXY protocol v2 in front of the stream.
        Proxy = Proxy,
    }
}

/// A service port and the workload port it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Port {
    pub service_port: u16,
    /// `None` when a named target port does not resolve on this workload.
    pub target_port: Option<u16>,
    pub app_protocol: AppProtocol,
}

impl TryFrom<pb::Port> for Port {
    type Error = ModelError;

    fn try_from(value: pb::Port) -> Result<Self, Self::Error> {
        Ok(Self {
            service_port: port("Port.service_port", value.service_port)?,
            target_port: match value.target_port {
                0 => None,
                p => Some(port("Port.target_port", p)?),
            },
            app_protocol: AppProtocol::from_wire(value.app_protocol)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApplicationTunnel {
    pub protocol: ApplicationTunnelProtocol,
    /// `None` keeps the original destination port.
    pub port: Option<u16>,
}

/// A validated workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub addresses: Vec<IpAddr>,
    /// Set for workloads reached by DNS name instead of addresses.
    pub hostname: Option<String>,
    pub network: String,
    pub tunnel_protocol: TunnelProtocol,
    /// From trust domain, namespace and service account (defaults applied).
    pub identity: Identity,
    pub waypoint: Option<GatewayAddress>,
    pub network_gateway: Option<GatewayAddress>,
    pub node: String,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub workload_type: WorkloadType,
    pub workload_name: String,
    pub native_tunnel: bool,
    pub application_tunnel: Option<ApplicationTunnel>,
    /// Services selecting this workload and the ports it serves for each.
    pub services: BTreeMap<NamespacedHostname, Vec<Port>>,
    /// `<namespace>/<name>` of the selector-scoped policies that apply.
    pub authorization_policies: Vec<String>,
    pub status: WorkloadStatus,
    pub cluster_id: String,
    pub locality: Option<Locality>,
    pub network_mode: NetworkMode,
    /// Relative load-balancing weight, at least 1.
    pub capacity: u32,
}

impl TryFrom<pb::Workload> for Workload {
    type Error = ModelError;

    fn try_from(mut value: pb::Workload) -> Result<Self, Self::Error> {
        let uid = required("Workload.uid", std::mem::take(&mut value.uid))?;
        convert_workload(uid.clone(), value).map_err(|e| e.within(Resource::Workload(uid)))
    }
}

fn convert_workload(uid: String, w: pb::Workload) -> Result<Workload, ModelError> {
    let name = required("Workload.name", w.name)?;
    let namespace = required("Workload.namespace", w.namespace)?;
    let addresses = w
        .addresses
        .iter()
        .map(|a| ip_from_bytes("Workload.addresses", a))
        .collect::<Result<Vec<_>, _>>()?;
    let hostname = Some(w.hostname).filter(|h| !h.is_empty());
    if hostname.is_some() && !addresses.is_empty() {
        return Err(ModelError::Invalid {
            field: "Workload.hostname",
            reason: "a workload has either addresses or a hostname, not both".to_owned(),
        });
    }
    let trust_domain = default_if_empty(w.trust_domain, DEFAULT_TRUST_DOMAIN);
    let service_account = default_if_empty(w.service_account, DEFAULT_SERVICE_ACCOUNT);
    let identity = Identity::new(trust_domain, namespace.clone(), service_account)
        .map_err(|source| ModelError::Identity { field: "Workload.identity", source })?;
    let services = w
        .services
        .into_iter()
        .map(|(key, ports)| {
            let key = NamespacedHostname::parse("Workload.services", &key)?;
            let ports =
                ports.ports.into_iter().map(Port::try_from).collect::<Result<Vec<_>, _>>()?;
            Ok((key, ports))
        })
        .collect::<Result<BTreeMap<_, _>, ModelError>>()?;
    let application_tunnel = w
        .application_tunnel
        .map(|t| -> Result<_, ModelError> {
            Ok(ApplicationTunnel {
                protocol: ApplicationTunnelProtocol::from_wire(t.protocol)?,
                port: match t.port {
                    0 => None,
                    p => Some(port("ApplicationTunnel.port", p)?),
                },
            })
        })
        .transpose()?;
    let capacity = match w.capacity {
        None => 1,
        Some(0) => {
            return Err(ModelError::Invalid {
                field: "Workload.capacity",
                reason: "capacity must be at least 1 when set".to_owned(),
            });
        }
        Some(c) => c,
    };
    Ok(Workload {
        uid,
        name,
        namespace,
        addresses,
        hostname,
        network: w.network,
        tunnel_protocol: TunnelProtocol::from_wire(w.tunnel_protocol)?,
        identity,
        waypoint: w.waypoint.map(GatewayAddress::try_from).transpose()?,
        network_gateway: w.network_gateway.map(GatewayAddress::try_from).transpose()?,
        node: w.node,
        canonical_name: w.canonical_name,
        canonical_revision: w.canonical_revision,
        workload_type: WorkloadType::from_wire(w.workload_type)?,
        workload_name: w.workload_name,
        native_tunnel: w.native_tunnel,
        application_tunnel,
        services,
        authorization_policies: w.authorization_policies,
        status: WorkloadStatus::from_wire(w.status)?,
        cluster_id: w.cluster_id,
        locality: w.locality.map(|l| Locality {
            region: l.region,
            zone: l.zone,
            subzone: l.subzone,
        }),
        network_mode: NetworkMode::from_wire(w.network_mode)?,
        capacity,
    })
}

fn default_if_empty(value: String, default: &str) -> String {
    if value.is_empty() { default.to_owned() } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> pb::Workload {
        pb::Workload {
            uid: "Kubernetes//Pod/default/client-1".into(),
            name: "client-1".into(),
            namespace: "default".into(),
            addresses: vec![vec![10, 244, 1, 5]],
            tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
            service_account: "client".into(),
            node: "node-a".into(),
            workload_type: pb::WorkloadType::Pod as i32,
            services: [(
                "default/server.default.svc.cluster.local".to_owned(),
                pb::PortList {
                    ports: vec![pb::Port {
                        service_port: 80,
                        target_port: 8080,
                        app_protocol: pb::AppProtocol::Http11 as i32,
                    }],
                },
            )]
            .into(),
            ..Default::default()
        }
    }

    fn reason(err: ModelError) -> ModelError {
        match err {
            ModelError::In { source, .. } => *source,
            other => panic!("expected an error wrapped with its resource, got {other:?}"),
        }
    }

    #[test]
    fn converts_a_pod_and_applies_identity_defaults() {
        let w = Workload::try_from(pod()).unwrap();
        assert_eq!(w.addresses, vec!["10.244.1.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(w.identity.to_string(), "spiffe://cluster.local/ns/default/sa/client");
        assert_eq!(w.tunnel_protocol, TunnelProtocol::Hbone);
        assert_eq!(w.capacity, 1);
        let key =
            NamespacedHostname::parse("k", "default/server.default.svc.cluster.local").unwrap();
        assert_eq!(w.services[&key][0].target_port, Some(8080));

        let mut anonymous = pod();
        anonymous.service_account.clear();
        anonymous.trust_domain = "example.org".into();
        let w = Workload::try_from(anonymous).unwrap();
        assert_eq!(w.identity.to_string(), "spiffe://example.org/ns/default/sa/default");
    }

    #[test]
    fn empty_uid_is_rejected_before_anything_else() {
        let mut w = pod();
        w.uid.clear();
        assert_eq!(Workload::try_from(w), Err(ModelError::Missing { field: "Workload.uid" }));
    }

    #[test]
    fn errors_name_the_workload_and_the_field() {
        let mut w = pod();
        w.addresses.push(vec![1, 2, 3]);
        let err = Workload::try_from(w).unwrap_err();
        assert_eq!(
            err.to_string(),
            "workload \"Kubernetes//Pod/default/client-1\": Workload.addresses: an IP address is 4 or 16 bytes, got 3"
        );
    }

    #[test]
    fn rejects_bad_fields() {
        type Mutate = fn(&mut pb::Workload);
        let cases: Vec<(Mutate, ModelError)> = vec![
            (|w| w.name.clear(), ModelError::Missing { field: "Workload.name" }),
            (|w| w.namespace.clear(), ModelError::Missing { field: "Workload.namespace" }),
            (
                |w| w.tunnel_protocol = 7,
                ModelError::UnknownEnum { field: "Workload.tunnel_protocol", value: 7 },
            ),
            (
                |w| w.workload_type = -1,
                ModelError::UnknownEnum { field: "Workload.workload_type", value: -1 },
            ),
            (|w| w.status = 2, ModelError::UnknownEnum { field: "Workload.status", value: 2 }),
            (
                |w| w.network_mode = 9,
                ModelError::UnknownEnum { field: "Workload.network_mode", value: 9 },
            ),
            (
                |w| w.capacity = Some(0),
                ModelError::Invalid {
                    field: "Workload.capacity",
                    reason: "capacity must be at least 1 when set".into(),
                },
            ),
            (
                |w| w.services.insert("no-slash".into(), pb::PortList::default()).map_or((), drop),
                ModelError::NamespacedHostname {
                    field: "Workload.services",
                    value: "no-slash".into(),
                },
            ),
            (
                |w| w.services.values_mut().for_each(|p| p.ports[0].service_port = 70000),
                ModelError::Port { field: "Port.service_port", value: 70000 },
            ),
            (
                |w| w.services.values_mut().for_each(|p| p.ports[0].app_protocol = 42),
                ModelError::UnknownEnum { field: "Port.app_protocol", value: 42 },
            ),
            (
                |w| w.application_tunnel = Some(pb::ApplicationTunnel { protocol: 5, port: 0 }),
                ModelError::UnknownEnum { field: "ApplicationTunnel.protocol", value: 5 },
            ),
            (
                |w| {
                    w.waypoint =
                        Some(pb::GatewayAddress { destination: None, hbone_mtls_port: 15008 })
                },
                ModelError::Missing { field: "GatewayAddress.destination" },
            ),
        ];
        for (mutate, want) in cases {
            let mut w = pod();
            mutate(&mut w);
            assert_eq!(reason(Workload::try_from(w).unwrap_err()), want);
        }
    }

    #[test]
    fn rejects_invalid_identity_parts() {
        let mut w = pod();
        w.service_account = "bad/sa".into();
        assert!(matches!(
            reason(Workload::try_from(w).unwrap_err()),
            ModelError::Identity { field: "Workload.identity", .. }
        ));
        let mut w = pod();
        w.trust_domain = "Upper.Case".into();
        assert!(matches!(reason(Workload::try_from(w).unwrap_err()), ModelError::Identity { .. }));
    }

    #[test]
    fn hostname_and_addresses_are_exclusive() {
        let mut w = pod();
        w.hostname = "vm.example.com".into();
        assert!(matches!(
            reason(Workload::try_from(w).unwrap_err()),
            ModelError::Invalid { field: "Workload.hostname", .. }
        ));
        let mut w = pod();
        w.addresses.clear();
        w.hostname = "vm.example.com".into();
        assert_eq!(Workload::try_from(w).unwrap().hostname.as_deref(), Some("vm.example.com"));
    }
}
