//! [`ConfigStore`]: the resources istiod serves, by type URL, updated in
//! place and remembering recent changes so streams compare only what moved.
//!
//! Each resource is versioned by a hash of its encoding (so an update that
//! changes nothing is not pushed) and aliased by `<network>/<ip>` so proxies
//! can subscribe on demand by address. Every [`ConfigStore::apply`] bumps a
//! generation and records the names it touched; a stream that last pushed
//! generation `g` asks [`ViewSource::changed_since`] for the names touched
//! after `g`. The log is bounded; a stream that fell behind it compares its
//! whole view once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use mesh_proto::discovery::Node;
use mesh_proto::security::Authorization;
use mesh_proto::type_url;
use mesh_proto::workload::{Address, address};
use mesh_xds::server::{ResourceView, VersionedResource, ViewSource};
use prost::Message;
use prost_types::Any;
use tokio::sync::watch;

use crate::translate::{Output, address_name, authorization_name};

/// Generations kept in the change log.
const LOG_GENERATIONS: usize = 512;
/// Names kept in the change log, in all.
const LOG_NAMES: usize = 200_000;

/// A stable content version: FNV-1a over the encoded resource.
pub(crate) fn version_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

pub(crate) fn ip_alias(network: &str, bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(format!("{network}/{ip}"))
}

fn aliases(address: &Address) -> Vec<String> {
    match &address.r#type {
        Some(address::Type::Workload(w)) => {
            w.addresses.iter().filter_map(|a| ip_alias(&w.network, a)).collect()
        }
        Some(address::Type::Service(s)) => {
            s.addresses.iter().filter_map(|a| ip_alias(&a.network, &a.address)).collect()
        }
        None => Vec::new(),
    }
}

fn versioned(type_url: &str, value: Vec<u8>, aliases: Vec<String>) -> VersionedResource {
    VersionedResource {
        version: version_of(&value),
        resource: Any { type_url: type_url.to_owned(), value },
        aliases,
    }
}

/// An Address as a named, versioned resource.
pub fn address_resource(address: &Address) -> (String, VersionedResource) {
    (address_name(address), versioned(type_url::ADDRESS, address.encode_to_vec(), aliases(address)))
}

/// An Authorization as a named, versioned resource.
pub fn authorization_resource(policy: &Authorization) -> (String, VersionedResource) {
    (
        authorization_name(policy),
        versioned(type_url::AUTHORIZATION, policy.encode_to_vec(), Vec::new()),
    )
}

/// Changes to one type: resources to add or replace, names to remove.
#[derive(Debug, Clone, Default)]
pub struct TypeChanges {
    pub upserts: Vec<(String, VersionedResource)>,
    pub removals: Vec<String>,
}

impl TypeChanges {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    views: HashMap<String, Arc<ResourceView>>,
    /// Per generation, newest last: the type URL and names it touched.
    log: VecDeque<(u64, String, Vec<String>)>,
    log_names: usize,
    /// Generations up to this one are no longer in the log.
    log_floor: u64,
}

/// The latest configuration, by type URL.
#[derive(Debug)]
pub struct ConfigStore {
    inner: RwLock<Inner>,
    tick: watch::Sender<u64>,
}

impl ConfigStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { inner: RwLock::default(), tick: watch::Sender::new(0) })
    }

    /// The current generation (0 before anything was applied).
    pub fn generation(&self) -> u64 {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).generation
    }

    /// Number of resources of a type.
    pub fn len(&self, type_url: &str) -> usize {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.views.get(type_url).map_or(0, |v| v.len())
    }

    /// Applies changes to several types as one generation and notifies
    /// streams; a change that alters nothing is dropped. Returns the names
    /// that really changed, by type.
    pub fn apply(&self, changes: Vec<(&str, TypeChanges)>) -> Vec<(String, Vec<String>)> {
        let mut touched_all = Vec::new();
        {
            let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            let generation = inner.generation + 1;
            for (type_url, changes) in changes {
                let view = Arc::make_mut(inner.views.entry(type_url.to_owned()).or_default());
                let mut touched = Vec::new();
                for (name, resource) in changes.upserts {
                    if view.get(&name).map(|r| &r.version) != Some(&resource.version) {
                        touched.push(name.clone());
                        view.insert(name, resource);
                    }
                }
                for name in changes.removals {
                    if view.remove(&name).is_some() {
                        touched.push(name);
                    }
                }
                if !touched.is_empty() {
                    inner.log_names += touched.len();
                    inner.log.push_back((generation, type_url.to_owned(), touched.clone()));
                    touched_all.push((type_url.to_owned(), touched));
                }
            }
            if touched_all.is_empty() {
                return touched_all;
            }
            inner.generation = generation;
            while inner.log.len() > LOG_GENERATIONS || inner.log_names > LOG_NAMES {
                let Some((g, _, names)) = inner.log.pop_front() else { break };
                inner.log_names -= names.len();
                inner.log_floor = inner.log_floor.max(g);
            }
        }
        self.tick.send_modify(|t| *t = t.wrapping_add(1));
        touched_all
    }

    /// Replaces the whole configuration with `output` (changes are computed
    /// against what is held, so streams still get increments).
    pub fn publish(&self, output: &Output) {
        let addresses: ResourceView = output.addresses.iter().map(address_resource).collect();
        let authorizations: ResourceView =
            output.authorizations.iter().map(authorization_resource).collect();
        let changes = {
            let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            let diff = |type_url: &str, new: ResourceView| {
                let removals = inner
                    .views
                    .get(type_url)
                    .map(|old| old.keys().filter(|k| !new.contains_key(*k)).cloned().collect())
                    .unwrap_or_default();
                TypeChanges { upserts: new.into_iter().collect(), removals }
            };
            vec![
                (type_url::ADDRESS, diff(type_url::ADDRESS, addresses)),
                (type_url::AUTHORIZATION, diff(type_url::AUTHORIZATION, authorizations)),
            ]
        };
        self.apply(changes);
    }
}

