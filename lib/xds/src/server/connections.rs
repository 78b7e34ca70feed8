//! The proxies connected to one xDS server, for debug endpoints
//! (`/debug/syncz`, `/debug/config_dump`) and metrics.
//!
//! Each stream's [`Session`] lives behind a mutex shared with this registry;
//! the stream driver locks it only for the synchronous request and response
//! bookkeeping (never across an await), and the debug endpoints read it in
//! place, so nothing is copied per push.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::session::Session;

/// A session shared between its stream driver and the registry.
pub type SharedSession = Arc<Mutex<Session>>;

/// Locks a session, ignoring poisoning (its state stays consistent: every
/// mutation completes before anything can panic).
pub fn lock(session: &SharedSession) -> MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

/// Upstream istiod's xDS metric names, so existing dashboards work.
#[derive(Debug, Clone)]
pub struct XdsMetrics {
    connected: Gauge,
    pushes: Family<TypeLabel, Counter>,
    rejects: Family<TypeLabel, Counter>,
    push_time: Family<TypeLabel, Histogram>,
    push_size: Family<TypeLabel, Histogram>,
    refused_types: Counter,
}

/// The metric label of a type URL, from a fixed set: a label never holds
/// text a client chose, so clients cannot grow the metric families.
fn type_label(type_url: &str) -> &'static str {
    use mesh_proto::type_url as t;
    match type_url {
        t::ADDRESS => "address",
        t::AUTHORIZATION => "authorization",
        t::WAYPOINT_SERVICE => "waypointservice",
        t::L7_AUTHORIZATION => "l7authorization",
        _ => "unknown",
    }
}

impl XdsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            connected: Gauge::default(),
            pushes: Family::default(),
            rejects: Family::default(),
            push_time: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
            }),
            push_size: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(64.0, 4.0, 12))
            }),
            refused_types: Counter::default(),
        };
        registry.register("pilot_xds", "Connected xDS proxies", metrics.connected.clone());
        registry.register(
            "pilot_xds_pushes",
            "xDS responses sent, by type",
            metrics.pushes.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "xDS responses rejected (NACKed) by proxies, by type",
            metrics.rejects.clone(),
        );
        registry.register(
            "pilot_xds_push_time_seconds",
            "Time from a config change to the response leaving for the proxy",
            metrics.push_time.clone(),
        );
        registry.register(
            "pilot_xds_config_size_bytes",
            "Encoded size of xDS responses",
            metrics.push_size.clone(),
        );
        registry.register(
            "pilot_xds_refused_type_requests",
            "xDS requests ignored because their type URL is not served",
            metrics.refused_types.clone(),
        );
        metrics
    }

    pub(crate) fn refused_type(&self) {
        self.refused_types.inc();
    }

    pub(crate) fn pushed(&self, type_url: &str, bytes: usize, took: Duration) {
        let label = TypeLabel { r#type: type_label(type_url) };
        self.pushes.get_or_create(&label).inc();
        self.push_time.get_or_create(&label).observe(took.as_secs_f64());
        self.push_size.get_or_create(&label).observe(bytes as f64);
    }

    pub(crate) fn rejected(&self, type_url: &str) {
        self.rejects.get_or_create(&TypeLabel { r#type: type_label(type_url) }).inc();
    }
}

/// Every open stream, by a connection number.
#[derive(Debug, Default)]
pub struct Connections {
    next_id: AtomicU64,
    sessions: Mutex<BTreeMap<u64, SharedSession>>,
    metrics: Option<XdsMetrics>,
}

impl Connections {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn with_metrics(metrics: XdsMetrics) -> Arc<Self> {
        Arc::new(Self { metrics: Some(metrics), ..Self::default() })
    }

    fn sessions(&self) -> MutexGuard<'_, BTreeMap<u64, SharedSession>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new stream; it is removed when the guard drops.
    pub(crate) fn open(self: &Arc<Self>) -> ConnectionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let session: SharedSession = Arc::new(Mutex::new(Session::new()));
        self.sessions().insert(id, Arc::clone(&session));
        if let Some(m) = &self.metrics {
            m.connected.inc();
        }
        ConnectionGuard { id, session, connections: Arc::clone(self) }
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.sessions().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open streams' sessions, by connection number (a snapshot of the
    /// list; lock each with [`lock`] to read it).
    pub fn sessions_snapshot(&self) -> Vec<(u64, SharedSession)> {
        self.sessions().iter().map(|(id, s)| (*id, Arc::clone(s))).collect()
    }
}

/// Keeps a stream registered while it lives.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    id: u64,
    pub(crate) session: SharedSession,
    connections: Arc<Connections>,
}

impl ConnectionGuard {
    pub(crate) fn metrics(&self) -> Option<&XdsMetrics> {
        self.connections.metrics.as_ref()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.connections.sessions().remove(&self.id);
        if let Some(m) = &self.connections.metrics {
            m.connected.dec();
        }
    }
}
