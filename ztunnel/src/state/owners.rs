//! Address ownership at lookup time: every claim on an address is indexed,
//! and the owner for a given caller is decided by the rule shared with istiod
//! ([`mesh_model::ownership`]): a pod's IP belongs to the pod, exact beats
//! CIDR, longer prefixes beat shorter, the caller's namespace beats others,
//! then a deterministic tie-break. Namespace-private services (ServiceEntry
//! `exportTo: ["."]`) are invisible to callers elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_model::ownership::{self, Claim, Claimant};
use mesh_model::{NamespacedHostname, Service, Workload};

use super::{Destination, ProxyState};

/// Who makes a claim, and the last tie-breaker of the rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Claimer {
    Workload(String),
    Service(NamespacedHostname),
}

/// Whether a workload is a Kubernetes pod, from its uid
/// `<cluster>//Pod/<namespace>/<name>` (upstream ztunnel tests the uid for
/// `//Pod/` too). The whole shape is checked against the workload's own
/// namespace and name, so no other kind of resource can pass for a pod.
pub(super) fn is_pod(workload: &Workload) -> bool {
    workload.uid.split_once("//Pod/").is_some_and(|(cluster, rest)| {
        !cluster.contains('/')
            && rest.split_once('/').is_some_and(|(ns, name)| {
                ns == workload.namespace && name == workload.name && !name.contains('/')
            })
    })
}

fn workload_claim(workload: &Workload, ip: IpAddr) -> Claim<Claimer> {
    Claim {
        claimant: if is_pod(workload) { Claimant::Pod } else { Claimant::Workload },
        namespace: workload.namespace.clone(),
        prefix: ip.into(),
        created: None,
        key: Claimer::Workload(workload.uid.clone()),
    }
}

fn claims_of_service(service: &Service, network: &str) -> Vec<Claim<Claimer>> {
    service
        .addresses
        .iter()
        .filter(|a| a.network == network)
        .map(|a| Claim {
            claimant: Claimant::Service,
            namespace: service.namespace.clone(),
            prefix: a.prefix,
            created: None,
            key: Claimer::Service(service.key()),
        })
        .collect()
}

impl ProxyState {
    /// Whether `service` can be seen by a caller in `caller_namespace`
    /// (`None`: no namespace; only public services). For DNS and lookups.
    pub fn service_visible_to(&self, service: &Service, caller_namespace: Option<&str>) -> bool {
        ownership::visible_to(service.visibility, &service.namespace, caller_namespace)
    }

    /// Claims of workloads on exactly `ip`.
    fn workload_claims(&self, network: &str, ip: IpAddr) -> Vec<Claim<Claimer>> {
        self.workloads_by_ip
            .get(&(network.to_owned(), ip))
            .into_iter()
            .flatten()
            .filter_map(|uid| self.workloads.get(uid))
            .map(|w| workload_claim(w, ip))
            .collect()
    }