impl ViewSource for ConfigStore {
    fn serves(&self, type_url: &str) -> bool {
        matches!(type_url, type_url::ADDRESS | type_url::AUTHORIZATION)
    }

    fn view(&self, _node: Option<&Node>, type_url: &str) -> Arc<ResourceView> {
        // Every proxy sees the whole mesh (as upstream's ztunnel view); it
        // narrows with on-demand subscriptions.
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.views.get(type_url).cloned().unwrap_or_default()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    fn changed_since(&self, type_url: &str, since: u64) -> Option<BTreeSet<String>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if since < inner.log_floor {
            return None;
        }
        let mut names = BTreeSet::new();
        for (generation, t, touched) in inner.log.iter().rev() {
            if *generation <= since {
                break;
            }
            if t == type_url {
                names.extend(touched.iter().cloned());
            }
        }
        Some(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::workload::Workload;

    fn workload(uid: &str, ip: [u8; 4], name: &str) -> Address {
        Address {
            r#type: Some(address::Type::Workload(Workload {
                uid: uid.to_owned(),
                name: name.to_owned(),
                addresses: vec![ip.to_vec()],
                ..Default::default()
            })),
        }
    }

    #[test]
    fn versions_are_stable_and_content_addressed() {
        assert_eq!(version_of(b"abc"), version_of(b"abc"));
        assert_ne!(version_of(b"abc"), version_of(b"abd"));
        assert_eq!(version_of(b""), "cbf29ce484222325");
    }

    #[test]
    fn aliases_name_network_and_ip() {
        assert_eq!(ip_alias("net1", &[10, 0, 0, 1]).as_deref(), Some("net1/10.0.0.1"));
        assert_eq!(ip_alias("", &[0; 16]).as_deref(), Some("/::"));
        assert_eq!(ip_alias("", &[1, 2, 3]), None);
    }

    #[test]
    fn the_change_log_names_what_moved_after_a_generation() {
        let store = ConfigStore::new();
        let a = workload("a", [10, 0, 0, 1], "a");
        let b = workload("b", [10, 0, 0, 2], "b");
        store.publish(&Output { addresses: vec![a.clone(), b.clone()], ..Default::default() });
        assert_eq!(store.generation(), 1);
        let names = |since| store.changed_since(type_url::ADDRESS, since).unwrap();
        assert_eq!(names(0), BTreeSet::from(["a".to_owned(), "b".to_owned()]));

        // Re-publishing the same content is no generation at all.
        store.publish(&Output { addresses: vec![a.clone(), b.clone()], ..Default::default() });
        assert_eq!(store.generation(), 1);

        let a2 = workload("a", [10, 0, 0, 1], "a-renamed");
        store.publish(&Output { addresses: vec![a2, b], ..Default::default() });
        assert_eq!(names(1), BTreeSet::from(["a".to_owned()]));
        store.publish(&Output { addresses: vec![a], ..Default::default() });
        assert_eq!(names(2), BTreeSet::from(["a".to_owned(), "b".to_owned()]));
        assert_eq!(names(3), BTreeSet::new());
        assert_eq!(store.len(type_url::ADDRESS), 1);
        let view = store.view(None, type_url::ADDRESS);
        assert_eq!(view.get("a").map(|r| r.aliases.clone()), Some(vec!["/10.0.0.1".to_owned()]));
        assert!(store.changed_since(type_url::AUTHORIZATION, 0).unwrap().is_empty());
    }

    #[test]
    fn a_stream_behind_the_log_compares_everything() {
        let store = ConfigStore::new();
        for i in 0..u16::try_from(LOG_GENERATIONS + 2).unwrap() {
            let [hi, lo] = i.to_be_bytes();
            let ip = [10, 0, hi, lo];
            let w = workload(&format!("w{i}"), ip, "w");
            store.publish(&Output { addresses: vec![w], ..Default::default() });
        }
        assert_eq!(store.changed_since(type_url::ADDRESS, 1), None);
        let latest = store.generation();
        assert_eq!(store.changed_since(type_url::ADDRESS, latest), Some(BTreeSet::new()));
    }
}
