//! The query path end to end in process: raw bytes in, raw bytes out,
//! against a local upstream ([`mesh_test_support::dns::DnsUpstream`]).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use mesh_test_support::dns::{DnsUpstream, Zone};

use super::*;
use crate::state::testutil::*;

const OUTSIDE: &str = "www.example.org";

fn state() -> StateHandle {
    let handle = StateHandle::default();
    handle.write(|s| {
        insert_service(s, service("web", &["10.96.0.1"]));
        insert_service(s, service("db", &[]));
        insert_workload(s, endpoint_of("db-0", "10.0.0.1", "db", 80, None));
        insert_workload(s, endpoint_of("db-1", "10.0.0.2", "db", 80, None));
    });
    handle
}

fn zone() -> Zone {
    let many: Vec<IpAddr> = (1..=60u8).map(|i| IpAddr::from([198, 51, 100, i])).collect();
    Zone { ttl: 120, ..Zone::default() }
        .with(OUTSIDE, &[IpAddr::from([203, 0, 113, 7])])
        .with("big.example.org", &many)
}

fn server_with(upstreams: Vec<SocketAddr>, tweak: impl FnOnce(&mut DnsConfig)) -> DnsServer {
    let mut config = DnsConfig::new(upstreams);
    tweak(&mut config);
    DnsServer::new(state(), config, Arc::new(DnsMetrics::default()))
}

fn client() -> Client {
    Client { workload_uid: "db-0".into(), namespace: "ns".into(), sockets: UpstreamSockets::host() }
}

fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

async fn ask(server: &DnsServer, name: &str, qtype: RecordType) -> Message {
    let bytes = server.handle(&client(), &query(4242, name, qtype), Transport::Udp).await.unwrap();
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(m.metadata.id, 4242, "the response keeps the query's id");
    m
}

fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn mesh_names_are_answered_without_the_upstream() {
    let (upstream, addr) = DnsUpstream::local(zone()).unwrap();
    let server = server_with(vec![addr], |_| {});
    for name in ["web.ns.svc.cluster.local.", "WEB.Ns.Svc.Cluster.Local.", "web.", "web.ns."] {
        let m = ask(&server, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.metadata.authoritative, "{name}");
        assert_eq!(addresses(&m), vec![IpAddr::from([10, 96, 0, 1])], "{name}");
        assert_eq!(m.answers[0].ttl, 30, "{name}");
    }
    let v6 = ask(&server, "web.ns.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(v6.metadata.response_code, ResponseCode::NoError, "a v4-only name has no AAAA");
    assert!(v6.answers.is_empty());
    let headless = ask(&server, "db.ns.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        addresses(&headless),
        vec![IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2])],
        "one record per ready endpoint"
    );
    let missing = ask(&server, "nosuch.ns.svc.cluster.local.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(upstream.seen().is_empty(), "the upstream was never asked: {:?}", upstream.seen());
    let text = encode(&server);
    assert!(text.contains("answered_by=\"mesh\""), "{text}");
    assert!(text.contains("source_workload_namespace=\"ns\""), "{text}");
}

fn encode(server: &DnsServer) -> String {
    let mut registry = prometheus_client::registry::Registry::with_prefix("istio");
    server.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

#[tokio::test]
async fn other_names_are_forwarded_and_passed_through_unchanged() {
    let (upstream, addr) = DnsUpstream::local(zone()).unwrap();
    let server = server_with(vec![addr], |_| {});
    let raw = query(777, "WWW.example.org.", RecordType::A);
    let bytes = server.handle(&client(), &raw, Transport::Udp).await.unwrap();
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(m.metadata.id, 777);
    assert_eq!(addresses(&m), vec![IpAddr::from([203, 0, 113, 7])]);
    assert_eq!(m.answers[0].ttl, 120, "the upstream's TTL, untouched");
    assert_eq!(upstream.count(OUTSIDE), 1);
    let unknown = ask(&server, "nosuch.example.org.", RecordType::A).await;
    assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain, "the upstream's NXDOMAIN");
    let text = encode(&server);
    assert!(
        text.contains(
            "istio_dns_upstream_request_duration_seconds_count{response_code=\"NoError\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("answered_by=\"upstream\""), "{text}");
}

