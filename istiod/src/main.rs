//! The istiod binary: configuration from the environment, logging, the
//! control plane, and a clean stop on SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use istiod::app::{App, Config};
use mesh_telemetry::cli::Invocation;
use mesh_telemetry::logging::{self, LogFormat};
use tokio::signal::unix::{SignalKind, signal};

#[allow(clippy::print_stderr, reason = "startup errors go to stderr before or without logging")]
fn fail(message: &str) -> ExitCode {
    eprintln!("istiod: {message}");
    ExitCode::FAILURE
}

const HELP: &str = "\
istiod: the control plane of the ambient mesh. It watches Kubernetes (or, in
local mode, a directory of the same YAML), pushes each proxy's view over
delta xDS and runs the CA.

usage: istiod             (no arguments; configured from the environment)

Environment (see istiod/README.md for the whole table):
  LOCAL_CONFIG_DIR          local mode: the YAML directory (unset: Kubernetes)
  LOCAL_STATE_DIR           local mode: CA root, root-cert.pem, node-tokens/
  LOCAL_NODES               local mode: nodes to write a token file for
  POD_NAME, POD_NAMESPACE   default istiod, istio-system
  TRUST_DOMAIN, CLUSTER_ID, DOMAIN_SUFFIX
                            default cluster.local, Kubernetes, cluster.local
  ISTIOD_HOSTNAMES          DNS names of the serving certificate
  GRPC_ADDRESS              CA + token-authenticated xDS over TLS (default 0.0.0.0:15012)
  PLAINTEXT_XDS_ADDRESS     unauthenticated xDS (default 127.0.0.1:15010; off disables)
  PLAINTEXT_XDS_ALLOW_REMOTE  allow a non-loopback plaintext address (default false)
  MONITORING_ADDRESS        /ready, /metrics, /debug/* (default 0.0.0.0:15014)
  PILOT_DEBOUNCE_AFTER      event batching in ms (default 100)
  LOG_LEVEL, LOG_FORMAT     default info; json for JSON logs
";

fn main() -> ExitCode {
    let invocation =
        Invocation::from_args("istiod", env!("CARGO_PKG_VERSION"), HELP, std::env::args().skip(1));
    if let Some(code) = invocation.finish() {
        return code;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => return fail(&format!("invalid configuration: {e}")),
    };
    let format = if config.json_logs { LogFormat::Json } else { LogFormat::Text };
    if let Err(e) = logging::init(&config.log_filter, format) {
        return fail(&format!("setting up logging: {e}"));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("starting the tokio runtime: {e}")),
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let (mut term, mut int) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => return fail(&format!("installing signal handlers: {e}")),
        };
    let app = match App::start(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            return fail(&format!("startup failed: {e}"));
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    app.shutdown(Duration::from_secs(2)).await;
    ExitCode::SUCCESS
}
