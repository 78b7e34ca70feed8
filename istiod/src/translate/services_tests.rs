use mesh_proto::workload::{
    AppProtocol, IpFamilies, LoadBalancing, NetworkAddress, Service, TunnelProtocol, load_balancing,
};

use super::auto_allocate;
use super::fixtures::{AMBIENT_DEFAULT, cfg, pod, snapshot};
use super::services::{all_services, app_protocol};
use super::status::ObjectStatus;
use super::workloads::all_workloads;

fn services(yaml: &str) -> (Vec<Service>, Vec<ObjectStatus>) {
    let snap = snapshot(&format!("{AMBIENT_DEFAULT}---\n{yaml}"));
    let mut statuses = Vec::new();
    let s = all_services(&cfg(), &snap, &mut statuses);
    (s, statuses)
}

const WEB: &str = "
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {istio.io/use-waypoint: wp}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, fd00::10]
  ipFamilies: [IPv4, IPv6]
  selector: {app: web}
  trafficDistribution: PreferClose
  ports:
  - {name: http-web, port: 80, targetPort: 8080}
  - {name: grpc, port: 9000, targetPort: grpc-port}
  - {name: db, port: 5432, appProtocol: tcp}
  - {name: other, port: 1234}
";

#[test]
fn kube_service_fields() {
    let (s, statuses) = services(WEB);
    assert!(statuses.is_empty());
    let [s] = s.as_slice() else { panic!("{s:?}") };
    assert_eq!((s.name.as_str(), s.namespace.as_str()), ("web", "default"));
    assert_eq!(s.hostname, "web.default.svc.cluster.local");
    assert_eq!(s.addresses.len(), 2);
    assert_eq!(
        s.addresses[0],
        NetworkAddress { network: String::new(), address: vec![10, 96, 0, 10], length: None }
    );
    assert_eq!(s.ip_families, IpFamilies::Dual as i32);
    let ports: Vec<_> =
        s.ports.iter().map(|p| (p.service_port, p.target_port, p.app_protocol)).collect();
    assert_eq!(
        ports,
        vec![
            (80, 8080, AppProtocol::Http11 as i32),
            (9000, 0, AppProtocol::Grpc as i32),
            (5432, 5432, AppProtocol::Tcp as i32),
            (1234, 1234, AppProtocol::Unknown as i32),
        ]
    );
    assert!(s.waypoint.is_some());
    assert!(s.canonical);
    use load_balancing::Scope;
    assert_eq!(
        s.load_balancing,
        Some(LoadBalancing {
            routing_preference: vec![
                Scope::Network as i32,
                Scope::Region as i32,
                Scope::Zone as i32,
            ],
            mode: load_balancing::Mode::Failover as i32,
            ..Default::default()
        })
    );
}

#[test]
fn traffic_distribution_annotation_and_no_distribution() {
    let annotated = WEB.replace("  trafficDistribution: PreferClose\n", "").replace(
        "  labels:",
        "  annotations: {networking.istio.io/traffic-distribution: PreferClose}\n  labels:",
    );
    assert!(services(&annotated).0[0].load_balancing.is_some());
    let none = WEB.replace("  trafficDistribution: PreferClose\n", "");
    assert!(services(&none).0[0].load_balancing.is_none());
}

#[test]
fn headless_services_have_no_addresses_and_external_names_are_skipped() {
    let yaml = "
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: example.com}
---
apiVersion: v1
kind: Service
metadata: {name: pending, namespace: default}
spec: {clusterIP: '', ports: [{port: 80}]}
";
    let (got, _) = services(yaml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].hostname, "headless.default.svc.cluster.local");
    assert!(got[0].addresses.is_empty());
    assert_eq!(got[0].ports[0].service_port, 80);
}

