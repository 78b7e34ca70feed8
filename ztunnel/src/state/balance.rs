//! Choosing a service endpoint: health, locality, weighted round robin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mesh_model::{
    HealthPolicy, LoadBalancingMode, LocalityScope, Service, Workload, WorkloadStatus,
};

use super::ProxyState;

/// A chosen backend: the workload and the address to dial (its first IP and
/// the resolved target port). When `workload.network` differs from the
/// source's network the IP is not directly reachable: the caller goes
/// through `workload.network_gateway` (double HBONE), as upstream does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub workload: Arc<Workload>,
    pub address: SocketAddr,
}

impl ProxyState {
    /// Picks a backend of `service` for a connection from `source` to
    /// `service_port`.
    ///
    /// - Only healthy workloads, unless the health policy is `AllowAll`.
    ///   Workloads without an IP (hostname-only) are skipped: resolving them
    ///   is the caller's business.
    /// - The service must declare `service_port`, else `None` (as upstream:
    ///   a VIP does not forward undeclared ports).
    /// - Target port: the workload's own port list for the service, then the
    ///   service's `target_port`, then `service_port` itself, but only for
    ///   a workload with an application tunnel (as upstream; the far side
    ///   maps the port). A workload on which a named target port does not
    ///   resolve is skipped rather than dialled on a guessed port.
    /// - Locality, per `load_balancing.mode` and `routing_preference`
    ///   (region, zone, subzone, node, cluster, network, compared with the
    ///   source): FAILOVER keeps the endpoints matching the most leading
    ///   scopes (falling back to fewer, down to none); STRICT keeps only
    ///   those matching every scope (and may leave none); an unspecified
    ///   mode has no preference.
    /// - PASSTHROUGH returns `None`: the caller sends the connection to the
    ///   original destination address unchanged (see [`is_passthrough`]).
    /// - Among the remaining endpoints: round robin weighted by `capacity`,
    ///   in uid order, on one cursor shared by all services.
    pub fn pick_endpoint(
        &self,
        service: &Service,
        service_port: u16,
        source: &Workload,
    ) -> Option<Endpoint> {
        let lb = service.load_balancing.as_ref();
        if is_passthrough(service) {
            return None;
        }
        if !service.ports.iter().any(|p| p.service_port == service_port) {
            tracing::debug!(service = %service.key(), service_port, "port not declared by the service");
            return None;
        }
        let allow_unhealthy = lb.is_some_and(|lb| lb.health_policy == HealthPolicy::AllowAll);
        let key = service.key();
        let candidates: Vec<Endpoint> = self
            .endpoints
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.workloads.get(uid))
            .filter(|w| allow_unhealthy || w.status == WorkloadStatus::Healthy)
            .filter_map(|w| {
                let ip = *w.addresses.first()?;
                let port = target_port(service, service_port, w)?;
                Some(Endpoint { workload: Arc::clone(w), address: SocketAddr::new(ip, port) })
            })
            .collect();
        let preferred = match lb {
            Some(lb) if lb.mode == LoadBalancingMode::Strict => {
                let all = lb.routing_preference.len();
                candidates
                    .into_iter()
                    .filter(|e| matching_scopes(&lb.routing_preference, source, &e.workload) == all)
                    .collect()
            }
            Some(lb) if lb.mode == LoadBalancingMode::Failover => {
                let rank =
                    |e: &Endpoint| matching_scopes(&lb.routing_preference, source, &e.workload);
                let best = candidates.iter().map(rank).max().unwrap_or(0);
                candidates.into_iter().filter(|e| rank(e) == best).collect()
            }
            _ => candidates,
        };
        self.weighted_round_robin(preferred)
    }

    fn weighted_round_robin(&self, endpoints: Vec<Endpoint>) -> Option<Endpoint> {
        let total: u64 = endpoints.iter().map(|e| u64::from(e.workload.capacity.max(1))).sum();
        if total == 0 {
            return None;
        }
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let mut slot = u64::try_from(turn).unwrap_or(u64::MAX) % total;
        for e in endpoints {
            let weight = u64::from(e.workload.capacity.max(1));
            if slot < weight {
                return Some(e);
            }
            slot -= weight;
        }
        None
    }
}

/// Whether the service asks for its original destination to be kept
/// (`LoadBalancing.mode = PASSTHROUGH`); [`ProxyState::pick_endpoint`]
/// returns `None` for such services.
pub fn is_passthrough(service: &Service) -> bool {
    service.load_balancing.as_ref().is_some_and(|lb| lb.mode == LoadBalancingMode::Passthrough)
}

