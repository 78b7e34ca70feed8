//! Istio's standard TCP metrics (`istio_tcp_connections_opened_total`,
//! `..._closed_total`, `istio_tcp_received_bytes_total`,
//! `istio_tcp_sent_bytes_total`) with Istio's label names, connections
//! ztunnel refused (`istio_tcp_connections_failed_total`, with upstream's
//! `response_flags`: `DENY` for a refusal by rule, `CONNECT` when the
//! destination could not be reached), and the access log (tracing target
//! `access`).

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

/// Why a connection failed, as upstream's `response_flags` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFlag {
    /// upstream `AuthorizationPolicyDenied`: refused by a rule (policy, or
    /// a call to ztunnel's own ports).
    Deny,
    /// upstream `ConnectionFailure`: the destination could not be reached.
    Connect,
}

impl ResponseFlag {
    pub fn label(self) -> &'static str {
        match self {
            Self::Deny => "DENY",
            Self::Connect => "CONNECT",
        }
    }
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
        Self::build(reporter, source, peer, Some(destination))
    }

    fn build(
        reporter: Reporter,
        source: Option<&Workload>,
        peer: Option<&Identity>,
        destination: Option<&Workload>,
    ) -> Self {
        let dst = |f: fn(&Workload) -> String| or_unknown(&destination.map(f).unwrap_or_default());
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
            destination_workload: dst(|d| d.workload_name.clone()),
            destination_canonical_service: dst(|d| d.canonical_name.clone()),
            destination_canonical_revision: dst(|d| d.canonical_revision.clone()),
            destination_workload_namespace: dst(|d| d.namespace.clone()),
            destination_principal: dst(|d| d.identity.to_string()),
            destination_app: dst(|d| d.canonical_name.clone()),
            destination_version: dst(|d| d.canonical_revision.clone()),
            destination_cluster: dst(|d| d.cluster_id.clone()),
            request_protocol: "tcp".to_owned(),
            response_flags: "-".to_owned(),
            connection_security_policy: if peer.is_some() { "mutual_tls" } else { "unknown" }
                .to_owned(),
        }
    }
}

impl ConnectionLabels {
    /// Labels of a connection ztunnel refused or could not complete; the
    /// destination may be unknown.
    pub fn failed(
        reporter: Reporter,
        source: Option<&Workload>,
        peer: Option<&Identity>,
        destination: Option<&Workload>,
        flag: ResponseFlag,
    ) -> Self {
        let mut labels = Self::build(reporter, source, peer, destination);
        labels.response_flags = flag.label().to_owned();
        labels
    }
}

/// The TCP metric families.
#[derive(Debug, Clone, Default)]
pub struct TcpMetrics {
    pub opened: Family<ConnectionLabels, Counter>,
    pub closed: Family<ConnectionLabels, Counter>,
    pub received_bytes: Family<ConnectionLabels, Counter>,
    pub sent_bytes: Family<ConnectionLabels, Counter>,
    /// Connections refused or failed before they were opened.
    pub failed: Family<ConnectionLabels, Counter>,
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
        registry.register(
            "tcp_connections_failed",
            "Connections refused or failed before being opened",
            self.failed.clone(),
        );
    }

    /// A connection was refused or failed; `labels` carry the flag.
    pub fn failed(&self, labels: &ConnectionLabels) {
        self.failed.get_or_create(labels).inc();
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
