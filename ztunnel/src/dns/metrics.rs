//! The DNS proxy's metrics, registered under the `istio` prefix:
//! `istio_dns_requests_total` (upstream ztunnel's name),
//! `istio_dns_malformed_requests_total`,
//! `istio_dns_upstream_failures_total` and
//! `istio_dns_upstream_request_duration_seconds` (by response code).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One query as counted.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub source_workload: String,
    pub source_workload_namespace: String,
    /// `udp` or `tcp`.
    pub request_protocol: String,
    /// `mesh` (answered from the mesh's names, NXDOMAIN included),
    /// `upstream` (forwarded, or from the forward cache), `error`.
    pub answered_by: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `timeout`, `io`, `malformed` (an answer that did not parse or match
    /// the query) or `overloaded` (too many forwards in flight).
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream's response code (`NoError`, `NXDomain`, ...).
    pub response_code: String,
}

type Durations = Family<UpstreamLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.5 ms .. about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

#[derive(Debug)]
pub struct DnsMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub malformed: Counter,
    pub upstream_failures: Family<FailureLabels, Counter>,
    pub upstream_duration: Durations,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            malformed: Counter::default(),
            upstream_failures: Family::default(),
            upstream_duration: Family::new_with_constructor(duration_histogram),
        }
    }
}

impl DnsMetrics {
    /// Registers the metrics on `registry` (give it the `istio` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("dns_requests", "DNS queries received", self.requests.clone());
        registry.register(
            "dns_malformed_requests",
            "DNS queries dropped because they did not parse",
            self.malformed.clone(),
        );
        registry.register(
            "dns_upstream_failures",
            "Forwarded DNS queries that got no usable answer",
            self.upstream_failures.clone(),
        );
        registry.register(
            "dns_upstream_request_duration_seconds",
            "Time for an upstream resolver to answer a forwarded query",
            self.upstream_duration.clone(),
        );
    }

    pub(crate) fn failed(&self, reason: &str) {
        self.upstream_failures.get_or_create(&FailureLabels { reason: reason.to_owned() }).inc();
    }
}
