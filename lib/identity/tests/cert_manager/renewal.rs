//! Renewal at half life, backoff through a CA outage, expiry.

use std::sync::Arc;

use mesh_identity::manager::{Config, Error, FetchError};

use crate::fake_ca::VALIDITY_SECS;
use crate::{Mesh, assert_close, id, next_cert, no_jitter, same, start};

const HALF_LIFE: f64 = VALIDITY_SECS as f64 / 2.0;

/// Tracks one identity and checks its renewal happens within
/// [`earliest`, `latest`] seconds of issue: not a moment before, exactly
/// once, and watchers and `get` then have the new certificate.
async fn renewal_within(config: Config, earliest: f64, latest: f64) {
    let mesh = start(config);
    let a = id("a");
    let mut rx = mesh.manager.subscribe(&a);
    mesh.manager.track(&a);
    let first = next_cert(&mut rx).await.unwrap();

    mesh.run_until(earliest - 1.0).await;
    assert_eq!(mesh.call_count(), 1, "no renewal before {earliest}s");
    assert!(!rx.has_changed().unwrap());

    mesh.run_until(latest + 1.0).await;
    let times = mesh.call_times();
    assert_eq!(times.len(), 2, "one renewal by {latest}s");
    assert!((earliest..=latest).contains(&times[1]), "renewed at {}s", times[1]);
    let second = rx.borrow_and_update().clone().unwrap();
    assert!(!Arc::ptr_eq(&first, &second), "watchers see the new cert");
    assert!(same(&Some(mesh.manager.get(&a).await.unwrap()), &second));
}

#[tokio::test(start_paused = true)]
async fn renewal_is_at_half_life() {
    // Certificates are stamped in whole seconds: half life is up to a
    // second before 1800s after issue.
    renewal_within(no_jitter(), HALF_LIFE - 1.0, HALF_LIFE).await;
}

#[tokio::test(start_paused = true)]
async fn jitter_renews_at_most_a_tenth_early() {
    renewal_within(Config::default(), (HALF_LIFE - 1.0) * 0.9, HALF_LIFE).await;
}

/// A manager holding a certificate for `a` issued at 0, with the CA down
/// from then on; returns it and the first certificate.
async fn outage() -> (Mesh, Arc<mesh_identity::WorkloadCertificate>) {
    let mesh = start(no_jitter());
    let first = mesh.manager.get(&id("a")).await.unwrap();
    mesh.ca.set_down(true);
    (mesh, first)
}

#[tokio::test(start_paused = true)]
async fn outage_backs_off_with_a_cap_and_keeps_serving_the_old_cert() {
    let (mesh, first) = outage().await;
    let mut rx = mesh.manager.subscribe(&id("a"));
    mesh.run_until(3000.0).await;

    let times = mesh.call_times();
    assert!((HALF_LIFE - 1.0..=HALF_LIFE).contains(&times[1]));
    let gaps: Vec<f64> = times[1..].windows(2).map(|w| w[1] - w[0]).collect();
    let doubling = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6];
    let want = doubling.iter().copied().chain(std::iter::repeat(30.0));
    assert!(gaps.len() > 30, "kept retrying: {gaps:?}");
    for (i, (got, want)) in gaps.iter().zip(want).enumerate() {
        assert_close(*got, want, &format!("gap {i}"));
    }
    assert!(same(&rx.borrow_and_update(), &first));
    assert!(Arc::ptr_eq(&mesh.manager.get(&id("a")).await.unwrap(), &first));
    assert_eq!(mesh.metric("mesh_identity_certificates"), Some(1.0));

    mesh.ca.set_down(false);
    let second = next_cert(&mut rx).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    let times = mesh.call_times();
    let gap = times[times.len() - 1] - times[times.len() - 2];
    assert_close(gap, 30.0, "first call after recovery");
}

#[tokio::test(start_paused = true)]
async fn a_cert_that_expires_during_an_outage_is_no_longer_served() {
    let (mesh, first) = outage().await;
    let mut rx = mesh.manager.subscribe(&id("a"));
    mesh.run_until(VALIDITY_SECS as f64 - 2.0).await;
    assert!(same(&rx.borrow_and_update(), &first), "served until expiry");

    assert!(next_cert(&mut rx).await.is_none());
    let expired_at = mesh.now();
    assert!(
        (VALIDITY_SECS as f64 - 1.0..=VALIDITY_SECS as f64).contains(&expired_at),
        "unpublished at {expired_at}s"
    );
    assert_eq!(mesh.metric("mesh_identity_certificates"), Some(0.0));

    // `get` now waits for the next attempt, and fails with it.
    let err = mesh.manager.get(&id("a")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Fetch { source, .. } if matches!(**source, FetchError::Unavailable(_))),
        "{err}"
    );
    assert!(mesh.now() - expired_at <= 30.0 + 0.005);

    // Once the CA is back, a waiting `get` gets a new certificate at the
    // next attempt, and watchers see it.
    mesh.ca.set_down(false);
    let fresh = mesh.manager.get(&id("a")).await.unwrap();
    assert!(!Arc::ptr_eq(&fresh, &first));
    assert!(same(&next_cert(&mut rx).await, &fresh));
}