#[tokio::test]
async fn forwarded_answers_are_served_from_the_cache_with_the_new_id() {
    let (upstream, addr) = DnsUpstream::local(zone()).unwrap();
    let server = server_with(vec![addr], |_| {});
    let pod = client();
    let first = query(8, "www.example.org.", RecordType::A);
    server.handle(&pod, &first, Transport::Udp).await.unwrap();
    let raw = query(9, "www.example.org.", RecordType::A);
    let again = server.handle(&pod, &raw, Transport::Udp).await.unwrap();
    let again = Message::from_vec(&again).unwrap();
    assert_eq!(again.metadata.id, 9);
    assert_eq!(addresses(&again), vec![IpAddr::from([203, 0, 113, 7])]);
    assert_eq!(upstream.count(OUTSIDE), 1, "the second answer came from the cache");
}

#[tokio::test]
async fn a_truncated_upstream_answer_is_asked_again_over_tcp() {
    let mut zone = zone();
    zone.truncate_over_udp.insert("big.example.org.".into());
    let (upstream, addr) = DnsUpstream::local(zone).unwrap();
    let server = server_with(vec![addr], |_| {});
    let via_tcp = server
        .handle(&client(), &query(5, "big.example.org.", RecordType::A), Transport::Tcp)
        .await
        .unwrap();
    let via_tcp = Message::from_vec(&via_tcp).unwrap();
    assert!(!via_tcp.metadata.truncation);
    assert_eq!(via_tcp.answers.len(), 60, "the full answer, fetched over TCP");
    let seen: Vec<bool> = upstream.seen().iter().map(|s| s.tcp).collect();
    assert_eq!(seen, vec![false, true], "UDP first, then TCP");
    // Too large for a plain UDP client: it gets TC and asks over TCP itself.
    let over_udp = ask(&server, "big.example.org.", RecordType::A).await;
    assert!(over_udp.metadata.truncation && over_udp.answers.is_empty());
    // With EDNS room for it, the whole answer fits in one datagram.
    let mut edns_query = Message::from_vec(&query(6, "big.example.org.", RecordType::A)).unwrap();
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    edns_query.set_edns(edns);
    let raw = edns_query.to_vec().unwrap();
    let big = server.handle(&client(), &raw, Transport::Udp).await.unwrap();
    assert_eq!(Message::from_vec(&big).unwrap().answers.len(), 60);
}

#[tokio::test]
async fn malformed_queries_are_dropped_and_counted() {
    let server = server_with(vec![], |_| {});
    let mut response = Message::from_vec(&query(1, "web.", RecordType::A)).unwrap();
    response.metadata.message_type = MessageType::Response;
    let garbage: [&[u8]; 4] = [b"", b"\x00\x01", &[0xff; 40], &response.to_vec().unwrap()];
    for packet in garbage {
        assert!(server.handle(&client(), packet, Transport::Udp).await.is_none(), "{packet:?}");
    }
    assert_eq!(server.metrics().malformed.get(), 4);
    let text = encode(&server);
    assert!(text.contains("istio_dns_malformed_requests_total 4"), "{text}");
}

/// A server whose upstream never answers `www.example.org`, and a query
/// for it already on its way.
fn stalled_forward(
    tweak: impl FnOnce(&mut DnsConfig),
) -> (DnsUpstream, Arc<DnsServer>, tokio::task::JoinHandle<Message>) {
    let mut zone = zone();
    zone.silent.insert("www.example.org.".into());
    let (upstream, addr) = DnsUpstream::local(zone).unwrap();
    let server = Arc::new(server_with(vec![addr], tweak));
    let asking = Arc::clone(&server);
    let stalled =
        tokio::spawn(async move { ask(&asking, "www.example.org.", RecordType::A).await });
    (upstream, server, stalled)
}