    /// Claims of the services visible to the caller whose VIPs (exact or
    /// ranges) contain `ip`.
    fn service_claims(
        &self,
        network: &str,
        ip: IpAddr,
        caller_namespace: Option<&str>,
    ) -> Vec<Claim<Claimer>> {
        let exact = self.services_by_vip.get(&(network.to_owned(), ip)).into_iter().flatten();
        let ranges = self
            .service_ranges
            .iter()
            .filter(|(n, range, _)| n == network && range.contains(&ip))
            .map(|(_, _, key)| key);
        let mut keys: Vec<&NamespacedHostname> = exact.chain(ranges).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|key| self.services.get(key))
            .filter(|s| self.service_visible_to(s, caller_namespace))
            .flat_map(|s| claims_of_service(s, network))
            .filter(|c| c.contains(ip))
            .collect()
    }

    fn resolve_claimer(&self, claimer: &Claimer) -> Destination {
        match claimer {
            Claimer::Workload(uid) => match self.workloads.get(uid) {
                Some(w) => Destination::Workload { workload: Arc::clone(w) },
                None => Destination::Unknown,
            },
            Claimer::Service(key) => match self.services.get(key) {
                // The port is filled in by the caller.
                Some(s) => Destination::Service { service: Arc::clone(s), port: 0 },
                None => Destination::Unknown,
            },
        }
    }

    /// The workload owning `ip` on `network` among the workloads claiming
    /// it (a pod before a WorkloadEntry squatting its IP), for a caller in
    /// no particular namespace.
    pub fn workload_by_ip(&self, network: &str, ip: IpAddr) -> Option<Arc<Workload>> {
        let claims = self.workload_claims(network, ip);
        let owner = ownership::owner(&claims, ip, None)?;
        match &owner.key {
            Claimer::Workload(uid) => self.workloads.get(uid).cloned(),
            Claimer::Service(_) => None,
        }
    }

    /// The service owning VIP `ip` on `network` (exact VIPs before ranges,
    /// longer ranges before shorter), among the public services.
    pub fn service_by_vip(&self, network: &str, ip: IpAddr) -> Option<Arc<Service>> {
        self.service_by_vip_for(network, ip, None)
    }

    /// [`Self::service_by_vip`] as seen by a caller in `caller_namespace`:
    /// its namespace-private services are visible and its own namespace's
    /// claims come first.
    pub fn service_by_vip_for(
        &self,
        network: &str,
        ip: IpAddr,
        caller_namespace: Option<&str>,
    ) -> Option<Arc<Service>> {
        let claims = self.service_claims(network, ip, caller_namespace);
        let owner = ownership::owner(&claims, ip, caller_namespace)?;
        match &owner.key {
            Claimer::Service(key) => self.services.get(key).cloned(),
            Claimer::Workload(_) => None,
        }
    }

    /// Classifies an original destination for a caller in no particular
    /// namespace: only public services are visible. Proxies that know the
    /// source workload should use [`Self::resolve_destination_for`].
    pub fn resolve_destination(&self, network: &str, addr: SocketAddr) -> Destination {
        self.resolve_destination_for(network, addr, None)
    }

    /// Classifies an original destination as seen by a caller in
    /// `caller_namespace`: the owner of the address among every workload and
    /// visible service claiming it, by the shared ownership rule. So a pod
    /// IP is that pod even when a ServiceEntry's range or a WorkloadEntry
    /// covers it; other conflicts favour the caller's own namespace. The
    /// caller checks [`super::is_passthrough`] for services.
    pub fn resolve_destination_for(
        &self,
        network: &str,
        addr: SocketAddr,
        caller_namespace: Option<&str>,
    ) -> Destination {
        let ip = addr.ip();
        let mut claims = self.workload_claims(network, ip);
        claims.extend(self.service_claims(network, ip, caller_namespace));
        let Some(owner) = ownership::owner(&claims, ip, caller_namespace) else {
            return Destination::Unknown;
        };
        match self.resolve_claimer(&owner.key) {
            Destination::Service { service, .. } => {
                Destination::Service { service, port: addr.port() }
            }
            other => other,
        }
    }

    /// The services whose hostname is `host` that a caller in
    /// `caller_namespace` can see (compared case-insensitively), ordered by
    /// namespace. For DNS: a ServiceEntry not exported to the caller's
    /// namespace does not resolve there.
    pub fn services_by_hostname_for(
        &self,
        host: &str,
        caller_namespace: Option<&str>,
    ) -> Vec<Arc<Service>> {
        self.services_by_hostname(host)
            .into_iter()
            .filter(|s| self.service_visible_to(s, caller_namespace))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::*;
    use mesh_model::Visibility;

    /// A pod workload as istiod names it.
    fn pod(ns: &str, name: &str, addr: &str) -> Workload {
        let mut w = workload(&format!("Kubernetes//Pod/{ns}/{name}"), addr);
        w.namespace = ns.into();
        w.name = name.into();
        w
    }

    /// A WorkloadEntry workload as istiod names it.
    fn entry(ns: &str, name: &str, addr: &str) -> Workload {
        let mut w =
            workload(&format!("Kubernetes/networking.istio.io/WorkloadEntry/{ns}/{name}"), addr);
        w.namespace = ns.into();
        w.name = name.into();
        w
    }

    fn at(addr: &str) -> SocketAddr {
        SocketAddr::new(ip(addr), 80)
    }

    fn uid_of(d: &Destination) -> Option<&str> {
        match d {
            Destination::Workload { workload } => Some(workload.uid.as_str()),
            _ => None,
        }
    }

    #[test]
    fn only_a_well_formed_pod_uid_is_a_pod() {
        assert!(is_pod(&pod("shop", "web-1", "10.0.0.1")));
        assert!(!is_pod(&entry("shop", "web-1", "10.0.0.1")));
        let mut forged = entry("evil", "x", "10.0.0.1");
        forged.uid = "Kubernetes//Pod/shop/web-1".into();
        assert!(!is_pod(&forged), "the uid must name the workload itself");
        let mut nested = pod("evil", "x", "10.0.0.1");
        nested.uid = "Kubernetes/se//Pod/evil/x".into();
        assert!(!is_pod(&nested));
    }

    /// Attack (hardening issue, item 2): a ServiceEntry in `evil` with
    /// `addresses: [10.244.0.0/16]` and an endpoint on an attacker pod must
    /// not capture traffic to any pod.
    #[test]
    fn a_service_entry_range_over_pod_ips_does_not_capture_pods() {
        let mut s = ProxyState::default();
        insert_workload(&mut s, pod("shop", "web-1", "10.244.0.10"));
        insert_workload(&mut s, pod("evil", "attacker", "10.244.0.66"));
        let mut capture = service("capture", &["10.244.0.0/16"]);
        capture.namespace = "evil".into();
        capture.hostname = "capture.evil".into();
        insert_service(&mut s, capture);
        let mut se_endpoint = entry("evil", "capture", "10.244.0.66");
        se_endpoint.uid =
            "Kubernetes/networking.istio.io/ServiceEntry/evil/capture/10.244.0.66".into();
        se_endpoint.services.insert(
            NamespacedHostname { namespace: "evil".into(), hostname: "capture.evil".into() },
            vec![port(80, None)],
        );
        insert_workload(&mut s, se_endpoint);
        for caller in [None, Some("shop"), Some("evil"), Some("other")] {
            let d = s.resolve_destination_for("", at("10.244.0.10"), caller);
            assert_eq!(uid_of(&d), Some("Kubernetes//Pod/shop/web-1"), "caller {caller:?}");
            let d = s.resolve_destination_for("", at("10.244.0.66"), caller);
            assert_eq!(uid_of(&d), Some("Kubernetes//Pod/evil/attacker"), "caller {caller:?}");
        }
        // Addresses no pod has still reach the entry's range.
        assert!(matches!(
            s.resolve_destination_for("", at("10.244.9.9"), Some("shop")),
            Destination::Service { service, .. } if service.name == "capture"
        ));
    }

    /// Hardening issue, item 3: a WorkloadEntry with a pod's address does not
    /// displace the pod, and removing either claimant restores the other at
    /// once.
    #[test]
    fn a_workload_entry_cannot_squat_a_pod_ip_and_removal_restores_the_other() {
        let mut s = ProxyState::default();
        let pod_uid = "Kubernetes//Pod/shop/web-1";
        let entry_uid = "Kubernetes/networking.istio.io/WorkloadEntry/other/squat";
        insert_workload(&mut s, pod("shop", "web-1", "10.244.0.10"));
        insert_workload(&mut s, entry("other", "squat", "10.244.0.10"));
        let owner = |s: &ProxyState| s.workload_by_ip("", ip("10.244.0.10")).map(|w| w.uid.clone());
        assert_eq!(owner(&s).as_deref(), Some(pod_uid));
        assert!(s.remove_address(entry_uid));
        assert_eq!(owner(&s).as_deref(), Some(pod_uid), "the pod stays reachable");
        insert_workload(&mut s, entry("other", "squat", "10.244.0.10"));
        assert!(s.remove_address(pod_uid));
        assert_eq!(owner(&s).as_deref(), Some(entry_uid), "the entry takes over at once");
        assert!(s.remove_address(entry_uid));
        assert_eq!(owner(&s), None);
        assert!(s.workloads_by_ip.is_empty());
    }

    #[test]
    fn exact_vips_beat_ranges_and_the_callers_namespace_wins_ties() {
        let mut s = ProxyState::default();
        let mut wide = service("wide", &["10.0.0.0/8"]);
        wide.namespace = "a".into();
        insert_service(&mut s, wide);
        let mut narrow = service("narrow", &["10.1.0.0/16"]);
        narrow.namespace = "a".into();
        insert_service(&mut s, narrow);
        for ns in ["a", "b"] {
            let mut vip = service("vip", &["10.1.2.3"]);
            vip.namespace = ns.into();
            vip.hostname = format!("vip.{ns}");
            insert_service(&mut s, vip);
        }
        let name_ns = |d: Destination| match d {
            Destination::Service { service, .. } => {
                format!("{}/{}", service.namespace, service.name)
            }
            other => format!("{other:?}"),
        };
        assert_eq!(name_ns(s.resolve_destination_for("", at("10.1.2.3"), Some("b"))), "b/vip");
        assert_eq!(name_ns(s.resolve_destination_for("", at("10.1.2.3"), Some("a"))), "a/vip");
        assert_eq!(name_ns(s.resolve_destination_for("", at("10.1.9.9"), None)), "a/narrow");
        assert_eq!(name_ns(s.resolve_destination_for("", at("10.9.9.9"), None)), "a/wide");
        // Removing one VIP claimant leaves the other.
        assert!(s.remove_address("b/vip.b"));
        assert_eq!(name_ns(s.resolve_destination_for("", at("10.1.2.3"), Some("b"))), "a/vip");
    }

    #[test]
    fn namespace_private_services_are_invisible_elsewhere() {
        let mut s = ProxyState::default();
        let mut private = service("db", &["240.240.0.7"]);
        private.visibility = Visibility::Namespace;
        insert_service(&mut s, private);
        let host = "db.ns.svc.cluster.local";
        assert!(matches!(
            s.resolve_destination_for("", at("240.240.0.7"), Some("ns")),
            Destination::Service { .. }
        ));
        assert_eq!(
            s.resolve_destination_for("", at("240.240.0.7"), Some("other")),
            Destination::Unknown
        );
        assert_eq!(s.resolve_destination("", at("240.240.0.7")), Destination::Unknown);
        assert_eq!(s.services_by_hostname_for(host, Some("ns")).len(), 1);
        assert!(s.services_by_hostname_for(host, Some("other")).is_empty());
        assert!(s.service_by_vip_for("", ip("240.240.0.7"), Some("other")).is_none());
    }
}
