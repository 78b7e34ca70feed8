//! Serving translated configuration over delta ADS.
//!
//! [`ConfigStore`] holds the latest translation as one resource view per
//! type URL, each resource versioned by a hash of its encoding and aliased
//! by `<network>/<ip>` so proxies can subscribe on demand by address.
//! Publishing a new translation swaps the views and ticks a watch channel;
//! every connected proxy's stream driver (`mesh_xds::server::serve`) then
//! sends that proxy only what changed for it. [`AdsService`] is the gRPC
//! service (delta only: mesh proxies do not use state-of-the-world).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use futures_core::Stream;
use mesh_proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::discovery::{DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse, Node};
use mesh_proto::type_url;
use mesh_proto::workload::{Address, address};
use mesh_xds::server::{ResourceView, ResponseStream, VersionedResource, ViewSource, serve};
use prost::Message;
use prost_types::Any;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::translate::{Output, address_name, authorization_name};

/// A stable content version: FNV-1a over the encoded resource.
fn version_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn ip_alias(network: &str, bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(format!("{network}/{ip}"))
}

fn aliases(address: &Address) -> Vec<String> {
    match &address.r#type {
        Some(address::Type::Workload(w)) => {
            w.addresses.iter().filter_map(|a| ip_alias(&w.network, a)).collect()
        }
        Some(address::Type::Service(s)) => {
            s.addresses.iter().filter_map(|a| ip_alias(&a.network, &a.address)).collect()
        }
        None => Vec::new(),
    }
}

fn versioned(type_url: &str, value: Vec<u8>, aliases: Vec<String>) -> VersionedResource {
    VersionedResource {
        version: version_of(&value),
        resource: Any { type_url: type_url.to_owned(), value },
        aliases,
    }
}

/// The latest configuration, by type URL.
#[derive(Debug)]
pub struct ConfigStore {
    views: RwLock<HashMap<String, Arc<ResourceView>>>,
    tick: watch::Sender<u64>,
}

impl ConfigStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { views: RwLock::default(), tick: watch::Sender::new(0) })
    }

    /// Replaces the served configuration with `output` and notifies streams.
    pub fn publish(&self, output: &Output) {
        let addresses: ResourceView = output
            .addresses
            .iter()
            .map(|a| (address_name(a), versioned(type_url::ADDRESS, a.encode_to_vec(), aliases(a))))
            .collect();
        let authorizations: ResourceView = output
            .authorizations
            .iter()
            .map(|p| {
                (
                    authorization_name(p),
                    versioned(type_url::AUTHORIZATION, p.encode_to_vec(), Vec::new()),
                )
            })
            .collect();
        {
            let mut views = self.views.write().unwrap_or_else(PoisonError::into_inner);
            views.insert(type_url::ADDRESS.to_owned(), Arc::new(addresses));
            views.insert(type_url::AUTHORIZATION.to_owned(), Arc::new(authorizations));
        }
        self.tick.send_modify(|t| *t = t.wrapping_add(1));
    }
}

impl ViewSource for ConfigStore {
    fn view(&self, _node: Option<&Node>, type_url: &str) -> ResourceView {
        // Every proxy sees the whole mesh for now; per-proxy scoping
        // (visibility, exportTo) narrows this view later.
        let views = self.views.read().unwrap_or_else(PoisonError::into_inner);
        views.get(type_url).map(|v| ResourceView::clone(v)).unwrap_or_default()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }
}

/// The ADS gRPC service over a [`ConfigStore`].
#[derive(Debug, Clone)]
pub struct AdsService {
    store: Arc<ConfigStore>,
}

impl AdsService {
    pub fn new(store: Arc<ConfigStore>) -> Self {
        Self { store }
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
        Ok(Response::new(serve(request.into_inner(), source)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stable_and_content_addressed() {
        assert_eq!(version_of(b"abc"), version_of(b"abc"));
        assert_ne!(version_of(b"abc"), version_of(b"abd"));
        assert_eq!(version_of(b""), "cbf29ce484222325");
    }

    #[test]
    fn aliases_name_network_and_ip() {
        assert_eq!(ip_alias("net1", &[10, 0, 0, 1]).as_deref(), Some("net1/10.0.0.1"));
        assert_eq!(ip_alias("", &[0; 16]).as_deref(), Some("/::"));
        assert_eq!(ip_alias("", &[1, 2, 3]), None);
    }
}
