//! One proxy, several identities: the server context is chosen by the
//! destination's identity before the handshake, and a renewed certificate
//! serves new connections while an established one keeps working.

use std::sync::Arc;

use mesh_identity::contexts::TlsContexts;
use mesh_identity::tls::{self, TlsSettings};
use mesh_identity::verify::PeerPolicy;
use mesh_model::Identity;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_boring::SslStream;

use crate::{id, no_jitter, start, within};

/// Handshakes a client expecting `expected` with a server presenting
/// `presented` (both from `contexts`), returning both ends.
async fn connect(
    contexts: &TlsContexts,
    presented: &Identity,
    client_identity: &Identity,
    expected: &Identity,
) -> Result<(SslStream<DuplexStream>, SslStream<DuplexStream>), tls::TlsError> {
    let server = contexts.for_identity(presented).await.unwrap();
    let client = contexts.for_identity(client_identity).await.unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = tls::accept(
        &server.server,
        b,
        Arc::clone(&server.trust),
        PeerPolicy::TrustDomains(vec!["cluster.local".into()]),
    );
    let dial = tls::connect(
        &client.client,
        a,
        Arc::clone(&client.trust),
        PeerPolicy::Identities(vec![expected.clone()]),
    );
    let (accepted, dialled) = tokio::join!(accept, dial);
    Ok((dialled?, accepted?.0))
}

fn serial(stream: &SslStream<DuplexStream>) -> Vec<u8> {
    stream.ssl().peer_certificate().unwrap().serial_number().to_bn().unwrap().to_vec()
}

#[tokio::test(start_paused = true)]
async fn server_context_follows_the_destination_identity() {
    let mesh = start(no_jitter());
    let contexts = TlsContexts::new(mesh.manager.clone(), TlsSettings::default());
    let (client, reviews, ratings) = (id("client"), id("reviews"), id("ratings"));
    for dest in [&reviews, &ratings] {
        let (dialled, _) = connect(&contexts, dest, &client, dest).await.unwrap();
        assert_eq!(&tls::peer_identity(&dialled).unwrap(), dest);
    }
    // Presenting ratings to a client that expects reviews fails.
    let err = connect(&contexts, &ratings, &client, &reviews).await.unwrap_err();
    assert!(err.to_string().contains("expected one of"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn renewal_serves_new_connections_and_keeps_old_ones() {
    let mesh = start(no_jitter());
    let contexts = TlsContexts::new(mesh.manager.clone(), TlsSettings::default());
    let (client, server) = (id("client"), id("server"));
    let (mut old_client, mut old_server) =
        connect(&contexts, &server, &client, &server).await.unwrap();
    let first_serial = serial(&old_client);

    // Past half life of the one-hour certificates: both are renewed.
    let mut updates = mesh.manager.subscribe(&server);
    updates.borrow_and_update();
    within(3600.0, updates.changed()).await.unwrap();

    let (new_client, _new_server) = connect(&contexts, &server, &client, &server).await.unwrap();
    assert_ne!(serial(&new_client), first_serial, "a new connection gets the renewed certificate");

    old_client.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    old_server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here", "the established connection is untouched");
}
