//! The node proxy as a whole: configuration, control-plane connection,
//! certificates, state, ZDS hand-off and the HTTP endpoints.
//!
//! [`App::start`] wires it up: trust bundle -> TLS channel(s) to istiod
//! (CA and xDS, one channel when both addresses are the same) -> CA client
//! asking on pods' behalf (`ImpersonatedIdentity`, node token from a file)
//! -> certificate manager + TLS contexts -> state fed by delta xDS
//! (Address and Authorization, wildcard) -> [`PodProxies`] driven by the
//! ZDS server (with the DNS proxy on 15053 in each pod unless
//! `DNS_PROXY=false`), and three HTTP listeners (admin, metrics, readiness).
//!
//! Each xDS stream opens with the node's token (`authorization: Bearer`,
//! re-read per stream) and `clusterid`, as upstream sends them; istiod's
//! ADS does not check them yet.

pub mod config;
mod pods;
pub mod rlimit;
mod setup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_cni::zds::ZdsServer;
use mesh_hbone::H2Settings;
use mesh_hbone::client::Pool;
use mesh_identity::caclient::{CaClient, RequestMode, TokenSource};
use mesh_identity::contexts::TlsContexts;
use mesh_identity::tls::TlsSettings;
use mesh_identity::{CertificateManager, manager};
use mesh_proto::discovery::Node;
use mesh_proto::type_url;
use mesh_telemetry::admin::{self, AdminState};
use mesh_telemetry::logging::LogControl;
use mesh_xds::client::{Subscription, XdsClient, XdsConfig};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

pub use config::{Config, ConfigError, HostPort};
use pods::Pods;
pub use setup::StartError;
use setup::{bind, channel, load_trust, xds_metadata};

use crate::dns::{self, DnsConfig, DnsMetrics, DnsServer};
use crate::inpod::{InboundLimits, PodProxies};
use crate::proxy::{OutboundProxy, TcpMetrics};
use crate::state::{AddressHandler, AuthorizationHandler, StateHandle};

/// Events waiting for the proxy before the ZDS connection stalls.
const ZDS_QUEUE: usize = 64;
/// How often idle pooled HBONE connections are looked for.
const POOL_EVICTION_PERIOD: Duration = Duration::from_secs(30);
/// How often readiness is recomputed.
const READINESS_POLL: Duration = Duration::from_millis(100);

/// The DNS proxy, forwarding to the resolvers of `DNS_RESOLV_CONF` (none,
/// with a warning, if it cannot be read: forwards then fail with
/// SERVFAIL while mesh names are still answered).
fn dns_server(config: &Config, state: &StateHandle, registry: &mut Registry) -> Arc<DnsServer> {
    let upstreams = dns::upstreams_from_resolv_conf(&config.dns_resolv_conf).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the DNS proxy has no upstream resolvers");
        Vec::new()
    });
    let dns_config =
        DnsConfig { cluster_domain: config.cluster_domain.clone(), ..DnsConfig::new(upstreams) };
    let metrics = Arc::new(DnsMetrics::default());
    metrics.register(registry);
    Arc::new(DnsServer::new(state.clone(), dns_config, metrics))
}

