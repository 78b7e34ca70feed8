use std::collections::BTreeMap;

use mesh_proto::type_url;
use prometheus_client::registry::Registry;
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::*;
use crate::server::{Connections, VersionedResource, XdsMetrics};

/// One workload, served as `ADDRESS`; nothing else.
struct OneWorkload {
    tick: watch::Sender<u64>,
}

impl ViewSource for OneWorkload {
    fn serves(&self, t: &str) -> bool {
        t == type_url::ADDRESS
    }

    fn view(&self, _node: Option<&Node>, t: &str) -> Arc<ResourceView> {
        let mut view = BTreeMap::new();
        if t == type_url::ADDRESS {
            let resource = Any { type_url: t.to_owned(), value: vec![1] };
            view.insert(
                "w".to_owned(),
                VersionedResource { version: "1".into(), resource, aliases: vec![] },
            );
        }
        Arc::new(view)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }
}

struct Harness {
    requests: mpsc::UnboundedSender<Result<DeltaDiscoveryRequest, Status>>,
    responses: ResponseStream,
    registry: Registry,
    connections: Arc<Connections>,
}

fn start() -> Harness {
    let mut registry = Registry::default();
    let connections = Connections::with_metrics(XdsMetrics::register(&mut registry));
    let (requests, rx) = mpsc::unbounded_channel();
    let source: Arc<dyn ViewSource> = Arc::new(OneWorkload { tick: watch::Sender::new(0) });
    let responses = serve(UnboundedReceiverStream::new(rx), source, &connections);
    Harness { requests, responses, registry, connections }
}

fn subscribe(t: &str, names: Vec<String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: t.to_owned(),
        resource_names_subscribe: names,
        ..Default::default()
    }
}

async fn next(responses: &mut ResponseStream) -> Option<Result<DeltaDiscoveryResponse, Status>> {
    tokio::time::timeout(std::time::Duration::from_secs(5), responses.next())
        .await
        .expect("a response within 5 s")
}

fn metrics(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

#[tokio::test]
async fn unknown_type_urls_are_ignored_and_never_become_metric_labels() {
    let mut h = start();
    for i in 0..50 {
        let hostile = format!("type.googleapis.com/attacker.Chosen{i}");
        h.requests.send(Ok(subscribe(&hostile, vec!["*".into()]))).unwrap();
    }
    // A served type still works on the same stream, and is the only answer.
    h.requests.send(Ok(subscribe(type_url::ADDRESS, vec!["*".into()]))).unwrap();
    let response = next(&mut h.responses).await.unwrap().unwrap();
    assert_eq!(response.type_url, type_url::ADDRESS);

    let text = metrics(&h.registry);
    assert!(!text.to_ascii_lowercase().contains("chosen"), "{text}");
    assert!(text.contains("type=\"address\""), "{text}");
    assert!(text.contains("pilot_xds_refused_type_requests_total 50"), "{text}");
    let sessions = h.connections.sessions_snapshot();
    let session = lock(&sessions[0].1);
    assert_eq!(session.type_urls().collect::<Vec<_>>(), vec![type_url::ADDRESS]);
}

#[tokio::test]
async fn a_stream_subscribing_too_many_names_is_ended() {
    use crate::server::session::MAX_SUBSCRIBED_NAMES;
    let mut h = start();
    let names: Vec<String> = (0..MAX_SUBSCRIBED_NAMES).map(|i| format!("n{i}")).collect();
    h.requests.send(Ok(subscribe(type_url::ADDRESS, names))).unwrap();
    assert!(next(&mut h.responses).await.unwrap().is_ok(), "at the limit is fine");
    h.requests.send(Ok(subscribe(type_url::ADDRESS, vec!["one-more".into()]))).unwrap();
    let status = next(&mut h.responses).await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(next(&mut h.responses).await.is_none(), "the stream ends");
    assert!(h.connections.is_empty(), "its state is gone");
}
