//! Cost of admitting pushed workload resources: protobuf decode alone (the
//! baseline) against decode plus validation into `mesh-model` types, in the
//! same run. The ratio is the price of validating at the edge.
//!
//! Run: `cargo bench -p mesh-benches --bench xds_decode`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mesh_proto::workload as pb;
use prost::Message;

fn pod(i: u32) -> pb::Address {
    let [a, b] = u16::try_from(i % 65_000).unwrap_or_default().to_be_bytes();
    let workload = pb::Workload {
        uid: format!("Kubernetes//Pod/ns-{}/pod-{i}", i % 50),
        name: format!("pod-{i}"),
        namespace: format!("ns-{}", i % 50),
        addresses: vec![vec![10, 244, a, b]],
        tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
        service_account: "app".into(),
        node: format!("node-{}", i % 20),
        canonical_name: "app".into(),
        canonical_revision: "v1".into(),
        workload_type: pb::WorkloadType::Pod as i32,
        workload_name: "app".into(),
        services: [(
            format!("ns-{}/app.ns-{}.svc.cluster.local", i % 50, i % 50),
            pb::PortList {
                ports: vec![pb::Port { service_port: 80, target_port: 8080, app_protocol: 0 }],
            },
        )]
        .into(),
        locality: Some(pb::Locality {
            region: "r1".into(),
            zone: "z1".into(),
            subzone: String::new(),
        }),
        ..Default::default()
    };
    pb::Address { r#type: Some(pb::address::Type::Workload(workload)) }
}

fn bench(c: &mut Criterion) {
    const N: u32 = 1_000;
    let encoded: Vec<Vec<u8>> = (0..N).map(|i| pod(i).encode_to_vec()).collect();
    let mut group = c.benchmark_group("admit_1000_workloads");
    group.throughput(Throughput::Elements(u64::from(N)));
    group.bench_function("decode_only_baseline", |b| {
        b.iter_batched(
            || encoded.clone(),
            |bufs| {
                bufs.iter()
                    .map(|buf| pb::Address::decode(buf.as_slice()).is_ok())
                    .filter(|ok| *ok)
                    .count()
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("decode_and_validate", |b| {
        b.iter_batched(
            || encoded.clone(),
            |bufs| {
                bufs.iter()
                    .filter_map(|buf| pb::Address::decode(buf.as_slice()).ok())
                    .filter_map(|a| mesh_model::Address::try_from(a).ok())
                    .count()
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