#[test]
fn app_protocol_rules() {
    assert_eq!(app_protocol(Some("HTTP2"), None), AppProtocol::Http2);
    assert_eq!(app_protocol(Some("kubernetes.io/h2c"), Some("tcp")), AppProtocol::Http2);
    assert_eq!(app_protocol(None, Some("https-api")), AppProtocol::Tls);
    assert_eq!(app_protocol(None, Some("tls")), AppProtocol::Tls);
    assert_eq!(app_protocol(None, Some("httpx")), AppProtocol::Unknown);
    assert_eq!(app_protocol(None, None), AppProtocol::Unknown);
}

#[test]
fn service_entry_without_addresses_gets_an_auto_allocated_vip() {
    let (s, statuses) =
        services(include_str!("../../../helm/base/tests/examples/serviceentry-no-addresses.yaml"));
    assert!(statuses.is_empty());
    let ext = s.iter().find(|s| s.name == "external-api").unwrap();
    assert_eq!(ext.hostname, "api.example.com");
    let slot = auto_allocate::preferred_slot(&ext.namespace, "api.example.com");
    let vip = auto_allocate::slot_addresses(slot);
    let want: Vec<Vec<u8>> = vec![vip.v4.octets().to_vec(), vip.v6.octets().to_vec()];
    let got: Vec<Vec<u8>> = ext.addresses.iter().map(|a| a.address.clone()).collect();
    assert_eq!(got, want, "240.240/16 and 2001:2::/48, from the host's slot");
    // resolution DNS: no passthrough.
    assert!(ext.load_balancing.is_none());
    assert_eq!(ext.ports[0].service_port, 443);
    assert_eq!(ext.ports[0].app_protocol, AppProtocol::Tls as i32);
    let vm = s.iter().find(|s| s.name == "vm-backend").unwrap();
    assert_eq!(vm.addresses[0].address, vec![240, 240, 0, 10]);
    assert_eq!((vm.ports[0].service_port, vm.ports[0].target_port), (8080, 18080));
}

#[test]
fn resolution_none_is_passthrough_and_target_defaults_to_number() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pt, namespace: default}
spec:
  hosts: [pt.example.com]
  addresses: [10.2.0.0/16]
  ports: [{number: 443, name: tls, protocol: TLS}]
";
    let (s, _) = services(yaml);
    let lb = s[0].load_balancing.clone().unwrap();
    assert_eq!(lb.mode, load_balancing::Mode::Passthrough as i32);
    assert_eq!(lb.health_policy, load_balancing::HealthPolicy::AllowAll as i32);
    assert_eq!((s[0].ports[0].service_port, s[0].ports[0].target_port), (443, 443));
}

#[test]
fn service_entry_addresses_cidrs_and_bad_values() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  addresses: [10.1.0.0/16, 2001:db8::1, bogus]
  ports: [{number: 80, name: http, protocol: HTTP}]
";
    let (s, statuses) = services(yaml);
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].hostname, "b.example.com");
    assert_eq!(s[0].addresses.len(), 2);
    assert_eq!(s[0].addresses[0].length, Some(16));
    assert_eq!(s[0].addresses[1].length, None);
    assert_eq!(s[0].addresses[1].address.len(), 16);
    assert_eq!(statuses.len(), 1);
    assert!(statuses[0].conditions[0].message.contains("bogus"));
}

