//! Serving translated configuration over delta ADS.
//!
//! [`ConfigStore`] holds the latest translation as one resource view per
//! type URL, each resource versioned by a hash of its encoding and aliased
//! by `<network>/<ip>` so proxies can subscribe on demand by address.
//! Publishing a new translation swaps the views and ticks a watch channel;
//! every connected proxy's stream driver (`mesh_xds::server::serve`) then
//! sends that proxy only what changed for it. [`AdsService`] is the gRPC
//! service (delta only: mesh proxies do not use state-of-the-world).

mod store;

use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use mesh_proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::discovery::{DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse};
use mesh_xds::server::{Connections, ResponseStream, ViewSource, serve};
use tonic::{Request, Response, Status, Streaming};

pub use store::{ConfigStore, TypeChanges, address_resource, authorization_resource};

/// The ADS gRPC service over a [`ConfigStore`].
#[derive(Debug, Clone)]
pub struct AdsService {
    store: Arc<ConfigStore>,
    connections: Arc<Connections>,
}

impl AdsService {
    pub fn new(store: Arc<ConfigStore>) -> Self {
        Self { store, connections: Connections::new() }
    }

    /// Registers streams in `connections` (for debug endpoints and metrics).
    pub fn with_connections(store: Arc<ConfigStore>, connections: Arc<Connections>) -> Self {
        Self { store, connections }
    }

    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
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
        let source: Arc<dyn ViewSource> = self.store.clone();
        Ok(Response::new(serve(request.into_inner(), source, &self.connections)))
    }
}
