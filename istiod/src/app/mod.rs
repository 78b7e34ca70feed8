//! The istiod process: a config source, the translation engine, the CA and
//! delta ADS on the TLS port, plaintext ADS on loopback, the monitoring
//! server, and (on Kubernetes) leader-elected status writing.

pub mod config;
pub mod debug;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_model::Identity;
use mesh_telemetry::admin::{self, AdminState};
use mesh_xds::server::{Connections, XdsMetrics};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use self::config::{Config, ConfigError, Mode};
use self::debug::{DebugState, ExtraErrors};
use crate::ca::authn::Authenticator;
use crate::ca::local::{
    FileBundlePublisher, FileRootStore, LocalNodeDirectory, LocalTokenAuthenticator,
};
use crate::ca::node_authz::NodeDirectory;
use crate::ca::publish::BundlePublisher;
use crate::ca::root::load_or_create_root;
use crate::ca::{
    CaConfig, CaError, CaMetrics, CaService, ServiceAccountRef, server_tls, serving_certificate,
};
use crate::engine::{self, EngineHandle, EngineStats, RunOptions};
use crate::source::local::LocalSource;
use crate::source::{self, Kind, SourceEvent};
use crate::status::{self, lease};
use crate::translate;
use crate::xds::{AdsService, ConfigStore};

/// Events buffered between sources and the engine.
const EVENT_BUFFER: usize = 4096;
/// Lifetime of istiod's serving certificate; renewed by a restart.
const SERVING_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why istiod could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("binding the {what} address {address}: {source}")]
    Bind { what: &'static str, address: SocketAddr, source: std::io::Error },
    #[error("the CA: {0}")]
    Ca(#[from] CaError),
    #[error("connecting to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("the local config directory: {0}")]
    Local(#[from] source::local::StartError),
    #[error("{0}")]
    Other(String),
}

/// A running istiod.
pub struct App {
    pub grpc_address: SocketAddr,
    pub plaintext_address: Option<SocketAddr>,
    pub monitoring_address: SocketAddr,
    pub store: Arc<ConfigStore>,
    pub connections: Arc<Connections>,
    pub engine: EngineHandle,
    shutdown: watch::Sender<bool>,
    /// The gRPC servers, which stop on `shutdown`.
    servers: JoinSet<()>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("grpc_address", &self.grpc_address)
            .field("plaintext_address", &self.plaintext_address)
            .field("monitoring_address", &self.monitoring_address)
            .finish_non_exhaustive()
    }
}

async fn bind(
    what: &'static str,
    address: SocketAddr,
) -> Result<(TcpListener, SocketAddr), AppError> {
    let listener = TcpListener::bind(address).await.map_err(|source| AppError::Bind {
        what,
        address,
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| AppError::Bind { what, address, source })?;
    Ok((listener, bound))
}

/// The CA's backends for one mode.
struct CaParts {
    authenticator: Arc<dyn Authenticator>,
    directory: Arc<dyn NodeDirectory>,
    authority: crate::ca::Authority,
}

fn translate_config(config: &Config) -> translate::Config {
    translate::Config {
        cluster_id: config.cluster_id.clone(),
        domain_suffix: config.domain_suffix.clone(),
        trust_domain: config.trust_domain.clone(),
        root_namespace: config.namespace.clone(),
        ..translate::Config::default()
    }
}

/// Which service accounts run on which node, from the pods' `nodeName`.
fn placement(snap: &translate::Snapshot) -> Vec<(String, ServiceAccountRef)> {
    snap.pods
        .iter()
        .filter_map(|(key, pod)| {
            let spec = pod.spec.as_ref()?;
            let node = spec.node_name.clone()?;
            let sa = spec.service_account_name.as_deref().unwrap_or("default");
            Some((node, ServiceAccountRef::new(&key.namespace, sa)))
        })
        .collect()
}

/// What a mode contributes: the CA's backends and the config source.
struct Backends {
    ca: CaParts,
    on_flush: Option<engine::FlushHook>,
    extra_errors: Option<ExtraErrors>,
    kube_client: Option<kube::Client>,
    tasks: JoinSet<()>,
}

fn node_agent(config: &Config) -> Result<Identity, AppError> {
    Identity::new(&config.trust_domain, &config.namespace, "ztunnel")
        .map_err(|e| AppError::Other(format!("trust domain or namespace: {e}")))
}

/// Local mode: CA state in `state_dir`, node tokens, the YAML directory.
async fn local_backends(
    config: &Config,
    config_dir: &std::path::Path,
    state_dir: &std::path::Path,
    nodes: &[String],
    events: source::EventSender,
) -> Result<Backends, AppError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| AppError::Other(format!("creating {}: {e}", state_dir.display())))?;
    let authority =
        load_or_create_root(&FileRootStore::new(state_dir), &config.trust_domain).await?;
    FileBundlePublisher::in_state_dir(state_dir).publish(&authority.trust_bundle_pem()?).await?;
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let authenticator =
        LocalTokenAuthenticator::load_or_create(state_dir, &nodes, node_agent(config)?)?;
    let directory = Arc::new(LocalNodeDirectory::new());
    let hook_directory = Arc::clone(&directory);
    let on_flush: engine::FlushHook = Arc::new(move |snap| hook_directory.replace(placement(snap)));
    let local =
        LocalSource::spawn(config_dir.to_owned(), events, source::local::DEFAULT_POLL).await?;
    let errors = local.errors();
    let extra_errors: ExtraErrors =
        Arc::new(move || errors.borrow().values().flatten().map(ToString::to_string).collect());
    let mut tasks = JoinSet::new();
    tasks.spawn(local.join());
    Ok(Backends {
        ca: CaParts { authenticator: Arc::new(authenticator), directory, authority },
        on_flush: Some(on_flush),
        extra_errors: Some(extra_errors),
        kube_client: None,
        tasks,
    })
}

