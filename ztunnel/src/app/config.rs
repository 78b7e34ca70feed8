//! The binary's configuration, from environment variables with upstream's
//! names and defaults (see the ztunnel DaemonSet of Istio's chart).
//!
//! Parsing goes through a lookup function so tests pass a map instead of
//! touching the process environment: [`Config::from_env`] reads the real
//! environment, [`Config::from_map`] a `HashMap`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Default istiod address for both the CA and xDS.
pub const DEFAULT_ISTIOD: &str = "istiod.istio-system.svc:15012";
pub const DEFAULT_ROOT_CERT: &str = "/var/run/secrets/istio/root-cert.pem";
pub const DEFAULT_TOKEN: &str = "/var/run/secrets/tokens/istio-token";

/// A control-plane address: the hostname verified in istiod's certificate
/// (and sent as SNI) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// What the node proxy needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `CA_ADDRESS`.
    pub ca_address: HostPort,
    /// `XDS_ADDRESS`.
    pub xds_address: HostPort,
    /// `ISTIOD_DIAL_ADDRESS`: dial this instead of resolving the hostname
    /// (local mode, tests); the hostname is still what TLS verifies.
    pub dial_address: Option<SocketAddr>,
    /// `ISTIO_META_CLUSTER_ID`.
    pub cluster_id: String,
    /// `TRUST_DOMAIN`.
    pub trust_domain: String,
    /// `NODE_NAME`.
    pub node_name: String,
    /// `POD_NAME` (ztunnel's own pod).
    pub pod_name: String,
    /// `POD_NAMESPACE`.
    pub pod_namespace: String,
    /// `INSTANCE_IP`.
    pub instance_ip: Option<IpAddr>,
    /// `NETWORK` ("" is the default network).
    pub network: String,
    /// `ROOT_CERT_PATH`: the mesh trust bundle (PEM).
    pub root_cert: PathBuf,
    /// `TOKEN_PATH`: the projected service-account token for istiod.
    pub token_path: PathBuf,
    /// `ZDS_SOCKET_PATH`: where the CNI agent hands pods over.
    pub zds_socket: PathBuf,
    /// `ADMIN_ADDRESS`: `/config_dump`, `/logging` (keep it on loopback).
    pub admin_address: SocketAddr,
    /// `METRICS_ADDRESS`: `/metrics`, `/stats/prometheus`.
    pub metrics_address: SocketAddr,
    /// `READINESS_ADDRESS`: `/healthz/ready`.
    pub readiness_address: SocketAddr,
    /// `RUST_LOG`: an env-filter (`info`, `ztunnel=debug,info`, ...).
    pub log_filter: String,
    /// `LOG_FORMAT=json` (or `JSON_LOGS=true`): one JSON object per line.
    pub json_logs: bool,
    /// `DNS_PROXY` (default true): serve the DNS proxy on 15053 in pods.
    pub dns_proxy: bool,
    /// `CLUSTER_DOMAIN` (default `cluster.local`).
    pub cluster_domain: String,
    /// `DNS_RESOLV_CONF` (default `/etc/resolv.conf`): where the DNS
    /// proxy's upstream resolvers are read from.
    pub dns_resolv_conf: PathBuf,
    /// `MAX_INBOUND_CONNECTIONS` (default 10000): inbound connections
    /// (15006 and 15008, all pods) open at once; at the cap the listeners
    /// stop accepting until one closes. upstream has no such setting.
    pub max_inbound_connections: usize,
}

/// A variable with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

impl Config {
    /// From the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From `vars` (tests, embedding).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    /// From `lookup`, which answers a variable's value if it is set. Empty
    /// values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let string = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_owned());
        let path = |name: &str, default: &str| PathBuf::from(string(name, default));
        let socket = |name: &'static str, default: &str| parse_socket(name, &string(name, default));
        let dial_address = get("ISTIOD_DIAL_ADDRESS")
            .map(|v| parse_socket("ISTIOD_DIAL_ADDRESS", &v))
            .transpose()?;
        let instance_ip = get("INSTANCE_IP")
            .map(|v| v.parse().map_err(|e: std::net::AddrParseError| invalid("INSTANCE_IP", &v, e)))
            .transpose()?;
        let json_logs = match get("LOG_FORMAT") {
            Some(v) if v.eq_ignore_ascii_case("json") => true,
            Some(v) if v.eq_ignore_ascii_case("text") || v.eq_ignore_ascii_case("plain") => false,
            Some(v) => return Err(invalid("LOG_FORMAT", &v, "expected json or text")),
            None => parse_bool("JSON_LOGS", get("JSON_LOGS"))?,
        };
        Ok(Self {
            ca_address: parse_host_port("CA_ADDRESS", &string("CA_ADDRESS", DEFAULT_ISTIOD))?,
            xds_address: parse_host_port("XDS_ADDRESS", &string("XDS_ADDRESS", DEFAULT_ISTIOD))?,
            dial_address,
            cluster_id: string("ISTIO_META_CLUSTER_ID", "Kubernetes"),
            trust_domain: string("TRUST_DOMAIN", "cluster.local"),
            node_name: string("NODE_NAME", ""),
            pod_name: string("POD_NAME", "ztunnel"),
            pod_namespace: string("POD_NAMESPACE", "istio-system"),
            instance_ip,
            network: string("NETWORK", ""),
            root_cert: path("ROOT_CERT_PATH", DEFAULT_ROOT_CERT),
            token_path: path("TOKEN_PATH", DEFAULT_TOKEN),
            zds_socket: path("ZDS_SOCKET_PATH", mesh_cni::zds::DEFAULT_SOCKET_PATH),
            admin_address: socket("ADMIN_ADDRESS", "127.0.0.1:15000")?,
            metrics_address: socket("METRICS_ADDRESS", "0.0.0.0:15020")?,
            readiness_address: socket("READINESS_ADDRESS", "0.0.0.0:15021")?,
            log_filter: string("RUST_LOG", "info"),
            json_logs,
            dns_proxy: match get("DNS_PROXY") {
                None => true,
                value => parse_bool("DNS_PROXY", value)?,
            },
            cluster_domain: string("CLUSTER_DOMAIN", "cluster.local"),
            dns_resolv_conf: path("DNS_RESOLV_CONF", "/etc/resolv.conf"),
            max_inbound_connections: match get("MAX_INBOUND_CONNECTIONS") {
                None => crate::inpod::InboundLimits::default().max_connections,
                Some(v) => v.parse().ok().filter(|n: &usize| *n > 0).ok_or_else(|| {
                    invalid("MAX_INBOUND_CONNECTIONS", &v, "expected a count > 0")
                })?,
            },
        })
    }

    /// The xDS node id: `ztunnel~{ip}~{pod}.{ns}~{ns}.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        let ip = self.instance_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let (pod, ns) = (&self.pod_name, &self.pod_namespace);
        format!("ztunnel~{ip}~{pod}.{ns}~{ns}.svc.cluster.local")
    }
}