/// A running node proxy. See the module docs.
#[derive(Debug)]
pub struct App {
    admin_address: SocketAddr,
    metrics_address: SocketAddr,
    readiness_address: SocketAddr,
    state: StateHandle,
    pods: Arc<Pods>,
    metrics: Arc<TcpMetrics>,
    zds: Option<ZdsServer>,
    /// xDS, ZDS event loop, readiness and the HTTP listeners.
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Starts the proxy with a detached log control (tests, embedding).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_with_logging(config, None).await
    }

    /// Starts the proxy; `logging` backs `/logging` on the admin port.
    pub async fn start_with_logging(
        config: Config,
        logging: Option<LogControl>,
    ) -> Result<Self, StartError> {
        if let Err(e) = rlimit::raise_nofile_limit() {
            tracing::warn!(error = %e, "keeping the open file limit");
        }
        let trust = Arc::new(load_trust(&config.root_cert).await?);
        let ca_channel = channel(&config, &config.ca_address, &trust).await?;
        let xds_channel = if config.xds_address == config.ca_address {
            ca_channel.clone()
        } else {
            channel(&config, &config.xds_address, &trust).await?
        };

        let ca = CaClient::new(
            ca_channel,
            TokenSource::File(config.token_path.clone()),
            config.cluster_id.clone(),
            RequestMode::Impersonate,
        );
        let manager =
            CertificateManager::new(ca, manager::Config::default()).map_err(StartError::Manager)?;
        let tls = Arc::new(TlsContexts::new(manager.clone(), TlsSettings::default()));

        let state = StateHandle::default();
        let node = Node { id: config.node_id(), ..Default::default() };
        let xds = XdsClient::new(xds_channel, XdsConfig::new(node))
            .with_type(
                type_url::ADDRESS,
                Subscription::wildcard(),
                AddressHandler::new(state.clone()),
            )
            .with_type(
                type_url::AUTHORIZATION,
                Subscription::wildcard(),
                AuthorizationHandler::new(state.clone()),
            );
        let xds = xds.with_stream_metadata(xds_metadata(
            config.token_path.clone(),
            config.cluster_id.clone(),
        ));
        let xds_ready = xds.ready();

        let metrics = Arc::new(TcpMetrics::default());
        let mut registry = Registry::default();
        let istio = registry.sub_registry_with_prefix("istio");
        metrics.register(istio);
        manager.register(istio);
        let h2 = H2Settings::default();
        let pool = Arc::new(Pool::new(h2, h2.idle_timeout));
        let evictor = pool.spawn_evictor(POOL_EVICTION_PERIOD);
        let outbound = OutboundProxy {
            state: state.clone(),
            network: config.network.clone(),
            tls: Arc::clone(&tls),
            pool,
            metrics: Arc::clone(&metrics),
        };
        let limits = InboundLimits {
            max_connections: config.max_inbound_connections,
            ..InboundLimits::default()
        };
        let mut proxies = PodProxies::new(outbound, h2).with_limits(limits);
        if config.dns_proxy {
            proxies = proxies.with_dns(dns_server(&config, &state, istio));
        }
        let proxies = Arc::new(proxies);
        proxies.connections().register_metrics(registry.sub_registry_with_prefix("ztunnel"));
        let pods = Arc::new(Pods::new(
            proxies,
            state.clone(),
            manager,
            tls,
            config.cluster_id.clone(),
            config.trust_domain.clone(),
            xds_ready,
        ));
        let ready_rx = pods.ready();
        let logging = match logging {
            Some(control) => Some(control),
            None => mesh_telemetry::logging::detached(&config.log_filter).ok(),
        };
        let dump = {
            let (state, pods) = (state.clone(), Arc::clone(&pods));
            Arc::new(move || {
                let mut dump = state.read().config_dump();
                if let (Some(object), serde_json::Value::Object(extra)) =
                    (dump.as_object_mut(), pods.dump())
                {
                    object.extend(extra);
                }
                dump
            })
        };
        let admin_state = AdminState { config_dump: Some(dump), logging, ..AdminState::default() };
        // Readiness here too, so the metrics port never answers a blind 200.
        let metrics_state = AdminState {
            registry: Some(Arc::new(registry)),
            ready: Some(ready_rx.clone()),
            ..AdminState::default()
        };
        let readiness_state = AdminState { ready: Some(ready_rx), ..AdminState::default() };
        let (admin_listener, admin_address) = bind("admin", config.admin_address).await?;
        let (metrics_listener, metrics_address) = bind("metrics", config.metrics_address).await?;
        let (ready_listener, readiness_address) =
            bind("readiness", config.readiness_address).await?;

        let (zds, events) = ZdsServer::bind(&config.zds_socket, ZDS_QUEUE)
            .map_err(|source| StartError::Zds { path: config.zds_socket.clone(), source })?;

        let tasks = vec![
            evictor,
            tokio::spawn(xds.run()),
            tokio::spawn(Arc::clone(&pods).run(events)),
            tokio::spawn(readiness(Arc::clone(&pods))),
            tokio::spawn(admin::serve(admin_listener, admin_state)),
            tokio::spawn(admin::serve(metrics_listener, metrics_state)),
            tokio::spawn(admin::serve(ready_listener, readiness_state)),
        ];
        tracing::info!(
            node = config.node_name,
            xds = %config.xds_address,
            ca = %config.ca_address,
            zds = %config.zds_socket.display(),
            %admin_address,
            %metrics_address,
            %readiness_address,
            "ztunnel started"
        );
        Ok(Self {
            admin_address,
            metrics_address,
            readiness_address,
            state,
            pods,
            metrics,
            zds: Some(zds),
            tasks,
        })
    }

    /// Where `/config_dump` and `/logging` are served.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Where `/metrics` is served.
    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics_address
    }

    /// Where `/healthz/ready` is served.
    pub fn readiness_address(&self) -> SocketAddr {
        self.readiness_address
    }

    /// The proxy state fed by xDS.
    pub fn state(&self) -> &StateHandle {
        &self.state
    }

    /// Stops accepting new work (ZDS, xDS, HTTP listeners, the pods'
    /// listeners), waits up to
    /// `drain` for open proxied connections to close, then closes every
    /// pod's listeners and remaining connections. Returns whether the
    /// connections drained before the deadline.
    pub async fn shutdown(mut self, drain: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + drain;
        if let Some(zds) = self.zds.take() {
            // Dropping joins its accept thread (a fraction of a second).
            let _ = tokio::task::spawn_blocking(move || drop(zds)).await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.pods.proxies.stop_accepting();
        let mut drained = true;
        while self.metrics.active() > 0 {
            if tokio::time::Instant::now() >= deadline {
                drained = false;
                tracing::warn!(open = self.metrics.active(), "drain deadline reached; closing");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pods.remove_all();
        tracing::info!(drained, "ztunnel stopped");
        drained
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Ready once xDS has synced and every enrolled pod has a certificate;
/// recomputed periodically (and by the ZDS loop on every request).
async fn readiness(pods: Arc<Pods>) {
    loop {
        pods.refresh_readiness();
        tokio::time::sleep(READINESS_POLL).await;
    }
}
