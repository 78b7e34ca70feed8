//! The ztunnel binary: configuration from the environment, logging, the
//! node proxy, and a graceful drain on SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

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

fn main() -> ExitCode {
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