#[tokio::test]
async fn a_dead_upstream_fails_forwards_but_never_delays_mesh_names() {
    let (_upstream, server, slow) = stalled_forward(|c| {
        c.upstream_timeout = Duration::from_millis(600);
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    let mesh = ask(&server, "web.", RecordType::A).await;
    assert_eq!(addresses(&mesh), vec![IpAddr::from([10, 96, 0, 1])]);
    assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
    let failed = slow.await.unwrap();
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    let text = encode(&server);
    assert!(text.contains("istio_dns_upstream_failures_total{reason=\"timeout\"} 1"), "{text}");
}

#[tokio::test]
async fn forwards_beyond_the_limit_fail_at_once() {
    let (_upstream, server, first) = stalled_forward(|c| {
        c.max_in_flight = 1;
        c.upstream_timeout = Duration::from_secs(2);
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let refused = ask(&server, "other.example.org.", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    assert!(encode(&server).contains("reason=\"overloaded\"} 1"));
    first.abort();
}

#[test]
fn resolv_conf_nameservers_become_upstreams() {
    let text = "# comment\nsearch ns.svc.cluster.local\nnameserver 10.96.0.10\n\
                nameserver fd00::a\nnameserver fe80::1%eth0\noptions ndots:5\n";
    let want: Vec<SocketAddr> =
        vec!["10.96.0.10:53".parse().unwrap(), "[fd00::a]:53".parse().unwrap()];
    assert_eq!(parse_resolv_conf(text), want);
}

fn client_with(uid: &str) -> Client {
    Client { workload_uid: uid.into(), namespace: "ns".into(), sockets: UpstreamSockets::host() }
}

#[tokio::test]
async fn one_pods_cached_answer_is_never_served_to_another_pod() {
    let (upstream, addr) = DnsUpstream::local(zone()).unwrap();
    let server = server_with(vec![addr], |_| {});
    let (a, b) = (client_with("pod-a"), client_with("pod-b"));
    for (client, asked) in [(&a, 1), (&a, 1), (&b, 2), (&b, 2), (&a, 2)] {
        let raw = query(11, "www.example.org.", RecordType::A);
        let bytes = server.handle(client, &raw, Transport::Udp).await.unwrap();
        assert_eq!(
            addresses(&Message::from_vec(&bytes).unwrap()),
            [IpAddr::from([203, 0, 113, 7])]
        );
        assert_eq!(
            upstream.count(OUTSIDE),
            asked,
            "{}: each pod's answers come from its own cache or its own forward",
            client.workload_uid
        );
    }
}

/// UDP sockets that take datagrams and never answer.
fn black_holes(n: usize) -> (Vec<std::net::UdpSocket>, Vec<SocketAddr>) {
    let sockets: Vec<std::net::UdpSocket> =
        (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let addrs = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    (sockets, addrs)
}

#[tokio::test(start_paused = true)]
async fn a_failed_forward_answers_servfail_within_the_total_timeout() {
    // A closed port (refused at once), then three upstreams that never
    // answer: the default timeouts bound the whole forward.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (_holes, mut upstreams) = black_holes(3);
    upstreams.insert(0, closed);
    let server = server_with(upstreams, |_| {});
    let started = tokio::time::Instant::now();
    let failed = ask(&server, "www.example.org.", RecordType::A).await;
    let took = started.elapsed();
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    let bound = DnsConfig::new(Vec::new()).forward_timeout;
    assert!(
        took <= bound + Duration::from_millis(100),
        "SERVFAIL after {took:?} (bound {bound:?})"
    );
    assert!(bound <= Duration::from_secs(3), "below a glibc client's 5 s retry: {bound:?}");
}

#[tokio::test]
async fn without_cluster_dns_unknown_cluster_names_do_not_exist() {
    let server = server_with(Vec::new(), |_| {});
    for name in [
        "server.shop.ns.svc.cluster.local.",
        "server.shop.svc.cluster.local.",
        "server.shop.cluster.local.",
        "web-0.web.ns.svc.cluster.local.",
        "cluster.local.",
    ] {
        for qtype in [RecordType::A, RecordType::AAAA] {
            let m = ask(&server, name, qtype).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name} {qtype}");
            assert!(m.metadata.authoritative, "{name}");
        }
    }
    // Mesh names still resolve; another type of one is NODATA, not SERVFAIL.
    let web = ask(&server, "web.ns.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&web), [IpAddr::from([10, 96, 0, 1])]);
    let mx = ask(&server, "web.ns.svc.cluster.local.", RecordType::MX).await;
    assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
    assert!(mx.answers.is_empty());
    // Outside the cluster domain there is nobody to ask: SERVFAIL at once.
    let outside = ask(&server, "server.shop.", RecordType::A).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn with_cluster_dns_unknown_cluster_names_are_forwarded() {
    let (upstream, addr) = DnsUpstream::local(zone()).unwrap();
    let server = server_with(vec![addr], |_| {});
    let m = ask(&server, "web-0.web.ns.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "the upstream's answer");
    assert_eq!(upstream.count("web-0.web.ns.svc.cluster.local"), 1, "{:?}", upstream.seen());
}
