//! Address lookups and waypoint facts.

use std::net::IpAddr;
use std::sync::Arc;

use mesh_model::{GatewayAddress, Identity, NamespacedHostname, Service, Workload, WorkloadStatus};

use super::ProxyState;

/// Where a connection to an original destination address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A service VIP; `port` is the service port dialled.
    Service { service: Arc<Service>, port: u16 },
    /// A workload addressed directly by one of its IPs.
    Workload { workload: Arc<Workload> },
    /// Outside the mesh: pass through to the original destination.
    Unknown,
}

impl ProxyState {
    pub fn workload_by_uid(&self, uid: &str) -> Option<Arc<Workload>> {
        self.workloads.get(uid).cloned()
    }

    /// Identities of the workloads backing the service `key` (for example
    /// the pods of a waypoint).
    pub fn endpoint_identities(&self, key: &NamespacedHostname) -> Vec<Identity> {
        self.endpoints
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.workloads.get(uid))
            .map(|w| w.identity.clone())
            .collect()
    }

    pub fn service_by_key(&self, key: &NamespacedHostname) -> Option<Arc<Service>> {
        self.services.get(key).cloned()
    }

    /// The services whose hostname is `host` (compared case-insensitively),
    /// one per namespace defining it, ordered by namespace, whatever their
    /// visibility (see [`Self::services_by_hostname_for`]).
    pub fn services_by_hostname(&self, host: &str) -> Vec<Arc<Service>> {
        self.services_by_host
            .get(&host.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter_map(|key| self.services.get(key).cloned())
            .collect()
    }

    /// Addresses of the ready (healthy) workloads backing the service `key`,
    /// in uid order: what a headless service's name resolves to.
    pub fn ready_endpoint_addresses(&self, key: &NamespacedHostname) -> Vec<IpAddr> {
        self.endpoints
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.workloads.get(uid))
            .filter(|w| w.status == WorkloadStatus::Healthy)
            .flat_map(|w| w.addresses.iter().copied())
            .collect()
    }

    /// The waypoint traffic to `destination` must go through, decided by
    /// how it was addressed: a service's own waypoint for traffic to its VIP,
    /// the workload's waypoint for traffic to a pod IP. `None` means direct.
    pub fn waypoint_for(&self, destination: &Destination) -> Option<GatewayAddress> {
        match destination {
            Destination::Service { service, .. } => service.waypoint.clone(),
            Destination::Workload { workload } => workload.waypoint.clone(),
            Destination::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::*;
    use mesh_model::GatewayDestination;
    use std::net::SocketAddr;

    fn waypoint(host: &str) -> GatewayAddress {
        GatewayAddress {
            destination: GatewayDestination::Hostname(NamespacedHostname {
                namespace: "ns".into(),
                hostname: host.into(),
            }),
            hbone_mtls_port: 15008,
        }
    }

    fn state() -> ProxyState {
        let mut s = ProxyState::default();
        let mut w = workload("w1", "10.0.0.1");
        w.waypoint = Some(waypoint("workload-wp"));
        insert_workload(&mut s, w);
        let mut svc = service("svc", &["10.96.0.1"]);
        svc.waypoint = Some(waypoint("service-wp"));
        insert_service(&mut s, svc);
        s
    }

    #[test]
    fn resolves_services_then_workloads_then_passthrough() {
        let s = state();
        let addr = |a: &str| SocketAddr::new(ip(a), 80);
        assert!(matches!(
            s.resolve_destination("", addr("10.96.0.1")),
            Destination::Service { service, port: 80 } if service.name == "svc"
        ));
        assert!(matches!(
            s.resolve_destination("", addr("10.0.0.1")),
            Destination::Workload { workload } if workload.uid == "w1"
        ));
        assert_eq!(s.resolve_destination("", addr("1.1.1.1")), Destination::Unknown);
        assert_eq!(s.resolve_destination("other-net", addr("10.0.0.1")), Destination::Unknown);
    }

    #[test]
    fn services_by_hostname_ignores_case_and_follows_removal() {
        let mut s = state();
        assert_eq!(s.services_by_hostname("SVC.ns.svc.Cluster.Local").len(), 1);
        assert!(s.remove_address("ns/svc.ns.svc.cluster.local"));
        assert!(s.services_by_hostname("svc.ns.svc.cluster.local").is_empty());
    }

    #[test]
    fn ready_endpoints_skip_unhealthy_workloads() {
        let mut s = ProxyState::default();
        insert_workload(&mut s, endpoint_of("w1", "10.0.0.1", "db", 80, None));
        let mut down = endpoint_of("w2", "10.0.0.2", "db", 80, None);
        down.status = WorkloadStatus::Unhealthy;
        insert_workload(&mut s, down);
        let key = service("db", &[]).key();
        assert_eq!(s.ready_endpoint_addresses(&key), vec![ip("10.0.0.1")]);
    }

    #[test]
    fn waypoint_depends_on_how_the_destination_was_addressed() {
        let s = state();
        let cases = [
            ("10.96.0.1", Some("service-wp")),
            ("10.0.0.1", Some("workload-wp")),
            ("1.1.1.1", None),
        ];
        for (addr, want) in cases {
            let d = s.resolve_destination("", SocketAddr::new(ip(addr), 80));
            let got = s.waypoint_for(&d).map(|g| match g.destination {
                GatewayDestination::Hostname(h) => h.hostname,
                GatewayDestination::Address(a) => a.to_string(),
            });
            assert_eq!(got.as_deref(), want, "{addr}");
        }
    }
}
