//! Mutual TLS 1.3 handshakes per second between two workload identities over
//! an in-memory pipe, with the post-quantum hybrid group (X25519MLKEM768, the
//! default) and with classical X25519 only, in the same run. Both sides run
//! on one thread, so the figure is the CPU cost of a full handshake pair
//! (client + server), SPIFFE verification included.
//!
//! Run: `cargo bench -p mesh-benches --bench tls_handshake`

use std::sync::Arc;

use boring::ssl::SslContext;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_identity::tls::{self, KeyExchange, TlsSettings};
use mesh_identity::verify::PeerPolicy;
use mesh_identity::{TrustBundle, WorkloadCertificate};
use mesh_model::Identity;
use mesh_test_support::{LeafSpec, TestCa};

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";

struct Pair {
    client: SslContext,
    server: SslContext,
    trust: Arc<TrustBundle>,
    server_id: Identity,
}

fn workload(ca: &TestCa, id: &str) -> Result<WorkloadCertificate, Box<dyn std::error::Error>> {
    let issued = ca.issue(&LeafSpec::workload(id))?;
    Ok(WorkloadCertificate::from_chain_pem(&id.parse()?, issued.key, &issued.chain_pem)?)
}

fn pair(key_exchange: KeyExchange) -> Result<Pair, Box<dyn std::error::Error>> {
    let ca = TestCa::root("bench")?;
    let settings = TlsSettings { key_exchange, ..TlsSettings::default() };
    Ok(Pair {
        client: tls::client_context(&workload(&ca, CLIENT)?, settings)?,
        server: tls::server_context(&workload(&ca, SERVER)?, settings)?,
        trust: Arc::new(TrustBundle::from_pem(ca.root_pem().as_bytes())?),
        server_id: SERVER.parse()?,
    })
}

async fn handshake(p: &Pair) -> bool {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let server = tls::accept(
        &p.server,
        b,
        Arc::clone(&p.trust),
        PeerPolicy::TrustDomains(vec!["cluster.local".into()]),
    );
    let client = tls::connect(
        &p.client,
        a,
        Arc::clone(&p.trust),
        PeerPolicy::Identities(vec![p.server_id.clone()]),
    );
    let (s, c) = tokio::join!(server, client);
    s.is_ok() && c.is_ok()
}

fn bench(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    let mut group = c.benchmark_group("mtls_handshake");
    group.throughput(Throughput::Elements(1));
    for (name, kx) in
        [("x25519mlkem768", KeyExchange::HybridPostQuantum), ("x25519", KeyExchange::Classical)]
    {
        let Ok(p) = pair(kx) else { return };
        assert!(rt.block_on(handshake(&p)), "handshake must succeed before it is measured");
        group.bench_function(name, |b| b.iter(|| rt.block_on(handshake(&p))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
