//! Prometheus metrics of the certificate manager, under the `mesh_identity`
//! prefix:
//!
//! - `mesh_identity_certificates`: certificates being served.
//! - `mesh_identity_certificate_expiry_seconds{identity}`: seconds until
//!   each served certificate expires. Both are computed at scrape time from
//!   the published certificates, so a forgotten identity's series is gone
//!   with it.
//! - `mesh_identity_ca_requests_total{priority="urgent"|"prefetch"}`.
//! - `mesh_identity_ca_request_errors_total{reason}`, `reason` from
//!   [`FetchError::reason`](super::FetchError::reason).

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::published::Published;
use super::scheduler::Priority;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PriorityLabels {
    priority: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IdentityLabels {
    identity: String,
}

/// The counters; cheap to clone (each is an `Arc` inside).
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    requests: Family<PriorityLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
}

impl Metrics {
    pub(crate) fn request_started(&self, priority: Priority) {
        self.requests.get_or_create(&PriorityLabels { priority: priority.as_str() }).inc();
    }

    pub(crate) fn request_failed(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn register(&self, registry: &mut Registry, published: Weak<Published>) {
        let registry = registry.sub_registry_with_prefix("mesh_identity");
        registry.register(
            "ca_requests",
            "Certificate requests sent to the CA, by priority",
            self.requests.clone(),
        );
        registry.register(
            "ca_request_errors",
            "Certificate requests that failed, by reason",
            self.errors.clone(),
        );
        registry.register_collector(Box::new(ServedCollector { published }));
    }
}

/// Reads the published certificates at scrape time.
#[derive(Debug)]
struct ServedCollector {
    published: Weak<Published>,
}

impl Collector for ServedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let expiries = self.published.upgrade().map(|p| p.expiries()).unwrap_or_default();
        let count = i64::try_from(expiries.len()).unwrap_or(i64::MAX);
        let gauge = ConstGauge::new(count);
        gauge.encode(encoder.encode_descriptor(
            "certificates",
            "Workload certificates being served",
            None,
            MetricType::Gauge,
        )?)?;
        let now = Instant::now();
        let mut family = encoder.encode_descriptor(
            "certificate_expiry_seconds",
            "Seconds until each served workload certificate expires",
            None,
            MetricType::Gauge,
        )?;
        for (identity, expires_at) in expiries {
            let labels = IdentityLabels { identity: identity.to_string() };
            let seconds = expires_at.saturating_duration_since(now).as_secs_f64();
            ConstGauge::new(seconds).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
