//! Drives one delta ADS stream on the server: reads requests into a
//! [`Session`], and whenever the subscription or the world changes, sends the
//! proxy what changed for it.
//!
//! Back-pressure by coalescing: the driver computes the next response only
//! after the previous one was handed to the transport, always from the latest
//! view, so a proxy that reads slowly receives fewer, larger updates and
//! never makes the server queue snapshots for it.
//!
//! Incremental pushes: when the source can say which names changed since the
//! generation this stream last saw ([`ViewSource::changed_since`]), only
//! those are compared; otherwise (and on every subscription change) the
//! whole view is.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use mesh_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::connections::{ConnectionGuard, Connections, lock};
use super::session::{RequestOutcome, ResourceView, SessionError};

/// Where a stream's resources come from.
pub trait ViewSource: Send + Sync + 'static {
    /// Whether this source serves `type_url`. Requests for any other type
    /// are ignored: they create no per-stream state and no metric label
    /// (upstream istiod likewise answers nothing for a type it has no
    /// generator for).
    fn serves(&self, type_url: &str) -> bool;
    /// Everything of `type_url` this proxy may see.
    fn view(&self, node: Option<&Node>, type_url: &str) -> Arc<ResourceView>;
    /// Ticks (with a generation number) whenever the world may have changed.
    fn changes(&self) -> watch::Receiver<u64>;
    /// Names of `type_url` that changed after generation `since`, or `None`
    /// when the source cannot tell (the whole view is compared then).
    fn changed_since(&self, _type_url: &str, _since: u64) -> Option<BTreeSet<String>> {
        None
    }
}

/// Responses of one stream, for tonic's `DeltaAggregatedResourcesStream`.
pub type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// Serves one proxy's stream until it closes, registered in `connections`.
pub fn serve<R>(
    requests: R,
    source: Arc<dyn ViewSource>,
    connections: &Arc<Connections>,
) -> ResponseStream
where
    R: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Send + Unpin + 'static,
{
    // One slot: the next response is computed when the previous one left.
    let (tx, rx) = mpsc::channel(1);
    let driver = Driver { guard: connections.open(), source, tx, seen_generation: 0 };
    tokio::spawn(driver.run(requests));
    Box::pin(ReceiverStream::new(rx))
}

struct Driver {
    guard: ConnectionGuard,
    source: Arc<dyn ViewSource>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    /// The source generation this stream's last push reflected.
    seen_generation: u64,
}

impl Driver {
    async fn run<R>(mut self, mut requests: R)
    where
        R: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Send + Unpin + 'static,
    {
        let mut changes = self.source.changes();
        self.seen_generation = *changes.borrow_and_update();
        loop {
            tokio::select! {
                request = requests.next() => {
                    let request = match request {
                        Some(Ok(r)) => r,
                        Some(Err(status)) => {
                            tracing::debug!(%status, "xDS request stream failed");
                            return;
                        }
                        None => return,
                    };
                    let type_url = request.type_url.clone();
                    if !self.source.serves(&type_url) {
                        tracing::debug!(node = %self.node_id(), "ignoring a request for a type not served here");
                        if let Some(m) = self.guard_metrics() {
                            m.refused_type();
                        }
                        continue;
                    }
                    match self.on_request(request).await {
                        None => return,
                        // ACKs and NACKs need no answer: what changed since
                        // is pushed by the change tick anyway.
                        Some(RequestOutcome::SubscriptionChanged) => {
                            if !self.push(Some(&type_url), None).await {
                                return;
                            }
                        }
                        Some(_) => {}
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let generation = *changes.borrow_and_update();
                    let since = self.seen_generation;
                    self.seen_generation = generation;
                    if !self.push(None, Some(since)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Records a request; `None` ends the stream.
    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Option<RequestOutcome> {
        let type_url = request.type_url.clone();
        let outcome = lock(&self.guard.session).on_request(request);
        match outcome {
            Ok(RequestOutcome::Nack { message }) => {
                let node = self.node_id();
                tracing::warn!(%node, %type_url, %message, "proxy rejected config (NACK)");
                if let Some(m) = self.guard_metrics() {
                    m.rejected(&type_url);
                }
                Some(RequestOutcome::Nack { message })
            }
            Ok(outcome) => Some(outcome),
            Err(e) => {
                let status = match &e {
                    SessionError::TooManyNames { .. } => Status::resource_exhausted(e.to_string()),
                    SessionError::NoTypeUrl | SessionError::UnknownNonce { .. } => {
                        Status::invalid_argument(e.to_string())
                    }
                };
                let _ = self.tx.send(Err(status)).await;
                None
            }
        }
    }

    fn node_id(&self) -> String {
        lock(&self.guard.session).node().map(|n| n.id.clone()).unwrap_or_default()
    }

    fn guard_metrics(&self) -> Option<&super::connections::XdsMetrics> {
        self.guard.metrics()
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;

impl Driver {
    /// Sends what changed for one type (or every subscribed type); `false`
    /// when the proxy is gone. `since`: the generation the change is relative
    /// to, for an incremental comparison.
    async fn push(&mut self, only: Option<&str>, since: Option<u64>) -> bool {
        let started = Instant::now();
        let type_urls: Vec<String> = match only {
            Some(t) => vec![t.to_owned()],
            None => lock(&self.guard.session).type_urls().map(str::to_owned).collect(),
        };
        for type_url in type_urls {
            let changed = since.and_then(|g| self.source.changed_since(&type_url, g));
            let response = {
                let mut session = lock(&self.guard.session);
                let view = self.source.view(session.node(), &type_url);
                session.respond(&type_url, &view, changed.as_ref())
            };
            let Some(response) = response else { continue };
            let bytes = response.encoded_len();
            if self.tx.send(Ok(response)).await.is_err() {
                return false;
            }
            if let Some(m) = self.guard_metrics() {
                m.pushed(&type_url, bytes, started.elapsed());
            }
        }
        true
    }
}
