//! Where the agent learns about pods and namespaces: [`PodSource`], fed
//! either by Kubernetes watchers (`kube` feature, [`super::kube`]) or
//! programmatically ([`LocalPods`]) for local mode and tests.

use std::future::Future;

use tokio::sync::mpsc;

use super::pod::{Labels, PodInfo};

/// One change seen by a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// A pod on this node was added or changed.
    Pod(PodInfo),
    /// A pod left this node (deleted, or gone in a relist).
    PodGone {
        uid: String,
    },
    /// A namespace's labels.
    Namespace {
        name: String,
        labels: Labels,
    },
    NamespaceGone {
        name: String,
    },
    /// The source has reported everything that existed when it started.
    /// The agent sends ztunnel its snapshot only after this, so a restarted
    /// agent never tells ztunnel to drop pods it has not heard of yet.
    Synced,
}

/// The source failed for good.
#[derive(Debug, thiserror::Error)]
#[error("pod source {source_name}: {message}")]
pub struct SourceError {
    pub source_name: &'static str,
    pub message: String,
}

/// Reports pods and namespaces of one node until the receiver goes away.
pub trait PodSource: Send + 'static {
    /// Runs the source, sending events on `events`; returns when the agent
    /// stops listening or on a fatal error.
    fn run(
        self,
        events: mpsc::Sender<SourceEvent>,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// A source fed through a [`LocalPodsHandle`].
#[derive(Debug)]
pub struct LocalPods {
    rx: mpsc::Receiver<SourceEvent>,
}

/// Feeds a [`LocalPods`] source. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalPodsHandle {
    tx: mpsc::Sender<SourceEvent>,
}

impl LocalPods {
    /// A source and its handle.
    pub fn new() -> (Self, LocalPodsHandle) {
        let (tx, rx) = mpsc::channel(64);
        (Self { rx }, LocalPodsHandle { tx })
    }
}

impl LocalPodsHandle {
    async fn send(&self, event: SourceEvent) -> Result<(), SourceError> {
        self.tx.send(event).await.map_err(|_| SourceError {
            source_name: "local",
            message: "the agent has stopped".to_owned(),
        })
    }

    /// Adds or updates a pod (with its netns path for enrolment).
    pub async fn upsert_pod(&self, pod: PodInfo) -> Result<(), SourceError> {
        self.send(SourceEvent::Pod(pod)).await
    }

    /// Removes a pod.
    pub async fn remove_pod(&self, uid: &str) -> Result<(), SourceError> {
        self.send(SourceEvent::PodGone { uid: uid.to_owned() }).await
    }

    /// Sets a namespace's labels.
    pub async fn set_namespace(&self, name: &str, labels: Labels) -> Result<(), SourceError> {
        self.send(SourceEvent::Namespace { name: name.to_owned(), labels }).await
    }

    /// Everything that already existed has been reported (see
    /// [`SourceEvent::Synced`]); call once after the initial pods.
    pub async fn synced(&self) -> Result<(), SourceError> {
        self.send(SourceEvent::Synced).await
    }
}

impl PodSource for LocalPods {
    async fn run(mut self, events: mpsc::Sender<SourceEvent>) -> Result<(), SourceError> {
        while let Some(event) = self.rx.recv().await {
            if events.send(event).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}
