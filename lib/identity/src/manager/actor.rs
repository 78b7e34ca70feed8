//! The task that owns every identity's state: it takes commands from the
//! handles, runs CA requests within the concurrency bound, fires timers and
//! publishes the results.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_model::Identity;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;

use super::metrics::Metrics;
use super::published::Published;
use super::scheduler::{FetchQueue, Priority, Schedule};
use super::state::{Fetch, State};
use super::{CertificateProvider, Config, Error, FetchError};
use crate::WorkloadCertificate;

pub(crate) type Reply = oneshot::Sender<Result<Arc<WorkloadCertificate>, Error>>;

#[derive(Debug)]
pub(crate) enum Command {
    /// Answer `reply` with a valid certificate, fetching one urgently if
    /// none is held.
    Get {
        identity: Identity,
        reply: Reply,
    },
    Track {
        identity: Identity,
    },
    Forget {
        identity: Identity,
    },
}

#[derive(Debug)]
struct Entry {
    state: State,
    /// `get`s waiting for a certificate; only while none is held.
    waiters: Vec<Reply>,
}

/// A CA request in flight. Exactly one per identity whose state's fetch is
/// `Running`; removed when it finishes or the identity is forgotten, so a
/// late answer for a forgotten identity finds nothing and is dropped.
#[derive(Debug)]
struct InFlight {
    identity: Identity,
    abort: AbortHandle,
}

type Outcome = Result<WorkloadCertificate, FetchError>;

#[derive(Debug)]
pub(crate) struct Actor<P> {
    provider: Arc<P>,
    max_in_flight: usize,
    fetch_timeout: Duration,
    schedule: Schedule,
    commands: mpsc::UnboundedReceiver<Command>,
    published: Arc<Published>,
    metrics: Metrics,
    entries: HashMap<Identity, Entry>,
    queue: FetchQueue,
    tasks: JoinSet<Outcome>,
    in_flight: HashMap<tokio::task::Id, InFlight>,
}

