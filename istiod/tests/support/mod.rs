//! A CA served over real TLS on loopback, and a raw gRPC client for it.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use istiod::ca::authn::Authenticator;
use istiod::ca::node_authz::NodeDirectory;
use istiod::ca::{
    Authority, CaConfig, CaMetrics, CaService, IMPERSONATED_IDENTITY, RefusalReason, serve,
    server_tls, serving_certificate,
};
use mesh_identity::TrustBundle;
use mesh_identity::control_plane;
use mesh_identity::grpc::{self, ControlPlaneTarget};
use mesh_identity::tls::TlsSettings;
use mesh_proto::ca::IstioCertificateRequest;
use mesh_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use prost_types::value::Kind;
use prost_types::{Struct, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

pub(crate) const TRUST_DOMAIN: &str = "cluster.local";
pub(crate) const ISTIOD_HOST: &str = "istiod.istio-system.svc";

/// A running CA; stops when dropped.
pub(crate) struct RunningCa {
    pub(crate) address: SocketAddr,
    pub(crate) trust: Arc<TrustBundle>,
    pub(crate) metrics: CaMetrics,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for RunningCa {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves a CA signing with `authority` on 127.0.0.1:0 over TLS, with a
/// serving certificate for [`ISTIOD_HOST`] from the same authority.
pub(crate) async fn start(
    authority: Authority,
    authenticator: Arc<dyn Authenticator>,
    directory: Option<Arc<dyn NodeDirectory>>,
) -> RunningCa {
    let config = CaConfig::new(TRUST_DOMAIN, "istio-system").unwrap();
    let cert =
        serving_certificate(&authority, &[ISTIOD_HOST.to_owned()], Duration::from_secs(3600))
            .unwrap();
    let tls = server_tls(&cert).unwrap();
    let trust =
        Arc::new(TrustBundle::from_pem(authority.trust_bundle_pem().unwrap().as_bytes()).unwrap());
    let metrics = CaMetrics::default();
    let (_tx, rx) = watch::channel(Arc::new(authority));
    let service = CaService::new(config, rx, authenticator, directory, metrics.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, tls, service, async {
            let _ = stop.await;
        })
        .await
        .unwrap();
    });
    RunningCa { address, trust, metrics, shutdown: Some(shutdown) }
}

impl RunningCa {
    /// A TLS channel that verifies the server as [`ISTIOD_HOST`].
    pub(crate) fn channel(&self) -> Channel {
        let target = ControlPlaneTarget {
            address: self.address,
            hostname: ISTIOD_HOST.to_owned(),
            trust: Arc::clone(&self.trust),
            connect_timeout: Duration::from_secs(5),
        };
        grpc::connect(target, control_plane::client_context(TlsSettings::default()).unwrap())
            .unwrap()
    }

    /// One raw `CreateCertificate` call.
    pub(crate) async fn ask(
        &self,
        token: Option<&str>,
        csr: String,
        impersonate: Option<&str>,
    ) -> Result<Vec<String>, tonic::Status> {
        let metadata = impersonate.map(|id| Struct {
            fields: BTreeMap::from([(
                IMPERSONATED_IDENTITY.to_owned(),
                Value { kind: Some(Kind::StringValue(id.to_owned())) },
            )]),
        });
        let mut request =
            tonic::Request::new(IstioCertificateRequest { csr, validity_duration: 0, metadata });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        IstioCertificateServiceClient::new(self.channel())
            .create_certificate(request)
            .await
            .map(|r| r.into_inner().cert_chain)
    }

    /// Asserts the call is refused with `code` and bumps exactly `reason`.
    pub(crate) async fn assert_refused(
        &self,
        token: Option<&str>,
        csr: String,
        impersonate: Option<&str>,
        code: tonic::Code,
        reason: RefusalReason,
    ) {
        let before = self.metrics.refusal_count(reason);
        let status = self.ask(token, csr, impersonate).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?} (expected {reason})");
        assert_eq!(self.metrics.refusal_count(reason), before + 1, "metric label {reason}");
    }
}
