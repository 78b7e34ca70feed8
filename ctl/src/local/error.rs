//! Errors of `ambientctl local`: each says what was being done and where.

use std::path::PathBuf;

use super::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    #[error("the configuration is not valid:\n{}", list(.0))]
    Config(Vec<ManifestError>),
    #[error("this machine cannot run a local mesh:\n{}", list(.0))]
    Preflight(Vec<String>),
    #[error("building the namespaces: {0}")]
    Topology(#[from] mesh_netns::TopologyError),
    #[error("{0}")]
    Netns(#[from] mesh_netns::NetnsError),
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not become ready within {seconds} s{detail}")]
    NotReady { what: String, seconds: u64, detail: String },
    #[error("{what} exited during start-up ({status}){detail}")]
    Exited { what: String, status: String, detail: String },
    #[error("enrolling pod {pod}: {message}")]
    Enroll { pod: String, message: String },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("istiod rejected the configuration:\n{}", list(.0))]
    Rejected(Vec<String>),
    #[error("{0}")]
    State(String),
    #[error("the mesh failed to start: {0}")]
    Failed(String),
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n")
}

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}
