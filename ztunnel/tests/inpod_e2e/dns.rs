//! The DNS proxy from enrolled pods: the pod's resolver points at node a's
//! address (via `/etc/netns/<pod>/resolv.conf`, which `ip netns exec`
//! mounts over `/etc/resolv.conf`), the capture rules send its port 53 to
//! the in-pod 15053, and a test resolver on node a's port 53 is the
//! upstream. A pod opted out with `ambient.istio.io/dns-capture=false`
//! talks to that resolver directly.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use mesh_cni::{Backend, CaptureConfig, DNS_CAPTURE_ANNOTATION};
use mesh_netns::{Netns, PodHandle};
use mesh_proto::workload as pb;
use mesh_test_support::dns::{DnsUpstream, Zone};

use crate::harness::*;

const OUTSIDE: &str = "outside.example.org";
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// What the upstream says about the mesh's service name: only a pod that
/// bypasses the proxy ever sees it.
const UPSTREAM_SAYS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);
const ENTRY_HOST: &str = "api.dns-e2e.example";

/// `/etc/netns/<name>/resolv.conf` for a pod, removed on drop.
struct ResolvConf(PathBuf);

impl ResolvConf {
    fn write(pod: &PodHandle, nameserver: Ipv4Addr) -> Self {
        let dir = PathBuf::from("/etc/netns").join(&pod.netns_name);
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            "nameserver {nameserver}\nsearch default.svc.cluster.local svc.cluster.local \
             cluster.local\noptions ndots:5 timeout:2 attempts:2\n"
        );
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
        Self(dir)
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `getent <database> <name>` in the pod: the IPv4 addresses it prints.
async fn getent(pod: &PodHandle, database: &str, name: &str) -> Vec<IpAddr> {
    let mut cmd = pod.command("getent");
    cmd.args([database, name]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ips: Vec<IpAddr> =
        text.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    ips.dedup();
    ips
}

/// One query from inside `pod` to `server` over UDP or TCP, with hickory's
/// codec; checks the response carries the query's id.
async fn ask(pod: &PodHandle, server: SocketAddr, name: &str, tcp: bool) -> Message {
    let mut query = Message::new(0x5eed, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = query.to_vec().unwrap();
    let netns = pod.netns().unwrap();
    let reply = tokio::task::spawn_blocking(move || {
        if tcp {
            let mut stream = netns
                .run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)))
                .unwrap()
                .unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
            stream.write_all(&[&len[..], &bytes].concat()).unwrap();
            let mut len = [0; 2];
            stream.read_exact(&mut len).unwrap();
            let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply).unwrap();
            reply
        } else {
            let socket = netns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            socket.send_to(&bytes, server).unwrap();
            let mut buf = vec![0; 4096];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(from, server, "the answer comes from the address asked");
            buf.truncate(n);
            buf
        }
    })
    .await
    .unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, 0x5eed);
    reply
}

