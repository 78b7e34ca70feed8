//! Real BoringSSL handshakes over in-memory pipes: a good pair of workloads
//! connects with TLS 1.3, ALPN h2 and the post-quantum group; every kind of
//! bad peer is refused with the reason named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::Arc;

use boring::ssl::{SslContext, SslContextBuilder, SslMethod, SslVerifyMode, SslVersion};
use mesh_identity::tls::{self, KeyExchange, TlsError, TlsSettings};
use mesh_identity::verify::PeerPolicy;
use mesh_identity::{PeerError, TrustBundle, WorkloadCertificate};
use mesh_model::Identity;
use mesh_test_support::{IssuedLeaf, LeafSpec, TestCa};

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn workload(ca: &TestCa, spiffe: &str) -> WorkloadCertificate {
    let issued = ca.issue(&LeafSpec::workload(spiffe)).unwrap();
    WorkloadCertificate::from_chain_pem(&id(spiffe), issued.key, &issued.chain_pem).unwrap()
}

fn bundle(ca: &TestCa) -> Arc<TrustBundle> {
    Arc::new(TrustBundle::from_pem(ca.root_pem().as_bytes()).unwrap())
}

fn domains() -> PeerPolicy {
    PeerPolicy::TrustDomains(vec!["cluster.local".into()])
}

/// A context for a hostile peer that presents whatever it was issued,
/// without any of our checks.
fn raw_context(issued: &IssuedLeaf, server: bool) -> SslContext {
    let mut b = SslContextBuilder::new(SslMethod::tls()).unwrap();
    b.set_certificate(&issued.leaf).unwrap();
    b.set_private_key(&issued.key).unwrap();
    for pem in issued.chain_pem.iter().skip(1) {
        b.add_extra_chain_cert(boring::x509::X509::from_pem(pem.as_bytes()).unwrap()).unwrap();
    }
    b.set_verify(SslVerifyMode::NONE);
    if server {
        b.set_alpn_select_callback(|_, _| Ok(b"h2"));
    } else {
        b.set_alpn_protos(b"\x02h2").unwrap();
    }
    b.build()
}

async fn handshake_with_hostile_server(
    issued: IssuedLeaf,
    client_ca: &TestCa,
    policy: PeerPolicy,
) -> TlsError {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server_ctx = raw_context(&issued, true);
    let server = tokio::spawn(async move {
        let ssl = boring::ssl::Ssl::new(&server_ctx).unwrap();
        let _ = tokio_boring::SslStreamBuilder::new(ssl, b).accept().await;
    });
    let client_cert = workload(client_ca, CLIENT);
    let ctx = tls::client_context(&client_cert, TlsSettings::default()).unwrap();
    let err =
        tls::connect(&ctx, a, bundle(client_ca), policy).await.expect_err("handshake must fail");
    server.abort();
    err
}

async fn handshake_with_hostile_client(issued: IssuedLeaf, server_ca: &TestCa) -> TlsError {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client_ctx = raw_context(&issued, false);
    let client = tokio::spawn(async move {
        let ssl = boring::ssl::Ssl::new(&client_ctx).unwrap();
        let _ = tokio_boring::SslStreamBuilder::new(ssl, a).connect().await;
    });
    let server_cert = workload(server_ca, SERVER);
    let ctx = tls::server_context(&server_cert, TlsSettings::default()).unwrap();
    let err =
        tls::accept(&ctx, b, bundle(server_ca), domains()).await.expect_err("handshake must fail");
    client.abort();
    err
}

