//! Drives one delta ADS stream on the server: reads requests into a
//! [`Session`], and whenever the subscription or the world changes, sends the
//! proxy what changed for it.
//!
//! Back-pressure by coalescing: the driver computes the next response only
//! after the previous one was handed to the transport, always from the latest
//! view, so a proxy that reads slowly receives fewer, larger updates and
//! never makes the server queue snapshots for it.

use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use mesh_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::session::{RequestOutcome, ResourceView, Session};

/// Where a stream's resources come from.
pub trait ViewSource: Send + Sync + 'static {
    /// Everything of `type_url` this proxy may see.
    fn view(&self, node: Option<&Node>, type_url: &str) -> ResourceView;
    /// Ticks whenever the world may have changed.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// Responses of one stream, for tonic's `DeltaAggregatedResourcesStream`.
pub type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// Serves one proxy's stream until it closes.
pub fn serve<R>(requests: R, source: Arc<dyn ViewSource>) -> ResponseStream
where
    R: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Send + Unpin + 'static,
{
    // One slot: the next response is computed when the previous one left.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(drive(requests, source, tx));
    Box::pin(ReceiverStream::new(rx))
}

async fn drive<R>(
    mut requests: R,
    source: Arc<dyn ViewSource>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) where
    R: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Send + Unpin + 'static,
{
    let mut session = Session::new();
    let mut changes = source.changes();
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
                match session.on_request(request) {
                    Ok(RequestOutcome::Nack { message }) => {
                        let node = session.node().map(|n| n.id.clone()).unwrap_or_default();
                        tracing::warn!(%node, %type_url, %message, "proxy rejected config (NACK)");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                        return;
                    }
                }
                if !push(&mut session, source.as_ref(), &tx, Some(&type_url)).await {
                    return;
                }
            }
            changed = changes.changed() => {
                if changed.is_err() || !push(&mut session, source.as_ref(), &tx, None).await {
                    return;
                }
            }
        }
    }
}

/// Sends what changed for one type (or every subscribed type); `false` when
/// the proxy is gone.
async fn push(
    session: &mut Session,
    source: &dyn ViewSource,
    tx: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    only: Option<&str>,
) -> bool {
    let type_urls: Vec<String> = match only {
        Some(t) => vec![t.to_owned()],
        None => session.type_urls().map(str::to_owned).collect(),
    };
    for type_url in type_urls {
        let view = source.view(session.node(), &type_url);
        if let Some(response) = session.respond(&type_url, &view, None)
            && tx.send(Ok(response)).await.is_err()
        {
            return false;
        }
    }
    true
}
