//! The proxy's view of the mesh: workloads, services and L4 policies, as
//! pushed by istiod over delta xDS, with the indexes the data path needs.
//!
//! - [`ProxyState`] is a plain, synchronous store. Every update keeps the
//!   indexes (by uid, by network address, by VIP, service endpoints, policy
//!   scopes) consistent; see `store.rs`.
//! - Lookups (`lookup.rs`), endpoint selection (`balance.rs`) and the
//!   admin dump (`dump.rs`) only need `&ProxyState`.
//! - [`StateHandle`] shares one store between the xDS handlers (writers) and
//!   the proxies (readers): an `Arc<std::sync::RwLock<ProxyState>>`. Guards
//!   are taken for one lookup or one xDS response and never held across an
//!   `.await` (the store has no async API, so a guard cannot be held across
//!   one by accident without the caller doing it explicitly). Writes are rare
//!   and short (one xDS response), reads are many and short; an ArcSwap
//!   snapshot would copy the whole store on every update, which a large mesh
//!   with frequent endpoint churn cannot afford.
//! - Every write bumps a generation on a `tokio::sync::watch` channel
//!   ([`StateHandle::changes`]) so that open connections can be re-checked
//!   against the new policies (see `crate::proxy::connections`).

mod balance;
mod dump;
mod lookup;
mod owners;
mod policies;
mod store;
#[cfg(test)]
pub(crate) mod testutil;
mod xds;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use ipnet::IpNet;
use mesh_model::{Authorization, NamespacedHostname, Service, Workload};
use tokio::sync::watch;

pub use balance::{Endpoint, is_passthrough};
pub use lookup::Destination;
pub use policies::{BoundPolicies, RejectedPolicy, Unavailable};
pub use xds::{AddressHandler, AuthorizationHandler};

/// `(network, ip)`: how addresses are indexed ("" is the default network).
type NetworkIp = (String, IpAddr);

/// Everything the proxy knows about the mesh. See the module docs.
#[derive(Debug, Default)]
pub struct ProxyState {
    workloads: HashMap<String, Arc<Workload>>,
    /// Every workload claiming each address (a WorkloadEntry may claim a
    /// pod's IP): the owner is decided at lookup time by the shared rule
    /// ([`mesh_model::ownership`]), so removing one claimant restores the
    /// next one at once.
    workloads_by_ip: HashMap<NetworkIp, BTreeSet<String>>,
    services: HashMap<NamespacedHostname, Arc<Service>>,
    /// Lowercased hostname -> keys of the services with that hostname (a
    /// ServiceEntry host may be defined in several namespaces); for DNS.
    services_by_host: HashMap<String, BTreeSet<NamespacedHostname>>,
    /// Single-address VIPs, with every service claiming each.
    services_by_vip: HashMap<NetworkIp, BTreeSet<NamespacedHostname>>,
    /// VIPs that are ranges (a `NetworkAddress` with a length); scanned
    /// linearly after the exact index misses. Rare in practice.
    service_ranges: Vec<(String, IpNet, NamespacedHostname)>,
    /// Service key -> uids of the workloads that list it in `services`. Kept
    /// even for services not (yet) known, as workloads may arrive first.
    endpoints: HashMap<NamespacedHostname, BTreeSet<String>>,
    policies: HashMap<String, Arc<Authorization>>,
    /// Policies istiod sent that could not be converted: a workload they are
    /// bound to is denied everything until a valid version arrives.
    rejected_policies: HashMap<String, RejectedPolicy>,
    /// Keys of GLOBAL-scope policies.
    global_policies: BTreeSet<String>,
    /// Namespace -> keys of NAMESPACE-scope policies.
    namespace_policies: HashMap<String, BTreeSet<String>>,
    /// Round-robin cursor shared by all services (interior mutability so
    /// that picking works through a read guard).
    round_robin: AtomicUsize,
}

/// Why an update was refused. The store is unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("resource name {name:?} does not match the resource's key {key:?}")]
    NameMismatch { name: String, key: String },
}

/// A cloneable, shared handle on one [`ProxyState`]. See the module docs for
/// the locking rules.
#[derive(Debug, Clone)]
pub struct StateHandle {
    inner: Arc<RwLock<ProxyState>>,
    /// The write generation, bumped after every [`Self::write`].
    generation: Arc<watch::Sender<u64>>,
}

impl Default for StateHandle {
    fn default() -> Self {
        Self::new(ProxyState::default())
    }
}

impl StateHandle {
    pub fn new(state: ProxyState) -> Self {
        let (generation, _) = watch::channel(0);
        Self { inner: Arc::new(RwLock::new(state)), generation: Arc::new(generation) }
    }

    /// A read guard for a short, synchronous look: do not hold it across an
    /// `.await`. A writer that panicked cannot leave the indexes half
    /// updated in a way readers can observe as unsafe, so poisoning is
    /// ignored rather than propagated as a panic.
    pub fn read(&self) -> RwLockReadGuard<'_, ProxyState> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with exclusive access; used by the xDS handlers. Watchers
    /// of [`Self::changes`] are told once the guard is released.
    pub fn write<R>(&self, f: impl FnOnce(&mut ProxyState) -> R) -> R {
        let result = {
            let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        };
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
        result
    }

    /// The current write generation (see [`Self::changes`]).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// The write generation: it changes after every [`Self::write`] (a
    /// watcher sees the latest value; several writes may coalesce).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_bumps_the_generation() {
        let state = StateHandle::default();
        let mut changes = state.changes();
        assert!(!changes.has_changed().unwrap_or(true));
        state.write(|_| ());
        assert!(changes.has_changed().unwrap_or(false));
        assert_eq!(*changes.borrow_and_update(), 1);
    }
}
