//! Logging: `tracing` with an env-style filter that can be changed while
//! running (the admin server's `/logging`).

use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
    #[error("the logger is gone")]
    Gone,
}

/// Reads and replaces the active log filter.
#[derive(Clone)]
pub struct LogControl {
    handle: Arc<reload::Handle<EnvFilter, Registry>>,
    /// Owns the filter layer when it is not installed globally.
    _detached: Option<Arc<reload::Layer<EnvFilter, Registry>>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl").field("filter", &self.current()).finish()
    }
}

impl LogControl {
    /// The active filter, e.g. `info,access=debug`.
    pub fn current(&self) -> String {
        self.handle.with_current(|f| f.to_string()).unwrap_or_default()
    }

    /// Replaces the filter (same syntax as `RUST_LOG`).
    pub fn set(&self, filter: &str) -> Result<(), LoggingError> {
        let parsed = parse(filter)?;
        self.handle.reload(parsed).map_err(|_| LoggingError::Gone)
    }
}

fn parse(filter: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::try_new(filter)
        .map_err(|e| LoggingError::Filter { filter: filter.to_owned(), reason: e.to_string() })
}

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber writing to stderr.
pub fn init(filter: &str, format: LogFormat) -> Result<LogControl, LoggingError> {
    let (layer, handle) = reload::Layer::new(parse(filter)?);
    let registry = tracing_subscriber::registry().with(layer);
    let installed = match format {
        LogFormat::Text => {
            registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    installed.map_err(|_| LoggingError::AlreadyInstalled)?;
    Ok(LogControl { handle: Arc::new(handle), _detached: None })
}

/// A control detached from the global subscriber, for tests of `/logging`.
pub fn detached(filter: &str) -> Result<LogControl, LoggingError> {
    let (layer, handle) = reload::Layer::<EnvFilter, Registry>::new(parse(filter)?);
    Ok(LogControl { handle: Arc::new(handle), _detached: Some(Arc::new(layer)) })
}