/// Kubernetes: the CA secret and root-cert ConfigMaps, TokenReview, and
/// the watchers.
async fn kube_backends(
    config: &Config,
    client: kube::Client,
    events: source::EventSender,
) -> Result<Backends, AppError> {
    let store = crate::ca::kube::SecretRootStore::new(client.clone(), config.namespace.clone());
    let authority = load_or_create_root(&store, &config.trust_domain).await?;
    let (publisher, controller) = crate::ca::kube::ConfigMapPublisher::new(client.clone());
    publisher.publish(&authority.trust_bundle_pem()?).await?;
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        if let Err(e) = controller.run().await {
            tracing::error!(error = %e, "root-cert ConfigMap controller stopped");
        }
    });
    let sources = source::kube::spawn(client.clone(), &Kind::ALL, events);
    tasks.spawn(async move {
        sources.join_all().await;
    });
    // One TokenReview per token and lifetime, not per stream or CSR.
    let authenticator = crate::ca::authn_cache::CachingAuthenticator::new(
        crate::ca::kube::KubeTokenAuthenticator::new(client.clone(), config.trust_domain.clone()),
        crate::ca::authn_cache::CacheLimits::default(),
    );
    Ok(Backends {
        ca: CaParts {
            authenticator: Arc::new(authenticator),
            directory: Arc::new(crate::ca::kube::KubePodDirectory::new(client.clone())),
            authority,
        },
        on_flush: None,
        extra_errors: None,
        kube_client: Some(client),
        tasks,
    })
}

/// Concurrent streams one client connection may hold: a proxy needs one
/// ADS stream and a few certificate requests at a time; more wait on the
/// client side (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// HTTP/2 PING interval on idle connections, and how long the answer may
/// take before the connection is closed (upstream istiod's keepalive
/// defaults: `Time` 30 s, `Timeout` 10 s).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections are closed (gracefully, with GOAWAY) after this long, so an
/// idle or long-lived client reconnects and rebalances (upstream istiod's
/// `keepaliveMaxServerConnectionAge` default, 30 min).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30 * 60);
pub const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(10);
/// Largest header block a client may send (as on the HBONE ports).
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// The gRPC server settings shared by the TLS and plaintext ports: bounded
/// streams and headers, keepalive PINGs that close dead peers, a maximum
/// connection age.
fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
}

impl App {
    /// Starts everything; returns once every port is bound (readiness, on
    /// `/ready`, follows when the config source has synced).
    pub async fn start(config: Config) -> Result<Self, AppError> {
        Self::start_with_client(config, None).await
    }