fn invalid(variable: &'static str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError { variable, value: value.to_owned(), reason: reason.to_string() }
}

fn parse_socket(variable: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e: std::net::AddrParseError| invalid(variable, value, e))
}

fn parse_bool(variable: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(_) => {
            Err(invalid(variable, value.as_deref().unwrap_or_default(), "expected true or false"))
        }
    }
}

fn parse_host_port(variable: &'static str, value: &str) -> Result<HostPort, ConfigError> {
    let (host, port) =
        value.rsplit_once(':').ok_or_else(|| invalid(variable, value, "expected host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(variable, value, "empty host"));
    }
    let port = port.parse().map_err(|e: std::num::ParseIntError| invalid(variable, value, e))?;
    Ok(HostPort { host: host.to_owned(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_map(&map)
    }

    #[test]
    fn defaults_follow_upstream() {
        let c = config(&[]).unwrap();
        assert_eq!(c.ca_address.to_string(), DEFAULT_ISTIOD);
        assert_eq!(c.xds_address, c.ca_address);
        assert_eq!(c.dial_address, None);
        assert_eq!(c.cluster_id, "Kubernetes");
        assert_eq!(c.trust_domain, "cluster.local");
        assert_eq!(c.root_cert, PathBuf::from(DEFAULT_ROOT_CERT));
        assert_eq!(c.token_path, PathBuf::from(DEFAULT_TOKEN));
        assert_eq!(c.zds_socket, PathBuf::from("/var/run/ztunnel/ztunnel.sock"));
        assert_eq!(c.admin_address.to_string(), "127.0.0.1:15000");
        assert_eq!(c.metrics_address.to_string(), "0.0.0.0:15020");
        assert_eq!(c.readiness_address.to_string(), "0.0.0.0:15021");
        assert_eq!(c.log_filter, "info");
        assert!(!c.json_logs);
        assert!(c.dns_proxy);
        assert_eq!(c.cluster_domain, "cluster.local");
        assert_eq!(c.dns_resolv_conf, PathBuf::from("/etc/resolv.conf"));
        assert_eq!(c.max_inbound_connections, 10_000);
        assert!(!config(&[("DNS_PROXY", "false")]).unwrap().dns_proxy);
        let capped = config(&[("MAX_INBOUND_CONNECTIONS", "64")]).unwrap();
        assert_eq!(capped.max_inbound_connections, 64);
    }

    #[test]
    fn values_are_read_and_node_id_is_upstreams() {
        let c = config(&[
            ("XDS_ADDRESS", "istiod.mesh.svc:15010"),
            ("ISTIOD_DIAL_ADDRESS", "127.0.0.1:4000"),
            ("INSTANCE_IP", "10.0.0.7"),
            ("POD_NAME", "ztunnel-x"),
            ("POD_NAMESPACE", "istio-system"),
            ("LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert_eq!(c.xds_address, HostPort { host: "istiod.mesh.svc".into(), port: 15010 });
        assert_eq!(c.dial_address, Some("127.0.0.1:4000".parse().unwrap()));
        assert!(c.json_logs);
        assert_eq!(
            c.node_id(),
            "ztunnel~10.0.0.7~ztunnel-x.istio-system~istio-system.svc.cluster.local"
        );
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("CA_ADDRESS", "istiod"),
            ("XDS_ADDRESS", "istiod:http"),
            ("ISTIOD_DIAL_ADDRESS", "localhost:1"),
            ("INSTANCE_IP", "ten"),
            ("ADMIN_ADDRESS", "15000"),
            ("JSON_LOGS", "maybe"),
            ("DNS_PROXY", "sometimes"),
            ("MAX_INBOUND_CONNECTIONS", "0"),
            ("MAX_INBOUND_CONNECTIONS", "lots"),
        ] {
            let e = config(&[(var, value)]).unwrap_err();
            assert_eq!(e.variable, var);
            assert!(e.to_string().contains(var), "{e}");
        }
    }
}
