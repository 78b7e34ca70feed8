//! CA settings: trust domain, certificate lifetimes, request size limit and
//! the node agents allowed to request certificates for other workloads.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mesh_model::Identity;

use super::{CaError, Refusal, RefusalReason};

/// Lifetime of a workload certificate when the request does not ask for one
/// (upstream `DEFAULT_WORKLOAD_CERT_TTL`).
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime granted (upstream `MAX_WORKLOAD_CERT_TTL`).
pub const DEFAULT_MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Largest CSR accepted. A P-256 CSR is under 1 KiB, an RSA 8192 one under
/// 3 KiB.
pub const DEFAULT_MAX_CSR_BYTES: usize = 64 * 1024;
/// The audience a caller's Kubernetes token must be issued for.
pub const TOKEN_AUDIENCE: &str = "istio-ca";

/// How long an issued certificate lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Used when the request asks for 0 seconds (or leaves it unset).
    pub default: Duration,
    /// Longer requests are shortened to this.
    pub max: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self { default: DEFAULT_WORKLOAD_TTL, max: DEFAULT_MAX_WORKLOAD_TTL }
    }
}

impl TtlPolicy {
    /// The lifetime to grant for a requested `validity_duration` (seconds).
    pub fn resolve(&self, requested_secs: i64) -> Result<Duration, Refusal> {
        let requested = match u64::try_from(requested_secs) {
            Ok(0) => self.default,
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => {
                return Err(Refusal::new(
                    RefusalReason::InvalidTtl,
                    format!("validity_duration {requested_secs}s"),
                ));
            }
        };
        Ok(requested.min(self.max))
    }
}

/// A Kubernetes service account, `<namespace>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccountRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// Whether `identity` is this service account's (in any trust domain).
    pub fn is(&self, identity: &Identity) -> bool {
        identity.namespace() == self.namespace && identity.service_account() == self.name
    }
}

impl fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for ServiceAccountRef {
    type Err = CaError;

    /// Parses `<namespace>/<name>`, as in upstream `CA_TRUSTED_NODE_ACCOUNTS`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::new(ns, name))
            }
            _ => Err(CaError::Config(format!(
                "trusted node account {s:?} is not <namespace>/<service-account>"
            ))),
        }
    }
}

/// Settings of the CA service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConfig {
    trust_domain: String,
    pub ttl: TtlPolicy,
    /// Callers that may ask for the identities of pods on their own node
    /// (upstream `CA_TRUSTED_NODE_ACCOUNTS`).
    pub trusted_node_agents: Vec<ServiceAccountRef>,
    pub max_csr_bytes: usize,
}

impl CaConfig {
    /// Defaults for a CA in `trust_domain` run by an istiod in
    /// `istiod_namespace`: 24h certificates, at most 90 days, 64 KiB CSRs,
    /// and `<istiod_namespace>/ztunnel` as the trusted node agent.
    pub fn new(trust_domain: &str, istiod_namespace: &str) -> Result<Self, CaError> {
        // Validates the trust domain and the namespace in one go.
        Identity::new(trust_domain, istiod_namespace, "ztunnel")
            .map_err(|e| CaError::Config(format!("trust domain or namespace: {e}")))?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            ttl: TtlPolicy::default(),
            trusted_node_agents: vec![ServiceAccountRef::new(istiod_namespace, "ztunnel")],
            max_csr_bytes: DEFAULT_MAX_CSR_BYTES,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn is_trusted_node_agent(&self, caller: &Identity) -> bool {
        self.trusted_node_agents.iter().any(|sa| sa.is(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_default_requested_and_capped() {
        let policy = TtlPolicy::default();
        assert_eq!(policy.resolve(0).unwrap(), DEFAULT_WORKLOAD_TTL);
        assert_eq!(policy.resolve(3600).unwrap(), Duration::from_secs(3600));
        assert_eq!(policy.resolve(i64::MAX).unwrap(), DEFAULT_MAX_WORKLOAD_TTL);
        let refusal = policy.resolve(-1).unwrap_err();
        assert_eq!(refusal.reason(), RefusalReason::InvalidTtl);
    }

    #[test]
    fn trusted_accounts_parse() {
        let sa: ServiceAccountRef = "istio-system/ztunnel".parse().unwrap();
        assert_eq!(sa, ServiceAccountRef::new("istio-system", "ztunnel"));
        for bad in ["", "ztunnel", "/ztunnel", "ns/", "a/b/c"] {
            assert!(bad.parse::<ServiceAccountRef>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_defaults_trust_the_namespace_ztunnel() {
        let config = CaConfig::new("cluster.local", "istio-system").unwrap();
        let ztunnel = Identity::new("cluster.local", "istio-system", "ztunnel").unwrap();
        let other = Identity::new("cluster.local", "default", "ztunnel").unwrap();
        assert!(config.is_trusted_node_agent(&ztunnel));
        assert!(!config.is_trusted_node_agent(&other));
        assert!(CaConfig::new("Bad_Domain", "istio-system").is_err());
    }
}