    /// As [`App::start`]; in Kubernetes mode, talks to the API server through
    /// `client` when given (tests), else the in-cluster or `KUBECONFIG` one.
    pub async fn start_with_client(
        config: Config,
        client: Option<kube::Client>,
    ) -> Result<Self, AppError> {
        let mut registry = Registry::default();
        let mut servers = JoinSet::new();
        let (shutdown, _) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::channel::<SourceEvent>(EVENT_BUFFER);
        let backends = match &config.mode {
            Mode::Local { config_dir, state_dir, nodes } => {
                local_backends(&config, config_dir, state_dir, nodes, events_tx).await?
            }
            Mode::Kubernetes => {
                let client = match client {
                    Some(client) => client,
                    None => kube::Client::try_default().await?,
                };
                kube_backends(&config, client, events_tx).await?
            }
        };
        let Backends { ca: ca_parts, on_flush, extra_errors, kube_client, mut tasks } = backends;
        let options = RunOptions { debounce: config.debounce, on_flush };

        let store = ConfigStore::new();
        let connections = Connections::with_metrics(XdsMetrics::register(&mut registry));
        let stats = EngineStats::register(&mut registry);
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let (engine, engine_task) = engine::run(
            translate_config(&config),
            events_rx,
            Arc::clone(&store),
            kube_client.is_some().then_some(status_tx),
            stats,
            options,
        );
        tasks.spawn(async move {
            let _ = engine_task.await;
        });
        if let Some(client) = kube_client {
            let (leading, election) = lease::elect(
                client.clone(),
                lease::LeaseConfig::new(&config.namespace, &config.pod_name),
            );
            tasks.spawn(async move {
                let _ = election.await;
            });
            let engine_statuses = engine.clone();
            tasks.spawn(status::run_writer(
                client,
                status_rx,
                leading,
                move || engine_statuses.current_statuses(),
                Duration::from_secs(5),
            ));
        }

        // CA + authenticated ADS over TLS.
        let cert =
            serving_certificate(&ca_parts.authority, &config.hostnames, SERVING_CERT_LIFETIME)?;
        let tls = server_tls(&cert)?;
        let ca_metrics = CaMetrics::register(&mut registry);
        let (_authority_tx, authority_rx) = watch::channel(Arc::new(ca_parts.authority));
        let ca = CaService::new(
            CaConfig::new(&config.trust_domain, &config.namespace)?,
            authority_rx,
            Arc::clone(&ca_parts.authenticator),
            Some(ca_parts.directory),
            ca_metrics,
        );
        let ads = AdsService::new(Arc::clone(&store))
            .with_connections(Arc::clone(&connections))
            .authenticated(ca_parts.authenticator);
        let (grpc_listener, grpc_address) = bind("gRPC (CA and xDS)", config.grpc_address).await?;
        let mut stop = shutdown.subscribe();
        servers.spawn(async move {
            let incoming =
                mesh_identity::grpc::incoming(grpc_listener, tls, crate::ca::HANDSHAKE_TIMEOUT);
            let served = grpc_server()
                .add_service(ca.into_server())
                .add_service(ads.into_server())
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        });

        let plaintext_address = match config.plaintext_address {
            Some(address) => {
                let (listener, bound) = bind("plaintext xDS", address).await?;
                let ads =
                    AdsService::new(Arc::clone(&store)).with_connections(Arc::clone(&connections));
                let mut stop = shutdown.subscribe();
                servers.spawn(async move {
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                    let served = grpc_server()
                        .add_service(ads.into_server())
                        .serve_with_incoming_shutdown(incoming, async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "plaintext xDS server stopped");
                    }
                });
                Some(bound)
            }
            None => None,
        };

        let debug = DebugState {
            store: Arc::clone(&store),
            connections: Arc::clone(&connections),
            engine: engine.clone(),
            extra_errors,
        };
        let monitoring = AdminState {
            registry: Some(Arc::new(registry)),
            ready: Some(engine.ready.clone()),
            debug: Some(Arc::new(move |name, query| debug.handle(name, query))),
            ..AdminState::default()
        };
        let (monitoring_listener, monitoring_address) =
            bind("monitoring", config.monitoring_address).await?;
        tasks.spawn(admin::serve(monitoring_listener, monitoring));
        tracing::info!(%grpc_address, ?plaintext_address, %monitoring_address, "istiod started");

        Ok(Self {
            grpc_address,
            plaintext_address,
            monitoring_address,
            store,
            connections,
            engine,
            shutdown,
            servers,
            tasks,
        })
    }

    /// Stops serving: the gRPC servers stop accepting and get up to `grace`
    /// to finish (xDS streams are long-lived, so usually they are cut at the
    /// deadline and proxies reconnect to another replica); then every task
    /// is stopped.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shutdown.send_replace(true);
        let servers_done = async { while self.servers.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, servers_done).await.is_err() {
            tracing::info!(?grace, "streams still open at the shutdown deadline; closing them");
        }
        self.servers.abort_all();
        self.tasks.abort_all();
        while self.servers.join_next().await.is_some() {}
        while self.tasks.join_next().await.is_some() {}
    }
}
