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
    /// `admitted_at` is the state's generation read before the connection
    /// was authorized: when the state changed since (the reconciler may
    /// have run before this entry existed), the connection is re-checked
    /// here.
    pub fn register(
        &self,
        facts: OpenConnection,
        state: &StateHandle,
        admitted_at: u64,
    ) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(None);
        let recheck = (state.generation() != admitted_at).then(|| (facts.clone(), close.clone()));
        self.entries().insert(id, Entry { facts, close });
        if let Some((facts, close)) = recheck
            && let Some(reason) = denial(state, &facts)
        {
            self.close(&facts, &close, reason);
        }
        Registration { registry: self.clone(), id, closed }
    }

    /// Closes one connection: access log, counter, signal.
    fn close(&self, facts: &OpenConnection, close: &watch::Sender<Option<String>>, reason: String) {
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
        self.inner.closed_by_policy.inc();
        close.send_replace(Some(reason));
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
            if let Some(reason) = denial(state, &facts) {
                self.close(&facts, &close, reason);
                closed += 1;
            }
        }
        closed
    }
}

/// Why `state` no longer allows the connection, if it does not.
fn denial(state: &StateHandle, facts: &OpenConnection) -> Option<String> {
    let s = state.read();
    let Some(destination) = s.workload_by_uid(&facts.destination_uid) else {
        return Some("destination workload removed".to_owned());
    };
    let decision = s.still_allowed(&ConnectionInfo {
        source_identity: facts.source_identity.as_ref(),
        source_ip: facts.source_ip,
        destination_ip: facts.destination.ip(),
        destination_port: facts.destination.port(),
        destination_workload: &destination,
    });
    (!decision.allowed).then(|| decision.reason.to_string())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_model::{Action, Clause, Match, Rule, Scope, StringMatch};

    use super::*;
    use crate::state::ProxyState;
    use crate::state::testutil::{insert_workload, ip, policy, workload};

    fn state() -> StateHandle {
        let mut s = ProxyState::default();
        insert_workload(&mut s, workload("dst", "10.0.0.1"));
        StateHandle::new(s)
    }

    fn facts(sa: &str) -> OpenConnection {
        OpenConnection {
            source_identity: Some(Identity::new("cluster.local", "ns", sa).unwrap()),
            source_ip: ip("10.1.0.1"),
            destination: SocketAddr::new(ip("10.0.0.1"), 80),
            destination_uid: "dst".into(),
        }
    }

    fn deny(sa: &str) -> mesh_model::Authorization {
        let principal = StringMatch::Exact(format!("cluster.local/ns/ns/sa/{sa}"));
        let m = Match { principals: vec![principal], ..Default::default() };
        let rules = vec![Rule { clauses: vec![Clause { matches: vec![m] }] }];
        policy("ns", "deny", Scope::Namespace, Action::Deny, rules)
    }

    async fn is_closed(r: &mut Registration) -> Option<String> {
        tokio::time::timeout(Duration::from_millis(50), r.closed()).await.ok()
    }

    #[tokio::test]
    async fn reconcile_closes_only_what_the_state_denies_and_drop_forgets() {
        let (state, registry) = (state(), ConnectionRegistry::default());
        let at = state.generation();
        let mut a = registry.register(facts("a"), &state, at);
        let mut b = registry.register(facts("b"), &state, at);
        assert_eq!(registry.reconcile(&state), 0);
        state.write(|s| s.insert_policy(deny("a")));
        assert_eq!(registry.reconcile(&state), 1);
        let reason = is_closed(&mut a).await.unwrap();
        assert!(reason.contains("ns/deny"), "{reason}");
        assert_eq!(is_closed(&mut b).await, None);
        // Closed entries are not counted twice.
        assert_eq!(registry.reconcile(&state), 0);
        assert_eq!(registry.closed_by_policy().get(), 1);
        drop(a);
        assert_eq!(registry.len(), 1);
        state.write(|s| s.remove_address("dst"));
        assert_eq!(registry.reconcile(&state), 1);
        assert_eq!(is_closed(&mut b).await.as_deref(), Some("destination workload removed"));
    }

    #[tokio::test]
    async fn a_change_between_admission_and_registration_is_checked() {
        let (state, registry) = (state(), ConnectionRegistry::default());
        let admitted_at = state.generation();
        state.write(|s| s.insert_policy(deny("a")));
        let mut late = registry.register(facts("a"), &state, admitted_at);
        assert!(is_closed(&mut late).await.is_some());
        let mut current = registry.register(facts("a"), &state, state.generation());
        assert_eq!(is_closed(&mut current).await, None, "no re-check without a change");
    }
}
