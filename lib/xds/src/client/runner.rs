//! Runs the delta ADS stream for a proxy: subscribe every registered type,
//! hand responses to their handlers, ACK or NACK, and reconnect with
//! exponential backoff. Handlers keep their state across streams, so the
//! proxy serves on its last good state while istiod is unreachable, and the
//! next stream resumes with `initial_resource_versions`.

use std::time::Duration;

use mesh_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::discovery::{DeltaDiscoveryRequest, Node};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::state::{ResourceHandler, Subscription, TypeState};

/// Requests waiting to be written to the stream.
const REQUEST_QUEUE: usize = 64;

#[derive(Debug, Clone)]
pub struct XdsConfig {
    pub node: Node,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl XdsConfig {
    pub fn new(node: Node) -> Self {
        Self {
            node,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("opening the ADS stream: {0}")]
    Open(#[source] tonic::Status),
    #[error("ADS stream failed: {0}")]
    Stream(#[source] tonic::Status),
    #[error("istiod closed the ADS stream")]
    Closed,
    #[error("response for unsubscribed type {0}")]
    UnknownType(String),
}

struct Registered {
    state: TypeState,
    handler: Box<dyn ResourceHandler>,
}

/// Subscribes names on demand (for example `<network>/<ip>` of a destination
/// the proxy has not heard of).
#[derive(Debug, Clone)]
pub struct Demander {
    tx: mpsc::Sender<(String, Vec<String>)>,
}

impl Demander {
    /// Asks for `names` of `type_url`; the answer arrives through the handler.
    pub async fn demand(&self, type_url: &str, names: Vec<String>) {
        // The client task only stops when dropped, and then nobody waits.
        let _ = self.tx.send((type_url.to_owned(), names)).await;
    }
}

/// Produces the metadata (for example `authorization: Bearer <token>`)
/// sent when each stream opens; called again on every reconnect, so a
/// rotating token is re-read.
type StreamMetadata = Box<dyn Fn() -> MetadataMap + Send + Sync>;

/// A delta ADS client. Register types, then `run` it in a task.
pub struct XdsClient {
    channel: Channel,
    metadata: Option<StreamMetadata>,
    config: XdsConfig,
    types: Vec<Registered>,
    ready: watch::Sender<bool>,
    demand_tx: mpsc::Sender<(String, Vec<String>)>,
    demand_rx: mpsc::Receiver<(String, Vec<String>)>,
}

impl std::fmt::Debug for XdsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types: Vec<&str> = self.types.iter().map(|t| t.state.type_url()).collect();
        f.debug_struct("XdsClient")
            .field("node", &self.config.node.id)
            .field("types", &types)
            .finish()
    }
}

/// Outcome of one stream: whether it got anywhere, and why it ended.
struct StreamEnd {
    received: bool,
    error: XdsError,
}

impl XdsClient {
    pub fn new(channel: Channel, config: XdsConfig) -> Self {
        let (demand_tx, demand_rx) = mpsc::channel(REQUEST_QUEUE);
        Self {
            channel,
            metadata: None,
            config,
            types: Vec::new(),
            ready: watch::Sender::new(false),
            demand_tx,
            demand_rx,
        }
    }

    /// Subscribes `type_url` and routes its responses to `handler`.
    #[must_use]
    pub fn with_type(
        mut self,
        type_url: &str,
        subscription: Subscription,
        handler: impl ResourceHandler,
    ) -> Self {
        self.types.push(Registered {
            state: TypeState::new(type_url, subscription),
            handler: Box::new(handler),
        });
        self
    }

    /// Sends `metadata()` with every stream it opens.
    #[must_use]
    pub fn with_stream_metadata(
        mut self,
        metadata: impl Fn() -> MetadataMap + Send + Sync + 'static,
    ) -> Self {
        self.metadata = Some(Box::new(metadata));
        self
    }

    /// Becomes `true` once every type has received its first response.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub fn demander(&self) -> Demander {
        Demander { tx: self.demand_tx.clone() }
    }

    /// Runs until the task is dropped.
    pub async fn run(mut self) {
        let mut backoff = self.config.initial_backoff;
        loop {
            let end = self.run_stream().await;
            if end.received {
                backoff = self.config.initial_backoff;
            }
            tracing::warn!(error = %end.error, retry_in = ?backoff, "xDS stream ended");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    async fn run_stream(&mut self) -> StreamEnd {
        let mut received = false;
        let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(REQUEST_QUEUE);
        let mut node = Some(self.config.node.clone());
        for t in &self.types {
            // Cannot fail: the receiver is alive and the queue has room.
            let _ = tx.try_send(t.state.initial_request(node.take()));
        }
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel.clone());
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(metadata) = &self.metadata {
            *request.metadata_mut() = metadata();
        }
        let mut responses = match client.delta_aggregated_resources(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return StreamEnd { received, error: XdsError::Open(status) },
        };
        loop {
            tokio::select! {
                message = responses.message() => {
                    let response = match message {
                        Ok(Some(r)) => r,
                        Ok(None) => return StreamEnd { received, error: XdsError::Closed },
                        Err(status) => return StreamEnd { received, error: XdsError::Stream(status) },
                    };
                    received = true;
                    let Some(t) = self.types.iter_mut().find(|t| t.state.type_url() == response.type_url) else {
                        return StreamEnd { received, error: XdsError::UnknownType(response.type_url) };
                    };
                    let reply = t.state.on_response(response, t.handler.as_mut());
                    if let Some(detail) = &reply.error_detail {
                        tracing::warn!(type_url = %reply.type_url, reason = %detail.message, "NACK");
                    }
                    if tx.send(reply).await.is_err() {
                        return StreamEnd { received, error: XdsError::Closed };
                    }
                    if self.types.iter().all(|t| t.state.has_synced()) {
                        self.ready.send_if_modified(|r| !std::mem::replace(r, true));
                    }
                }
                Some((type_url, names)) = self.demand_rx.recv() => {
                    let request = self
                        .types
                        .iter_mut()
                        .find(|t| t.state.type_url() == type_url)
                        .and_then(|t| t.state.subscribe(names));
                    if let Some(request) = request
                        && tx.send(request).await.is_err()
                    {
                        return StreamEnd { received, error: XdsError::Closed };
                    }
                }
            }
        }
    }
}
