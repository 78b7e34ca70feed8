//! istiod's settings, from environment variables (upstream's names where
//! upstream has one).
//!
//! Parsing goes through a lookup function so tests pass a map instead of
//! touching the process environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Watch the Kubernetes API (in-cluster, or `KUBECONFIG`).
    Kubernetes,
    /// Read a directory of YAML (`LOCAL_CONFIG_DIR`); CA state in
    /// `state_dir`; node tokens for `nodes`.
    Local { config_dir: PathBuf, state_dir: PathBuf, nodes: Vec<String> },
}

/// Everything istiod needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// `POD_NAME`: this replica (the leader-election holder).
    pub pod_name: String,
    /// `POD_NAMESPACE`: istiod's namespace (`istio-system`).
    pub namespace: String,
    /// `TRUST_DOMAIN`.
    pub trust_domain: String,
    /// `CLUSTER_ID`.
    pub cluster_id: String,
    /// `DOMAIN_SUFFIX`.
    pub domain_suffix: String,
    /// `ISTIOD_HOSTNAMES`: DNS names in the serving certificate.
    pub hostnames: Vec<String>,
    /// `GRPC_ADDRESS`: CA and xDS over TLS (15012).
    pub grpc_address: SocketAddr,
    /// `PLAINTEXT_XDS_ADDRESS`: xDS without TLS or authentication (15010);
    /// `off` disables it. Loopback only unless
    /// `PLAINTEXT_XDS_ALLOW_REMOTE=true`.
    pub plaintext_address: Option<SocketAddr>,
    /// `MONITORING_ADDRESS`: /ready, /metrics, /debug (15014).
    pub monitoring_address: SocketAddr,
    /// `PILOT_DEBOUNCE_AFTER` (milliseconds).
    pub debounce: Duration,
    /// `LOG_LEVEL`: a tracing filter.
    pub log_filter: String,
    /// `LOG_FORMAT=json`.
    pub json_logs: bool,
}

/// A setting that does not parse, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub problem: String,
}

fn err(name: &'static str, value: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { name, value: value.to_owned(), problem: problem.into() }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_map(map: &HashMap<&str, &str>) -> Result<Self, ConfigError> {
        Self::from_lookup(|k| map.get(k).map(|v| (*v).to_owned()))
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let or = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_owned());
        let address = |name: &'static str, default: &str| {
            let value = or(name, default);
            value.parse::<SocketAddr>().map_err(|e| err(name, &value, e.to_string()))
        };
        let namespace = or("POD_NAMESPACE", "istio-system");
        let domain_suffix = or("DOMAIN_SUFFIX", "cluster.local");
        let mode = match get("LOCAL_CONFIG_DIR") {
            Some(dir) if !dir.is_empty() => {
                let state_dir =
                    get("LOCAL_STATE_DIR").filter(|s| !s.is_empty()).ok_or_else(|| {
                        err("LOCAL_STATE_DIR", "", "required with LOCAL_CONFIG_DIR (CA state)")
                    })?;
                let nodes = or("LOCAL_NODES", "")
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect();
                Mode::Local { config_dir: dir.into(), state_dir: state_dir.into(), nodes }
            }
            _ => Mode::Kubernetes,
        };
        let hostnames = match get("ISTIOD_HOSTNAMES") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect(),
            None => vec![
                format!("istiod.{namespace}.svc"),
                format!("istiod.{namespace}.svc.{domain_suffix}"),
            ],
        };
        let plaintext_address = match or("PLAINTEXT_XDS_ADDRESS", "127.0.0.1:15010").as_str() {
            "off" | "" => None,
            value => {
                let addr: SocketAddr = value.parse().map_err(|e: std::net::AddrParseError| {
                    err("PLAINTEXT_XDS_ADDRESS", value, e.to_string())
                })?;
                let remote_ok = or("PLAINTEXT_XDS_ALLOW_REMOTE", "false") == "true";
                if !addr.ip().is_loopback() && !remote_ok {
                    return Err(err(
                        "PLAINTEXT_XDS_ADDRESS",
                        value,
                        "plaintext xDS is unauthenticated; bind it to loopback or set \
                         PLAINTEXT_XDS_ALLOW_REMOTE=true",
                    ));
                }
                Some(addr)
            }
        };
        let debounce_ms = or("PILOT_DEBOUNCE_AFTER", "100");
        let debounce = debounce_ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| err("PILOT_DEBOUNCE_AFTER", &debounce_ms, e.to_string()))?;
        Ok(Self {
            mode,
            pod_name: or("POD_NAME", "istiod"),
            trust_domain: or("TRUST_DOMAIN", "cluster.local"),
            cluster_id: or("CLUSTER_ID", "Kubernetes"),
            hostnames,
            grpc_address: address("GRPC_ADDRESS", "0.0.0.0:15012")?,
            plaintext_address,
            monitoring_address: address("MONITORING_ADDRESS", "0.0.0.0:15014")?,
            debounce,
            log_filter: or("LOG_LEVEL", "info"),
            json_logs: or("LOG_FORMAT", "text") == "json",
            namespace,
            domain_suffix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams_ports_and_kubernetes_mode() {
        let c = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(c.mode, Mode::Kubernetes);
        assert_eq!(c.grpc_address.port(), 15012);
        assert_eq!(c.plaintext_address, Some("127.0.0.1:15010".parse().unwrap()));
        assert_eq!(c.monitoring_address.port(), 15014);
        assert_eq!(
            c.hostnames,
            vec!["istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"]
        );
    }

    #[test]
    fn local_mode_needs_a_state_dir_and_lists_nodes() {
        let e = Config::from_map(&HashMap::from([("LOCAL_CONFIG_DIR", "/cfg")])).unwrap_err();
        assert_eq!(e.name, "LOCAL_STATE_DIR");
        let c = Config::from_map(&HashMap::from([
            ("LOCAL_CONFIG_DIR", "/cfg"),
            ("LOCAL_STATE_DIR", "/state"),
            ("LOCAL_NODES", "node-a, node-b"),
        ]))
        .unwrap();
        assert_eq!(
            c.mode,
            Mode::Local {
                config_dir: "/cfg".into(),
                state_dir: "/state".into(),
                nodes: vec!["node-a".into(), "node-b".into()]
            }
        );
    }

    #[test]
    fn plaintext_xds_stays_on_loopback_unless_opened_explicitly() {
        let e = Config::from_map(&HashMap::from([("PLAINTEXT_XDS_ADDRESS", "0.0.0.0:15010")]))
            .unwrap_err();
        assert_eq!(e.name, "PLAINTEXT_XDS_ADDRESS");
        let c = Config::from_map(&HashMap::from([
            ("PLAINTEXT_XDS_ADDRESS", "0.0.0.0:15010"),
            ("PLAINTEXT_XDS_ALLOW_REMOTE", "true"),
        ]))
        .unwrap();
        assert!(c.plaintext_address.is_some());
        let c = Config::from_map(&HashMap::from([("PLAINTEXT_XDS_ADDRESS", "off")])).unwrap();
        assert_eq!(c.plaintext_address, None);
        assert!(Config::from_map(&HashMap::from([("PILOT_DEBOUNCE_AFTER", "soon")])).is_err());
    }
}
