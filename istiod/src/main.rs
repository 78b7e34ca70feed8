//! The istiod binary: configuration from the environment, logging, the
//! control plane, and a clean stop on SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use istiod::app::{App, Config};
use mesh_telemetry::logging::{self, LogFormat};
use tokio::signal::unix::{SignalKind, signal};

#[allow(clippy::print_stderr, reason = "startup errors go to stderr before or without logging")]
fn fail(message: &str) -> ExitCode {
    eprintln!("istiod: {message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
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