impl<P: CertificateProvider> Actor<P> {
    pub(crate) fn new(
        provider: P,
        config: &Config,
        commands: mpsc::UnboundedReceiver<Command>,
        published: Arc<Published>,
        metrics: Metrics,
    ) -> Self {
        Self {
            provider: Arc::new(provider),
            max_in_flight: config.max_concurrent_fetches.max(1),
            fetch_timeout: config.fetch_timeout,
            schedule: Schedule::new(config),
            commands,
            published,
            metrics,
            entries: HashMap::new(),
            queue: FetchQueue::default(),
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Runs until every handle is gone. Events are handled one at a time,
    /// commands first, so the order of effects is deterministic.
    pub(crate) async fn run(mut self) {
        loop {
            self.dispatch();
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.on_joined(joined);
                }
                () = sleep_until(deadline) => self.on_timer(Instant::now()),
            }
        }
        tracing::debug!("certificate manager stopping");
        self.tasks.abort_all();
        self.published.clear();
        // Dropping the entries drops the waiters' reply senders: their
        // `get`s end with `Error::Shutdown`.
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Track { identity } => {
                self.entry(&identity, Priority::Prefetch);
            }
            Command::Get { identity, reply } => {
                let entry = self.entry(&identity, Priority::Urgent);
                match entry.state.cert() {
                    Some(held) => {
                        let _ = reply.send(Ok(Arc::clone(&held.cert)));
                    }
                    None => {
                        entry.waiters.push(reply);
                        self.update(&identity, State::urgent);
                    }
                }
            }
            Command::Forget { identity } => self.forget(&identity),
        }
    }

    /// The entry of `identity`, created with its first request queued.
    fn entry(&mut self, identity: &Identity, priority: Priority) -> &mut Entry {
        self.entries.entry(identity.clone()).or_insert_with(|| {
            tracing::debug!(%identity, priority = priority.as_str(), "tracking identity");
            self.queue.push(identity.clone(), priority);
            Entry { state: State::new(priority), waiters: Vec::new() }
        })
    }

    fn forget(&mut self, identity: &Identity) {
        let Some(entry) = self.entries.remove(identity) else {
            return;
        };
        tracing::debug!(%identity, "forgetting identity");
        if entry.state.fetch() == Some(Fetch::Running) {
            self.in_flight.retain(|_, request| {
                let mine = request.identity == *identity;
                if mine {
                    request.abort.abort();
                }
                !mine
            });
        }
        for waiter in entry.waiters {
            let _ = waiter.send(Err(Error::Forgotten(Box::new(identity.clone()))));
        }
        self.published.remove(identity);
    }

    /// Starts queued requests while slots are free.
    fn dispatch(&mut self) {
        while self.in_flight.len() < self.max_in_flight {
            let Some((identity, priority)) = self.queue.pop() else {
                return;
            };
            let Some(entry) = self.entries.get_mut(&identity) else {
                continue; // forgotten since
            };
            if entry.state.fetch() != Some(Fetch::Queued { priority }) {
                continue; // stale: upgraded, or already started
            }
            entry.state = entry.state.clone().started();
            self.metrics.request_started(priority);
            tracing::debug!(%identity, priority = priority.as_str(), "requesting certificate");
            let provider = Arc::clone(&self.provider);
            let timeout = self.fetch_timeout;
            let requested = identity.clone();
            let abort = self.tasks.spawn(async move {
                tokio::time::timeout(timeout, provider.fetch(&requested))
                    .await
                    .unwrap_or(Err(FetchError::Timeout(timeout)))
            });
            self.in_flight.insert(abort.id(), InFlight { identity, abort });
        }
    }

    fn on_joined(&mut self, joined: Result<(tokio::task::Id, Outcome), JoinError>) {
        let (task, outcome) = match joined {
            Ok(done) => done,
            Err(e) if e.is_cancelled() => return, // aborted by `forget`
            Err(e) => (e.id(), Err(FetchError::Crashed(e.to_string()))),
        };
        let Some(InFlight { identity, .. }) = self.in_flight.remove(&task) else {
            return;
        };
        let now = Instant::now();
        let checked = outcome.and_then(|cert| check(&identity, cert));
        match checked {
            Ok(cert) => {
                let deadlines = self.schedule.deadlines(&cert, now, SystemTime::now());
                tracing::info!(
                    %identity,
                    not_after = ?cert.not_after(),
                    renew_in = ?deadlines.renew_at.saturating_duration_since(now),
                    "new certificate"
                );
                let cert = Arc::new(cert);
                self.update(&identity, |s| s.succeeded(cert, deadlines));
            }
            Err(error) => self.on_failure(&identity, now, error),
        }
    }

    fn on_failure(&mut self, identity: &Identity, now: Instant, error: FetchError) {
        self.metrics.request_failed(error.reason());
        let backoff = self.schedule.backoff;
        self.update(identity, |s| s.failed(now, backoff));
        let Some(entry) = self.entries.get_mut(identity) else {
            return;
        };
        tracing::warn!(
            %identity,
            %error,
            state = ?StateSummary(&entry.state),
            "certificate request failed"
        );
        if entry.state.cert().is_none() {
            let source = Arc::new(error);
            for waiter in entry.waiters.drain(..) {
                let _ = waiter.send(Err(Error::Fetch {
                    identity: Box::new(identity.clone()),
                    source: Arc::clone(&source),
                }));
            }
        }
    }

    fn on_timer(&mut self, now: Instant) {
        let due: Vec<Identity> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for identity in due {
            let Some(entry) = self.entries.get_mut(&identity) else {
                continue;
            };
            entry.waiters.retain(|w| !w.is_closed());
            let retry =
                if entry.waiters.is_empty() { Priority::Prefetch } else { Priority::Urgent };
            self.update(&identity, |s| s.tick(now, retry));
        }
    }

    /// Applies a transition and its side effects: a request that became
    /// queued joins the queue; a changed certificate is published; a held
    /// certificate answers the waiters.
    fn update(&mut self, identity: &Identity, step: impl FnOnce(State) -> State) {
        let Some(entry) = self.entries.get_mut(identity) else {
            return;
        };
        let before = entry.state.clone();
        entry.state = step(before.clone());
        let after = &entry.state;
        if let Some(Fetch::Queued { priority }) = after.fetch()
            && before.fetch() != after.fetch()
        {
            self.queue.push(identity.clone(), priority);
        }
        let same_cert = match (before.cert(), after.cert()) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.cert, &b.cert),
            (None, None) => true,
            _ => false,
        };
        if !same_cert {
            if after.cert().is_none() {
                tracing::warn!(%identity, "certificate expired; no longer served");
            }
            self.published.publish(identity, after.cert());
        }
        if let Some(held) = after.cert() {
            for waiter in entry.waiters.drain(..) {
                let _ = waiter.send(Ok(Arc::clone(&held.cert)));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.state.deadline()).min()
    }
}

/// The answer must be for the identity asked for and still valid.
fn check(requested: &Identity, cert: WorkloadCertificate) -> Outcome {
    if cert.identity() != requested {
        return Err(FetchError::WrongIdentity {
            requested: Box::new(requested.clone()),
            found: Box::new(cert.identity().clone()),
        });
    }
    if cert.remaining(SystemTime::now()).is_zero() {
        return Err(FetchError::Expired);
    }
    Ok(cert)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Logs a state without the certificate's details.
struct StateSummary<'a>(&'a State);

impl std::fmt::Debug for StateSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            State::Initializing { failures, .. } => {
                write!(f, "initializing (failures: {failures})")
            }
            State::Available { .. } => f.write_str("available"),
            State::Renewing { failures, .. } => write!(f, "renewing (failures: {failures})"),
            State::Backoff { cert, failures, .. } => {
                write!(f, "backoff (failures: {failures}, cert held: {})", cert.is_some())
            }
        }
    }
}
