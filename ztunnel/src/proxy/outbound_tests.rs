//! Routing decisions of the outbound proxy, on a plain state.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use mesh_model::{HealthPolicy, LoadBalancing, LoadBalancingMode, NamespacedHostname};

use super::*;
use crate::state::testutil::*;

const WAYPOINT_HOST: &str = "wp.ns.svc.cluster.local";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn behind_waypoint(mut w: Workload) -> Workload {
    w.waypoint = Some(GatewayAddress {
        destination: GatewayDestination::Hostname(NamespacedHostname {
            namespace: "ns".into(),
            hostname: WAYPOINT_HOST.into(),
        }),
        hbone_mtls_port: 15008,
    });
    w
}

/// `app` (10.0.0.1, HBONE) behind service `svc` (10.96.0.1:80 -> 8080),
/// `plain` (10.0.0.2, no tunnel), `client` (10.0.0.3), and a waypoint
/// service `wp` (port 15008) with one pod, `wp-1` (10.0.0.9).
fn state() -> ProxyState {
    let mut s = ProxyState::default();
    insert_workload(&mut s, endpoint_of("app", "10.0.0.1", "svc", 80, Some(8080)));
    let mut plain = workload("plain", "10.0.0.2");
    plain.tunnel_protocol = TunnelProtocol::None;
    insert_workload(&mut s, plain);
    insert_workload(&mut s, workload("client", "10.0.0.3"));
    insert_service(&mut s, service("svc", &["10.96.0.1"]));
    let mut wp = service("wp", &["10.96.0.20"]);
    wp.ports = vec![port(15008, None)];
    insert_service(&mut s, wp);
    insert_workload(&mut s, endpoint_of("wp-1", "10.0.0.9", "wp", 15008, Some(15008)));
    s
}

fn route_from(s: &ProxyState, source: &str, to: &str) -> Result<Route, OutboundError> {
    let source = s.workload_by_uid(source).unwrap();
    route(s, "", &source, addr(to))
}

fn hbone(s: &ProxyState, peer: &str, peer_addr: &str, target: &str) -> Route {
    Route::Hbone {
        peer: s.workload_by_uid(peer).unwrap(),
        peer_addr: addr(peer_addr),
        target: addr(target),
    }
}

#[test]
fn a_pod_ip_is_tunnelled_to_that_pod_on_the_original_port() {
    let s = state();
    let got = route_from(&s, "client", "10.0.0.1:9000").unwrap();
    assert_eq!(got, hbone(&s, "app", "10.0.0.1:15008", "10.0.0.1:9000"));
}

#[test]
fn a_service_vip_is_tunnelled_to_an_endpoint_on_its_target_port() {
    let s = state();
    let got = route_from(&s, "client", "10.96.0.1:80").unwrap();
    assert_eq!(got, hbone(&s, "app", "10.0.0.1:15008", "10.0.0.1:8080"));
}

#[test]
fn unknown_passthrough_and_untunnelled_destinations_go_direct() {
    let mut s = state();
    assert_eq!(
        route_from(&s, "client", "1.1.1.1:443").unwrap(),
        Route::Direct(addr("1.1.1.1:443"))
    );
    assert_eq!(
        route_from(&s, "client", "10.0.0.2:80").unwrap(),
        Route::Direct(addr("10.0.0.2:80")),
        "a workload without HBONE"
    );
    let mut svc = service("svc", &["10.96.0.1"]);
    svc.load_balancing = Some(LoadBalancing {
        routing_preference: vec![],
        mode: LoadBalancingMode::Passthrough,
        health_policy: HealthPolicy::OnlyHealthy,
    });
    insert_service(&mut s, svc);
    assert_eq!(
        route_from(&s, "client", "10.96.0.1:80").unwrap(),
        Route::Direct(addr("10.96.0.1:80"))
    );
}

#[test]
fn a_service_without_the_port_has_no_endpoint() {
    let s = state();
    assert!(matches!(
        route_from(&s, "client", "10.96.0.1:81"),
        Err(OutboundError::NoEndpoint { port: 81, .. })
    ));
}

#[test]
fn a_destination_with_a_waypoint_is_tunnelled_to_the_waypoint() {
    let mut s = state();
    insert_workload(&mut s, behind_waypoint(endpoint_of("app", "10.0.0.1", "svc", 80, Some(8080))));
    let got = route_from(&s, "client", "10.0.0.1:8080").unwrap();
    assert_eq!(got, hbone(&s, "wp-1", "10.0.0.9:15008", "10.0.0.1:8080"));
    // The waypoint itself goes straight to the destination.
    let got = route_from(&s, "wp-1", "10.0.0.1:8080").unwrap();
    assert_eq!(got, hbone(&s, "app", "10.0.0.1:15008", "10.0.0.1:8080"));
}

#[test]
fn a_waypoint_without_pods_fails_closed() {
    let mut s = state();
    s.remove_address("wp-1");
    insert_workload(&mut s, behind_waypoint(endpoint_of("app", "10.0.0.1", "svc", 80, Some(8080))));
    assert!(matches!(
        route_from(&s, "client", "10.0.0.1:8080"),
        Err(OutboundError::NoWaypoint { waypoint }) if waypoint.contains(WAYPOINT_HOST)
    ));
}
