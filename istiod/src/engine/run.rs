//! The engine task: consumes source events, debounces them, flushes, and
//! publishes resource changes and status changes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Engine;
use crate::source::{ObjectRef, SourceEvent};
use crate::translate::Config;
use crate::translate::status::Condition;
use crate::xds::ConfigStore;

/// Status changes, as the engine reports them to the status writer.
pub type StatusChanges = Vec<(ObjectRef, Vec<Condition>)>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    kind: String,
    event: String,
}

/// istiod's config-processing metrics.
#[derive(Debug, Clone)]
pub struct EngineStats {
    events: Family<EventLabels, Counter>,
    flushes: Counter,
    flush_time: Histogram,
    config_errors: Gauge,
}

impl Default for EngineStats {
    fn default() -> Self {
        Self {
            events: Family::default(),
            flushes: Counter::default(),
            flush_time: Histogram::new(exponential_buckets(0.000_05, 4.0, 10)),
            config_errors: Gauge::default(),
        }
    }
}

impl EngineStats {
    pub fn register(registry: &mut Registry) -> Self {
        let stats = Self::default();
        registry.register(
            "pilot_k8s_reg_events",
            "Config source events, by kind and event",
            stats.events.clone(),
        );
        registry.register(
            "istiod_translations",
            "Incremental translations (one per debounced batch of events)",
            stats.flushes.clone(),
        );
        registry.register(
            "istiod_translation_duration_seconds",
            "Time to recompute the outputs of one batch of events",
            stats.flush_time.clone(),
        );
        registry.register(
            "istiod_config_errors",
            "Objects with a rejected or partly ignored configuration",
            stats.config_errors.clone(),
        );
        stats
    }
}

/// What other tasks see of the engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    /// True once the sources synced and the first full translation is in
    /// the store.
    pub ready: watch::Receiver<bool>,
    /// The current conditions of every object that has some.
    pub statuses: Arc<Mutex<std::collections::BTreeMap<ObjectRef, Vec<Condition>>>>,
}

impl EngineHandle {
    /// A copy of the current conditions.
    pub fn current_statuses(&self) -> std::collections::BTreeMap<ObjectRef, Vec<Condition>> {
        self.statuses.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Called after each flush with the objects as they now are (local mode
/// keeps the CA's node directory in step with it).
pub type FlushHook = Arc<dyn Fn(&crate::translate::Snapshot) + Send + Sync>;

/// Settings of the engine task.
#[derive(Clone)]
pub struct RunOptions {
    /// How long a batch gathers events after its first one.
    pub debounce: Duration,
    pub on_flush: Option<FlushHook>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("debounce", &self.debounce)
            .field("on_flush", &self.on_flush.is_some())
            .finish()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { debounce: Duration::from_millis(100), on_flush: None }
    }
}

/// Starts the engine on `events`; ends when every sender is gone.
pub fn run(
    cfg: Config,
    events: mpsc::Receiver<SourceEvent>,
    store: Arc<ConfigStore>,
    status_tx: Option<mpsc::UnboundedSender<StatusChanges>>,
    stats: EngineStats,
    options: RunOptions,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let (ready_tx, ready) = watch::channel(false);
    let handle = EngineHandle { ready, statuses: Arc::default() };
    let task = tokio::spawn(drive(
        Engine::new(cfg),
        events,
        store,
        status_tx,
        stats,
        options,
        ready_tx,
        handle.statuses.clone(),
    ));
    (handle, task)
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    mut engine: Engine,
    mut events: mpsc::Receiver<SourceEvent>,
    store: Arc<ConfigStore>,
    status_tx: Option<mpsc::UnboundedSender<StatusChanges>>,
    stats: EngineStats,
    options: RunOptions,
    ready_tx: watch::Sender<bool>,
    shared_statuses: Arc<Mutex<std::collections::BTreeMap<ObjectRef, Vec<Condition>>>>,
) {
    let mut synced = false;
    let mut deadline: Option<Instant> = None;
    loop {
        let event = match deadline {
            Some(at) => tokio::select! {
                event = events.recv() => event,
                () = tokio::time::sleep_until(at) => {
                    deadline = None;
                    if synced {
                        flush(&mut engine, &store, status_tx.as_ref(), &stats, &shared_statuses);
                        if let Some(hook) = &options.on_flush {
                            hook(engine.snapshot());
                        }
                        ready_tx.send_replace(true);
                    }
                    continue;
                }
            },
            None => events.recv().await,
        };
        let Some(event) = event else { return };
        record(&stats, &event);
        if event == SourceEvent::Synced {
            synced = true;
        }
        engine.apply(event);
        if deadline.is_none() && (engine.is_dirty() || (synced && !*ready_tx.borrow())) {
            deadline = Some(Instant::now() + options.debounce);
        }
    }
}

fn record(stats: &EngineStats, event: &SourceEvent) {
    let (kind, what) = match event {
        SourceEvent::Applied(o) => (o.kind().name(), "apply"),
        SourceEvent::Deleted(r) => (r.kind.name(), "delete"),
        SourceEvent::Synced => return,
    };
    stats
        .events
        .get_or_create(&EventLabels { kind: kind.to_owned(), event: what.to_owned() })
        .inc();
}

fn flush(
    engine: &mut Engine,
    store: &ConfigStore,
    status_tx: Option<&mpsc::UnboundedSender<StatusChanges>>,
    stats: &EngineStats,
    shared_statuses: &Mutex<std::collections::BTreeMap<ObjectRef, Vec<Condition>>>,
) {
    let started = Instant::now();
    let flush = engine.flush();
    let changed = store.apply(flush.resources);
    stats.flushes.inc();
    stats.flush_time.observe(started.elapsed().as_secs_f64());
    let resources: usize = changed.iter().map(|(_, names)| names.len()).sum();
    tracing::debug!(resources, took = ?started.elapsed(), "translated a batch of config changes");
    if !flush.statuses.is_empty() {
        let current = engine.statuses().clone();
        stats.config_errors.set(i64::try_from(current.len()).unwrap_or(i64::MAX));
        *shared_statuses.lock().unwrap_or_else(PoisonError::into_inner) = current;
        for (reference, conditions) in &flush.statuses {
            for c in conditions {
                tracing::warn!(object = %reference, reason = %c.reason, message = %c.message,
                    "configuration not fully applied");
            }
        }
        if let Some(tx) = status_tx {
            let _ = tx.send(flush.statuses);
        }
    }
}