fn a_records(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// The Service istiod's translation makes of a ServiceEntry without
/// addresses (so with an auto-allocated VIP), port 80 -> the app.
fn translated_entry() -> (pb::Service, Ipv4Addr) {
    use istiod::translate::{Config, Snapshot, crd::ServiceEntry, services::all_services};
    let se = ServiceEntry::from_json(serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {
            "hosts": [ENTRY_HOST],
            "ports": [{"number": 80, "name": "tcp", "protocol": "TCP", "targetPort": APP_PORT}],
            "resolution": "STATIC",
            "location": "MESH_INTERNAL",
        },
    }))
    .unwrap();
    let mut snap = Snapshot::default();
    snap.add_service_entry(se);
    let mut statuses = Vec::new();
    let service = all_services(&Config::default(), &snap, &mut statuses).pop().unwrap();
    assert!(statuses.is_empty(), "{statuses:?}");
    let v4 = service.addresses.iter().find(|a| a.address.len() == 4).unwrap();
    let vip = Ipv4Addr::from(<[u8; 4]>::try_from(&v4.address[..]).unwrap());
    (service, vip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_pods_resolve_mesh_names_on_the_node_and_the_rest_upstream() {
    let mesh = mesh(&crate::prefix("dn")).await;
    let node_a = mesh.topology.node("a").unwrap().clone();
    let resolver = SocketAddr::from((node_a.ip, 53));
    let zone = Zone { ttl: 60, ..Zone::default() }
        .with(OUTSIDE, &[IpAddr::V4(OUTSIDE_IP)])
        .with(SERVICE_HOST, &[IpAddr::V4(UPSTREAM_SAYS)]);
    let sockets = Netns::named(&node_a.netns_name)
        .unwrap()
        .run(move || {
            (UdpSocket::bind(resolver).unwrap(), std::net::TcpListener::bind(resolver).unwrap())
        })
        .unwrap();
    let upstream = DnsUpstream::serve(zone, sockets.0, sockets.1).unwrap();
    let _conf = ResolvConf::write(&mesh.client, node_a.ip);
    let _legacy_conf = ResolvConf::write(&mesh.legacy, node_a.ip);

    // The ServiceEntry as istiod translates it, backed by the server pod.
    let (entry, entry_vip) = translated_entry();
    assert_eq!(entry_vip.octets()[..2], [240, 240], "auto-allocated: {entry_vip}");
    let mut server = server_workload(&mesh.server, false);
    server
        .services
        .insert(format!("default/{ENTRY_HOST}"), pb::PortList { ports: vec![port(80, APP_PORT)] });
    for node in [&mesh.a, &mesh.b] {
        insert(
            &node.state,
            &format!("default/{ENTRY_HOST}"),
            pb::address::Type::Service(entry.clone()),
        );
        insert(&node.state, &uid("server"), pb::address::Type::Workload(server.clone()));
    }

    let vip = IpAddr::V4(SERVICE_VIP);
    // Mesh names with a DNS client, over UDP and TCP...
    for tcp in [false, true] {
        let m = ask(&mesh.client, resolver, "Server.Default.SVC.cluster.local.", tcp).await;
        assert_eq!(a_records(&m), vec![vip], "tcp={tcp}");
        assert!(m.metadata.authoritative, "answered by the mesh, tcp={tcp}");
    }
    // ... and through libc's resolver: the cluster name and short names.
    assert_eq!(getent(&mesh.client, "ahostsv4", SERVICE_HOST).await, vec![vip]);
    assert_eq!(getent(&mesh.client, "ahostsv4", "server").await, vec![vip]);
    assert_eq!(getent(&mesh.client, "hosts", "server.default").await, vec![vip]);
    let missing = ask(&mesh.client, resolver, "nosuch.default.svc.cluster.local.", false).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.count(SERVICE_HOST), 0, "mesh names never reach the upstream");
    assert_eq!(upstream.count("nosuch.default.svc.cluster.local"), 0);

    // The ServiceEntry host resolves to its allocated VIP, and TCP to that
    // VIP reaches the backend through the mesh.
    assert_eq!(getent(&mesh.client, "ahostsv4", ENTRY_HOST).await, vec![IpAddr::V4(entry_vip)]);
    let (_listener, app) = echo_once(&mesh.server, APP_PORT);
    let echoed = roundtrip(&mesh.client, SocketAddr::from((entry_vip, 80)), b"via the entry").await;
    assert_eq!(echoed, b"via the entry");
    assert_eq!(peer_of(app).await.ip(), IpAddr::V4(mesh.client.ip));

    // Anything else goes to the upstream, from the pod, and comes back.
    assert_eq!(getent(&mesh.client, "ahostsv4", OUTSIDE).await, vec![IpAddr::V4(OUTSIDE_IP)]);
    let outside = ask(&mesh.client, resolver, "outside.example.org.", false).await;
    assert_eq!(a_records(&outside), vec![IpAddr::V4(OUTSIDE_IP)]);
    assert!(upstream.count(OUTSIDE) >= 1, "{:?}", upstream.seen());

    let mesh_answers = mesh.a.series("istio_dns_requests_total", &["answered_by=\"mesh\""]).await;
    assert!(mesh_answers.contains("source_workload=\"client\""), "{mesh_answers}");
    mesh.a.series("istio_dns_requests_total", &["answered_by=\"upstream\""]).await;

    // A pod opted out of DNS capture asks the upstream itself: it gets the
    // upstream's answer for the mesh's name, and its proxy sees nothing.
    let annotations = BTreeMap::from([(DNS_CAPTURE_ANNOTATION.to_owned(), "false".to_owned())]);
    let capture = CaptureConfig::default().for_pod(&annotations);
    let legacy_id = "spiffe://cluster.local/ns/default/sa/legacy";
    insert(&mesh.a.state, &uid("legacy"), pb::address::Type::Workload(workload(&mesh.legacy)));
    mesh.a.enroll_with(&mesh.legacy, legacy_id, Backend::Iptables, &capture).await;
    let before = upstream.count(SERVICE_HOST);
    assert_eq!(
        getent(&mesh.legacy, "ahostsv4", SERVICE_HOST).await,
        vec![IpAddr::V4(UPSTREAM_SAYS)]
    );
    // Over TCP too: port 53 is then ordinary outbound TCP (15001), which
    // passes through to the resolver.
    let direct = ask(&mesh.legacy, resolver, "server.default.svc.cluster.local.", true).await;
    assert_eq!(a_records(&direct), vec![IpAddr::V4(UPSTREAM_SAYS)]);
    assert!(upstream.count(SERVICE_HOST) >= before + 2, "{:?}", upstream.seen());
    // Nothing reached the legacy pod's DNS proxy (its workload is not in
    // the state, so its queries would be counted with an empty name).
    let text = mesh.a.metrics();
    let proxied = text.lines().filter(|l| l.starts_with("istio_dns_requests_total{"));
    assert!(proxied.clone().all(|l| l.contains("source_workload=\"client\"")), "{text}");
}
