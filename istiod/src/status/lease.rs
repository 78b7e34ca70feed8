//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! istiod replicas exactly one writes status.
//!
//! The holder renews `spec.renewTime` every `renew_every`; another replica
//! takes the lease over once `renewTime + leaseDurationSeconds` has passed.
//! Every write carries the `resourceVersion` it read, so two replicas
//! racing for an expired lease cannot both win: the API server refuses the
//! second with a conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Where and who.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    /// Lease name (upstream istiod uses one per controller; ours is
    /// `istio-status-leader`).
    pub name: String,
    /// This replica's identity (pod name).
    pub holder: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, holder: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: "istio-status-leader".to_owned(),
            holder: holder.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// What one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Leading,
    Following,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expired(spec: &LeaseSpec, at: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let deadline = renewed.0.as_second().saturating_add(seconds);
    at.as_second() >= deadline
}

async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Attempt, kube::Error> {
    let seconds = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let ours = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(cfg.holder.clone()),
        lease_duration_seconds: Some(seconds),
        acquire_time: acquired.or_else(|| Some(now())),
        renew_time: Some(now()),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(ours(0, None)),
            };
            api.create(&PostParams::default(), &lease).await?;
            Ok(Attempt::Leading)
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let held_by_us = spec.holder_identity.as_deref() == Some(cfg.holder.as_str());
            if !held_by_us && !expired(&spec, Timestamp::now()) {
                return Ok(Attempt::Following);
            }
            let transitions = spec.lease_transitions.unwrap_or(0);
            lease.spec = Some(if held_by_us {
                ours(transitions, spec.acquire_time)
            } else {
                ours(transitions.saturating_add(1), None)
            });
            // `replace` sends the resourceVersion we read: a concurrent
            // writer makes this fail with 409 instead of both winning.
            api.replace(&cfg.name, &PostParams::default(), &lease).await?;
            Ok(Attempt::Leading)
        }
    }
}

/// Runs the election until the receiver side is gone; the channel says
/// whether this replica leads.
pub fn elect(
    client: Client,
    cfg: LeaseConfig,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        loop {
            let leading = match try_acquire(&api, &cfg).await {
                Ok(attempt) => attempt == Attempt::Leading,
                Err(kube::Error::Api(status)) if status.code == 409 => false,
                Err(e) => {
                    tracing::warn!(lease = %cfg.name, error = %e, "leader election attempt failed");
                    // Without a successful renewal we cannot know we still
                    // lead; stop writing rather than risk two writers.
                    false
                }
            };
            if *tx.borrow() != leading {
                tracing::info!(lease = %cfg.name, holder = %cfg.holder, leading, "leadership changed");
            }
            tx.send_replace(leading);
            tokio::select! {
                () = tokio::time::sleep(cfg.renew_every) => {}
                () = tx.closed() => return,
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration_from_the_last_renewal() {
        let renewed: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        let at = |s: i64| Timestamp::from_second(renewed.as_second() + s).unwrap();
        assert!(!expired(&spec, at(14)));
        assert!(expired(&spec, at(15)));
        assert!(expired(&LeaseSpec::default(), at(0)));
    }
}