#[test]
fn service_entry_endpoints_and_workload_entries_become_workloads() {
    let yaml = format!(
        "{}---\n{}---\n{}",
        include_str!("../../../helm/base/tests/examples/serviceentry-no-addresses.yaml"),
        include_str!("../../../helm/base/tests/examples/workloadentry.yaml"),
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.internal]
  ports: [{number: 5432, name: tcp-db, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 10.9.0.1, labels: {app: db}}
  - {address: db-2.example.com, ports: {tcp-db: 15432}}
"
    );
    let snap = snapshot(&format!("{AMBIENT_DEFAULT}---\n{yaml}"));
    let w = all_workloads(&cfg(), &snap);
    let we = w.iter().find(|w| w.name == "backend-vm-1").unwrap();
    assert_eq!(we.uid, "Kubernetes/networking.istio.io/WorkloadEntry/default/backend-vm-1");
    assert_eq!(we.addresses, vec![vec![10, 128, 0, 17]]);
    assert_eq!(we.network, "vm-network");
    assert_eq!(we.service_account, "backend");
    assert_eq!(we.canonical_name, "backend-vm");
    assert_eq!(we.canonical_revision, "v1");
    assert_eq!(we.capacity, Some(10));
    assert_eq!(we.locality.as_ref().unwrap().zone, "us-east1-b");
    // The namespace is ambient, so the entry speaks HBONE.
    assert_eq!(we.tunnel_protocol, TunnelProtocol::Hbone as i32);
    // Selected by vm-backend through workloadSelector; named port from the entry.
    let ports = &we.services["default/backend.vm.internal"].ports;
    assert_eq!((ports[0].service_port, ports[0].target_port), (8080, 18080));

    let eps: Vec<_> = w.iter().filter(|w| w.name == "db").collect();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].uid, "Kubernetes/networking.istio.io/ServiceEntry/default/db/10.9.0.1");
    assert_eq!(eps[1].hostname, "db-2.example.com");
    assert!(eps[1].addresses.is_empty());
    let ports = &eps[1].services["default/db.internal"].ports;
    assert_eq!((ports[0].service_port, ports[0].target_port), (5432, 15432));
}

#[test]
fn service_entry_workload_selector_selects_pods() {
    let yaml = format!(
        "{}---\n{}",
        include_str!("../../../helm/base/tests/examples/serviceentry-no-addresses.yaml"),
        pod("vm-like", "app: backend-vm", "10.0.0.7")
    );
    let snap = snapshot(&format!("{AMBIENT_DEFAULT}---\n{yaml}"));
    let w = all_workloads(&cfg(), &snap);
    let p = w.iter().find(|w| w.name == "vm-like").unwrap();
    let ports = &p.services["default/backend.vm.internal"].ports;
    assert_eq!((ports[0].service_port, ports[0].target_port), (8080, 18080));
}

#[test]
fn internal_traffic_policy_publish_not_ready_and_namespace_distribution() {
    use load_balancing::{HealthPolicy, Mode, Scope};
    let local = WEB.replace(
        "  trafficDistribution: PreferClose\n",
        "  internalTrafficPolicy: Local\n  publishNotReadyAddresses: true\n",
    );
    let lb = services(&local).0[0].load_balancing.clone().unwrap();
    assert_eq!(lb.routing_preference, vec![Scope::Node as i32]);
    assert_eq!(lb.mode, Mode::Strict as i32);
    assert_eq!(lb.health_policy, HealthPolicy::AllowAll as i32);

    let from_ns = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default, annotations: {{networking.istio.io/traffic-distribution: PreferSameNode}}}}\n---\n{}",
        WEB.replace("  trafficDistribution: PreferClose\n", "")
    );
    let lb = services(&from_ns).0[0].load_balancing.clone().unwrap();
    assert_eq!(lb.routing_preference.last(), Some(&(Scope::Node as i32)));
    assert_eq!(lb.routing_preference.len(), 5);
}

#[test]
fn single_stack_and_unset_ip_families() {
    let v6 = WEB.replace("  ipFamilies: [IPv4, IPv6]\n", "  ipFamilies: [IPv6]\n");
    assert_eq!(services(&v6).0[0].ip_families, IpFamilies::Ipv6Only as i32);
    let unset = WEB.replace("  ipFamilies: [IPv4, IPv6]\n", "");
    assert_eq!(services(&unset).0[0].ip_families, IpFamilies::Automatic as i32);
}

#[test]
fn workload_entry_tunnel_label() {
    let yaml = "
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hbone, namespace: plain, labels: {networking.istio.io/tunnel: http}}
spec: {address: 10.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: plaintext, namespace: plain}
spec: {address: 10.0.0.2}
";
    let w = all_workloads(&cfg(), &snapshot(yaml));
    let tunnel = |n: &str| w.iter().find(|w| w.name == n).unwrap().tunnel_protocol;
    assert_eq!(tunnel("hbone"), TunnelProtocol::Hbone as i32);
    assert_eq!(tunnel("plaintext"), TunnelProtocol::None as i32);
}