#[tokio::test]
async fn good_peers_connect_with_tls13_h2_and_the_hybrid_group() {
    let ca = TestCa::root("mesh").unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server_cert = workload(&ca, SERVER);
    let server_ctx = tls::server_context(&server_cert, TlsSettings::default()).unwrap();
    let roots = bundle(&ca);
    let server_roots = Arc::clone(&roots);
    let server =
        tokio::spawn(async move { tls::accept(&server_ctx, b, server_roots, domains()).await });

    let client_cert = workload(&ca, CLIENT);
    let client_ctx = tls::client_context(&client_cert, TlsSettings::default()).unwrap();
    let stream = tls::connect(&client_ctx, a, roots, PeerPolicy::Identities(vec![id(SERVER)]))
        .await
        .unwrap();
    let (server_stream, client_identity) = server.await.unwrap().unwrap();

    assert_eq!(client_identity, id(CLIENT));
    assert_eq!(tls::peer_identity(&stream).unwrap(), id(SERVER));
    let ssl = stream.ssl();
    assert_eq!(ssl.version2(), Some(SslVersion::TLS1_3));
    assert_eq!(ssl.selected_alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(ssl.curve_name(), Some("X25519MLKEM768"));
    assert!(!ssl.session_reused());
    drop(server_stream);
}

#[tokio::test]
async fn classical_client_falls_back_to_x25519() {
    let ca = TestCa::root("mesh").unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server_ctx = tls::server_context(&workload(&ca, SERVER), TlsSettings::default()).unwrap();
    let roots = bundle(&ca);
    let server_roots = Arc::clone(&roots);
    let server =
        tokio::spawn(async move { tls::accept(&server_ctx, b, server_roots, domains()).await });
    let settings = TlsSettings { key_exchange: KeyExchange::Classical, ..Default::default() };
    let client_ctx = tls::client_context(&workload(&ca, CLIENT), settings).unwrap();
    let stream = tls::connect(&client_ctx, a, roots, PeerPolicy::Identities(vec![id(SERVER)]))
        .await
        .unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(stream.ssl().curve_name(), Some("X25519"));
}

fn expect_peer(err: TlsError) -> PeerError {
    match err {
        TlsError::Peer(reason) => reason,
        other => panic!("expected a peer rejection, got {other}"),
    }
}

#[tokio::test]
async fn client_refuses_each_bad_server() {
    let ca = TestCa::root("mesh").unwrap();
    let expected = || PeerPolicy::Identities(vec![id(SERVER)]);

    let expired = LeafSpec { valid_from: -7200, valid_until: -3600, ..LeafSpec::workload(SERVER) };
    let err = expect_peer(
        handshake_with_hostile_server(ca.issue(&expired).unwrap(), &ca, expected()).await,
    );
    assert!(matches!(&err, PeerError::Chain(r) if r.contains("expired")), "{err}");

    let foreign_td = LeafSpec::workload("spiffe://evil.example/ns/default/sa/server");
    let policy = PeerPolicy::Identities(vec![id(SERVER)]);
    let err = expect_peer(
        handshake_with_hostile_server(ca.issue(&foreign_td).unwrap(), &ca, policy).await,
    );
    assert!(matches!(err, PeerError::UnexpectedIdentity { .. }), "{err}");
    let err = expect_peer(
        handshake_with_hostile_server(ca.issue(&foreign_td).unwrap(), &ca, domains()).await,
    );
    assert_eq!(err, PeerError::TrustDomain("evil.example".into()));

    let two_sans =
        LeafSpec { uri_sans: vec![SERVER.into(), CLIENT.into()], ..LeafSpec::workload(SERVER) };
    let err = expect_peer(
        handshake_with_hostile_server(ca.issue(&two_sans).unwrap(), &ca, expected()).await,
    );
    assert_eq!(err, PeerError::SanCount(2));

    let uri_and_dns =
        LeafSpec { dns_sans: vec!["server.default.svc".into()], ..LeafSpec::workload(SERVER) };
    let err = expect_peer(
        handshake_with_hostile_server(ca.issue(&uri_and_dns).unwrap(), &ca, expected()).await,
    );
    assert_eq!(err, PeerError::SanCount(2));

    let ca_leaf = LeafSpec { is_ca: true, ..LeafSpec::workload(SERVER) };
    let err = expect_peer(
        handshake_with_hostile_server(ca.issue(&ca_leaf).unwrap(), &ca, expected()).await,
    );
    assert_eq!(err, PeerError::LeafIsCa);

    let other_root = TestCa::root("attacker").unwrap();
    let err = expect_peer(
        handshake_with_hostile_server(
            other_root.issue(&LeafSpec::workload(SERVER)).unwrap(),
            &ca,
            expected(),
        )
        .await,
    );
    assert!(matches!(err, PeerError::Chain(_)), "{err}");

    let wrong_identity = LeafSpec::workload("spiffe://cluster.local/ns/default/sa/impostor");
    let err = expect_peer(
        handshake_with_hostile_server(ca.issue(&wrong_identity).unwrap(), &ca, expected()).await,
    );
    assert!(matches!(err, PeerError::UnexpectedIdentity { .. }), "{err}");

    let not_spiffe = LeafSpec::workload("https://example.com/ns/a/sa/b");
    let err = expect_peer(
        handshake_with_hostile_server(ca.issue(&not_spiffe).unwrap(), &ca, expected()).await,
    );
    assert!(matches!(err, PeerError::SpiffeId(_)), "{err}");
}

#[tokio::test]
async fn server_refuses_each_bad_client() {
    let ca = TestCa::root("mesh").unwrap();
    let cases = [
        LeafSpec { valid_from: -7200, valid_until: -3600, ..LeafSpec::workload(CLIENT) },
        LeafSpec::workload("spiffe://evil.example/ns/default/sa/client"),
        LeafSpec { uri_sans: vec![CLIENT.into(), SERVER.into()], ..LeafSpec::workload(CLIENT) },
        LeafSpec { is_ca: true, ..LeafSpec::workload(CLIENT) },
        LeafSpec { uri_sans: vec![], ..LeafSpec::workload(CLIENT) },
    ];
    for spec in cases {
        let err = handshake_with_hostile_client(ca.issue(&spec).unwrap(), &ca).await;
        assert!(matches!(err, TlsError::Peer(_)), "{spec:?}: {err}");
    }
    let other_root = TestCa::root("attacker").unwrap();
    let err =
        handshake_with_hostile_client(other_root.issue(&LeafSpec::workload(CLIENT)).unwrap(), &ca)
            .await;
    assert!(matches!(err, TlsError::Peer(PeerError::Chain(_))), "{err}");
}

#[tokio::test]
async fn server_requires_a_client_certificate() {
    let ca = TestCa::root("mesh").unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = tokio::spawn(async move {
        let mut builder = SslContextBuilder::new(SslMethod::tls()).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        builder.set_alpn_protos(b"\x02h2").unwrap();
        let ssl = boring::ssl::Ssl::new(&builder.build()).unwrap();
        let _ = tokio_boring::SslStreamBuilder::new(ssl, a).connect().await;
    });
    let ctx = tls::server_context(&workload(&ca, SERVER), TlsSettings::default()).unwrap();
    let err = tls::accept(&ctx, b, bundle(&ca), domains()).await.expect_err("no client cert");
    client.abort();
    assert!(
        matches!(err, TlsError::Handshake(_) | TlsError::Peer(PeerError::NoCertificate)),
        "{err}"
    );
}

#[tokio::test]
async fn tls12_only_clients_are_refused_by_default() {
    let ca = TestCa::root("mesh").unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let issued = ca.issue(&LeafSpec::workload(CLIENT)).unwrap();
    let client = tokio::spawn(async move {
        let mut builder = SslContextBuilder::new(SslMethod::tls()).unwrap();
        builder.set_certificate(&issued.leaf).unwrap();
        builder.set_private_key(&issued.key).unwrap();
        builder.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        builder.set_alpn_protos(b"\x02h2").unwrap();
        let ssl = boring::ssl::Ssl::new(&builder.build()).unwrap();
        let _ = tokio_boring::SslStreamBuilder::new(ssl, a).connect().await;
    });
    let ctx = tls::server_context(&workload(&ca, SERVER), TlsSettings::default()).unwrap();
    let err = tls::accept(&ctx, b, bundle(&ca), domains()).await.expect_err("TLS 1.2 refused");
    client.abort();
    assert!(matches!(err, TlsError::Handshake(_)), "{err}");
}

#[tokio::test]
async fn intermediate_chains_verify_and_a_rotated_root_overlaps() {
    let old_root = TestCa::root("old").unwrap();
    let new_root = TestCa::root("new").unwrap();
    let intermediate = new_root.intermediate("issuing").unwrap();
    let server_cert = workload(&intermediate, SERVER);
    assert_eq!(server_cert.intermediates().len(), 1);

    // The client trusts both roots during the rotation overlap.
    let both = format!("{}{}", old_root.root_pem(), new_root.root_pem());
    let trust = Arc::new(TrustBundle::from_pem(both.as_bytes()).unwrap());
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server_ctx = tls::server_context(&server_cert, TlsSettings::default()).unwrap();
    let server_trust = Arc::clone(&trust);
    let server =
        tokio::spawn(async move { tls::accept(&server_ctx, b, server_trust, domains()).await });
    let client_ctx =
        tls::client_context(&workload(&old_root, CLIENT), TlsSettings::default()).unwrap();
    tls::connect(&client_ctx, a, trust, PeerPolicy::Identities(vec![id(SERVER)])).await.unwrap();
    assert_eq!(server.await.unwrap().unwrap().1, id(CLIENT));
}

#[test]
fn workload_certificate_checks_what_the_ca_returned() {
    let ca = TestCa::root("mesh").unwrap();
    let issued = ca.issue(&LeafSpec::workload(SERVER)).unwrap();
    let err = WorkloadCertificate::from_chain_pem(&id(CLIENT), issued.key, &issued.chain_pem)
        .unwrap_err();
    assert!(
        err.to_string().contains("expected spiffe://cluster.local/ns/default/sa/client"),
        "{err}"
    );

    let issued = ca.issue(&LeafSpec::workload(SERVER)).unwrap();
    let other = ca.issue(&LeafSpec::workload(SERVER)).unwrap();
    let err =
        WorkloadCertificate::from_chain_pem(&id(SERVER), other.key, &issued.chain_pem).unwrap_err();
    assert!(matches!(err, mesh_identity::CertificateError::KeyMismatch), "{err}");

    let issued = ca.issue(&LeafSpec::workload(SERVER)).unwrap();
    let err = WorkloadCertificate::from_chain_pem(&id(SERVER), issued.key, &issued.chain_pem[..1])
        .unwrap_err();
    assert!(matches!(err, mesh_identity::CertificateError::Empty(_)), "{err}");

    let issued = ca.issue(&LeafSpec::workload(SERVER)).unwrap();
    let garbage = vec!["-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".to_owned()];
    assert!(WorkloadCertificate::from_chain_pem(&id(SERVER), issued.key, &garbage).is_err());

    let issued = ca.issue(&LeafSpec::workload(SERVER)).unwrap();
    let cert =
        WorkloadCertificate::from_chain_pem(&id(SERVER), issued.key, &issued.chain_pem).unwrap();
    let half =
        cert.not_before() + (cert.not_after().duration_since(cert.not_before()).unwrap() / 2);
    assert_eq!(cert.refresh_at(), half);
}
