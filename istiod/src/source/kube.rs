//! The Kubernetes config source: one watcher per kind, reporting
//! [`SourceEvent`]s.
//!
//! Each kind is watched with kube-rs' watcher (list, then watch, relisting
//! with backoff after errors). A relist reports the objects that vanished
//! while the watch was down as deletions, so the engine never keeps a stale
//! object. [`SourceEvent::Synced`] is sent once every kind has finished its
//! first listing; a kind whose CRD is not installed counts as listed (empty)
//! and keeps being retried, so installing the CRD later just works.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;

use super::{EventSender, Kind, Object, ObjectRef, SourceEvent, UntypedObject};
use crate::translate::crd::IstioObject;

/// Converts a watched object (as JSON) into an [`Object`] of `kind`.
pub fn object_from_json(kind: Kind, value: serde_json::Value) -> Result<Object, serde_json::Error> {
    fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, serde_json::Error> {
        serde_json::from_value(value)
    }
    Ok(match kind {
        Kind::Namespace => Object::Namespace(typed::<Namespace>(value)?),
        Kind::Node => Object::Node(typed::<Node>(value)?),
        Kind::Pod => Object::Pod(typed::<Pod>(value)?),
        Kind::Service => Object::Service(typed::<Service>(value)?),
        Kind::EndpointSlice => Object::EndpointSlice(typed::<EndpointSlice>(value)?),
        Kind::AuthorizationPolicy => Object::AuthorizationPolicy(IstioObject::from_json(value)?),
        Kind::PeerAuthentication => Object::PeerAuthentication(IstioObject::from_json(value)?),
        Kind::ServiceEntry => Object::ServiceEntry(IstioObject::from_json(value)?),
        Kind::WorkloadEntry => Object::WorkloadEntry(IstioObject::from_json(value)?),
        Kind::RequestAuthentication
        | Kind::Gateway
        | Kind::GatewayClass
        | Kind::HttpRoute
        | Kind::GrpcRoute => {
            let metadata = match value.get("metadata") {
                Some(m) => serde_json::from_value(m.clone())?,
                None => Default::default(),
            };
            Object::Untyped(UntypedObject { kind, metadata, body: value })
        }
    })
}

/// The API resource of a kind, for dynamic watches.
pub fn api_resource(kind: Kind) -> ApiResource {
    let gvk = GroupVersionKind::gvk(kind.group(), kind.version(), kind.name());
    ApiResource::from_gvk_with_plural(&gvk, kind.plural())
}

/// Watches every kind in `kinds` until the returned set is dropped.
pub fn spawn(client: Client, kinds: &[Kind], events: EventSender) -> JoinSet<()> {
    let pending = Arc::new(AtomicUsize::new(kinds.len()));
    let mut tasks = JoinSet::new();
    for &kind in kinds {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(kind));
        tasks.spawn(watch_kind(kind, api, events.clone(), Arc::clone(&pending)));
    }
    tasks
}

/// Tracks one kind's listing: which objects exist, and whether the first
/// listing finished.
struct KindWatch {
    kind: Kind,
    known: BTreeSet<ObjectRef>,
    relisted: BTreeSet<ObjectRef>,
    synced: bool,
    pending: Arc<AtomicUsize>,
    events: EventSender,
}

impl KindWatch {
    async fn send(&self, event: SourceEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// Marks this kind listed; the last kind to get there reports `Synced`.
    async fn mark_synced(&mut self) -> bool {
        if self.synced {
            return true;
        }
        self.synced = true;
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            return self.send(SourceEvent::Synced).await;
        }
        true
    }

    async fn apply(&mut self, value: DynamicObject, during_init: bool) -> bool {
        let json = match serde_json::to_value(&value) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(kind = %self.kind, error = %e, "cannot re-encode watched object");
                return true;
            }
        };
        match object_from_json(self.kind, json) {
            Ok(object) => {
                let reference = object.reference();
                if during_init {
                    self.relisted.insert(reference.clone());
                }
                self.known.insert(reference);
                self.send(SourceEvent::Applied(object)).await
            }
            Err(e) => {
                // The API server validated it; a decode failure means our
                // types disagree with the schema. Skip it loudly.
                let name = value.metadata.name.clone().unwrap_or_default();
                let namespace = value.metadata.namespace.clone().unwrap_or_default();
                tracing::warn!(kind = %self.kind, %namespace, %name, error = %e,
                    "watched object does not decode; ignored");
                true
            }
        }
    }

    async fn delete(&mut self, value: DynamicObject) -> bool {
        let reference = ObjectRef {
            kind: self.kind,
            key: crate::translate::ObjectKey::new(
                value.metadata.namespace.as_deref().unwrap_or_default(),
                value.metadata.name.as_deref().unwrap_or_default(),
            ),
        };
        self.known.remove(&reference);
        self.send(SourceEvent::Deleted(reference)).await
    }

    /// After a (re)list: what was known and not listed again is gone.
    async fn finish_listing(&mut self) -> bool {
        let relisted = std::mem::take(&mut self.relisted);
        let vanished: Vec<ObjectRef> = self.known.difference(&relisted).cloned().collect();
        for reference in vanished {
            self.known.remove(&reference);
            if !self.send(SourceEvent::Deleted(reference)).await {
                return false;
            }
        }
        self.mark_synced().await
    }
}

async fn watch_kind(
    kind: Kind,
    api: Api<DynamicObject>,
    events: EventSender,
    pending: Arc<AtomicUsize>,
) {
    let mut state = KindWatch {
        kind,
        known: BTreeSet::new(),
        relisted: BTreeSet::new(),
        synced: false,
        pending,
        events,
    };
    let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(item) = stream.next().await {
        let alive = match item {
            Ok(Event::Init) => {
                state.relisted.clear();
                true
            }
            Ok(Event::InitApply(object)) => state.apply(object, true).await,
            Ok(Event::InitDone) => state.finish_listing().await,
            Ok(Event::Apply(object)) => state.apply(object, false).await,
            Ok(Event::Delete(object)) => state.delete(object).await,
            Err(e) => {
                if is_not_found(&e) {
                    // The CRD is not installed: nothing of this kind exists.
                    tracing::debug!(%kind, "kind not served by the API server; retrying");
                    if !state.finish_listing().await {
                        return;
                    }
                } else {
                    tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff");
                }
                true
            }
        };
        if !alive {
            return;
        }
    }
}

fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => {
            matches!(e, kube::Error::Api(status) if status.code == 404)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_decode_into_their_kind() {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"containers": [{"name": "c"}]},
        });
        let object = object_from_json(Kind::Pod, pod).expect("pod");
        assert_eq!(object.kind(), Kind::Pod);
        assert_eq!(object.reference().to_string(), "Pod ns/a");

        let route = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "ns"}, "spec": {"parentRefs": []},
        });
        let object = object_from_json(Kind::HttpRoute, route).expect("route");
        assert_eq!(object.reference().to_string(), "HTTPRoute ns/r");

        let bad = serde_json::json!({"metadata": {"name": 3}});
        assert!(object_from_json(Kind::AuthorizationPolicy, bad).is_err());
    }

    #[test]
    fn api_resources_use_group_version_and_plural() {
        let ar = api_resource(Kind::AuthorizationPolicy);
        assert_eq!(ar.api_version, "security.istio.io/v1");
        assert_eq!(ar.plural, "authorizationpolicies");
        let ar = api_resource(Kind::Pod);
        assert_eq!(ar.api_version, "v1");
        assert_eq!(ar.group, "");
    }
}
