//! The certificate manager against a scripted CA, all on paused tokio time:
//! fetching and sharing requests, priorities, renewal, outages, expiry,
//! forgetting, shutdown and metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod contexts;
mod fake_ca;
mod fetching;
mod lifecycle;
mod renewal;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::WorkloadCertificate;
use mesh_identity::manager::{CertificateManager, Config};
use mesh_model::Identity;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;

use fake_ca::{Call, FakeCa};

pub type Current = Option<Arc<WorkloadCertificate>>;

pub fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "test", sa).unwrap()
}

/// A manager wired to a fake CA, with its metrics registered; `start` is
/// time zero for the assertions.
#[derive(Debug)]
pub struct Mesh {
    pub manager: CertificateManager,
    pub ca: FakeCa,
    pub registry: Registry,
    pub start: Instant,
}

pub fn start(config: Config) -> Mesh {
    let ca = FakeCa::new();
    let manager = CertificateManager::new(ca.clone(), config).unwrap();
    let mut registry = Registry::default();
    manager.register(&mut registry);
    Mesh { manager, ca, registry, start: Instant::now() }
}

/// Defaults, but renewal exactly at half life.
pub fn no_jitter() -> Config {
    Config { renewal_jitter: 0.0, ..Config::default() }
}

impl Mesh {
    /// Seconds since `start`.
    pub fn elapsed(&self, at: Instant) -> f64 {
        at.duration_since(self.start).as_secs_f64()
    }

    pub fn now(&self) -> f64 {
        self.elapsed(Instant::now())
    }

    /// Lets (paused) time run until `secs` after start.
    pub async fn run_until(&self, secs: f64) {
        tokio::time::sleep_until(self.start + Duration::from_secs_f64(secs)).await;
    }

    /// Waits (in tokio time) until the CA has seen `n` calls.
    pub async fn calls_reach(&self, n: usize) -> Vec<Call> {
        let mut calls = self.ca.watch_calls();
        within(3600.0, calls.wait_for(|c| c.len() >= n)).await.unwrap().clone()
    }

    pub fn call_count(&self) -> usize {
        self.ca.calls().len()
    }

    pub fn call_times(&self) -> Vec<f64> {
        self.ca.calls().iter().map(|c| self.elapsed(c.at)).collect()
    }

    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    /// The value of the series `name_and_labels` (e.g. `x{a="b"}`), if present.
    pub fn metric(&self, name_and_labels: &str) -> Option<f64> {
        self.metrics().lines().find_map(|line| {
            let value = line.strip_prefix(name_and_labels)?.strip_prefix(' ')?;
            Some(value.parse().unwrap())
        })
    }
}

/// `fut`, failing the test if it takes more than `secs` of tokio time.
pub async fn within<F: Future>(secs: f64, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs_f64(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("not done within {secs}s"))
}

/// The next value published to `rx` (waiting up to an hour of tokio time).
pub async fn next_cert(rx: &mut watch::Receiver<Current>) -> Current {
    within(3600.0, rx.changed()).await.unwrap();
    rx.borrow_and_update().clone()
}

/// Lets every ready task run (the manager's actor and request tasks)
/// without moving time.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

pub fn same(a: &Current, b: &Arc<WorkloadCertificate>) -> bool {
    a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b))
}

/// `got` within a few milliseconds of `want` (timer granularity).
pub fn assert_close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() < 0.005, "{what}: got {got:.3}s, want {want:.3}s");
}
