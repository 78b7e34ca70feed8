//! The open inbound connections of a node and the policy reconciler.
//!
//! Each inbound connection admitted under L4 policy (HBONE streams and
//! plaintext on 15006) registers the facts authorization looks at
//! ([`OpenConnection`]) and gets a [`Registration`]: the proxy loop selects
//! on [`Registration::closed`] next to its copy, and dropping the
//! registration removes the entry. [`ConnectionRegistry::reconcile`]
//! re-evaluates every entry with `ProxyState::still_allowed` against the
//! destination workload as it is now (a destination that vanished closes
//! the connection) and closes those now denied; [`run_reconciler`] does so
//! on every state change.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mesh_model::Identity;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use crate::policy::ConnectionInfo;
use crate::state::StateHandle;

/// What authorization needs about one open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenConnection {
    /// The peer's verified identity; `None` for plaintext.
    pub source_identity: Option<Identity>,
    pub source_ip: IpAddr,
    pub destination: SocketAddr,
    pub destination_uid: String,
}

#[derive(Debug)]
struct Entry {
    facts: OpenConnection,
    /// `Some(reason)` closes the connection.
    close: watch::Sender<Option<String>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    closed_by_policy: Counter,
}

/// The open inbound connections, shared by the proxies of a node.
#[derive(Debug, Clone, Default)]
pub struct ConnectionRegistry {
    inner: Arc<Inner>,
}

impl ConnectionRegistry {
    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tracks a connection until the returned registration is dropped.
    pub fn register(&self, facts: OpenConnection) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(None);
        self.entries().insert(id, Entry { facts, close });
        Registration { registry: self.clone(), id, closed }
    }

    /// Connections currently tracked.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections closed because policy no longer allowed them
    /// (`ztunnel_connections_closed_by_policy_total`).
    pub fn closed_by_policy(&self) -> Counter {
        self.inner.closed_by_policy.clone()
    }

    /// Registers the counter under `registry` (which should carry the
    /// `ztunnel` prefix).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "connections_closed_by_policy",
            "Open connections closed because a policy change no longer allows them",
            self.closed_by_policy(),
        );
    }

    /// Re-checks every open connection against `state` and closes those it
    /// no longer allows. Returns how many were closed.
    pub fn reconcile(&self, state: &StateHandle) -> usize {
        let open: Vec<(OpenConnection, watch::Sender<Option<String>>)> = self
            .entries()
            .values()
            .filter(|e| e.close.borrow().is_none())
            .map(|e| (e.facts.clone(), e.close.clone()))
            .collect();
        let mut closed = 0;
        for (facts, close) in open {
            let denial = {
                let s = state.read();
                match s.workload_by_uid(&facts.destination_uid) {
                    None => Some("destination workload removed".to_owned()),
                    Some(destination) => {
                        let decision = s.still_allowed(&ConnectionInfo {
                            source_identity: facts.source_identity.as_ref(),
                            source_ip: facts.source_ip,
                            destination_ip: facts.destination.ip(),
                            destination_port: facts.destination.port(),
                            destination_workload: &destination,
                        });
                        (!decision.allowed).then(|| decision.reason.to_string())
                    }
                }
            };
            if let Some(reason) = denial {
                tracing::info!(
                    target: "access",
                    direction = "inbound",
                    src.addr = %facts.source_ip,
                    src.identity = facts.source_identity.as_ref().map(ToString::to_string),
                    dst.addr = %facts.destination,
                    dst.workload_uid = facts.destination_uid,
                    error = "policy changed",
                    %reason,
                    "connection closed"
                );
                closed += 1;
                self.inner.closed_by_policy.inc();
                close.send_replace(Some(reason));
            }
        }
        closed
    }
}

/// One tracked connection; dropping it forgets the connection.
#[derive(Debug)]
pub struct Registration {
    registry: ConnectionRegistry,
    id: u64,
    closed: watch::Receiver<Option<String>>,
}

impl Registration {
    /// Resolves with the reason once the reconciler closes the connection;
    /// never resolves otherwise.
    pub async fn closed(&mut self) -> String {
        let reason = self
            .closed
            .wait_for(Option::is_some)
            .await
            .ok()
            .map(|reason| reason.clone().unwrap_or_default());
        match reason {
            Some(reason) => reason,
            // The sender lives in the registry until this is dropped.
            None => std::future::pending().await,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.entries().remove(&self.id);
    }
}

/// Reconciles `registry` after every change of `state`, until the state
/// handle is gone.
pub async fn run_reconciler(registry: ConnectionRegistry, state: StateHandle) {
    let mut changes = state.changes();
    while changes.changed().await.is_ok() {
        let closed = registry.reconcile(&state);
        if closed > 0 {
            tracing::info!(closed, "policy change closed open connections");
        }
    }
}
