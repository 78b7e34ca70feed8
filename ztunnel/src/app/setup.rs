//! Start-up steps that can fail, each with an error naming what failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::grpc::{self, ControlPlaneTarget};
use mesh_identity::tls::TlsSettings;
use mesh_identity::{TrustBundle, control_plane, manager};
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;

use super::{Config, HostPort};

/// Why the proxy could not start; each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading the root certificate {path}: {source}")]
    RootCertRead {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the root certificate {path}: {source}")]
    RootCertParse {
        path: std::path::PathBuf,
        #[source]
        source: mesh_identity::CertificateError,
    },
    #[error("resolving istiod address {address}: {reason}")]
    Resolve { address: String, reason: String },
    #[error("control-plane TLS: {0}")]
    Tls(String),
    #[error("istiod address {address}: {reason}")]
    Target { address: String, reason: String },
    #[error("starting the certificate manager: {0}")]
    Manager(#[source] manager::Error),
    #[error("listening for ZDS on {path}: {source}")]
    Zds {
        path: std::path::PathBuf,
        #[source]
        source: mesh_cni::zds::ZdsError,
    },
    #[error("binding the {what} listener on {address}: {source}")]
    Listen {
        what: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `authorization: Bearer <token>` (read from `token_path` for each new
/// stream; a missing token is logged and the stream opens without it) and
/// `clusterid`.
pub(super) fn xds_metadata(
    token_path: std::path::PathBuf,
    cluster_id: String,
) -> impl Fn() -> MetadataMap + Send + Sync + 'static {
    move || {
        let mut metadata = MetadataMap::new();
        match std::fs::read_to_string(&token_path) {
            Ok(token) => match format!("Bearer {}", token.trim()).parse() {
                Ok(value) => {
                    metadata.insert("authorization", value);
                }
                Err(_) => {
                    tracing::warn!(path = %token_path.display(), "token is not a header value")
                }
            },
            Err(e) => {
                tracing::warn!(path = %token_path.display(), error = %e, "reading the xDS token")
            }
        }
        if let Ok(value) = cluster_id.parse() {
            metadata.insert("clusterid", value);
        }
        metadata
    }
}

pub(super) async fn load_trust(path: &std::path::Path) -> Result<TrustBundle, StartError> {
    let pem = tokio::fs::read(path)
        .await
        .map_err(|source| StartError::RootCertRead { path: path.to_owned(), source })?;
    TrustBundle::from_pem(&pem)
        .map_err(|source| StartError::RootCertParse { path: path.to_owned(), source })
}

pub(super) async fn bind(
    what: &'static str,
    address: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let listen_error = |source| StartError::Listen { what, address, source };
    let listener = TcpListener::bind(address).await.map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    Ok((listener, bound))
}

/// A lazily connecting TLS channel to `target`, dialled at the configured
/// override or the resolved hostname.
pub(super) async fn channel(
    config: &Config,
    target: &HostPort,
    trust: &Arc<TrustBundle>,
) -> Result<tonic::transport::Channel, StartError> {
    let address = match config.dial_address {
        Some(address) => address,
        None => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| StartError::Resolve {
                address: target.to_string(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| StartError::Resolve {
                address: target.to_string(),
                reason: "no addresses".into(),
            })?,
    };
    let ctx = control_plane::client_context(TlsSettings::default())
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let target = ControlPlaneTarget {
        address,
        hostname: target.host.clone(),
        trust: Arc::clone(trust),
        connect_timeout: Duration::from_secs(10),
    };
    grpc::connect(target, ctx)
        .map_err(|e| StartError::Target { address: address.to_string(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xds_metadata_carries_the_current_token_and_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let metadata = xds_metadata(path.clone(), "Kubernetes".into());
        let without = metadata();
        assert!(without.get("authorization").is_none(), "no token file, no header");
        assert_eq!(without.get("clusterid").unwrap(), "Kubernetes");
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(metadata().get("authorization").unwrap(), "Bearer first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(metadata().get("authorization").unwrap(), "Bearer second", "re-read per stream");
    }
}