fn target_port(service: &Service, service_port: u16, w: &Workload) -> Option<u16> {
    let from_workload = w
        .services
        .get(&service.key())
        .and_then(|ports| ports.iter().find(|p| p.service_port == service_port))
        .and_then(|p| p.target_port);
    let from_service = || {
        service.ports.iter().find(|p| p.service_port == service_port).and_then(|p| p.target_port)
    };
    let tunnelled = || w.application_tunnel.is_some_and(|t| t.port.is_some());
    from_workload.or_else(from_service).or_else(|| tunnelled().then_some(service_port))
}

/// How many of the leading `scopes` the two workloads share.
fn matching_scopes(scopes: &[LocalityScope], a: &Workload, b: &Workload) -> usize {
    scopes.iter().take_while(|s| same_scope(**s, a, b)).count()
}

fn same_scope(scope: LocalityScope, a: &Workload, b: &Workload) -> bool {
    let locality = |w: &Workload| w.locality.clone().unwrap_or_default();
    match scope {
        LocalityScope::Unspecified => true,
        LocalityScope::Region => locality(a).region == locality(b).region,
        LocalityScope::Zone => locality(a).zone == locality(b).zone,
        LocalityScope::Subzone => locality(a).subzone == locality(b).subzone,
        LocalityScope::Node => a.node == b.node,
        LocalityScope::Cluster => a.cluster_id == b.cluster_id,
        LocalityScope::Network => a.network == b.network,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::*;
    use mesh_model::{ApplicationTunnel, LoadBalancing, Locality};
    use mesh_proto::workload as pb;
    use std::collections::BTreeMap;

    fn at(uid: &str, addr: &str, region: &str, zone: &str, node: &str) -> Workload {
        let mut w = endpoint_of(uid, addr, "svc", 80, Some(8080));
        w.locality =
            Some(Locality { region: region.into(), zone: zone.into(), subzone: String::new() });
        w.node = node.into();
        w
    }

    fn lb(mode: LoadBalancingMode, health: HealthPolicy) -> Option<LoadBalancing> {
        Some(LoadBalancing {
            routing_preference: vec![
                LocalityScope::Region,
                LocalityScope::Zone,
                LocalityScope::Node,
            ],
            mode,
            health_policy: health,
        })
    }

    /// uid -> times picked in `n` picks.
    fn picks(
        s: &ProxyState,
        svc: &Service,
        source: &Workload,
        n: usize,
    ) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            if let Some(e) = s.pick_endpoint(svc, 80, source) {
                *seen.entry(e.workload.uid.clone()).or_default() += 1;
            }
        }
        seen
    }

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn locality_modes_and_health() {
        let mut s = ProxyState::default();
        insert_workload(&mut s, at("same-node", "10.0.0.1", "r1", "z1", "n1"));
        insert_workload(&mut s, at("same-zone", "10.0.0.2", "r1", "z1", "n2"));
        insert_workload(&mut s, at("other-region", "10.0.0.3", "r2", "z9", "n9"));
        let mut sick = at("sick-same-node", "10.0.0.4", "r1", "z1", "n1");
        sick.status = WorkloadStatus::Unhealthy;
        insert_workload(&mut s, sick);
        let source = at("client", "10.0.1.1", "r1", "z1", "n1");
        let far_source = at("client", "10.0.1.1", "r3", "z1", "n1");
        use HealthPolicy::{AllowAll, OnlyHealthy};
        use LoadBalancingMode::{Failover, Strict, Unspecified};
        let cases = [
            (
                "no lb: any healthy",
                None,
                &source,
                counts(&[("other-region", 2), ("same-node", 2), ("same-zone", 2)]),
            ),
            (
                "failover: best match",
                lb(Failover, OnlyHealthy),
                &source,
                counts(&[("same-node", 6)]),
            ),
            (
                "failover: falls back to none",
                lb(Failover, OnlyHealthy),
                &far_source,
                counts(&[("other-region", 2), ("same-node", 2), ("same-zone", 2)]),
            ),
            ("strict: all scopes", lb(Strict, OnlyHealthy), &source, counts(&[("same-node", 6)])),
            ("strict: nothing matches", lb(Strict, OnlyHealthy), &far_source, counts(&[])),
            (
                "allow unhealthy",
                lb(Failover, AllowAll),
                &source,
                counts(&[("same-node", 3), ("sick-same-node", 3)]),
            ),
            (
                "unspecified mode ignores locality",
                lb(Unspecified, OnlyHealthy),
                &source,
                counts(&[("other-region", 2), ("same-node", 2), ("same-zone", 2)]),
            ),
        ];
        for (name, lb, source, want) in cases {
            let mut svc = service("svc", &["10.96.0.1"]);
            svc.load_balancing = lb;
            assert_eq!(picks(&s, &svc, source, 6), want, "{name}");
        }
    }

    #[test]
    fn failover_steps_down_one_scope_at_a_time() {
        let mut s = ProxyState::default();
        insert_workload(&mut s, at("same-zone", "10.0.0.2", "r1", "z1", "n2"));
        insert_workload(&mut s, at("same-region", "10.0.0.3", "r1", "z2", "n3"));
        let mut svc = service("svc", &[]);
        svc.load_balancing = lb(LoadBalancingMode::Failover, HealthPolicy::OnlyHealthy);
        let source = at("client", "10.0.1.1", "r1", "z1", "n1");
        assert_eq!(picks(&s, &svc, &source, 2), counts(&[("same-zone", 2)]));
        s.remove_address("same-zone");
        assert_eq!(picks(&s, &svc, &source, 2), counts(&[("same-region", 2)]));
    }

    #[test]
    fn passthrough_and_no_endpoints_return_none() {
        let mut s = ProxyState::default();
        let source = workload("client", "10.0.1.1");
        let svc = service("svc", &[]);
        assert_eq!(s.pick_endpoint(&svc, 80, &source), None);
        let mut hostname_only = endpoint_of("dns", "10.0.0.9", "svc", 80, Some(8080));
        hostname_only.addresses.clear();
        insert_workload(&mut s, hostname_only);
        assert_eq!(s.pick_endpoint(&svc, 80, &source), None, "no IP to dial");
        insert_workload(&mut s, endpoint_of("w1", "10.0.0.1", "svc", 80, Some(8080)));
        let mut pt = svc.clone();
        pt.load_balancing = lb(LoadBalancingMode::Passthrough, HealthPolicy::OnlyHealthy);
        assert!(is_passthrough(&pt));
        assert_eq!(s.pick_endpoint(&pt, 80, &source), None);
        assert!(s.pick_endpoint(&svc, 80, &source).is_some());
    }

    #[test]
    fn target_port_resolution_order() {
        // `ApplicationTunnelProtocol` is not exported by mesh-model; convert.
        let tunnel: Option<ApplicationTunnel> = Workload::try_from(pb::Workload {
            uid: "t".into(),
            name: "t".into(),
            namespace: "ns".into(),
            application_tunnel: Some(pb::ApplicationTunnel { protocol: 1, port: 15088 }),
            ..Default::default()
        })
        .unwrap()
        .application_tunnel;
        let cases = [
            ("workload's own target", Some(9000), Some(8080), None, Some(9000)),
            ("unresolved on workload: service target", None, Some(8080), None, Some(8080)),
            ("neither, app tunnel: service port", None, None, tunnel, Some(80)),
            ("neither: endpoint skipped", None, None, None, None),
        ];
        for (name, on_workload, on_service, app_tunnel, want) in cases {
            let mut s = ProxyState::default();
            let mut w = endpoint_of("w1", "10.0.0.1", "svc", 80, on_workload);
            w.application_tunnel = app_tunnel;
            insert_workload(&mut s, w);
            let mut svc = service("svc", &[]);
            svc.ports = vec![port(80, on_service)];
            let got = s.pick_endpoint(&svc, 80, &workload("c", "10.0.1.1")).map(|e| e.address);
            assert_eq!(got, want.map(|p| SocketAddr::new(ip("10.0.0.1"), p)), "{name}");
        }
    }

    #[test]
    fn undeclared_service_port_has_no_endpoint() {
        let mut s = ProxyState::default();
        insert_workload(&mut s, endpoint_of("w1", "10.0.0.1", "svc", 80, Some(8080)));
        let svc = service("svc", &[]);
        let source = workload("c", "10.0.1.1");
        assert!(s.pick_endpoint(&svc, 80, &source).is_some());
        assert_eq!(s.pick_endpoint(&svc, 81, &source), None);
    }

    #[test]
    fn round_robin_is_weighted_by_capacity() {
        let mut s = ProxyState::default();
        let mut big = endpoint_of("big", "10.0.0.1", "svc", 80, Some(8080));
        big.capacity = 3;
        insert_workload(&mut s, big);
        insert_workload(&mut s, endpoint_of("small", "10.0.0.2", "svc", 80, Some(8080)));
        let got = picks(&s, &service("svc", &[]), &workload("c", "10.0.1.1"), 8);
        assert_eq!(got, counts(&[("big", 6), ("small", 2)]));
    }
}
