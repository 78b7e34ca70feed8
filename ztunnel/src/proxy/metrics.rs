//! Istio's standard TCP metrics (`istio_tcp_connections_opened_total`,
//! `..._closed_total`, `istio_tcp_received_bytes_total`,
//! `istio_tcp_sent_bytes_total`) with Istio's label names, and the access log
//! (tracing target `access`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use mesh_model::{Identity, Workload};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The labels of one connection, as upstream names them. Empty strings are
/// exported as `unknown`, as upstream does.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub reporter: String,
    pub source_workload: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_cluster: String,
    pub destination_service: String,
    pub destination_service_namespace: String,
    pub destination_service_name: String,
    pub destination_workload: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_cluster: String,
    pub request_protocol: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() { "unknown".to_owned() } else { s.to_owned() }
}

/// Which side reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Source,
    Destination,
}

impl ConnectionLabels {
    /// Labels of a connection between `source` and `destination` workloads
    /// (either may be unknown), secured with mTLS when `peer` is known.
    pub fn new(
        reporter: Reporter,
        source: Option<&Workload>,
        peer: Option<&Identity>,
        destination: &Workload,
    ) -> Self {
        let name = |w: Option<&Workload>| w.map(|w| w.workload_name.clone()).unwrap_or_default();
        let principal = |id: Option<&Identity>| id.map(|i| i.to_string()).unwrap_or_default();
        Self {
            reporter: match reporter {
                Reporter::Source => "source".to_owned(),
                Reporter::Destination => "destination".to_owned(),
            },
            source_workload: or_unknown(&name(source)),
            source_canonical_service: or_unknown(
                &source.map(|w| w.canonical_name.clone()).unwrap_or_default(),
            ),
            source_canonical_revision: or_unknown(
                &source.map(|w| w.canonical_revision.clone()).unwrap_or_default(),
            ),
            source_workload_namespace: or_unknown(
                &source.map(|w| w.namespace.clone()).unwrap_or_default(),
            ),
            source_principal: or_unknown(&principal(peer)),
            source_app: or_unknown(&source.map(|w| w.canonical_name.clone()).unwrap_or_default()),
            source_version: or_unknown(
                &source.map(|w| w.canonical_revision.clone()).unwrap_or_default(),
            ),
            source_cluster: or_unknown(&source.map(|w| w.cluster_id.clone()).unwrap_or_default()),
            destination_service: "unknown".to_owned(),
            destination_service_namespace: "unknown".to_owned(),
            destination_service_name: "unknown".to_owned(),
            destination_workload: or_unknown(&destination.workload_name),
            destination_canonical_service: or_unknown(&destination.canonical_name),
            destination_canonical_revision: or_unknown(&destination.canonical_revision),
            destination_workload_namespace: or_unknown(&destination.namespace),
            destination_principal: destination.identity.to_string(),
            destination_app: or_unknown(&destination.canonical_name),
            destination_version: or_unknown(&destination.canonical_revision),
            destination_cluster: or_unknown(&destination.cluster_id),
            request_protocol: "tcp".to_owned(),
            response_flags: "-".to_owned(),
            connection_security_policy: if peer.is_some() { "mutual_tls" } else { "unknown" }
                .to_owned(),
        }
    }
}

/// The TCP metric families.
#[derive(Debug, Clone, Default)]
pub struct TcpMetrics {
    pub opened: Family<ConnectionLabels, Counter>,
    pub closed: Family<ConnectionLabels, Counter>,
    pub received_bytes: Family<ConnectionLabels, Counter>,
    pub sent_bytes: Family<ConnectionLabels, Counter>,
    /// Connections opened and not yet closed (not exported; the binary's
    /// drain waits for it to reach zero).
    active: Arc<AtomicI64>,
}

impl TcpMetrics {
    /// Registers under `registry`, which should carry the `istio` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("tcp_connections_opened", "Connections opened", self.opened.clone());
        registry.register("tcp_connections_closed", "Connections closed", self.closed.clone());
        registry.register(
            "tcp_received_bytes",
            "Bytes received from the client",
            self.received_bytes.clone(),
        );
        registry.register("tcp_sent_bytes", "Bytes sent to the client", self.sent_bytes.clone());
    }

    /// A connection was opened; call [`Self::closed`] with the same labels.
    pub fn opened(&self, labels: &ConnectionLabels) {
        self.opened.get_or_create(labels).inc();
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections opened and not yet closed.
    pub fn active(&self) -> i64 {
        self.active.load(Ordering::Relaxed)
    }

    /// A connection closed after `received` bytes from the client and
    /// `sent` bytes to it.
    pub fn closed(&self, labels: &ConnectionLabels, received: u64, sent: u64) {
        self.closed.get_or_create(labels).inc();
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.received_bytes.get_or_create(labels).inc_by(received);
        self.sent_bytes.get_or_create(labels).inc_by(sent);
    }
}

/// Shared handle used by the proxies.
pub type SharedMetrics = Arc<TcpMetrics>;