#[test]
fn a_hostname_is_defined_once_per_namespace() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: newer, namespace: default, creationTimestamp: '2026-02-01T00:00:00Z'}
spec: {hosts: [api.example.com, web.default.svc.cluster.local], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: older, namespace: default, creationTimestamp: '2026-01-01T00:00:00Z'}
spec: {hosts: [api.example.com], resolution: DNS}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
";
    let (s, statuses) = services(yaml);
    let names: Vec<_> = s.iter().map(|s| (s.name.as_str(), s.hostname.as_str())).collect();
    assert_eq!(names, vec![("web", "web.default.svc.cluster.local"), ("older", "api.example.com")]);
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].name, "newer");
    assert_eq!(statuses[0].conditions.len(), 2);
}

/// The VIPs (as text) of each ServiceEntry host in `yaml`.
fn vips(yaml: &str) -> Vec<(String, Vec<String>)> {
    let (s, _) = services(yaml);
    s.iter()
        .map(|svc| {
            let ips = svc
                .addresses
                .iter()
                .map(|a| match a.address.len() {
                    4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&a.address[..]).unwrap())
                        .to_string(),
                    _ => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&a.address[..]).unwrap())
                        .to_string(),
                })
                .collect();
            (svc.hostname.clone(), ips)
        })
        .collect()
}

#[test]
fn auto_allocation_skips_none_resolution_wildcards_explicit_addresses_and_opt_outs() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: default}
spec: {hosts: [none.example.com], resolution: NONE}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: unset, namespace: default}
spec: {hosts: [unset.example.com]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild, namespace: default}
spec: {hosts: ['*.wild.example.com', named.example.com], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: explicit, namespace: default}
spec: {hosts: [explicit.example.com], addresses: [192.0.2.1], resolution: STATIC}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: optout
  namespace: default
  labels: {networking.istio.io/enable-autoallocate-ip: 'false'}
spec: {hosts: [optout.example.com], resolution: DNS}
";
    let got: std::collections::BTreeMap<_, _> = vips(yaml).into_iter().collect();
    assert!(got["none.example.com"].is_empty());
    assert!(got["unset.example.com"].is_empty(), "resolution defaults to NONE");
    assert!(got["*.wild.example.com"].is_empty());
    assert_eq!(got["explicit.example.com"], vec!["192.0.2.1"]);
    assert!(got["optout.example.com"].is_empty());
    let named = &got["named.example.com"];
    assert!(named[0].starts_with("240.240."), "{named:?}");
    assert!(named[1].starts_with("2001:2::"), "{named:?}");
}

#[test]
fn auto_allocated_vips_are_the_same_on_every_run_and_the_older_entry_keeps_its_slot() {
    // Find two hosts whose preferred slots collide.
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..)
        .find_map(|i| {
            let host = format!("h{i}.example.com");
            let slot = auto_allocate::preferred_slot("default", &host);
            seen.insert(slot, host.clone()).map(|first| (first, host))
        })
        .unwrap();
    let entry = |name: &str, host: &str, created: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: {{name: {name}, namespace: default, creationTimestamp: '{created}'}}\n\
             spec: {{hosts: [{host}], resolution: DNS}}\n"
        )
    };
    // b's entry is older, so b keeps the shared slot; a moves on.
    let yaml = format!(
        "{}---\n{}",
        entry("ea", &a, "2026-02-01T00:00:00Z"),
        entry("eb", &b, "2026-01-01T00:00:00Z")
    );
    let first = vips(&yaml);
    assert_eq!(first, vips(&yaml), "a second replica (or a restart) computes the same");
    let slot = auto_allocate::preferred_slot("default", &b);
    let of = |host: &str| first.iter().find(|(h, _)| h == host).unwrap().1[0].clone();
    assert_eq!(of(&b), auto_allocate::slot_addresses(slot).v4.to_string());
    assert_ne!(of(&a), of(&b));
}
