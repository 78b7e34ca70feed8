//! Policy changes reach open connections: node b's reconciler closes the
//! ones a new policy denies (HBONE and plaintext on 15006), and new ones
//! are refused. PeerAuthentication STRICT as istiod synthesizes it.

use std::net::SocketAddr;

use mesh_proto::security as sec;

use super::harness::*;
use super::{deny_client, prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_policy_closes_an_open_connection_and_refuses_new_ones() {
    let mesh = mesh(&prefix("ic")).await;
    echo_all(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let stream = open(&mesh.client, target, b"hello").await;
    mesh.b.series("istio_tcp_connections_opened_total", &["reporter=\"destination\""]).await;
    assert_eq!(mesh.b.proxies.connections().len(), 1);

    mesh.b.state.write(|s| s.insert_policy(deny_client()));
    assert_closed(stream).await;
    assert_eq!(mesh.b.proxies.connections().closed_by_policy().get(), 1);
    let closed =
        mesh.b.series("istio_tcp_connections_closed_total", &["reporter=\"destination\""]).await;
    assert!(closed.ends_with(" 1"), "{closed}");
    assert!(until_closed(&mesh.client, target, b"again").await.is_empty(), "refused");
}

/// What istiod synthesizes for a STRICT PeerAuthentication `strict` in
/// `default` (see istiod's `translate/peer_authentication.rs`).
fn strict() -> mesh_model::Authorization {
    let presence =
        sec::StringMatch { match_type: Some(sec::string_match::MatchType::Presence(())) };
    let policy = sec::Authorization {
        name: "converted_peer_authentication_strict".into(),
        namespace: "default".into(),
        scope: sec::Scope::WorkloadSelector as i32,
        action: sec::Action::Deny as i32,
        rules: vec![sec::Rule {
            clauses: vec![sec::Clause {
                matches: vec![sec::Match { not_principals: vec![presence], ..Default::default() }],
            }],
        }],
        ..Default::default()
    };
    mesh_model::Authorization::try_from(policy).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentication_strict_rejects_plaintext_and_admits_mtls() {
    let mesh = mesh(&prefix("ik")).await;
    echo_all(&mesh.server, APP_PORT);
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    // A plaintext connection from outside the mesh, open before STRICT.
    let plaintext = open(&mesh.legacy, target, b"hello").await;
    let opened = "istio_tcp_connections_opened_total";
    mesh.b.series(opened, &["connection_security_policy=\"unknown\""]).await;

    mesh.b.state.write(|s| s.insert_policy(strict()));
    mesh.server_policies(&mesh.b, &["default/converted_peer_authentication_strict"]);

    assert_closed(plaintext).await;
    assert!(until_closed(&mesh.legacy, target, b"plain").await.is_empty(), "15006 refuses");
    assert_eq!(roundtrip(&mesh.client, target, b"over mtls").await, b"over mtls");
    let mtls = mesh.b.series(opened, &["connection_security_policy=\"mutual_tls\""]).await;
    assert!(mtls.contains(&format!("source_principal=\"{CLIENT_ID}\"")), "{mtls}");
}
