//! The ztunnel binary: configuration from the environment, logging, the
//! node proxy, and a graceful drain on SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use mesh_telemetry::cli::Invocation;
use mesh_telemetry::logging::{self, LogFormat};
use tokio::signal::unix::{SignalKind, signal};
use ztunnel::app::{App, Config};

/// Upstream's `terminationGracePeriodSeconds` default.
const DRAIN: Duration = Duration::from_secs(30);

#[allow(clippy::print_stderr, reason = "startup errors go to stderr before or without logging")]
fn fail(message: &str) -> ExitCode {
    eprintln!("ztunnel: {message}");
    ExitCode::FAILURE
}

const HELP: &str = "\
ztunnel: the per-node proxy of the ambient mesh. It captures the traffic of
the node's enrolled pods (handed over by the CNI agent), carries it between
nodes as HBONE (HTTP/2 CONNECT over mutual TLS, port 15008), enforces L4
authorization and serves a DNS proxy, Istio's metrics and access logs.

usage: ztunnel            (no arguments; configured from the environment)

Environment (upstream ztunnel's names):
  CA_ADDRESS, XDS_ADDRESS   istiod (default istiod.istio-system.svc:15012)
  ISTIOD_DIAL_ADDRESS       dial this address instead of resolving istiod's name
  ISTIO_META_CLUSTER_ID     cluster id (default Kubernetes)
  TRUST_DOMAIN              SPIFFE trust domain (default cluster.local)
  NODE_NAME                 this node (required)
  POD_NAME, POD_NAMESPACE   ztunnel's own pod
  INSTANCE_IP, NETWORK      this node's address and network
  ROOT_CERT_PATH            mesh trust bundle (default /var/run/secrets/istio/root-cert.pem)
  TOKEN_PATH                token for istiod (default /var/run/secrets/tokens/istio-token)
  ZDS_SOCKET_PATH           where the CNI agent hands pods over
  ADMIN_ADDRESS             /config_dump, /logging (default 127.0.0.1:15000)
  METRICS_ADDRESS           /metrics, /stats/prometheus (default 0.0.0.0:15020)
  READINESS_ADDRESS         /healthz/ready (default 0.0.0.0:15021)
  RUST_LOG, LOG_FORMAT      log filter (default info); json for JSON logs
  DNS_PROXY                 serve the DNS proxy on 15053 in pods (default true)
  CLUSTER_DOMAIN            default cluster.local
  DNS_RESOLV_CONF           resolvers to forward other names to
  MAX_INBOUND_CONNECTIONS   inbound connections open at once, all pods (default 10000)

Signals: SIGTERM drains (pod listeners close; open connections get 30 s).
";

fn main() -> ExitCode {
    let invocation =
        Invocation::from_args("ztunnel", env!("CARGO_PKG_VERSION"), HELP, std::env::args().skip(1));
    if let Some(code) = invocation.finish() {
        return code;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => return fail(&format!("invalid configuration: {e}")),
    };
    let format = if config.json_logs { LogFormat::Json } else { LogFormat::Text };
    let control = match logging::init(&config.log_filter, format) {
        Ok(control) => control,
        Err(e) => return fail(&format!("setting up logging: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("starting the tokio runtime: {e}")),
    };
    runtime.block_on(run(config, control))
}

async fn run(config: Config, control: logging::LogControl) -> ExitCode {
    let (mut term, mut int) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => return fail(&format!("installing signal handlers: {e}")),
        };
    let app = match App::start_with_logging(config, Some(control)).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            return fail(&format!("startup failed: {e}"));
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    // A second signal cuts the drain short.
    tokio::select! {
        _ = app.shutdown(DRAIN) => ExitCode::SUCCESS,
        _ = term.recv() => {
            tracing::warn!("second SIGTERM: exiting without waiting for connections");
            ExitCode::SUCCESS
        }
        _ = int.recv() => {
            tracing::warn!("second SIGINT: exiting without waiting for connections");
            ExitCode::SUCCESS
        }
    }
}
