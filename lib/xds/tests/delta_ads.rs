//! The client and server halves over a real gRPC stream: initial sync with
//! readiness, a NACK for a malformed resource that leaves the rest applied,
//! incremental updates and removals, and after istiod restarts, resumption
//! that resends only what changed while the proxy kept its last good state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::discovery::{DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse, Node};
use mesh_proto::type_url;
use mesh_proto::workload as pb;
use mesh_xds::client::{Rejection, ResourceHandler, Subscription, Update, XdsClient, XdsConfig};
use mesh_xds::server::{Connections, ResourceView, VersionedResource, ViewSource, serve};
use prost::Message;
use tokio::sync::watch;

/// The control plane's world: resources by type, plus a change signal.
struct World {
    views: Mutex<BTreeMap<String, ResourceView>>,
    tick: watch::Sender<u64>,
}

impl World {
    fn new() -> Arc<Self> {
        Arc::new(Self { views: Mutex::default(), tick: watch::Sender::new(0) })
    }

    fn set_workload(&self, uid: &str, version: &str, address: Vec<u8>) {
        let w = pb::Workload {
            uid: uid.into(),
            name: uid.into(),
            namespace: "default".into(),
            addresses: vec![address],
            ..Default::default()
        };
        let any = prost_types::Any {
            type_url: type_url::ADDRESS.into(),
            value: pb::Address { r#type: Some(pb::address::Type::Workload(w)) }.encode_to_vec(),
        };
        let r = VersionedResource { version: version.into(), resource: any, aliases: vec![] };
        self.views
            .lock()
            .unwrap()
            .entry(type_url::ADDRESS.into())
            .or_default()
            .insert(uid.into(), r);
        self.tick.send_modify(|t| *t += 1);
    }

    fn remove(&self, uid: &str) {
        self.views.lock().unwrap().entry(type_url::ADDRESS.into()).or_default().remove(uid);
        self.tick.send_modify(|t| *t += 1);
    }
}

impl ViewSource for World {
    fn serves(&self, type_url: &str) -> bool {
        matches!(type_url, type_url::ADDRESS | type_url::AUTHORIZATION)
    }

    fn view(&self, _node: Option<&Node>, type_url: &str) -> Arc<ResourceView> {
        Arc::new(self.views.lock().unwrap().get(type_url).cloned().unwrap_or_default())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }
}

struct Ads(Arc<World>, Arc<Connections>);

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = std::pin::Pin<
        Box<dyn futures_core::Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>,
    >;
    type DeltaAggregatedResourcesStream = mesh_xds::server::ResponseStream;

    async fn stream_aggregated_resources(
        &self,
        _: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("mesh proxies use delta ADS"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        let source: Arc<dyn ViewSource> = self.0.clone();
        Ok(tonic::Response::new(serve(request.into_inner(), source, &self.1)))
    }
}

/// istiod in its own runtime on its own thread, so stopping it closes every
/// connection at once, like a process exit.
struct Istiod {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Istiod {
    fn start(world: Arc<World>, addr: SocketAddr) -> (SocketAddr, Self) {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let local = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = tonic::transport::Server::builder()
                    .add_service(AggregatedDiscoveryServiceServer::new(Ads(
                        world,
                        Connections::new(),
                    )))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
                tokio::select! {
                    result = serve => result.unwrap(),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task with it.
        });
        (local, Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Istiod {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Validates through the domain model, like a proxy would; records batches.
#[derive(Clone, Default)]
struct Store {
    held: Arc<Mutex<BTreeMap<String, mesh_model::Address>>>,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl ResourceHandler for Store {
    fn apply(&mut self, updates: Vec<Update>, removals: Vec<String>) -> Vec<Rejection> {
        let mut refused = Vec::new();
        self.batches.lock().unwrap().push(updates.len());
        let mut held = self.held.lock().unwrap();
        for u in updates {
            let decoded =
                pb::Address::decode(u.resource.value.as_slice()).map_err(|e| e.to_string());
            match decoded.and_then(|a| mesh_model::Address::try_from(a).map_err(|e| e.to_string()))
            {
                Ok(a) => {
                    held.insert(u.name, a);
                }
                Err(reason) => refused.push(Rejection { name: u.name, reason }),
            }
        }
        for name in removals {
            held.remove(&name);
        }
        refused
    }
}

/// Accepts everything (for the Authorization type, empty here).
struct Ignore;

impl ResourceHandler for Ignore {
    fn apply(&mut self, _: Vec<Update>, _: Vec<String>) -> Vec<Rejection> {
        vec![]
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn sync_nack_update_and_resume_after_istiod_restart() {
    let world = World::new();
    world.set_workload("a", "1", vec![10, 0, 0, 1]);
    world.set_workload("b", "1", vec![10, 0, 0, 2]);
    world.set_workload("bad", "1", vec![10, 0, 0]);
    let (addr, istiod) = Istiod::start(Arc::clone(&world), "127.0.0.1:0".parse().unwrap());

    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let node = Node {
        id: "ztunnel~10.0.0.9~ztunnel-x.istio-system~istio-system.svc.cluster.local".into(),
        ..Default::default()
    };
    let mut config = XdsConfig::new(node);
    config.max_backoff = Duration::from_millis(200);
    let store = Store::default();
    let client = XdsClient::new(channel, config)
        .with_type(type_url::ADDRESS, Subscription::wildcard(), store.clone())
        .with_type(type_url::AUTHORIZATION, Subscription::wildcard(), Ignore);
    let mut ready = client.ready();
    let client_task = tokio::spawn(client.run());

    tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r))
        .await
        .expect("ready in time")
        .unwrap();
    let held = || store.held.lock().unwrap().keys().cloned().collect::<Vec<_>>();
    eventually("a and b held, bad refused", || held() == ["a", "b"]).await;

    world.set_workload("a", "2", vec![10, 0, 0, 11]);
    world.remove("b");
    eventually("update and removal applied", || {
        let h = store.held.lock().unwrap();
        h.len() == 1 && matches!(h.get("a"), Some(mesh_model::Address::Workload(w)) if w.addresses[0].to_string() == "10.0.0.11")
    })
    .await;

    // istiod goes away: the proxy keeps what it has.
    drop(istiod);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held(), ["a"], "last good state kept while istiod is down");

    // istiod comes back on the same address with one new workload.
    world.set_workload("c", "1", vec![10, 0, 0, 3]);
    let batches_before = store.batches.lock().unwrap().len();
    let (_, istiod) = Istiod::start(Arc::clone(&world), addr);
    eventually("c arrives after reconnect", || held() == ["a", "c"]).await;
    let resent: usize = store.batches.lock().unwrap()[batches_before..].iter().sum();
    assert_eq!(resent, 2, "only c and the still-invalid resource are sent again, not a");

    client_task.abort();
    drop(istiod);
}
