//! Serving translated configuration over delta ADS.
//!
//! [`ConfigStore`] holds the served resources by type URL, updated in place
//! with [`TypeChanges`] and remembering which names each generation touched;
//! every connected proxy's stream driver (`mesh_xds::server::serve`) then
//! sends that proxy only what changed for it. [`AdsService`] is the gRPC
//! service (delta only: mesh proxies do not use state-of-the-world); on the
//! TLS port it authenticates each stream's bearer token with the CA's
//! authenticator before opening it.

mod store;

use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use mesh_proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::discovery::{DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse};
use mesh_xds::server::{Connections, ResponseStream, ViewSource, serve};

use crate::ca::authn::{Authenticator, bearer_token};
use tonic::{Request, Response, Status, Streaming};

pub use store::{ConfigStore, TypeChanges, address_resource, authorization_resource};

/// Largest DeltaDiscoveryRequest accepted (upstream: gRPC's default
/// `MaxRecvMsgSize`, 4 MiB); together with the per-stream name limit
/// (`mesh_xds::server::MAX_SUBSCRIBED_NAMES`) it bounds a stream's state.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The ADS gRPC service over a [`ConfigStore`].
#[derive(Debug, Clone)]
pub struct AdsService {
    store: Arc<ConfigStore>,
    connections: Arc<Connections>,
    /// Who may connect; `None` only on the plaintext port (loopback, or
    /// explicitly opened), as upstream's 15010.
    authenticator: Option<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for dyn Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

impl AdsService {
    /// An unauthenticated service (plaintext port, tests).
    pub fn new(store: Arc<ConfigStore>) -> Self {
        Self { store, connections: Connections::new(), authenticator: None }
    }

    /// Registers streams in `connections` (for debug endpoints and metrics).
    pub fn with_connections(mut self, connections: Arc<Connections>) -> Self {
        self.connections = connections;
        self
    }

    /// Requires `authorization: Bearer <token>` that `authenticator`
    /// accepts (the CA's authenticator: TokenReview, or local node tokens)
    /// before a stream opens.
    pub fn authenticated(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

type SotwStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("mesh proxies use delta ADS (DeltaAggregatedResources)"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if let Some(authenticator) = &self.authenticator {
            let token = bearer_token(request.metadata()).map_err(|r| r.to_status())?;
            let caller = authenticator.authenticate(token).await.map_err(|r| {
                tracing::info!(
                    reason = r.reason().as_str(),
                    detail = r.detail(),
                    "xDS stream refused"
                );
                r.to_status()
            })?;
            tracing::debug!(caller = %caller.identity, node = ?caller.node, "xDS stream opened");
        }
        let source: Arc<dyn ViewSource> = self.store.clone();
        Ok(Response::new(serve(request.into_inner(), source, &self.connections)))
    }
}
