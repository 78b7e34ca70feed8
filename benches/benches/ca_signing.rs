//! CSR signings per second by istiod's CA: parsing and checking a P-256 CSR
//! (signature, key, SAN, CA flag) and issuing the leaf, measured beside the
//! client-side cost of generating the key and CSR, in the same run.
//!
//! Run: `cargo bench -p mesh-benches --bench ca_signing`

use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use istiod::ca::csr::check_csr;
use istiod::ca::root::StoredCa;
use mesh_identity::csr;
use mesh_model::Identity;

fn bench(c: &mut Criterion) {
    let Ok(identity) = Identity::new("cluster.local", "default", "app") else { return };
    let Ok(authority) =
        StoredCa::generate("cluster.local", SystemTime::now()).and_then(|s| s.to_authority())
    else {
        return;
    };
    let Ok(request) = csr::generate(&identity) else { return };
    let day = Duration::from_secs(24 * 3600);
    let sign = |pem: &str| {
        let checked = check_csr(pem, "cluster.local").ok()?;
        authority
            .issue_workload(checked.public_key(), checked.identity(), day, SystemTime::now())
            .ok()
    };
    assert!(sign(&request.csr_pem).is_some(), "signing must work before it is measured");

    let mut group = c.benchmark_group("ca");
    group.throughput(Throughput::Elements(1));
    group.bench_function("check_and_sign_p256_csr", |b| b.iter(|| sign(&request.csr_pem)));
    group.bench_function("client_generate_key_and_csr", |b| {
        b.iter(|| csr::generate(&identity).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
