//! The CNI node agent: one per node, keeps the node's enrolled pods
//! captured and handed to ztunnel.
//!
//! Inputs: a [`PodSource`] (Kubernetes watchers, or [`LocalPods`] fed
//! programmatically) and the CNI plugin's reports on a unix socket
//! ([`crate::report`]). One actor task owns all state; each pod moves
//! through [`PodState`]:
//!
//! ```text
//!  Outside --rules installed--> Pending --AddWorkload acked--> Enrolled
//!     ^                                                           |
//!     +--rules removed-- Removing <--no longer enrolled-----------+
//!                        (release_grace after DelWorkload was acked,
//!                         or after a snapshot without the pod was)
//! ```
//!
//! Enrol installs the rules before handing the pod to ztunnel; un-enrol
//! tells ztunnel first and removes the rules after its Ack (the reasoning is
//! in ARCHITECTURE.md, "CNI agent"). On every (re)connection to ztunnel the
//! agent replays AddWorkload for each Pending or Enrolled pod, then
//! SnapshotSent, so a restarted ztunnel recovers every pod and drops the
//! ones that left while it was away.

mod actor;
#[cfg(feature = "kube")]
pub mod kube;
mod listener;
pub mod pod;
pub mod procfs;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::report::{PluginReply, PluginRequest};
use crate::{Backend, CaptureConfig};

pub use pod::{Enrolment, Labels, PodInfo, enrolment};
pub use source::{LocalPods, LocalPodsHandle, PodSource, SourceError, SourceEvent};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// ztunnel's ZDS socket.
    pub zds_socket: PathBuf,
    /// Where the CNI plugin reports sandboxes; `None` runs without it.
    pub cni_socket: Option<PathBuf>,
    pub backend: Backend,
    /// Capture ports and marks; DNS capture is further switched off per pod
    /// by `ambient.istio.io/dns-capture: "false"`.
    pub capture: CaptureConfig,
    /// How long to wait for ztunnel's hello and each Ack.
    pub zds_timeout: Duration,
    /// How often the agent checks the ztunnel connection and retries what
    /// failed.
    pub tick: Duration,
    /// How long the rules stay after ztunnel let a pod go, so that the
    /// closing of its connections reaches the pod before the redirects (and
    /// with them the NAT bindings of those connections) disappear.
    pub release_grace: Duration,
    /// How long a plugin's ADD may wait for enrolment.
    pub plugin_timeout: Duration,
    /// Look for the netns of pods the plugin never reported (pods that
    /// started before the agent) in `/proc` ([`procfs`]).
    pub scan_proc: bool,
}

impl AgentConfig {
    /// Defaults for talking to ztunnel on `zds_socket`.
    pub fn new(zds_socket: impl Into<PathBuf>) -> Self {
        Self {
            zds_socket: zds_socket.into(),
            cni_socket: None,
            backend: Backend::default(),
            capture: CaptureConfig::default(),
            zds_timeout: crate::zds::agent::DEFAULT_TIMEOUT,
            tick: Duration::from_millis(500),
            release_grace: Duration::from_millis(500),
            plugin_timeout: Duration::from_secs(30),
            scan_proc: false,
        }
    }
}

/// Where a pod is in its enrolment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Not captured: no rules of ours, not handed to ztunnel.
    Outside,
    /// Rules installed; ztunnel has not acked the pod yet (connections are
    /// redirected to ports nobody listens on yet, so they are refused).
    Pending,
    /// Rules installed and ztunnel serves the pod.
    Enrolled,
    /// Leaving: ztunnel has not confirmed it let go, so the rules stay.
    Removing,
}

/// A pod's state as published by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatus {
    /// `namespace/name`.
    pub key: String,
    pub state: PodState,
    /// The last failure, until the pod makes progress.
    pub error: Option<String>,
}

/// Pod uid -> status.
pub type StatusMap = Arc<BTreeMap<String, PodStatus>>;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent: listening for the CNI plugin on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent: pod {uid} did not reach {want:?} within {timeout:?} (last: {last:?})")]
    Timeout { uid: String, want: PodState, timeout: Duration, last: Option<PodStatus> },
    #[error("agent: stopped")]
    Stopped,
}

/// A request to the actor.
#[derive(Debug)]
pub(crate) struct PluginCall {
    pub(crate) request: PluginRequest,
    pub(crate) reply: oneshot::Sender<PluginReply>,
}

/// A running agent. Dropping it (or [`Agent::shutdown`]) stops it and
/// leaves pods as they are: rules stay and ztunnel keeps serving, so a
/// restarted agent re-adopts them.
#[derive(Debug)]
pub struct Agent {
    calls: mpsc::Sender<PluginCall>,
    status: watch::Receiver<StatusMap>,
    tasks: JoinSet<()>,
}

impl Agent {
    /// Starts the agent: the actor, the source, and the plugin listener.
    pub async fn start<S: PodSource>(config: AgentConfig, source: S) -> Result<Self, AgentError> {
        let mut tasks = JoinSet::new();
        let (calls, calls_rx) = mpsc::channel(64);
        if let Some(path) = &config.cni_socket {
            let listener = listener::bind(path)
                .map_err(|source| AgentError::Listen { path: path.clone(), source })?;
            tasks.spawn(listener::serve(listener, path.clone(), calls.clone()));
        }
        let (events, events_rx) = mpsc::channel(256);
        tasks.spawn(async move {
            if let Err(e) = source.run(events).await {
                tracing::error!(error = %e, "pod source stopped");
            }
        });
        let (status_tx, status) = watch::channel(StatusMap::default());
        tasks.spawn(actor::Actor::new(config, status_tx).run(events_rx, calls_rx));
        Ok(Self { calls, status, tasks })
    }

    /// Every known pod's status, by uid.
    pub fn status(&self) -> StatusMap {
        self.status.borrow().clone()
    }

    /// One pod's state.
    pub fn state(&self, uid: &str) -> Option<PodState> {
        self.status.borrow().get(uid).map(|s| s.state)
    }

    /// Waits until pod `uid` is in state `want` (a pod the agent forgot
    /// counts as [`PodState::Outside`]).
    pub async fn wait_for(
        &self,
        uid: &str,
        want: PodState,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        let mut status = self.status.clone();
        let reached =
            |m: &StatusMap| m.get(uid).map_or(want == PodState::Outside, |s| s.state == want);
        let waited = tokio::time::timeout(timeout, status.wait_for(reached)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(AgentError::Stopped),
            Err(_) => Err(AgentError::Timeout {
                uid: uid.to_owned(),
                want,
                timeout,
                last: self.status.borrow().get(uid).cloned(),
            }),
        }
    }

    /// What the CNI plugin's socket does, in process: report a sandbox and
    /// wait for the verdict.
    pub async fn report(&self, request: PluginRequest) -> PluginReply {
        call(&self.calls, request).await
    }

    /// Stops the agent's tasks (pods stay as they are).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Sends `request` to the actor and waits for its reply.
pub(crate) async fn call(calls: &mpsc::Sender<PluginCall>, request: PluginRequest) -> PluginReply {
    let (reply, answer) = oneshot::channel();
    if calls.send(PluginCall { request, reply }).await.is_err() {
        return PluginReply::Failed { message: "the agent is stopping".to_owned() };
    }
    answer
        .await
        .unwrap_or_else(|_| PluginReply::Failed { message: "the agent is stopping".to_owned() })
}
