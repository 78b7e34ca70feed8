//! Forgetting identities, metrics, shutdown.

use mesh_identity::manager::{Config, Error};

use crate::fake_ca::VALIDITY_SECS;
use crate::{Mesh, id, next_cert, settle, start};

fn expiry_series(sa: &str) -> String {
    format!(r#"mesh_identity_certificate_expiry_seconds{{identity="{}"}}"#, id(sa))
}

/// Gets certificates for `names`, each on its own.
async fn holding(mesh: &Mesh, names: &[&str]) {
    for sa in names {
        mesh.manager.get(&id(sa)).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn forget_unpublishes_drops_the_series_and_stops_renewal() {
    let mesh = start(Config::default());
    holding(&mesh, &["a", "b"]).await;
    let mut rx = mesh.manager.subscribe(&id("a"));
    assert!(rx.borrow_and_update().is_some());
    assert!(mesh.metric(&expiry_series("a")).is_some());

    mesh.manager.forget(&id("a"));
    assert!(next_cert(&mut rx).await.is_none());
    assert_eq!(mesh.metric(&expiry_series("a")), None);
    assert!(mesh.metric(&expiry_series("b")).is_some());
    assert_eq!(mesh.metric("mesh_identity_certificates"), Some(1.0));

    // Two lifetimes later only `b` has been renewed (and kept valid).
    mesh.run_until(2.0 * VALIDITY_SECS as f64).await;
    let a_calls = mesh.ca.calls().iter().filter(|c| c.identity == id("a")).count();
    assert_eq!(a_calls, 1);
    assert!(mesh.call_count() > 3);
    assert!(mesh.metric(&expiry_series("b")).is_some());
    assert!(!rx.has_changed().unwrap());
}

#[tokio::test(start_paused = true)]
async fn forget_fails_waiting_gets_and_abandons_the_request() {
    let mesh = start(Config { max_concurrent_fetches: 1, ..Config::default() });
    mesh.ca.hang_next(1);
    let manager = mesh.manager.clone();
    let waiting = tokio::spawn(async move { manager.get(&id("a")).await });
    mesh.calls_reach(1).await;
    mesh.manager.forget(&id("a"));
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(&err, Error::Forgotten(who) if **who == id("a")), "{err}");
    // The abandoned request freed its slot: the next one starts at once.
    assert!(mesh.manager.get(&id("b")).await.is_ok());
    assert_eq!(mesh.metric("mesh_identity_certificates"), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn metrics_show_served_certs_expiry_requests_and_errors() {
    let mesh = start(Config::default());
    mesh.ca.fail_next(1);
    mesh.manager.track(&id("a"));
    mesh.manager.track(&id("b"));
    mesh.calls_reach(3).await; // a fails, b succeeds, a is retried
    settle().await;

    let text = mesh.metrics();
    for line in [
        "# TYPE mesh_identity_certificates gauge",
        "mesh_identity_certificates 2",
        "# TYPE mesh_identity_certificate_expiry_seconds gauge",
        "# TYPE mesh_identity_ca_requests counter",
        r#"mesh_identity_ca_requests_total{priority="prefetch"} 3"#,
        "# TYPE mesh_identity_ca_request_errors counter",
        r#"mesh_identity_ca_request_errors_total{reason="unavailable"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let validity = VALIDITY_SECS as f64;
    for sa in ["a", "b"] {
        let left = mesh.metric(&expiry_series(sa)).unwrap();
        assert!((validity - 1.2..=validity).contains(&left), "{sa}: {left}");
    }

    mesh.run_until(600.0).await;
    let left = mesh.metric(&expiry_series("b")).unwrap();
    assert!((validity - 601.0..=validity - 600.0).contains(&left), "{left}");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_manager_stops_its_task() {
    let Mesh { manager, ca, registry, .. } = start(Config::default());
    manager.get(&id("a")).await.unwrap();
    let mut rx = manager.subscribe(&id("a"));
    assert!(rx.borrow_and_update().is_some());
    assert_eq!(ca.holders(), 2, "the test's and the manager's");

    drop(manager);
    assert!(rx.changed().await.is_ok());
    assert!(rx.borrow_and_update().is_none(), "watchers see the cert go");
    assert!(rx.changed().await.is_err(), "then a closed channel");
    settle().await;
    assert_eq!(ca.holders(), 1, "the provider was dropped with the task");

    // The registry outlives the manager and simply reports nothing.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("mesh_identity_certificates 0"), "{text}");
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let err =
        mesh_identity::CertificateManager::new(crate::fake_ca::FakeCa::new(), Config::default())
            .unwrap_err();
    assert!(matches!(err, Error::NoRuntime(_)), "{err}");
}
