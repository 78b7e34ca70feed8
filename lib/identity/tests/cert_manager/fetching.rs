//! Urgent fetches, shared requests, priorities and failed first requests.

use std::sync::Arc;

use mesh_identity::manager::{Config, Error, FetchError};

use crate::{assert_close, id, settle, start};

#[tokio::test(start_paused = true)]
async fn get_fetches_once_then_serves_the_held_cert() {
    let mesh = start(Config::default());
    let a = id("a");
    let first = mesh.manager.get(&a).await.unwrap();
    assert_eq!(first.identity(), &a);
    let again = mesh.manager.get(&a).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(mesh.call_count(), 1);
    assert_eq!(mesh.metric(r#"mesh_identity_ca_requests_total{priority="urgent"}"#), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn concurrent_gets_share_one_request() {
    let mesh = start(Config::default());
    let a = id("a");
    mesh.ca.hang_next(1);
    let gets: Vec<_> = (0..5)
        .map(|_| {
            let manager = mesh.manager.clone();
            let a = a.clone();
            tokio::spawn(async move { manager.get(&a).await })
        })
        .collect();
    mesh.calls_reach(1).await;
    settle().await;
    assert_eq!(mesh.call_count(), 1, "the other gets joined the request");
    mesh.ca.release(1);
    let mut certs = Vec::new();
    for get in gets {
        certs.push(get.await.unwrap().unwrap());
    }
    assert!(certs.iter().all(|c| Arc::ptr_eq(c, &certs[0])));
    assert_eq!(mesh.call_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn urgent_requests_go_ahead_of_queued_prefetches() {
    let mesh = start(Config { max_concurrent_fetches: 2, ..Config::default() });
    // Two prefetches take both slots and hang; two more queue behind them.
    mesh.ca.hang_next(2);
    for sa in ["p1", "p2", "p3", "p4"] {
        mesh.manager.track(&id(sa));
    }
    mesh.calls_reach(2).await;
    settle().await;
    assert_eq!(mesh.call_count(), 2, "the limit holds");
    let manager = mesh.manager.clone();
    let urgent = tokio::spawn(async move { manager.get(&id("urgent")).await });
    settle().await;
    assert_eq!(mesh.call_count(), 2, "the urgent request waits for a slot");

    mesh.ca.release(1);
    let order: Vec<String> =
        mesh.calls_reach(5).await.iter().map(|c| c.identity.service_account().to_owned()).collect();
    assert_eq!(order, ["p1", "p2", "urgent", "p3", "p4"]);
    assert_eq!(urgent.await.unwrap().unwrap().identity(), &id("urgent"));
    assert_eq!(mesh.metric(r#"mesh_identity_ca_requests_total{priority="urgent"}"#), Some(1.0));
    assert_eq!(mesh.metric(r#"mesh_identity_ca_requests_total{priority="prefetch"}"#), Some(4.0));
}

#[tokio::test(start_paused = true)]
async fn a_tracked_identity_still_queued_is_upgraded_by_get() {
    let mesh = start(Config { max_concurrent_fetches: 1, ..Config::default() });
    mesh.ca.hang_next(1);
    for sa in ["busy", "p1", "p2", "wanted"] {
        mesh.manager.track(&id(sa));
    }
    mesh.calls_reach(1).await;
    let manager = mesh.manager.clone();
    let wanted = tokio::spawn(async move { manager.get(&id("wanted")).await });
    settle().await;
    mesh.ca.release(1);
    let order: Vec<String> =
        mesh.calls_reach(4).await.iter().map(|c| c.identity.service_account().to_owned()).collect();
    assert_eq!(order, ["busy", "wanted", "p1", "p2"]);
    assert!(wanted.await.unwrap().is_ok());
}

/// Starts a manager whose CA answers the first request as `script` sets it
/// up, and returns the error the waiting `get` gets, with the time.
async fn first_get_fails(
    script: impl FnOnce(&crate::fake_ca::FakeCa),
) -> (crate::Mesh, FetchError) {
    let mesh = start(Config::default());
    script(&mesh.ca);
    let err = mesh.manager.get(&id("a")).await.unwrap_err();
    let Error::Fetch { identity, source } = err else {
        panic!("expected a fetch error, got {err:?}");
    };
    assert_eq!(*identity, id("a"));
    let source = Arc::try_unwrap(source).unwrap();
    (mesh, source)
}

/// After a failed first request the next `get` waits for the retry, which
/// comes after the initial backoff.
async fn retry_succeeds_after_backoff(mesh: &crate::Mesh) {
    let failed_at = mesh.now();
    let cert = mesh.manager.get(&id("a")).await.unwrap();
    assert_eq!(cert.identity(), &id("a"));
    let times = mesh.call_times();
    assert_eq!(times.len(), 2);
    assert_close(times[1], failed_at + 0.1, "retry");
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_request_fails_the_get_and_is_retried() {
    let (mesh, err) = first_get_fails(|ca| ca.fail_next(1)).await;
    assert!(matches!(err, FetchError::Unavailable(_)), "{err}");
    retry_succeeds_after_backoff(&mesh).await;
    assert_eq!(
        mesh.metric(r#"mesh_identity_ca_request_errors_total{reason="unavailable"}"#),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_certificate_for_another_identity_is_refused() {
    let (mesh, err) = first_get_fails(|ca| ca.misissue_next(1)).await;
    assert!(matches!(err, FetchError::WrongIdentity { .. }), "{err}");
    retry_succeeds_after_backoff(&mesh).await;
    assert_eq!(
        mesh.metric(r#"mesh_identity_ca_request_errors_total{reason="wrong_identity"}"#),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_request_times_out() {
    let (mesh, err) = first_get_fails(|ca| ca.hang_next(1)).await;
    assert!(matches!(err, FetchError::Timeout(_)), "{err}");
    assert_close(mesh.now(), 10.0, "timeout");
    retry_succeeds_after_backoff(&mesh).await;
}
