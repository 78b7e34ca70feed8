//! The certificates being served, one `watch` channel per identity.
//!
//! Written only by the actor; read by handles (`get`'s fast path,
//! `subscribe`) and the metrics collector. The lock is held for a map
//! lookup or a value swap, never across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mesh_model::Identity;
use tokio::sync::watch;
use tokio::time::Instant;

use super::state::Held;
use crate::WorkloadCertificate;

pub(crate) type Current = Option<Arc<WorkloadCertificate>>;

#[derive(Debug)]
struct Slot {
    tx: watch::Sender<Current>,
    expires_at: Option<Instant>,
}

impl Slot {
    fn new() -> Self {
        Self { tx: watch::Sender::new(None), expires_at: None }
    }

    /// Worth keeping: serving a certificate, or watched.
    fn in_use(&self) -> bool {
        self.expires_at.is_some() || self.tx.receiver_count() > 0
    }
}

#[derive(Debug, Default)]
pub(crate) struct Published {
    slots: Mutex<HashMap<Identity, Slot>>,
}

impl Published {
    fn slots(&self) -> MutexGuard<'_, HashMap<Identity, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The certificate served for `identity` now.
    pub(crate) fn current(&self, identity: &Identity) -> Current {
        self.slots().get(identity).and_then(|slot| slot.tx.borrow().clone())
    }

    pub(crate) fn subscribe(&self, identity: &Identity) -> watch::Receiver<Current> {
        let mut slots = self.slots();
        // Drop slots nobody serves or watches any more (their receivers
        // went away); the actor recreates a slot when it publishes.
        slots.retain(|_, slot| slot.in_use());
        slots.entry(identity.clone()).or_insert_with(Slot::new).tx.subscribe()
    }

    /// Serves `held` (or nothing) for `identity`. Watchers are woken only
    /// when the certificate actually changes.
    pub(crate) fn publish(&self, identity: &Identity, held: Option<&Held>) {
        let mut slots = self.slots();
        let slot = match slots.get_mut(identity) {
            Some(slot) => slot,
            None if held.is_none() => return,
            None => slots.entry(identity.clone()).or_insert_with(Slot::new),
        };
        slot.expires_at = held.map(|h| h.expires_at);
        let next = held.map(|h| Arc::clone(&h.cert));
        slot.tx.send_if_modified(|current| {
            let same = match (current.as_ref(), next.as_ref()) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                *current = next;
            }
            !same
        });
    }

    /// The identity is gone: watchers see `None`; the slot stays only while
    /// someone still watches it (a later `track` publishes into it again).
    pub(crate) fn remove(&self, identity: &Identity) {
        self.publish(identity, None);
        let mut slots = self.slots();
        if slots.get(identity).is_some_and(|slot| !slot.in_use()) {
            slots.remove(identity);
        }
    }

    /// Shutdown: every watcher sees `None`, then (once the last reference
    /// to `self` goes) a closed channel.
    pub(crate) fn clear(&self) {
        let mut slots = self.slots();
        for slot in slots.values() {
            slot.tx.send_replace(None);
        }
        slots.clear();
    }

    /// Identities served now and their expiry deadlines, for metrics.
    pub(crate) fn expiries(&self) -> Vec<(Identity, Instant)> {
        let mut out: Vec<(Identity, Instant)> = self
            .slots()
            .iter()
            .filter_map(|(id, slot)| slot.expires_at.map(|at| (id.clone(), at)))
            .collect();
        out.sort();
        out
    }
}
