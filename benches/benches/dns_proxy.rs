//! Queries per second and p99 latency through ztunnel's DNS proxy over UDP
//! on loopback: mesh names (answered from the state), forwarded names
//! (every query goes to a local in-process upstream: TTL 0, so nothing is
//! cached), forwarded names served from the proxy's cache, and, measured in
//! the same run, the same queries sent straight to that upstream (the
//! baseline). Each path is driven by `CLIENTS` concurrent clients, each
//! with its own socket and one query in flight.
//!
//! Criterion reports throughput per path; afterwards a fixed run of
//! `REPORT_QUERIES` queries per path prints qps, p99 and the ratio to the
//! baseline.
//!
//! Run: `cargo bench -p mesh-benches --bench dns_proxy`
#![allow(clippy::print_stdout, reason = "the benchmark's summary report")]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use mesh_proto::workload as pb;
use mesh_test_support::dns::{DnsUpstream, Zone};
use tokio::net::UdpSocket;
use tokio::runtime::Runtime;
use tokio::time::Instant;
use ztunnel::dns::serve::PodDns;
use ztunnel::dns::{Client, DnsConfig, DnsServer, UpstreamSockets};
use ztunnel::state::StateHandle;

const CLIENTS: usize = 8;
const REPORT_QUERIES: usize = 20_000;

/// The bench's fixture: a proxy and an upstream, both on loopback.
struct Fixture {
    proxy: SocketAddr,
    upstream: SocketAddr,
    _upstream: DnsUpstream,
    _stop: tokio::sync::watch::Sender<()>,
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new(1, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap_or_default(), RecordType::A));
    m.to_vec().unwrap_or_default()
}

async fn fixture() -> Option<Fixture> {
    let mut zone = Zone { ttl: 0, ..Zone::default() }
        .with("uncached.example.org", &[IpAddr::from([203, 0, 113, 7])]);
    zone.ttl = 3600;
    let zone = zone.with("cached.example.org", &[IpAddr::from([203, 0, 113, 8])]);
    let (upstream_server, upstream) = DnsUpstream::local(zone).ok()?;
    let state = StateHandle::default();
    let service = pb::Address {
        r#type: Some(pb::address::Type::Service(pb::Service {
            name: "web".into(),
            namespace: "default".into(),
            hostname: "web.default.svc.cluster.local".into(),
            addresses: vec![pb::NetworkAddress {
                network: String::new(),
                address: vec![10, 96, 0, 1],
                length: None,
            }],
            ..Default::default()
        })),
    };
    let address = mesh_model::Address::try_from(service).ok()?;
    state.write(|s| s.insert_address("default/web.default.svc.cluster.local", address)).ok()?;
    let server = DnsServer::new(state, DnsConfig::new(vec![upstream]), Arc::default());
    let socket = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let proxy = socket.local_addr().ok()?;
    let (stop_tx, stop) = tokio::sync::watch::channel(());
    let client = Client {
        workload_uid: "bench".into(),
        namespace: "default".into(),
        sockets: UpstreamSockets::host(),
    };
    let dns = Arc::new(PodDns { server: Arc::new(server), client, stop });
    tokio::spawn(dns.udp(socket));
    Some(Fixture { proxy, upstream, _upstream: upstream_server, _stop: stop_tx })
}

/// Sends `total` queries for `name` to `target` from `CLIENTS` concurrent
/// clients; returns the wall time and every query's latency.
async fn drive(target: SocketAddr, name: &str, total: usize) -> (Duration, Vec<Duration>) {
    let packet = Arc::new(query(name));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let share = total / CLIENTS + usize::from(i < total % CLIENTS);
        let packet = Arc::clone(&packet);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else { return latencies };
            if socket.connect(target).await.is_err() {
                return latencies;
            }
            let mut buf = vec![0; 4096];
            for _ in 0..share {
                let sent = Instant::now();
                if socket.send(&packet).await.is_err() {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await {
                    Ok(Ok(_)) => latencies.push(sent.elapsed()),
                    _ => break,
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    (started.elapsed(), latencies)
}

/// The paths measured: (label, which address, name).
fn paths(f: &Fixture) -> [(&'static str, SocketAddr, &'static str); 4] {
    [
        ("direct_to_upstream", f.upstream, "uncached.example.org."),
        ("proxy_mesh_name", f.proxy, "web.default.svc.cluster.local."),
        ("proxy_forwarded", f.proxy, "uncached.example.org."),
        ("proxy_forwarded_cached", f.proxy, "cached.example.org."),
    ]
}

fn bench(c: &mut Criterion) {
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        return;
    };
    let Some(fixture) = runtime.block_on(fixture()) else { return };
    // Every path must answer before it is measured.
    for (label, target, name) in paths(&fixture) {
        let (_, latencies) = runtime.block_on(drive(target, name, CLIENTS));
        assert_eq!(latencies.len(), CLIENTS, "{label} answers");
    }
    let mut group = c.benchmark_group("dns");
    group.throughput(Throughput::Elements(1));
    for (label, target, name) in paths(&fixture) {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let total = usize::try_from(iters).unwrap_or(usize::MAX).max(CLIENTS);
                runtime.block_on(drive(target, name, total)).0
            });
        });
    }
    group.finish();
    report(&runtime, &fixture);
}

/// Fixed runs per path: qps, p99, and qps relative to the baseline.
fn report(runtime: &Runtime, fixture: &Fixture) {
    let mut baseline = None;
    println!("dns summary ({CLIENTS} clients, {REPORT_QUERIES} queries per path):");
    for (label, target, name) in paths(fixture) {
        let (wall, mut latencies) = runtime.block_on(drive(target, name, REPORT_QUERIES));
        latencies.sort();
        let p99 = latencies.get(latencies.len() * 99 / 100).copied().unwrap_or_default();
        let qps = latencies.len() as f64 / wall.as_secs_f64();
        let ratio = qps / *baseline.get_or_insert(qps);
        println!(
            "  {label:<24} {qps:>9.0} qps  p99 {:>7.1} us  {ratio:.2}x direct qps",
            p99.as_secs_f64() * 1e6
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
