//! The certificate manager: one certificate per workload identity, fetched
//! from the CA, cached, renewed before it expires and published to whoever
//! terminates TLS for that identity. Shared by ztunnel and the waypoint.
//!
//! # Design
//!
//! - **One actor task owns all state** (`actor.rs`): a map from identity to
//!   an enum state machine (`state.rs`: `Initializing`, `Available`,
//!   `Renewing`, `Backoff`, named fields, pure transitions). The
//!   [`CertificateManager`] handle sends it commands over an unbounded mpsc
//!   channel, so `track` and `forget` are synchronous and `get` awaits a
//!   oneshot reply. No lock is ever held across an await.
//! - **Published certificates** live in a map of `watch` channels
//!   (`published.rs`) behind a std mutex held only for a lookup or a swap:
//!   the actor writes, [`CertificateManager::subscribe`] hands out
//!   receivers, `get` serves a held certificate from there without a round
//!   trip, and the metrics collector reads expiry deadlines at scrape time.
//! - **CA requests** run as tasks of a `JoinSet` owned by the actor, at most
//!   [`Config::max_concurrent_fetches`] at once, at most one per identity
//!   (concurrent `get`s join it), each under [`Config::fetch_timeout`].
//!   Waiting requests sit in two FIFO queues (`scheduler.rs`): urgent ones
//!   (a `get` waits and no valid certificate is held) always start before
//!   prefetches (newly tracked identities, renewals of valid certificates).
//! - **Time**: validity is wall clock; at receipt it becomes tokio deadlines
//!   (`tokio::time::Instant::now() + (refresh_at - SystemTime::now())`), so
//!   everything after runs on tokio time and is deterministic under
//!   `tokio::time::pause`. Renewal is due at half life, moved earlier by up
//!   to [`Config::renewal_jitter`] of the time until then; a failed request
//!   is retried after [`Config::initial_backoff`], doubling up to
//!   [`Config::max_backoff`], while the previous certificate is served until
//!   it expires. An expired certificate is unpublished (watchers see
//!   `None`), and `get` waits for the next attempt and fails with it.
//! - **Lifetime**: an identity is held and renewed from its first `track`
//!   or `get` until `forget`, which aborts its request, fails its waiting
//!   `get`s and unpublishes it (its metric series go with it). Dropping the
//!   last handle stops the actor: requests are aborted, waiting `get`s end
//!   with [`Error::Shutdown`] and watchers see `None`, then a closed channel.

mod actor;
mod error;
mod metrics;
mod provider;
mod published;
mod scheduler;
mod state;

use std::sync::Arc;
use std::time::Duration;

use mesh_model::Identity;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot, watch};

pub use self::error::{Error, FetchError};
pub use self::provider::CertificateProvider;
use crate::WorkloadCertificate;
use actor::{Actor, Command};
use metrics::Metrics;
use published::Published;

/// Tuning of the manager; the defaults suit a node proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// CA requests in flight at once (0 counts as 1).
    pub max_concurrent_fetches: usize,
    /// Renewal moves earlier by a random fraction, up to this, of the time
    /// from receipt to half life (0.0 to 1.0), so certificates issued
    /// together are not all renewed together.
    pub renewal_jitter: f64,
    /// Wait after the first failed request; doubled per further failure.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between failed requests.
    pub max_backoff: Duration,
    /// A request not answered within this counts as failed.
    pub fetch_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_concurrent_fetches: 8,
            renewal_jitter: 0.1,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// A handle to the certificate manager. Clones share one manager; it stops
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct CertificateManager {
    commands: mpsc::UnboundedSender<Command>,
    published: Arc<Published>,
    metrics: Metrics,
}

impl CertificateManager {
    /// Starts the manager's task on the current tokio runtime.
    pub fn new<P: CertificateProvider>(provider: P, config: Config) -> Result<Self, Error> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| Error::NoRuntime(e.to_string()))?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let published = Arc::new(Published::default());
        let metrics = Metrics::default();
        let actor =
            Actor::new(provider, &config, receiver, Arc::clone(&published), metrics.clone());
        runtime.spawn(actor.run());
        Ok(Self { commands, published, metrics })
    }

    /// A valid certificate for `identity`: the held one, or (urgently,
    /// ahead of prefetches) a fresh one, joining a request already under
    /// way. Fails if that request fails while no valid certificate is held.
    /// The wait is bounded by the request timeout and, while backing off
    /// after failures, by the backoff; callers with a tighter budget wrap
    /// this in their own timeout.
    pub async fn get(&self, identity: &Identity) -> Result<Arc<WorkloadCertificate>, Error> {
        if let Some(cert) = self.published.current(identity) {
            return Ok(cert);
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Get { identity: identity.clone(), reply })?;
        answer.await.map_err(|_| Error::Shutdown)?
    }

    /// Keeps a certificate for `identity` ready (a workload of that identity
    /// is on this node): fetched as a prefetch, then renewed, until
    /// [`forget`](Self::forget). Idempotent.
    pub fn track(&self, identity: &Identity) {
        let command = Command::Track { identity: identity.clone() };
        if self.send(command).is_err() {
            tracing::debug!(%identity, "certificate manager has shut down; not tracking");
        }
    }

    /// Drops `identity`: its certificate is no longer served or renewed,
    /// its request is abandoned and waiting `get`s fail.
    pub fn forget(&self, identity: &Identity) {
        let command = Command::Forget { identity: identity.clone() };
        if self.send(command).is_err() {
            tracing::debug!(%identity, "certificate manager has shut down; nothing to forget");
        }
    }

    /// The certificate served for `identity`, now and as it changes
    /// (renewal: a new one; expiry or `forget`: `None`). Watching does not
    /// fetch; pair it with [`track`](Self::track) or [`get`](Self::get).
    pub fn subscribe(
        &self,
        identity: &Identity,
    ) -> watch::Receiver<Option<Arc<WorkloadCertificate>>> {
        self.published.subscribe(identity)
    }

    /// Registers the manager's metrics (see `metrics.rs` for the series)
    /// under the `mesh_identity` prefix.
    pub fn register(&self, registry: &mut Registry) {
        self.metrics.register(registry, Arc::downgrade(&self.published));
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).map_err(|_| Error::Shutdown)
    }
}
