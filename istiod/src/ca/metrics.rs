//! The CA's Prometheus metrics, named as upstream istiod's where one exists.
//!
//! Counters are encoded in OpenMetrics form, so each sample carries the
//! `_total` suffix (`citadel_server_csr_count_total`); the family names are
//! upstream's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::RefusalReason;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: RefusalReason,
}

/// Handles to the CA's metrics; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CaMetrics {
    csr: Counter,
    success: Counter,
    authn_failure: Counter,
    refusals: Family<RefusalLabels, Counter>,
    root_expiry: Gauge,
}

impl CaMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "citadel_server_csr_count",
            "The number of CSRs received by the CA",
            metrics.csr.clone(),
        );
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "The number of certificate issuances that have succeeded",
            metrics.success.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "The number of requests refused because the caller's token was missing or invalid",
            metrics.authn_failure.clone(),
        );
        registry.register(
            "citadel_server_csr_refusal_count",
            "The number of certificate requests refused, by reason",
            metrics.refusals.clone(),
        );
        registry.register(
            "citadel_server_root_cert_expiry_timestamp",
            "The Unix time, in seconds, when the CA's root certificate expires",
            metrics.root_expiry.clone(),
        );
        metrics
    }

    pub(crate) fn received(&self) {
        self.csr.inc();
    }

    pub(crate) fn issued(&self) {
        self.success.inc();
    }

    pub(crate) fn refused(&self, reason: RefusalReason) {
        if reason.code() == tonic::Code::Unauthenticated {
            self.authn_failure.inc();
        }
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    pub(crate) fn set_root_expiry(&self, unix_seconds: i64) {
        self.root_expiry.set(unix_seconds);
    }

    pub fn received_count(&self) -> u64 {
        self.csr.get()
    }

    pub fn issued_count(&self) -> u64 {
        self.success.get()
    }

    pub fn authentication_failures(&self) -> u64 {
        self.authn_failure.get()
    }

    /// How many requests were refused for `reason`.
    pub fn refusal_count(&self, reason: RefusalReason) -> u64 {
        self.refusals.get_or_create(&RefusalLabels { reason }).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_upstream_names_and_reason_label() {
        let mut registry = Registry::default();
        let metrics = CaMetrics::register(&mut registry);
        metrics.received();
        metrics.refused(RefusalReason::InvalidToken);
        metrics.refused(RefusalReason::CsrSanCount);
        metrics.issued();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "citadel_server_csr_count_total 1",
            "citadel_server_success_cert_issuance_count_total 1",
            "citadel_server_authentication_failure_count_total 1",
            "citadel_server_csr_refusal_count_total{reason=\"invalid_token\"} 1",
            "citadel_server_csr_refusal_count_total{reason=\"csr_san_count\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(metrics.refusal_count(RefusalReason::CsrSanCount), 1);
        assert_eq!(metrics.refusal_count(RefusalReason::CsrBadKey), 0);
    }
}
